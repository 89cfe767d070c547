//! Two nodes whose match-key secrets differ: with the same key-set name and
//! different secrets every answer would be a silent "no match". The asking
//! node compares key-set fingerprints (Federation.NodeInfo) and names the
//! mismatch in that peer's outcome; `trust status` and NodeInfo show the
//! fingerprint, never the secret (issue 13, point 9). The fixed secret takes
//! effect on `patchwork reload`, without a restart (point 12).

use patchwork_federation::matchkeys::KeySet;
use patchwork_store::model::LawfulBasis;
use patchwork_tests::{
    ClientCert, TestCa, TestNode, amelia, answer_about_amelia, england_federation, seed_amelia,
    seed_team, start_council, v1,
};
use tokio::net::TcpListener;
use tonic::Code;

const SURREY_SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";
/// One digit different: a copy-paste slip.
const KENT_SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060505";

fn fingerprint(secret_hex: &str) -> String {
    let secret = hex::decode(secret_hex).expect("hex");
    KeySet::new("england", &secret).expect("set").fingerprint()
}

async fn kent_answer(surrey: &TestNode, portal: &ClientCert) -> v1::NodeAnswer {
    answer_about_amelia(surrey, portal, "PR-S1", "kent").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mismatched_secret_is_named_in_the_lookup_and_fingerprints_are_shown() {
    let ca = TestCa::new("england.patchwork");
    let surrey_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let kent_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let surrey_addr = surrey_listener.local_addr().expect("addr");
    let kent_addr = kent_listener.local_addr().expect("addr");
    let portal = ca.client("portal");
    let surrey = start_council(
        &ca,
        "surrey",
        surrey_listener,
        england_federation(
            &ca,
            ("kent", kent_addr),
            &[LawfulBasis::ChildSafeguarding],
            600,
        ),
        SURREY_SECRET,
    )
    .await;
    let mut kent = start_council(
        &ca,
        "kent",
        kent_listener,
        england_federation(
            &ca,
            ("surrey", surrey_addr),
            &[LawfulBasis::ChildSafeguarding],
            600,
        ),
        KENT_SECRET,
    )
    .await;
    seed_team(&surrey, &portal, "ORG-S", "PR-S1").await;
    seed_team(&kent, &portal, "ORG-K", "PR-K1").await;
    seed_amelia(&kent, &portal, "PR-K1").await;

    let (ours, theirs) = (fingerprint(SURREY_SECRET), fingerprint(KENT_SECRET));
    assert_ne!(ours, theirs);

    // trust status (Admin.GetTrustStatus) shows the fingerprint, not the secret.
    let status = surrey
        .admin()
        .await
        .get_trust_status(v1::GetTrustStatusRequest {})
        .await
        .expect("trust status")
        .into_inner();
    assert_eq!(
        status.key_set_fingerprints,
        [v1::KeySetFingerprint {
            key_set: "england".into(),
            fingerprint: ours.clone(),
        }]
    );
    assert!(!format!("{status:?}").contains(&SURREY_SECRET[..16]));

    // NodeInfo gives a peer the agreed set's fingerprint ...
    let as_surrey = kent.try_channel(&surrey.node_cert).await.expect("connect");
    let info = v1::federation_client::FederationClient::new(as_surrey)
        .node_info(v1::NodeInfoRequest {})
        .await
        .expect("node info")
        .into_inner();
    assert_eq!(info.key_sets, ["england"]);
    assert_eq!(info.key_set_fingerprints[0].fingerprint, theirs);
    // ... and nothing to a local client with valid credentials but no agreement.
    let as_portal = kent.try_channel(&portal).await.expect("connect");
    let refused = v1::federation_client::FederationClient::new(as_portal)
        .node_info(v1::NodeInfoRequest {})
        .await
        .expect_err("a portal is not a peer");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // The lookup names the mismatch for Kent instead of a silent "no match".
    let answer = kent_answer(&surrey, &portal).await;
    assert_eq!(answer.outcome, v1::NodeOutcome::Error as i32, "{answer:?}");
    assert!(
        answer.detail.contains("match-key secrets differ")
            && answer.detail.contains(&ours)
            && answer.detail.contains(&theirs),
        "{answer:?}"
    );
    assert!(answer.involvements.is_empty());

    // A subscription goes the same way as a lookup's query (one peer-call
    // path): the mismatch is named, no keys are sent, nothing is subscribed.
    let subscribed = surrey
        .directory(&portal)
        .await
        .subscribe(v1::DirectorySubscribeRequest {
            subject: Some(amelia()),
            purpose: Some(v1::Purpose {
                lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
                reason: "child protection plan: keep the team informed".into(),
            }),
            requester: Some(v1::Requester {
                practitioner_id: "PR-S1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let at_kent = &subscribed.peers[0];
    assert_eq!(
        at_kent.outcome,
        v1::NodeOutcome::Error as i32,
        "{at_kent:?}"
    );
    assert!(
        at_kent.detail.contains("match-key secrets differ"),
        "{at_kent:?}"
    );
    assert!(at_kent.subscription_id.is_empty(), "{at_kent:?}");

    // Kent installs the right secret and reloads, without a restart: its
    // match index is rebuilt under the new secret and the next lookup
    // matches (a mismatch is never cached).
    kent.replace_file("england.key", SURREY_SECRET, true);
    let reloaded = kent.reload().await.expect("reload");
    assert!(
        reloaded.changes.iter().any(|c| c
            == &format!("key set england has a new secret (fingerprint {ours}, was {theirs})")),
        "{:?}",
        reloaded.changes
    );
    assert!(
        reloaded
            .changes
            .iter()
            .any(|c| c.starts_with("key set england: match index built over 1 persons")),
        "{:?}",
        reloaded.changes
    );
    assert!(reloaded.needs_restart.is_empty(), "{reloaded:?}");
    assert!(!format!("{reloaded:?}").contains(&SURREY_SECRET[..16]));
    let answer = kent_answer(&surrey, &portal).await;
    assert_eq!(
        answer.outcome,
        v1::NodeOutcome::Matched as i32,
        "{answer:?}"
    );
    assert_eq!(answer.involvements.len(), 1);
    // And still after a restart: the rebuilt index is the one on disk.
    kent.restart_in_place().await;
    let answer = kent_answer(&surrey, &portal).await;
    assert_eq!(
        answer.outcome,
        v1::NodeOutcome::Matched as i32,
        "{answer:?}"
    );
}
