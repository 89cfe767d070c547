//! Witnessing (issue 16): two councils, each the other's witness, over the
//! real mTLS `Federation` service. Each signs checkpoints of its audit log;
//! the other verifies them (signature, consistency with the last one),
//! cosigns and hands the cosignature back. Then someone with Surrey's disk
//! rewrites, or cuts short, its log offline, thoroughly (the log's own
//! block and head records removed, so it rebuilds them and cannot tell):
//! Surrey's own `audit verify` holds the log to Brighton's cosigned
//! checkpoint and fails, and Brighton's next witness round raises the alarm
//! (metric, evidence kept).

use std::time::{Duration, Instant};

use patchwork_server::NodeConfig;
use patchwork_store::model::LawfulBasis;
use patchwork_tests::{
    TestCa, TestNode, answer_about_amelia, england_federation, seed_amelia, seed_team,
    start_council, v1,
};
use tokio::net::TcpListener;

const SECRET: &str = "8f1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff0";

async fn bind() -> (TcpListener, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// Surrey and Brighton, each the other's peer, witnessing every 200 ms;
/// Brighton holds Amelia, Surrey has asked about her twice.
async fn councils() -> (TestCa, TestNode, TestNode) {
    let ca = TestCa::new("england.patchwork");
    let ((surrey_l, surrey_a), (brighton_l, brighton_a)) = (bind().await, bind().await);
    let basis = [LawfulBasis::ChildSafeguarding];
    let with_witness = |federation: Box<dyn FnOnce(&mut NodeConfig) + Send>| {
        move |config: &mut NodeConfig| {
            federation(config);
            config.federation.witness_interval_ms = 200;
        }
    };
    let surrey = start_council(
        &ca,
        "surrey",
        surrey_l,
        with_witness(Box::new(england_federation(
            &ca,
            ("brighton", brighton_a),
            &basis,
            600,
        ))),
        SECRET,
    )
    .await;
    let brighton = start_council(
        &ca,
        "brighton",
        brighton_l,
        with_witness(Box::new(england_federation(
            &ca,
            ("surrey", surrey_a),
            &basis,
            600,
        ))),
        SECRET,
    )
    .await;
    let portal = ca.client("portal");
    seed_team(&surrey, &portal, "ORG-S", "PR-S").await;
    seed_team(&brighton, &portal, "ORG-B", "PR-B").await;
    seed_amelia(&brighton, &portal, "PR-B").await;
    for _ in 0..2 {
        let answer = answer_about_amelia(&surrey, &portal, "PR-S", "brighton").await;
        assert_eq!(
            answer.outcome,
            v1::NodeOutcome::Matched as i32,
            "{answer:?}"
        );
    }
    (ca, surrey, brighton)
}

/// The value of `name{peer="...<peer>"}` in `node`'s metrics.
async fn metric(node: &TestNode, name: &str, peer: &str) -> u64 {
    let (_, body) = node.metrics().await;
    body.lines()
        .filter(|line| line.starts_with(name) && line.contains(&format!("/node/{peer}\"")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

async fn verify(node: &TestNode) -> v1::VerifyAuditResponse {
    node.admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner()
}

/// Waits until `node`'s own log verifies as cosigned by `witness` at its
/// current length.
async fn until_cosigned(node: &TestNode, witness: &str) -> v1::VerifyAuditResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let verified = verify(node).await;
        let wanted = format!(
            "cosigned by spiffe://england.patchwork/node/{witness} at {} entries",
            verified.entries
        );
        if verified.intact && verified.detail.contains(&wanted) {
            return verified;
        }
        assert!(Instant::now() < deadline, "never cosigned: {verified:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn until_alarm(node: &TestNode, peer: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(node, "patchwork_witness_alarms_total", peer).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the witness raised no alarm about {peer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Someone with the stopped node's disk rewrites its log thoroughly:
/// `change` applies to the entries' bodies, checksums are made to match,
/// and the log's block and head records are removed so it cannot tell.
fn rewrite_offline(node: &TestNode, change: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let store = node.dir.path().join("data/store");
    patchwork_tests::audit_files::rewrite_segment(&store, change);
    let log = store.join("audit-log");
    std::fs::remove_file(log.join("blocks")).expect("blocks");
    std::fs::remove_file(log.join("head")).expect("head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_council_witnesses_the_other_and_a_rewritten_log_is_caught() {
    let (_ca, mut surrey, mut brighton) = councils().await;
    let surrey_verified = until_cosigned(&surrey, "brighton").await;
    until_cosigned(&brighton, "surrey").await;
    assert!(surrey_verified.entries >= 4, "{surrey_verified:?}");
    assert!(metric(&brighton, "patchwork_witness_cosigned_total", "surrey").await >= 1);
    assert_eq!(
        metric(&brighton, "patchwork_witness_alarms_total", "surrey").await,
        0
    );

    // One byte of Surrey's first entry (a lookup's start: who asked and why).
    surrey.stop().await;
    rewrite_offline(&surrey, |bodies| {
        let last = bodies[0].len() - 1;
        bodies[0][last] ^= 0x01;
    });
    surrey.restart_in_place().await;
    let verified = verify(&surrey).await;
    assert!(!verified.intact, "{verified:?}");
    assert!(
        verified.detail.contains(
            "no longer match the checkpoint spiffe://england.patchwork/node/brighton cosigned"
        ),
        "{verified:?}"
    );
    until_alarm(&brighton, "surrey").await;
    surrey.stop().await;
    brighton.stop().await;
    let store = brighton.stopped_store();
    let alarms = store.witness_alarms().expect("alarms");
    let alarm = alarms.last().expect("the evidence is kept");
    assert!(alarm.peer.ends_with("/node/surrey"));
    assert!(
        alarm.detail.contains("was rewritten") && alarm.detail.contains("-- checkpoint shown:"),
        "{}",
        alarm.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_cut_short_offline_is_caught_by_its_witness_and_itself() {
    let (_ca, mut surrey, brighton) = councils().await;
    let verified = until_cosigned(&surrey, "brighton").await;
    surrey.stop().await;
    rewrite_offline(&surrey, |bodies| {
        let keep = bodies.len() - 2;
        bodies.truncate(keep);
    });
    surrey.restart_in_place().await;
    let after = verify(&surrey).await;
    assert!(!after.intact, "{after:?}");
    assert!(after.detail.contains("the log was cut short"), "{after:?}");
    assert!(
        after
            .detail
            .contains(&format!("cosigned a checkpoint of {}", verified.entries)),
        "{after:?}"
    );
    until_alarm(&brighton, "surrey").await;
}

/// The two witnessing calls are for agreed peers only, and a peer cannot
/// plant a cosignature: not under another node's name, not of a checkpoint
/// this node never signed, not with a key other than the one it pinned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_cannot_plant_a_cosignature_and_a_stranger_sees_no_checkpoint() {
    use patchwork_federation::checkpoint::{Checkpoint, SignedCheckpoint, SigningKey, VerifierKey};
    use patchwork_tests::attacker::{Target, TargetOptions};
    use tonic::Code;

    let target = Target::start(TargetOptions::default()).await;
    let mut stranger = target.federation_as(&target.stranger).await;
    let refused = stranger
        .get_checkpoint(v1::GetCheckpointRequest { old_size: 0 })
        .await
        .expect_err("no agreement");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = stranger
        .add_cosignature(v1::AddCosignatureRequest::default())
        .await
        .expect_err("no agreement");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut peer = target.federation_as(&target.peer).await;
    // An old size beyond the log: answered, without a proof (the witness
    // sees the log is smaller than it was).
    let shown = peer
        .get_checkpoint(v1::GetCheckpointRequest { old_size: 1 << 40 })
        .await
        .expect("checkpoint")
        .into_inner();
    assert!(shown.consistency_proof.is_empty());
    let signed = SignedCheckpoint::parse(&shown.checkpoint).expect("a signed note");
    let node_key = VerifierKey::parse(&shown.verifier_key).expect("a verifier key");
    signed
        .verify_signed_by(&node_key)
        .expect("signed by the node");
    assert_eq!(
        signed.checkpoint.origin,
        "england.patchwork/node/surrey/audit"
    );

    let peer_identity = target.peer.identity.to_string();
    let cosign = |key: &SigningKey, note: &SignedCheckpoint| {
        let mut note = note.clone();
        note.add_cosignature(&key.cosign(note.text(), 1_800_000_000))
            .expect("cosign");
        v1::AddCosignatureRequest {
            cosigned_checkpoint: note.note(),
            verifier_key: key.verifier_key(),
        }
    };
    let key_named = |name: &str| {
        SigningKey::from_pkcs8(name, &SigningKey::generate().expect("key")).expect("key")
    };
    let own = key_named(&Checkpoint::origin_of(&peer_identity));
    // Under another node's name.
    let brighton = key_named("england.patchwork/node/brighton/audit");
    let refused = peer
        .add_cosignature(cosign(&brighton, &signed))
        .await
        .expect_err("another node's name");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("verifier_key: names england.patchwork/node/brighton/audit"),
        "{}",
        refused.message()
    );
    // A checkpoint the node never signed (the peer signed it, as the node's log).
    let forged = key_named("england.patchwork/node/surrey/audit").sign(&Checkpoint {
        size: signed.checkpoint.size + 100,
        ..signed.checkpoint.clone()
    });
    let forged = SignedCheckpoint::parse(&forged).expect("parse");
    let refused = peer
        .add_cosignature(cosign(&own, &forged))
        .await
        .expect_err("not signed by the node");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("this node did not sign it"),
        "{}",
        refused.message()
    );
    // Garbage: refused naming the field, nothing kept.
    let refused = peer
        .add_cosignature(v1::AddCosignatureRequest {
            cosigned_checkpoint: "\u{2014} x\n".repeat(10_000),
            verifier_key: own.verifier_key(),
        })
        .await
        .expect_err("garbage");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("cosigned_checkpoint:"),
        "{}",
        refused.message()
    );
    // The real thing is kept; then another key of the same name is refused.
    peer.add_cosignature(cosign(&own, &signed))
        .await
        .expect("a genuine cosignature");
    let other = key_named(&Checkpoint::origin_of(&peer_identity));
    let refused = peer
        .add_cosignature(cosign(&other, &signed))
        .await
        .expect_err("a changed key");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("a changed key is refused"),
        "{}",
        refused.message()
    );
    let verified = target
        .node
        .admin()
        .await
        .verify_audit(v1::VerifyAuditRequest {})
        .await
        .expect("verify")
        .into_inner();
    assert!(verified.intact, "{verified:?}");
    assert!(
        verified
            .detail
            .contains(&format!("cosigned by {peer_identity}")),
        "{verified:?}"
    );
}

/// A hostile peer answers `GetCheckpoint` with 15 KiB of signature lines,
/// a thousand 31-byte "hashes" and a malformed key: the witness parses it
/// with bounded sizes, raises an alarm with the evidence, cosigns nothing,
/// and goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_checkpoint_is_an_alarm_not_a_crash() {
    use patchwork_tests::attacker::{EvilPeer, KEY_SET, SECRET as EVIL_SECRET};
    use patchwork_tests::{ClientGrant, NodeOptions};
    let ca = TestCa::new("england.patchwork");
    let evil = EvilPeer::start(&ca, "evil").await;
    let portal = ca.client("portal");
    let evil_peer = patchwork_tests::peer(&evil.cert.identity, "Evil", evil.addr);
    let node = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions {
            secret_files: vec![(format!("{KEY_SET}.key"), EVIL_SECRET.into())],
            ..Default::default()
        }
        .with(move |config| {
            config.federation.witness_interval_ms = 100;
            patchwork_tests::federate(config, [evil_peer]);
        }),
    )
    .await;
    until_alarm(&node, "evil").await;
    assert_eq!(
        metric(&node, "patchwork_witness_cosigned_total", "evil").await,
        0
    );
    let verified = verify(&node).await;
    assert!(verified.intact, "the node goes on: {verified:?}");
}

/// Audit retention (`retention.audit_years`): two segments of entries two
/// years old leave Surrey's log for an archive file, once Brighton has
/// cosigned past them. The archive proves offline against Surrey's key (a
/// copy with one entry rewritten and its checksums made good does not);
/// Surrey's log still verifies from the archived point on, against
/// Brighton's cosignatures; Brighton's next rounds verify its consistency
/// proofs and raise no alarm; and a peer asking for a proof from inside
/// the archived entries is refused, not answered with something wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archived_audit_entries_leave_the_log_and_its_witness_still_vouches_for_it() {
    use patchwork_server::work::subject_access::{archive_entries_about, check_archive};
    use patchwork_store::AuditEvent;

    let (_ca, mut surrey, brighton) = councils().await;
    until_cosigned(&surrey, "brighton").await;
    surrey.stop().await;
    // Two closed segments of history two years old: peers' questions about
    // P-OLD, as Surrey would have answered them then.
    let two_years_ago =
        (time::OffsetDateTime::now_utc() - time::Duration::days(730)).unix_timestamp() * 1000;
    let (history_from, boundary) = {
        let store = surrey.stopped_store();
        let len = store.audit_len().expect("len");
        let asked = |n: u64| AuditEvent::PeerAsked {
            request_id: format!("R-OLD-{n}"),
            peer: "spiffe://england.patchwork/node/brighton".into(),
            requester_practitioner_id: "PR-B1".into(),
            requester_name: "Jo Baker".into(),
            requester_role: "Health visitor".into(),
            requester_organisation: "Brighton Health".into(),
            lawful_basis: Some(LawfulBasis::ChildSafeguarding),
            reason: "home visit".into(),
            outcome: "matched".into(),
            refusal: None,
            person_id: Some("P-OLD".into()),
            disclosed_involvement_ids: vec!["I-OLD".into()],
        };
        let mut written = len;
        for count in [512 - len % 256, 512] {
            let events: Vec<AuditEvent> = (written..written + count).map(asked).collect();
            store
                .fixture_append_audit_at(&events, two_years_ago)
                .expect("history");
            store.fixture_close_audit_segment().expect("close");
            written += count;
        }
        (len, written)
    };
    surrey.edit_config(|c| c.retention.audit_years = 1);
    surrey.restart_in_place().await;
    let before = until_cosigned(&surrey, "brighton").await;
    assert_eq!(before.entries, boundary, "{before:?}");

    let run = |dry_run: bool| {
        let surrey = &surrey;
        async move {
            surrey
                .admin()
                .await
                .run_retention(v1::RunRetentionRequest {
                    dry_run,
                    force: false,
                })
                .await
                .expect("retention run")
                .into_inner()
                .audit
                .expect("an audit rule is set")
        }
    };
    let planned = run(true).await;
    assert_eq!(
        (planned.first_seq, planned.last_seq),
        (1, boundary),
        "{planned:?}"
    );
    assert!(planned.file.is_empty() && planned.held_back.is_empty());
    let archived = run(false).await;
    assert_eq!((archived.first_seq, archived.last_seq), (1, boundary));
    assert_eq!(archived.rule, "retention.audit_years: 1 years");
    let path = std::path::PathBuf::from(&archived.file);
    assert!(path.starts_with(surrey.dir.path().join("data/audit-archive")));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("archive")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The segments are gone from the log; nothing more is due.
    let segments: Vec<String> = std::fs::read_dir(surrey.dir.path().join("data/store/audit-log"))
        .expect("log")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("seg-"))
        .collect();
    assert_eq!(segments, vec![format!("seg-{boundary:020}.log")]);
    assert_eq!(run(true).await.last_seq, 0);

    // The archive proves offline against Surrey's key, and says what the
    // entries said about P-OLD.
    let key = surrey
        .admin()
        .await
        .get_witness_status(v1::GetWitnessStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .verifier_key;
    let checked = check_archive(&path, &key).expect("the archive proves");
    assert_eq!(checked.checkpoint.size, boundary);
    let about = archive_entries_about(&checked.archive, "P-OLD").expect("entries");
    assert_eq!(about.len() as u64, boundary - history_from);
    assert!(about.iter().all(|e| e.reason == "home visit"));
    // Brighton's key does not sign it.
    let brighton_key = brighton
        .admin()
        .await
        .get_witness_status(v1::GetWitnessStatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .verifier_key;
    let refused = check_archive(&path, &brighton_key).expect_err("another key");
    assert!(
        refused.contains("not signed by the key you gave"),
        "{refused}"
    );
    // One entry's reason rewritten, its CRC and the file's SHA-256 made
    // good again: the root its entries give no longer matches the checkpoint.
    let bytes = std::fs::read(&path).expect("read");
    let at = bytes
        .windows(10)
        .position(|w| w == b"home visit")
        .expect("an entry's reason");
    let mut forged = bytes.clone();
    forged[at..at + 10].copy_from_slice(b"home vis1t");
    patchwork_tests::audit_files::reseal_archive(&mut forged, at);
    let forged_path = surrey.dir.path().join("forged.pwar");
    std::fs::write(&forged_path, &forged).expect("write");
    let refused = check_archive(&forged_path, &key).expect_err("forged");
    assert!(refused.contains("do not give the root"), "{refused}");
    // Its first 300 entries cut off, the hashes before its start made to
    // give the same root: where an archive starts is signed too.
    let forged = patchwork_tests::audit_files::forge_archive_start(&bytes, 300);
    std::fs::write(&forged_path, &forged).expect("write");
    let refused = check_archive(&forged_path, &key).expect_err("entries dropped");
    assert!(refused.contains("before its first entry"), "{refused}");

    // The log verifies from the archived point on, and Brighton goes on
    // cosigning it: its consistency proofs start past the archived entries.
    let after = until_cosigned(&surrey, "brighton").await;
    assert!(after.entries > before.entries, "{after:?}");
    assert!(
        after
            .detail
            .contains(&format!("entries 1 to {boundary} were archived")),
        "{after:?}"
    );
    assert_eq!(
        metric(&brighton, "patchwork_witness_alarms_total", "surrey").await,
        0
    );
    // A peer asking for a proof from inside the archived entries is told so.
    let channel = surrey
        .try_channel(&brighton.node_cert)
        .await
        .expect("channel");
    let mut as_brighton = v1::federation_client::FederationClient::new(channel);
    let refused = as_brighton
        .get_checkpoint(v1::GetCheckpointRequest { old_size: 7 })
        .await
        .expect_err("inside the archive");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("archived"),
        "{}",
        refused.message()
    );
    // A subject-access report says where the older entries went.
    let report = surrey
        .admin()
        .await
        .subject_access_report(v1::SubjectAccessRequest {
            person_id: "P-OLD".into(),
        })
        .await
        .expect_err("no longer named in the log, never held");
    assert!(
        report
            .message()
            .contains("were archived by audit retention"),
        "{}",
        report.message()
    );
}
