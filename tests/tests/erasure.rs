//! Erasure (`Directory.ErasePerson`): a person with involvements, a
//! sibling link, team events, an attention flag and a lookup in the audit
//! log is erased; afterwards no tree of the store and no file of the audit
//! log holds their name, date of birth or NHS number (searched byte-wise,
//! with the sibling's details as the control that the search finds what is
//! there); the audit log verifies and still says, by id only, that the
//! person was looked up and erased, and why. A records client may not
//! erase; a reason naming the person is refused and changes nothing.

use patchwork_tests::{
    ClientGrant, Records, TestCa, TestNode, date, involvement, lookup_request, person, seed, v1,
};
use tonic::Code;

/// Every byte of every file in the store's audit log folder and its index.
fn audit_log_bytes(store_dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut folders = vec![store_dir.join("audit-log")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("audit-log folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                folders.push(path);
            } else {
                files.push((
                    path.display().to_string(),
                    std::fs::read(&path).expect("read"),
                ));
            }
        }
    }
    assert!(files.len() > 60, "the log's files and its index's");
    files
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn an_erased_person_leaves_nothing_but_ids_in_the_audit() {
    let ca = TestCa::new("test.patchwork");
    let portal = ca.client("portal");
    let mut node = TestNode::start(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
    )
    .await;
    let mut records = Records::team(
        "ORG-1",
        "Test Children's Services",
        &[
            ("PR-1", "Sam Okafor", "Social worker"),
            ("PR-2", "Jo Patel", "Health visitor"),
        ],
    );
    records.persons = vec![
        person(
            "P-1",
            "Amelia",
            "Quennell-Ashworth",
            date(2015, 3, 14),
            "9434765919",
        ),
        // A half-sister: no detail in common with P-1.
        person(
            "P-2",
            "Theodora",
            "Marchetti",
            date(2018, 7, 2),
            "4010232137",
        ),
    ];
    records.involvements = vec![
        involvement(
            "P-1",
            "PR-1",
            "Children's social care",
            v1::Sensitivity::Standard,
        ),
        involvement("P-1", "PR-2", "Health visiting", v1::Sensitivity::Standard),
        involvement(
            "P-2",
            "PR-1",
            "Children's social care",
            v1::Sensitivity::Standard,
        ),
    ];
    seed(&node, &portal, records).await;
    let mut directory = node.directory(&portal).await;
    directory
        .link_persons(v1::LinkPersonsRequest {
            person_id: "P-1".into(),
            other_person_id: "P-2".into(),
            relationship: v1::Relationship::Sibling as i32,
        })
        .await
        .expect("link");
    directory
        .raise_attention(v1::RaiseAttentionRequest {
            person_id: "P-1".into(),
            practitioner_id: "PR-1".into(),
            reason: "missed three appointments".into(),
        })
        .await
        .expect("attention");
    let mut request = lookup_request(
        v1::Demographics {
            given_name: "Amelia".into(),
            family_name: "Quennell-Ashworth".into(),
            date_of_birth: date(2015, 3, 14),
            ..Default::default()
        },
        "PR-1",
    );
    request.local_only = true;
    // A reason naming the person (as asked, or as the record matched has
    // them) would outlive the erasure in the audit log: refused, nothing
    // written.
    let audited = node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner()
        .entries;
    for (reason, detail) in [
        ("worried about the Quennell-Ashworth children", "name"),
        ("concern raised about amelias attendance", "name"),
        ("child born 14.03.2015, school concern", "date of birth"),
    ] {
        let mut naming = request.clone();
        if let Some(purpose) = naming.purpose.as_mut() {
            purpose.reason = reason.into();
        }
        let refused = directory.lookup(naming).await.expect_err(reason);
        assert_eq!(refused.code(), Code::InvalidArgument, "{reason}");
        assert!(
            refused
                .message()
                .starts_with(&format!("purpose.reason: contains the person's {detail}")),
            "{reason}: {}",
            refused.message()
        );
    }
    let after = node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner()
        .entries;
    assert_eq!(after, audited, "a refused lookup writes nothing");
    let answer = directory.lookup(request.clone()).await.expect("lookup");
    assert_eq!(
        answer.into_inner().answers[0].outcome,
        v1::NodeOutcome::Matched as i32
    );

    // A records client may not erase; a reason with the person's details in
    // it, or one too short to say anything, is refused. Nothing changes.
    let refused = directory
        .erase_person(v1::ErasePersonRequest {
            person_id: "P-1".into(),
            reason: "erasure request DPO-2026-114".into(),
        })
        .await
        .expect_err("records role may not erase");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // As the node itself, as `patchwork erase` calls.
    let mut admin_directory = node.directory(&ca.node_cert("surrey")).await;
    for (reason, field_message) in [
        (
            "asked by Amelia's mother",
            "reason: contains the person's name",
        ),
        (
            "erase, born 14/03/2015",
            "reason: contains the person's date of birth",
        ),
        ("erase it", "reason: must be at least 10 characters"),
    ] {
        let refused = admin_directory
            .erase_person(v1::ErasePersonRequest {
                person_id: "P-1".into(),
                reason: reason.into(),
            })
            .await
            .expect_err(reason);
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with(field_message),
            "{reason}: {refused:?}"
        );
    }
    assert_eq!(node.stats().await.persons, 2, "nothing changed");
    let missing = admin_directory
        .erase_person(v1::ErasePersonRequest {
            person_id: "P-404".into(),
            reason: "erasure request DPO-2026-114".into(),
        })
        .await
        .expect_err("unknown person");
    assert_eq!(missing.code(), Code::NotFound);

    let erased = admin_directory
        .erase_person(v1::ErasePersonRequest {
            person_id: "P-1".into(),
            reason: "erasure request DPO-2026-114".into(),
        })
        .await
        .expect("erase")
        .into_inner();
    assert_eq!(
        erased.removed[..4],
        [
            "the person record",
            "2 involvements",
            "1 family links",
            "2 team events"
        ],
        "{erased:?}"
    );
    assert!(erased.removed.contains(&"the attention flag".to_owned()));

    // The API no longer knows the person; the sibling stays, unlinked.
    let gone = directory
        .get_person(v1::GetPersonRequest { id: "P-1".into() })
        .await
        .expect_err("erased");
    assert_eq!(gone.code(), Code::NotFound);
    let answer = directory
        .lookup(request)
        .await
        .expect("lookup")
        .into_inner();
    assert_eq!(answer.answers[0].outcome, v1::NodeOutcome::NoMatch as i32);
    let links = directory
        .list_links(v1::ListLinksRequest {
            person_id: "P-2".into(),
        })
        .await
        .expect("links")
        .into_inner();
    assert!(links.links.is_empty(), "{links:?}");
    let stats = node.stats().await;
    assert_eq!((stats.persons, stats.involvements), (1, 1));

    // The subject-access report of the id: what the audit still says.
    let mut admin = node.admin().await;
    let report = admin
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-1".into(),
        })
        .await
        .expect("report of an erased id")
        .into_inner();
    assert!(report.not_held && report.involvements.is_empty());
    let kinds: Vec<&str> = report.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "looked up here by a local practitioner",
            "erased from this node"
        ]
    );
    assert_eq!(report.entries[1].reason, "erasure request DPO-2026-114");
    patchwork_server::work::subject_access::prove_report(&report, None).expect("proves");

    // Byte-wise: nothing of the person in any tree or in the audit log's
    // files; the sibling's details are there (the search works).
    node.stop().await;
    let store_dir = node.config().store_dir();
    {
        let store = node.stopped_store();
        let verified = store.verify_audit().expect("verify");
        assert!(verified.intact, "{verified:?}");
        for needle in [
            "Amelia",
            "amelia",
            "Quennell",
            "quennell",
            "2015-03-14",
            "20150314",
            "9434765919",
        ] {
            let found = store.trees_containing(needle.as_bytes()).expect("search");
            assert!(found.is_empty(), "{needle} is still in {found:?}");
        }
        for control in ["Theodora", "marchetti", "4010232137", "20180702"] {
            let found = store.trees_containing(control.as_bytes()).expect("search");
            assert!(!found.is_empty(), "the search does not find {control}");
        }
        // Not even the id is left in any tree (the audit log and its own
        // index files keep it, by design).
        let found = store.trees_containing(b"P-1").expect("search");
        assert!(found.is_empty(), "{found:?}");
    }
    for (file, bytes) in audit_log_bytes(&store_dir) {
        for needle in [
            "Amelia",
            "Quennell",
            "2015-03-14",
            "14/03/2015",
            "9434765919",
        ] {
            assert!(!holds(&bytes, needle.as_bytes()), "{needle} is in {file}");
        }
    }
}
