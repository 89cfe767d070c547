//! Keeping the picture fresh, the family view and subject access, on real
//! nodes over real mTLS: Surrey asks, Brighton & Hove holds the family.
//! Stale involvements are listed until confirmed; ended ones are disclosed to
//! nobody; a family lookup brings each linked member's team, locally and
//! across the federation; the subject-access report lists every lookup and
//! everyone involved.

use patchwork_certs::SpiffeId;
use patchwork_server::base::config::PeerEntry;
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, TestCa, TestNode, date, federate, involvement,
    organisation, peer, practitioner, v1,
};
use tokio::net::TcpListener;
use tonic::Code;

const SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";
const CHILD_NHS: &str = "943 476 5919";

struct Council {
    node: TestNode,
    portal: ClientCert,
}

impl Council {
    async fn directory(&self) -> v1::directory_client::DirectoryClient<tonic::transport::Channel> {
        self.node.directory(&self.portal).await
    }
}

async fn start(ca: &TestCa, name: &str, listener: TcpListener, peers: Vec<PeerEntry>) -> Council {
    let portal = ca.client("portal");
    let node = TestNode::start_with(
        ca,
        name,
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions {
            listener: Some(listener),
            secret_files: vec![("england.key".into(), SECRET.into())],
            ..Default::default()
        }
        .with(|config| {
            config.federation.default_deadline_ms = 3000;
            federate(config, peers);
        }),
    )
    .await;
    Council { node, portal }
}

/// Surrey (asking, agreed for standard involvements) and Brighton & Hove.
async fn two_councils() -> (TestCa, Council, Council) {
    let ca = TestCa::new("england.patchwork");
    let surrey_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let brighton_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (surrey_a, brighton_a) = (
        surrey_l.local_addr().expect("addr"),
        brighton_l.local_addr().expect("addr"),
    );
    let id = |name: &str| {
        SpiffeId::node(ca.ca.trust_domain(), name)
            .expect("identity")
            .to_string()
    };
    let surrey = start(
        &ca,
        "surrey",
        surrey_l,
        vec![peer(
            id("brighton"),
            "Brighton & Hove City Council",
            brighton_a,
        )],
    )
    .await;
    let brighton = start(
        &ca,
        "brighton",
        brighton_l,
        vec![peer(id("surrey"), "Surrey County Council", surrey_a)],
    )
    .await;
    let mut directory = surrey.directory().await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation("ORG-S", "Surrey CS", v1::Sector::SocialCare)),
        })
        .await
        .expect("organisation");
    directory
        .create_practitioner(v1::CreatePractitionerRequest {
            practitioner: Some(practitioner(
                "PR-S1",
                "Sam Okafor",
                "Social worker",
                "ORG-S",
            )),
        })
        .await
        .expect("practitioner");
    (ca, surrey, brighton)
}

/// Brighton's family: Amelia (the child asked about), her brother Leo and
/// her mother Grace, each with a team; returns the involvement ids by name.
async fn seed_family(council: &Council) -> Vec<(&'static str, String)> {
    let mut directory = council.directory().await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation("ORG-B", "Brighton CS", v1::Sector::SocialCare)),
        })
        .await
        .expect("organisation");
    for (id, name, role) in [
        ("PR-B1", "Bea Adeyemi", "Social worker"),
        ("PR-B2", "Hal Moss", "School nurse"),
        ("PR-B3", "Ivy Chen", "Youth worker"),
        ("PR-B4", "Rae Doyle", "Drug and alcohol worker"),
    ] {
        directory
            .create_practitioner(v1::CreatePractitionerRequest {
                practitioner: Some(practitioner(id, name, role, "ORG-B")),
            })
            .await
            .expect("practitioner");
    }
    for person in [
        patchwork_tests::person("B-1", "Amelia", "Smith-Jones", date(2015, 3, 14), CHILD_NHS),
        patchwork_tests::person("B-2", "Leo", "Smith-Jones", date(2012, 6, 2), ""),
        patchwork_tests::person("B-3", "Grace", "Smith-Jones", date(1988, 9, 30), ""),
    ] {
        directory
            .create_person(v1::CreatePersonRequest {
                person: Some(person),
            })
            .await
            .expect("person");
    }
    let mut ids = Vec::new();
    for (name, person, practitioner, service, sensitivity) in [
        (
            "amelia-cp",
            "B-1",
            "PR-B1",
            "Child protection",
            v1::Sensitivity::AlwaysFindable,
        ),
        (
            "amelia-nurse",
            "B-1",
            "PR-B2",
            "School nursing",
            v1::Sensitivity::Standard,
        ),
        (
            "leo-youth",
            "B-2",
            "PR-B3",
            "Youth service",
            v1::Sensitivity::Standard,
        ),
        (
            "grace-dna",
            "B-3",
            "PR-B4",
            "Substance misuse",
            v1::Sensitivity::Restricted,
        ),
    ] {
        let recorded = directory
            .record_involvement(v1::RecordInvolvementRequest {
                involvement: Some(involvement(person, practitioner, service, sensitivity)),
            })
            .await
            .expect("involvement")
            .into_inner();
        ids.push((name, recorded.id));
    }
    ids
}

fn id_of(ids: &[(&str, String)], name: &str) -> String {
    ids.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, id)| id.clone())
        .expect("seeded involvement")
}

fn lookup(local_only: bool, include_family: bool) -> v1::LookupRequest {
    let mut request = patchwork_tests::lookup_request(
        v1::Demographics {
            given_name: "Amelia".into(),
            family_name: "Smith-Jones".into(),
            date_of_birth: date(2015, 3, 14),
            national_id: Some(v1::NationalId {
                scheme: "nhs".into(),
                value: CHILD_NHS.into(),
            }),
            ..Default::default()
        },
        "PR-S1",
    );
    request.local_only = local_only;
    request.include_family = include_family;
    request
}

/// Brighton's own lookup (its practitioner PR-B1 asks).
fn brighton_lookup(include_family: bool) -> v1::LookupRequest {
    let mut request = lookup(true, include_family);
    request.requester = Some(v1::Requester {
        practitioner_id: "PR-B1".into(),
        ..Default::default()
    });
    request
}

/// (service, family member) of what one node disclosed, sorted.
fn seen(answer: &v1::NodeAnswer) -> Vec<(String, String)> {
    let mut seen: Vec<_> = answer
        .involvements
        .iter()
        .map(|i| (i.service.clone(), i.family_member.clone()))
        .collect();
    seen.sort();
    seen
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut items: Vec<_> = items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    items.sort();
    items
}

#[tokio::test]
async fn stale_involvements_are_listed_and_confirmed_ones_drop_off() {
    let ca = TestCa::new("england.patchwork");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut brighton = start(&ca, "brighton", listener, Vec::new()).await;
    let ids = seed_family(&brighton).await;
    let mut directory = brighton.directory().await;

    // Recorded with start dates in January 2024: all four are stale by the
    // node's default of 90 days, oldest confirmation first (ties by id).
    let all = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.involvements.len(), 4);
    assert!(!all.truncated);
    let limited = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(limited.involvements.len(), 2);
    assert!(limited.truncated);

    // Only the involvement's own practitioner may confirm it.
    let nurse = id_of(&ids, "amelia-nurse");
    let refused = directory
        .confirm_involvement(v1::ConfirmInvolvementRequest {
            id: nurse.clone(),
            practitioner_id: "PR-B1".into(),
        })
        .await
        .expect_err("not theirs");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("practitioner_id:"),
        "{refused:?}"
    );
    let unknown = directory
        .confirm_involvement(v1::ConfirmInvolvementRequest {
            id: "no-such".into(),
            practitioner_id: "PR-B2".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    let confirmed = directory
        .confirm_involvement(v1::ConfirmInvolvementRequest {
            id: nurse.clone(),
            practitioner_id: "PR-B2".into(),
        })
        .await
        .expect("confirm")
        .into_inner();
    let on = confirmed.last_confirmed.expect("last_confirmed");
    assert!((on.year, on.month, on.day) > (2024, 1, 15), "{on:?}");
    // Confirmed today: not even a day old.
    let day_old = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest {
            older_than_days: 1,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(day_old.involvements.len(), 3);
    assert!(!day_old.involvements.iter().any(|i| i.id == nurse));

    // An ended involvement is neither listed nor confirmable.
    let youth = id_of(&ids, "leo-youth");
    directory
        .end_involvement(v1::EndInvolvementRequest {
            id: youth.clone(),
            end_date: date(2024, 6, 1),
            reason: "moved away".into(),
        })
        .await
        .expect("end");
    let ended = directory
        .confirm_involvement(v1::ConfirmInvolvementRequest {
            id: youth.clone(),
            practitioner_id: "PR-B3".into(),
        })
        .await
        .expect_err("ended");
    assert_eq!(ended.code(), Code::FailedPrecondition);

    // The confirmation was durable: it survives a restart.
    brighton.node.restart().await;
    let mut directory = brighton.directory().await;
    let listed: Vec<String> = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .involvements
        .into_iter()
        .map(|i| i.id)
        .collect();
    let mut expected = vec![id_of(&ids, "amelia-cp"), id_of(&ids, "grace-dna")];
    expected.sort();
    assert_eq!(listed, expected, "confirmed and ended ones drop off");

    // One practitioner's list; a short period makes nothing stale... and a
    // practitioner the node does not hold is named.
    let mine = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest {
            practitioner_id: "PR-B4".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(mine.involvements.len(), 1);
    assert_eq!(mine.involvements[0].id, id_of(&ids, "grace-dna"));
    let decade = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest {
            older_than_days: 3650,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(decade.involvements.is_empty());
    let missing = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest {
            practitioner_id: "PR-NOBODY".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown practitioner");
    assert_eq!(missing.code(), Code::NotFound);
    let too_long = directory
        .list_unconfirmed_involvements(v1::ListUnconfirmedInvolvementsRequest {
            older_than_days: 3651,
            ..Default::default()
        })
        .await
        .expect_err("too long");
    assert_eq!(too_long.code(), Code::InvalidArgument);
    assert!(too_long.message().starts_with("older_than_days:"));
}

#[tokio::test]
async fn ended_involvements_are_disclosed_neither_locally_nor_to_a_peer() {
    let (_ca, surrey, brighton) = two_councils().await;
    let ids = seed_family(&brighton).await;
    let mut directory = brighton.directory().await;
    directory
        .end_involvement(v1::EndInvolvementRequest {
            id: id_of(&ids, "amelia-nurse"),
            end_date: date(2024, 6, 1),
            reason: String::new(),
        })
        .await
        .expect("end");

    let local = directory
        .lookup(brighton_lookup(false))
        .await
        .expect("local lookup")
        .into_inner();
    assert_eq!(
        seen(&local.answers[0]),
        pairs(&[("Child protection", "")]),
        "locally only the current involvement"
    );

    let across = surrey
        .directory()
        .await
        .lookup(lookup(false, false))
        .await
        .expect("federated lookup")
        .into_inner();
    assert_eq!(across.answers.len(), 2);
    let answer = &across.answers[1];
    assert_eq!(
        answer.outcome,
        v1::NodeOutcome::Matched as i32,
        "{answer:?}"
    );
    assert_eq!(seen(answer), pairs(&[("Child protection", "")]));

    // Brighton's audit log agrees: the ended involvement went to nobody.
    let report = brighton
        .node
        .admin()
        .await
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "B-1".into(),
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.entries.len(), 2);
    for entry in &report.entries {
        assert_eq!(
            entry.disclosed_involvement_ids,
            vec![id_of(&ids, "amelia-cp")]
        );
    }
}

#[tokio::test]
async fn a_family_lookup_returns_each_members_team_locally_and_from_a_peer() {
    let (_ca, surrey, brighton) = two_councils().await;
    let ids = seed_family(&brighton).await;
    let mut directory = brighton.directory().await;
    let link = |person: &str, other: &str, relationship: v1::Relationship| v1::LinkPersonsRequest {
        person_id: person.into(),
        other_person_id: other.into(),
        relationship: relationship as i32,
    };

    // Bad links are refused, naming the field, and change nothing.
    let missing = directory
        .link_persons(link("B-1", "B-404", v1::Relationship::Sibling))
        .await
        .expect_err("missing person");
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().starts_with("other_person_id:"),
        "{missing:?}"
    );
    let unspecified = directory
        .link_persons(link("B-1", "B-2", v1::Relationship::Unspecified))
        .await
        .expect_err("no relationship");
    assert!(unspecified.message().starts_with("relationship:"));
    let own = directory
        .link_persons(link("B-1", "B-1", v1::Relationship::Sibling))
        .await
        .expect_err("self");
    assert_eq!(own.code(), Code::InvalidArgument);

    directory
        .link_persons(link("B-1", "B-2", v1::Relationship::Sibling))
        .await
        .expect("sibling");
    directory
        .link_persons(link("B-1", "B-3", v1::Relationship::Parent))
        .await
        .expect("parent");
    // Symmetric: the mother sees Amelia as her child.
    let grace = directory
        .list_links(v1::ListLinksRequest {
            person_id: "B-3".into(),
        })
        .await
        .expect("links")
        .into_inner();
    assert_eq!(grace.links.len(), 1);
    assert_eq!(grace.links[0].other_person_id, "B-1");
    assert_eq!(grace.links[0].relationship, v1::Relationship::Child as i32);

    // Without the family view: Amelia's own team only.
    let own_team = directory
        .lookup(brighton_lookup(false))
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(
        seen(&own_team.answers[0]),
        pairs(&[("Child protection", ""), ("School nursing", "")])
    );

    // Locally, the whole family's team, each member by relationship only;
    // the mother's restricted service shows only as a gatekeeper.
    let family = directory
        .lookup(brighton_lookup(true))
        .await
        .expect("family lookup")
        .into_inner();
    assert_eq!(
        seen(&family.answers[0]),
        pairs(&[
            ("Child protection", ""),
            ("School nursing", ""),
            ("Youth service", "sibling"),
            ("", "parent"),
        ])
    );
    let mother = family.answers[0]
        .involvements
        .iter()
        .find(|i| i.family_member == "parent")
        .expect("mother's involvement");
    assert!(matches!(
        mother.contact,
        Some(v1::disclosed_involvement::Contact::Gatekeeper(_))
    ));

    // From Surrey: the family's team under the agreement (standard only, so
    // the always-findable child protection goes but the restricted
    // service does not).
    let across = surrey
        .directory()
        .await
        .lookup(lookup(false, true))
        .await
        .expect("federated family lookup")
        .into_inner();
    let answer = &across.answers[1];
    assert_eq!(
        answer.outcome,
        v1::NodeOutcome::Matched as i32,
        "{answer:?}"
    );
    assert_eq!(
        seen(answer),
        pairs(&[
            ("Child protection", ""),
            ("School nursing", ""),
            ("Youth service", "sibling"),
        ])
    );

    // Brighton audited the family members' involvements it disclosed.
    let report = brighton
        .node
        .admin()
        .await
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "B-1".into(),
        })
        .await
        .expect("report")
        .into_inner();
    let peer_entry = report
        .entries
        .iter()
        .find(|e| e.reference == across.lookup_id)
        .expect("the peer's question is audited");
    assert!(
        peer_entry
            .disclosed_involvement_ids
            .contains(&id_of(&ids, "leo-youth"))
    );
    let local_entry = report
        .entries
        .iter()
        .find(|e| e.reference == family.lookup_id)
        .expect("the local family lookup is audited");
    assert!(
        local_entry
            .disclosed_involvement_ids
            .contains(&id_of(&ids, "grace-dna"))
    );

    // Unlinked, the family view is Amelia's own team again.
    directory
        .unlink_persons(v1::UnlinkPersonsRequest {
            person_id: "B-2".into(),
            other_person_id: "B-1".into(),
        })
        .await
        .expect("unlink");
    let again = directory
        .unlink_persons(v1::UnlinkPersonsRequest {
            person_id: "B-2".into(),
            other_person_id: "B-1".into(),
        })
        .await
        .expect_err("already unlinked");
    assert_eq!(again.code(), Code::NotFound);
    let after = directory
        .lookup(brighton_lookup(true))
        .await
        .expect("lookup")
        .into_inner();
    assert!(
        !seen(&after.answers[0])
            .iter()
            .any(|(_, member)| member == "sibling")
    );
}

#[tokio::test]
async fn the_subject_access_report_lists_every_lookup_and_the_involvements() {
    let (_ca, surrey, brighton) = two_councils().await;
    let ids = seed_family(&brighton).await;
    let mut directory = brighton.directory().await;
    directory
        .end_involvement(v1::EndInvolvementRequest {
            id: id_of(&ids, "amelia-nurse"),
            end_date: date(2024, 6, 1),
            reason: String::new(),
        })
        .await
        .expect("end");
    let mut lookups = Vec::new();
    for _ in 0..2 {
        lookups.push(
            directory
                .lookup(brighton_lookup(false))
                .await
                .expect("local")
                .into_inner()
                .lookup_id,
        );
    }
    lookups.push(
        surrey
            .directory()
            .await
            .lookup(lookup(false, false))
            .await
            .expect("federated")
            .into_inner()
            .lookup_id,
    );

    let report = brighton
        .node
        .admin()
        .await
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "B-1".into(),
        })
        .await
        .expect("report")
        .into_inner();
    let references: Vec<&str> = report
        .entries
        .iter()
        .map(|e| e.reference.as_str())
        .collect();
    assert_eq!(references, lookups, "every lookup, oldest first");
    let peer = &report.entries[2];
    assert_eq!(peer.kind, "asked by peer node");
    assert!(peer.from.ends_with("/node/surrey"), "{}", peer.from);
    assert!(peer.requester.contains("Sam Okafor"), "{}", peer.requester);
    assert_eq!(peer.lawful_basis, "child_safeguarding");

    // Who is involved: current and ended, with practitioner and dates.
    assert_eq!(report.node_name, "brighton council");
    assert!(report.produced_at_unix_seconds > 0);
    assert_eq!(report.involvements.len(), 2);
    let nurse = report
        .involvements
        .iter()
        .find(|i| i.involvement_id == id_of(&ids, "amelia-nurse"))
        .expect("the ended involvement");
    assert_eq!(nurse.practitioner_name, "Hal Moss");
    assert_eq!(nurse.organisation_name, "Brighton CS");
    assert_eq!(nurse.end_date, date(2024, 6, 1));
    let current = report
        .involvements
        .iter()
        .find(|i| i.involvement_id == id_of(&ids, "amelia-cp"))
        .expect("the current involvement");
    assert_eq!(current.end_date, None);
    assert_eq!(current.service, "Child protection");

    // The readable document a DPO hands over, and its JSON form.
    let text = patchwork_cli::cli::subject_access_text(&report, "unused");
    for needle in [
        "SUBJECT ACCESS REPORT",
        "Person:        B-1",
        "Held by:       brighton council",
        "Date produced:",
        "Who is involved",
        "Hal Moss, School nurse — Brighton CS",
        "from 2024-01-15 to 2024-06-01 (ended)",
        "Who looked you up",
        "3 time(s)",
        "s.47 enquiry after a school referral",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    for id in &lookups {
        assert!(text.contains(id.as_str()), "lookup {id} missing");
    }
    // Entries numbered for the reader without gaps, each with its log entry.
    let numbered: Vec<&str> = text.lines().filter(|line| line.starts_with('#')).collect();
    assert_eq!(numbered.len(), 3, "{text}");
    for (i, line) in numbered.iter().enumerate() {
        assert!(line.starts_with(&format!("#{} ", i + 1)), "{line}");
    }
    for entry in &report.entries {
        assert!(text.contains(&format!("  log entry:    {}\n", entry.seq)));
    }
    // A local asker is named as a peer's asker is.
    assert!(
        text.contains("practitioner id PR-B1 on this node"),
        "{text}"
    );
    let json = patchwork_cli::cli::subject_access_json(&report);
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(3));
    assert_eq!(json["involvements"][0]["start_date"], "2024-01-15");
}

/// Brighton's subject-access report for `person_id`.
async fn report_of(council: &Council, person_id: &str) -> v1::SubjectAccessReport {
    council
        .node
        .admin()
        .await
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: person_id.into(),
        })
        .await
        .expect("report")
        .into_inner()
}

#[tokio::test]
async fn a_family_lookup_is_in_each_disclosed_members_own_subject_access_report() {
    let (_ca, surrey, brighton) = two_councils().await;
    let ids = seed_family(&brighton).await;
    let mut directory = brighton.directory().await;
    for (other, relationship) in [
        ("B-2", v1::Relationship::Sibling),
        ("B-3", v1::Relationship::Parent),
    ] {
        directory
            .link_persons(v1::LinkPersonsRequest {
                person_id: "B-1".into(),
                other_person_id: other.into(),
                relationship: relationship as i32,
            })
            .await
            .expect("link");
    }

    // Amelia looked up without the family view: nothing about Leo.
    directory
        .lookup(brighton_lookup(false))
        .await
        .expect("own team");
    // With it, here and from Surrey (whose agreement leaves out the mother's
    // restricted service: nothing of hers goes there).
    let local = directory
        .lookup(brighton_lookup(true))
        .await
        .expect("local family lookup")
        .into_inner();
    let across = surrey
        .directory()
        .await
        .lookup(lookup(false, true))
        .await
        .expect("federated family lookup")
        .into_inner();
    assert_eq!(across.answers[1].outcome, v1::NodeOutcome::Matched as i32);

    // Leo's report: both family lookups, each with who asked and why, and
    // only his own involvement, never his sister's.
    let leo = report_of(&brighton, "B-2").await;
    let references: Vec<&str> = leo.entries.iter().map(|e| e.reference.as_str()).collect();
    assert_eq!(
        references,
        vec![local.lookup_id.as_str(), across.lookup_id.as_str()],
        "{leo:#?}"
    );
    let (here, peer) = (&leo.entries[0], &leo.entries[1]);
    assert_eq!(
        here.kind,
        "a family member looked up here by a local practitioner"
    );
    assert_eq!(
        here.requester,
        "Bea Adeyemi (Social worker, Brighton CS; practitioner id PR-B1 on this node)"
    );
    assert!(here.from.ends_with("/client/portal"), "{}", here.from);
    assert_eq!(here.lawful_basis, "child_safeguarding");
    assert_eq!(here.reason, "s.47 enquiry after a school referral");
    assert_eq!(here.outcome, "matched a family member");
    assert_eq!(
        here.disclosed_involvement_ids,
        vec![id_of(&ids, "leo-youth")]
    );
    assert_eq!(peer.kind, "a family member asked about by peer node");
    assert!(peer.from.ends_with("/node/surrey"), "{}", peer.from);
    assert!(peer.requester.contains("Sam Okafor"), "{}", peer.requester);
    assert_eq!(peer.lawful_basis, "child_safeguarding");
    assert_eq!(peer.outcome, "matched a family member");
    assert_eq!(
        peer.disclosed_involvement_ids,
        vec![id_of(&ids, "leo-youth")]
    );

    // The audit entries behind both name his sister and the rest of the
    // family: the report carries no proof of them (it would disclose the
    // others), and the offline check says so rather than failing.
    assert!(here.evidence.is_empty() && peer.evidence.is_empty());
    let proven = patchwork_server::work::subject_access::prove_report(&leo, None)
        .expect("what is provable proves");
    assert_eq!((proven.entries, proven.unproven.len()), (0, 2));

    // Grace's: the local lookup that disclosed her gatekeeper; not Surrey's,
    // which disclosed nothing of hers.
    let grace = report_of(&brighton, "B-3").await;
    let references: Vec<&str> = grace.entries.iter().map(|e| e.reference.as_str()).collect();
    assert_eq!(references, vec![local.lookup_id.as_str()], "{grace:#?}");
    assert_eq!(
        grace.entries[0].disclosed_involvement_ids,
        vec![id_of(&ids, "grace-dna")]
    );

    // Amelia's report is as before: her three lookups, no family entries.
    let amelia = report_of(&brighton, "B-1").await;
    assert_eq!(amelia.entries.len(), 3, "{amelia:#?}");

    // The index is rebuilt-checkable from the log: the chain verifies,
    // every family entry indexed under each member it names.
    let verified = brighton
        .node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.intact, "{verified:?}");
}
