//! The retention schedule (`[retention]`, `Admin.RunRetention`): a dry run
//! lists what is due and changes nothing; the run then deletes exactly that
//! (ended involvements past their years; persons without a current
//! involvement past theirs, with everything naming them), each batch
//! audited before it goes; nothing more is due afterwards. A run that would
//! delete more than `max_share` deletes nothing until forced. A records
//! client may not run it.

use patchwork_server::base::config::RetentionSection;
use patchwork_tests::{
    ClientGrant, NodeOptions, Records, TestCa, TestNode, date, involvement, person, seed, v1,
};
use tonic::Code;

async fn start(
    ca: &TestCa,
    portal: &patchwork_tests::ClientCert,
    retention: RetentionSection,
) -> TestNode {
    TestNode::start_with(
        ca,
        "surrey",
        &[ClientGrant {
            client: portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions::default().with(move |c| c.retention = retention),
    )
    .await
}

/// An involvement of `person` with PR-1 from `start`; ended on `end` by
/// [`seed_ended`].
fn ended(
    person: &str,
    start: (i32, i32, i32),
    end: Option<(i32, i32, i32)>,
) -> (v1::Involvement, Option<v1::Date>) {
    let mut i = involvement(
        person,
        "PR-1",
        "Children's social care",
        v1::Sensitivity::Standard,
    );
    i.start_date = date(start.0, start.1, start.2);
    (i, end.and_then(|(y, m, d)| date(y, m, d)))
}

/// Seeds `records` with `involvements`, then ends those with an end date,
/// as a case system would; the involvements as recorded.
async fn seed_ended(
    node: &TestNode,
    portal: &patchwork_tests::ClientCert,
    mut records: Records,
    involvements: Vec<(v1::Involvement, Option<v1::Date>)>,
) -> Vec<v1::Involvement> {
    records.involvements = involvements.iter().map(|(i, _)| i.clone()).collect();
    let recorded = seed(node, portal, records).await;
    let mut directory = node.directory(portal).await;
    for (made, (_, end)) in recorded.iter().zip(&involvements) {
        if let Some(end) = end {
            directory
                .end_involvement(v1::EndInvolvementRequest {
                    id: made.id.clone(),
                    end_date: Some(*end),
                    reason: String::new(),
                })
                .await
                .expect("end");
        }
    }
    recorded
}

fn ids(report: &v1::RetentionReport) -> (Vec<String>, Vec<String>) {
    (
        report
            .involvements
            .iter()
            .map(|i| i.involvement_id.clone())
            .collect(),
        report.persons.iter().map(|p| p.person_id.clone()).collect(),
    )
}

async fn run(node: &TestNode, dry_run: bool, force: bool) -> v1::RetentionReport {
    node.admin()
        .await
        .run_retention(v1::RunRetentionRequest { dry_run, force })
        .await
        .expect("retention run")
        .into_inner()
}

#[tokio::test]
async fn retention_deletes_exactly_what_its_dry_run_listed() {
    let ca = TestCa::new("test.patchwork");
    let portal = ca.client("portal");
    let node = start(
        &ca,
        &portal,
        RetentionSection {
            ended_involvements_years: 2,
            inactive_persons_years: 6,
            ..RetentionSection::default()
        },
    )
    .await;
    let mut records = Records::team(
        "ORG-1",
        "Test Children's Services",
        &[("PR-1", "Sam Okafor", "Social worker")],
    );
    for (id, given) in [
        ("P-OLD", "Olive"),
        ("P-MIX", "Max"),
        ("P-RECENT", "Rita"),
        ("P-NONE", "Nia"),
        ("P-MID", "Mo"),
    ] {
        records
            .persons
            .push(person(id, given, "Example", date(2012, 1, 1), ""));
    }
    let involvements = vec![
        // Ended 2015: the person has had nothing current for > 6 years.
        ended("P-OLD", (2013, 1, 1), Some((2015, 1, 10))),
        // One current, one ended > 2 years ago: that one goes.
        ended("P-MIX", (2019, 1, 1), None),
        ended("P-MIX", (2019, 1, 1), Some((2020, 5, 1))),
        // Ended last year: kept, and so is the person.
        ended("P-RECENT", (2024, 1, 1), Some((2025, 11, 1))),
        // Ended 2022: the involvement goes, the person stays (4 years).
        ended("P-MID", (2021, 1, 1), Some((2022, 1, 1))),
    ];
    let recorded = seed_ended(&node, &portal, records, involvements).await;
    let id_of = |n: usize| recorded[n].id.clone();

    // A records client may not run the schedule, not even a dry run.
    let mut as_portal = v1::admin_client::AdminClient::new(
        node.try_channel(&portal).await.expect("portal connects"),
    );
    let refused = as_portal
        .run_retention(v1::RunRetentionRequest {
            dry_run: true,
            force: false,
        })
        .await
        .expect_err("records role");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let before = node.stats().await;
    let dry = run(&node, true, false).await;
    assert!(dry.dry_run && dry.refused.is_empty(), "{dry:?}");
    assert_eq!(
        ids(&dry),
        (vec![id_of(2), id_of(4)], vec!["P-OLD".to_owned()]),
        "{dry:?}"
    );
    assert_eq!(dry.newly_inactive, 1, "P-NONE");
    let after_dry = node.stats().await;
    assert_eq!(
        (
            after_dry.persons,
            after_dry.involvements,
            after_dry.audit_entries
        ),
        (before.persons, before.involvements, before.audit_entries),
        "a dry run changes nothing"
    );

    let done = run(&node, false, false).await;
    assert!(
        !done.dry_run && done.refused.is_empty() && done.skipped.is_empty(),
        "{done:?}"
    );
    assert_eq!(ids(&done), ids(&dry), "exactly what the dry run listed");
    let stats = node.stats().await;
    assert_eq!((stats.persons, stats.involvements), (4, 2));
    assert_eq!(
        stats.audit_entries,
        before.audit_entries + 1,
        "one batch, audited"
    );
    let mut directory = node.directory(&portal).await;
    let gone = directory
        .get_person(v1::GetPersonRequest { id: "P-OLD".into() })
        .await
        .expect_err("erased");
    assert_eq!(gone.code(), Code::NotFound);
    let left = directory
        .list_involvements(v1::ListInvolvementsRequest {
            person_id: "P-MIX".into(),
            include_ended: true,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        left.involvements
            .iter()
            .map(|i| i.id.clone())
            .collect::<Vec<_>>(),
        vec![id_of(1)]
    );

    // Nothing more is due; P-MID keeps the date its involvement ended.
    let again = run(&node, true, false).await;
    assert_eq!(ids(&again), (Vec::new(), Vec::new()), "{again:?}");
    assert_eq!(again.newly_inactive, 0, "P-NONE is dated now");

    // The erased person's subject-access report says why, by id only.
    let report = node
        .admin()
        .await
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-OLD".into(),
        })
        .await
        .expect("report")
        .into_inner();
    assert!(report.not_held);
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].kind, "erased by the retention schedule");
    assert!(
        report.entries[0]
            .from
            .starts_with("patchwork retention run by spiffe://test.patchwork/node/surrey"),
        "{:?}",
        report.entries[0]
    );
    assert_eq!(
        report.entries[0].reason,
        "retention.ended_involvements_years: 2 years; retention.inactive_persons_years: 6 years"
    );
    let verified = node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.intact, "{verified:?}");
}

#[tokio::test]
async fn a_run_that_would_empty_the_node_waits_to_be_forced() {
    let ca = TestCa::new("test.patchwork");
    let portal = ca.client("portal");
    let node = start(
        &ca,
        &portal,
        RetentionSection {
            inactive_persons_years: 6,
            ..RetentionSection::default()
        },
    )
    .await;
    let mut records = Records::team(
        "ORG-1",
        "Test Children's Services",
        &[("PR-1", "Sam Okafor", "Social worker")],
    );
    let mut involvements = Vec::new();
    for n in 0..12 {
        let id = format!("P-{n}");
        records
            .persons
            .push(person(&id, "Olive", "Example", date(2001, 1, 1), ""));
        involvements.push(ended(&id, (2005, 1, 1), Some((2010, 1, 1))));
    }
    seed_ended(&node, &portal, records, involvements).await;

    let refused = run(&node, false, false).await;
    assert!(
        refused
            .refused
            .starts_with("this run would delete 12 of 12 persons"),
        "{refused:?}"
    );
    assert_eq!(node.stats().await.persons, 12, "nothing deleted");
    let (_, metrics) = node.metrics().await;
    assert!(
        metrics.contains("patchwork_retention_refused_total 1"),
        "{metrics}"
    );

    let forced = run(&node, false, true).await;
    assert!(forced.refused.is_empty());
    assert_eq!(forced.persons.len(), 12);
    assert_eq!(node.stats().await.persons, 0);
    let (_, metrics) = node.metrics().await;
    assert!(
        metrics.contains("patchwork_retention_deleted_total{kind=\"person\"} 12"),
        "{metrics}"
    );
}
