//! The audit log: appends from many threads land without gaps, each in the
//! log's Merkle tree; altering, removing, reordering or cutting off entries
//! in the log's files (checksums and all) is found in the block of entries
//! that was touched; subject-access reports list exactly a person's
//! entries; `Admin` verifies and reports over mTLS and refuses callers
//! without the admin role.
//!
//! Entries are appended through `Store` on a stopped node's folder, and
//! tampered with by rewriting its segment file.

use std::collections::BTreeSet;
use std::path::Path;

use patchwork_store::model::LawfulBasis;
use patchwork_store::{AuditEvent, PeerOutcome, Store, StoreOptions};
use patchwork_tests::audit_files::{records, rewrite_segment, segment_path};
use patchwork_tests::{
    ClientGrant, TRUST_DOMAIN, TestCa, TestNode, organisation, person, practitioner, v1,
};
use tonic::Code;

const PEER: &str = "spiffe://vic.patchwork.au/node/melbourne";
const PORTAL: &str = "spiffe://test.patchwork/client/portal";

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions::default()).expect("open store")
}

fn peer_asked(request_id: &str, person_id: Option<&str>) -> AuditEvent {
    AuditEvent::PeerAsked {
        request_id: request_id.into(),
        peer: PEER.into(),
        requester_practitioner_id: "VIC-PR-9".into(),
        requester_name: "Alex Example".into(),
        requester_role: "Child protection practitioner".into(),
        requester_organisation: "DFFH Victoria".into(),
        lawful_basis: Some(LawfulBasis::ChildSafeguarding),
        reason: "family moved interstate; safety plan".into(),
        outcome: if person_id.is_some() {
            "matched"
        } else {
            "no_match"
        }
        .into(),
        refusal: None,
        person_id: person_id.map(Into::into),
        disclosed_involvement_ids: person_id
            .map(|_| vec!["INV-1".to_owned()])
            .unwrap_or_default(),
    }
}

fn lookup_started(lookup_id: &str) -> AuditEvent {
    AuditEvent::LookupStarted {
        lookup_id: lookup_id.into(),
        caller: PORTAL.into(),
        requester: "PR-1".into(),
        lawful_basis: LawfulBasis::ChildSafeguarding,
        reason: "s.47 enquiry after a school referral".into(),
        peers_asked: vec![PEER.into()],
    }
}

fn lookup_answered(lookup_id: &str, person_id: Option<&str>, disclosed: &[&str]) -> AuditEvent {
    AuditEvent::LookupAnswered {
        lookup_id: lookup_id.into(),
        local_outcome: if person_id.is_some() {
            "matched"
        } else {
            "no_match"
        }
        .into(),
        local_person_id: person_id.map(Into::into),
        disclosed_involvement_ids: disclosed.iter().map(|s| (*s).to_owned()).collect(),
        peers: vec![PeerOutcome {
            node_id: PEER.into(),
            outcome: "timed_out".into(),
            detail: "no answer within 2000 ms".into(),
            disclosed: 0,
        }],
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for item in std::fs::read_dir(from).expect("read dir") {
        let item = item.expect("dir entry");
        let target = to.join(item.file_name());
        if item.file_type().expect("file type").is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), &target).expect("copy file");
        }
    }
}

/// Rewrites the (closed) store's log in `dir`, as someone with access to
/// the disk could.
fn tamper(dir: &Path, change: impl FnOnce(&mut Vec<Vec<u8>>)) {
    rewrite_segment(dir, change);
}

/// A closed store holding a log of 300 entries.
async fn log_of_300() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for n in 1..=300u64 {
        let person = format!("P-{}", n % 7);
        store
            .append_audit(peer_asked(&format!("R-{n}"), Some(&person)))
            .expect("append");
    }
    store.flush().await.expect("flush");
    dir
}

/// Copies `log`, applies `change` to the copy's entries and verifies it.
fn verify_tampered(
    log: &Path,
    change: impl FnOnce(&mut Vec<Vec<u8>>),
) -> patchwork_store::AuditVerification {
    let copy = tempfile::tempdir().expect("tempdir");
    let dir = copy.path().join("store");
    copy_dir(log, &dir);
    tamper(&dir, change);
    open(&dir).verify_audit().expect("verify")
}

#[tokio::test]
async fn appends_from_many_threads_land_without_gaps_in_the_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    const THREADS: u64 = 8;
    const EACH: u64 = 50;
    let seqs: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = store.clone();
                scope.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let person = format!("P-{t}");
                            let person = (i % 2 == 0).then_some(person.as_str());
                            store
                                .append_audit(peer_asked(&format!("T{t}-{i}"), person))
                                .expect("append")
                                .seq
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("worker"))
            .collect()
    });
    let total = THREADS * EACH;
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique, (1..=total).collect(), "each append has its own seq");

    let verification = store.verify_audit().expect("verify");
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.entries, total);
    assert_eq!(store.audit_len().expect("len"), total);

    let root = store.audit_root(total).expect("root");
    let mut request_ids = BTreeSet::new();
    for seq in 1..=total {
        let entry = store.audit_entry(seq).expect("read").expect("no gap");
        assert_eq!(entry.seq, seq);
        if seq % 97 == 1 {
            let proof = store.audit_inclusion_proof(seq, total).expect("proof");
            let proof: Vec<tlog_tiles::Hash> = proof.into_iter().map(tlog_tiles::Hash).collect();
            tlog_tiles::check_record(
                &proof,
                total,
                tlog_tiles::Hash(root),
                seq - 1,
                tlog_tiles::Hash(entry.leaf_hash),
            )
            .expect("the entry is in the tree");
        }
        if let AuditEvent::PeerAsked { request_id, .. } = entry.event {
            assert!(request_ids.insert(request_id), "each event once");
        }
    }
    assert_eq!(request_ids.len() as u64, total);

    let of_p3 = store.audit_for_person("P-3").expect("report");
    assert_eq!(of_p3.len() as u64, EACH / 2);
    assert!(of_p3.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    assert!(of_p3.iter().all(|e| matches!(
        &e.event,
        AuditEvent::PeerAsked { request_id, .. } if request_id.starts_with("T3-")
    )));
    store.flush().await.expect("flush");
}

#[tokio::test]
async fn a_changed_byte_is_found_in_its_block() {
    let log = log_of_300().await;
    // The format byte, the time, the event's first and last bytes, of an
    // entry in the first (recorded) block and one in the last (partial) one.
    for (seq, first_bad) in [(57usize, 1u64), (290, 257)] {
        let length = {
            let bytes = std::fs::read(segment_path(log.path())).expect("read");
            records(&bytes)[seq - 1].1.len()
        };
        for offset in [0, 1, 8, 9, length - 1] {
            let verification = verify_tampered(log.path(), |bodies| {
                bodies[seq - 1][offset] ^= 0x20;
            });
            assert!(!verification.intact, "entry {seq}, byte {offset}");
            assert_eq!(
                verification.first_bad_entry,
                Some(first_bad),
                "entry {seq}, byte {offset}: {verification:?}"
            );
            assert!(
                verification.detail.contains("were altered"),
                "{}",
                verification.detail
            );
        }
    }
}

#[tokio::test]
async fn a_changed_byte_without_its_checksum_is_found_at_its_entry() {
    let log = log_of_300().await;
    let copy = tempfile::tempdir().expect("tempdir");
    let dir = copy.path().join("store");
    copy_dir(log.path(), &dir);
    let path = segment_path(&dir);
    let mut bytes = std::fs::read(&path).expect("read");
    let (at, _) = records(&bytes)[56];
    bytes[at + 20] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write");
    let verification = open(&dir).verify_audit().expect("verify");
    assert_eq!(verification.first_bad_entry, Some(57), "{verification:?}");
    assert!(
        verification.detail.contains("the first entry 57"),
        "{}",
        verification.detail
    );
}

#[tokio::test]
async fn a_removed_entry_is_found() {
    let log = log_of_300().await;
    let verification = verify_tampered(log.path(), |bodies| {
        bodies.remove(79);
    });
    assert!(!verification.intact);
    assert_eq!(verification.first_bad_entry, Some(1), "{verification:?}");
    assert!(
        verification
            .detail
            .contains("entries 1 to 256 were altered"),
        "{}",
        verification.detail
    );
}

#[tokio::test]
async fn swapped_entries_are_found() {
    let log = log_of_300().await;
    let verification = verify_tampered(log.path(), |bodies| {
        bodies.swap(99, 100);
    });
    assert_eq!(verification.first_bad_entry, Some(1), "{verification:?}");
    assert!(
        verification.detail.contains("were altered"),
        "{}",
        verification.detail
    );
}

#[tokio::test]
async fn a_cut_off_tail_is_found() {
    let log = log_of_300().await;
    let verification = verify_tampered(log.path(), |bodies| {
        bodies.truncate(290);
    });
    assert_eq!(verification.first_bad_entry, Some(291), "{verification:?}");
    assert!(
        verification.detail.contains("entries were removed"),
        "{}",
        verification.detail
    );
    assert_eq!(verification.entries, 290);

    // The untouched original still verifies.
    let original = open(log.path()).verify_audit().expect("verify");
    assert!(original.intact, "{original:?}");
    assert_eq!(original.entries, 300);
}

#[tokio::test]
async fn a_subject_access_report_lists_exactly_the_persons_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut expected = Vec::new();
    for n in 0..40u64 {
        let lookup = format!("L-{n}");
        store.append_audit(lookup_started(&lookup)).expect("start");
        let person = match n % 4 {
            0 => Some("P-1"),
            1 => Some("P-10"), // shares a prefix with P-1, must not leak in
            _ => None,
        };
        let answered = store
            .append_audit(lookup_answered(&lookup, person, &["INV-1"]))
            .expect("answer");
        let asked = store
            .append_audit(peer_asked(&format!("R-{n}"), (n % 5 == 0).then_some("P-1")))
            .expect("asked");
        if person == Some("P-1") {
            expected.push(answered.seq);
        }
        if n % 5 == 0 {
            expected.push(asked.seq);
        }
    }
    let report: Vec<u64> = store
        .audit_for_person("P-1")
        .expect("report")
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(report, expected);
    assert_eq!(store.audit_for_person("P-1").expect("report").len(), 18);
    assert!(store.audit_for_person("P-2").expect("report").is_empty());
    assert!(store.verify_audit().expect("verify").intact);
    store.flush().await.expect("flush");
}

async fn create_records(node: &TestNode) {
    let mut directory = node.directory(&node.node_cert).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation(
                "ORG-1",
                "Test Children's Services",
                v1::Sector::SocialCare,
            )),
        })
        .await
        .expect("organisation");
    directory
        .create_practitioner(v1::CreatePractitionerRequest {
            practitioner: Some(practitioner("PR-1", "Sam Okafor", "Social worker", "ORG-1")),
        })
        .await
        .expect("practitioner");
    for (id, given) in [("P-1", "Amelia"), ("P-2", "Noah")] {
        directory
            .create_person(v1::CreatePersonRequest {
                person: Some(person(id, given, "Smith", None, "")),
            })
            .await
            .expect("person");
    }
}

#[tokio::test]
async fn admin_verifies_the_log_and_reports_on_a_subject() {
    let ca = TestCa::new(TRUST_DOMAIN);
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
    create_records(&node).await;
    let empty = node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert!(empty.intact && empty.entries == 0, "{empty:?}");

    node.stop().await;
    let store_dir = node.config().store_dir();
    {
        let store = open(&store_dir);
        store.append_audit(lookup_started("L-1")).expect("1");
        store
            .append_audit(peer_asked("R-1", Some("P-2")))
            .expect("2");
        store
            .append_audit(lookup_answered("L-1", Some("P-1"), &["INV-1", "INV-2"]))
            .expect("3");
        let mut refused = peer_asked("R-2", None);
        if let AuditEvent::PeerAsked {
            outcome,
            refusal,
            lawful_basis,
            ..
        } = &mut refused
        {
            *outcome = "refused".into();
            *refusal = Some("purpose not in the agreement".into());
            *lawful_basis = None;
        }
        store.append_audit(refused).expect("4");
        store
            .append_audit(peer_asked("R-3", Some("P-1")))
            .expect("5");
        store.flush().await.expect("flush");
    }
    node.restart().await;

    let mut admin = node.admin().await;
    let verified = admin
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert_eq!(
        (verified.entries, verified.intact, verified.first_bad_entry),
        (5, true, 0),
        "{verified:?}"
    );
    assert_eq!(node.stats().await.audit_entries, 5);

    let report = admin
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-1".into(),
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(report.person_id, "P-1");
    assert_eq!(
        report.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 5]
    );
    let local = &report.entries[0];
    assert_eq!(local.kind, "looked up here by a local practitioner");
    assert_eq!(local.from, PORTAL);
    // Named like a peer's asker, with the id the log keeps.
    assert_eq!(
        local.requester,
        "Sam Okafor (Social worker, Test Children's Services; practitioner id PR-1 on this node)"
    );
    assert_eq!(local.lawful_basis, "child_safeguarding");
    assert_eq!(local.reason, "s.47 enquiry after a school referral");
    assert_eq!(local.outcome, "matched");
    assert_eq!(local.disclosed_involvement_ids, vec!["INV-1", "INV-2"]);
    assert_eq!(local.reference, "L-1");
    assert!(local.at_unix_seconds > 1_700_000_000);
    let peer = &report.entries[1];
    assert_eq!(peer.kind, "asked by peer node");
    assert_eq!(peer.from, PEER);
    assert!(
        peer.requester.contains("Alex Example"),
        "{}",
        peer.requester
    );
    assert_eq!(peer.disclosed_involvement_ids, vec!["INV-1"]);
    assert_eq!(peer.reference, "R-3");

    // The report proves offline against the node's checkpoint key: each
    // entry with its evidence (the local lookup's answer draws on its
    // start). A changed byte of evidence, a changed word of the report, or
    // another key, and it does not.
    use patchwork_server::work::subject_access::prove_report;
    let proven = prove_report(&report, Some(&report.log_key)).expect("the report proves");
    assert_eq!((proven.entries, proven.evidence), (2, 3));
    assert_eq!(
        proven.checkpoint.size, 6,
        "covers the report's own audit entry"
    );
    let mut altered = report.clone();
    let body = &mut altered.entries[1].evidence[0].body;
    let last = body.len() - 1;
    body[last] ^= 0x01;
    let why = prove_report(&altered, None).expect_err("changed evidence");
    assert!(
        why.contains("audit entry 5") && why.contains("was changed"),
        "{why}"
    );
    let mut reworded = report.clone();
    reworded.entries[0].reason = "routine check".into();
    let why = prove_report(&reworded, None).expect_err("changed wording");
    assert!(why.contains("does not say what the entry says"), "{why}");
    let mut moved = report.clone();
    moved.person_id = "P-2".into();
    let why = prove_report(&moved, None).expect_err("another person's report");
    assert!(why.contains("is not a report on person P-2"), "{why}");
    // An entry taken out of a copy: the report's own audit entry says how
    // many it had; a copy without that entry proves nothing.
    let mut shortened = report.clone();
    shortened.entries.remove(0);
    let why = prove_report(&shortened, None).expect_err("an entry taken out");
    assert!(
        why.contains("the report holds 1 entries, but the node reported 2"),
        "{why}"
    );
    let mut uncounted = report.clone();
    uncounted.reported = None;
    let why = prove_report(&uncounted, None).expect_err("no count");
    assert!(why.contains("no proof of how many entries"), "{why}");
    let other_key = report.log_key.replacen("surrey", "brighton", 1);
    assert!(prove_report(&report, Some(&other_key)).is_err());

    // Producing a report is audited, and the next report says so.
    assert_eq!(node.stats().await.audit_entries, 6);
    let again = admin
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-1".into(),
        })
        .await
        .expect("report")
        .into_inner();
    let last = again.entries.last().expect("entries");
    assert_eq!(
        (
            last.seq,
            last.kind.as_str(),
            last.from.as_str(),
            last.outcome.as_str()
        ),
        (
            6,
            "subject-access report produced",
            "spiffe://test.patchwork/node/surrey",
            "2 entries reported"
        )
    );
    prove_report(&again, Some(&report.log_key)).expect("the second report proves too");

    let other = admin
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-2".into(),
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(
        other.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![2]
    );

    let missing = admin
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-404".into(),
        })
        .await
        .expect_err("unknown person");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let invalid = admin
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P 1".into(),
        })
        .await
        .expect_err("bad id");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().starts_with("person_id"), "{invalid:?}");

    let mut as_portal = v1::admin_client::AdminClient::new(
        node.try_channel(&portal).await.expect("portal connects"),
    );
    let refused = as_portal
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect_err("portal is not admin");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = as_portal
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-1".into(),
        })
        .await
        .expect_err("portal is not admin");
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Someone with the disk alters entry 2; the running node says so.
    node.stop().await;
    tamper(&store_dir, |bodies| {
        let last = bodies[1].len() - 1;
        bodies[1][last] ^= 0x01;
    });
    node.restart().await;
    let verified = node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert!(!verified.intact);
    // The five entries are one partial block: the root the log recorded
    // after its last sync no longer matches them.
    assert_eq!(verified.first_bad_entry, 1, "{verified:?}");
    assert!(verified.detail.contains("altered"), "{verified:?}");
    node.stop().await;
}
