//! How a lookup names a peer that refused this node at the TLS handshake (its CRL lists
//! this node's certificate): "refused", with the handshake's reason, never "timed out".

use patchwork_certs::SpiffeId;
use patchwork_server::NodeConfig;
use std::time::{Duration, Instant};

use patchwork_tests::{
    ClientGrant, NodeOptions, TestCa, TestNode, date, federate, organisation, peer, practitioner,
    v1,
};
use tokio::net::TcpListener;

const SECRET: &str = "5f1d3c0a9b8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a392817060504";
const DEADLINE_MS: u32 = 2000;

/// Federation with the node `name` of `ca`'s domain at `address` as the one
/// agreed peer.
fn federation(
    ca: &TestCa,
    name: &str,
    address: std::net::SocketAddr,
) -> impl FnOnce(&mut NodeConfig) + Send + 'static {
    let identity = SpiffeId::node(ca.ca.trust_domain(), name).expect("identity");
    let agreed = peer(identity, name, address);
    move |config: &mut NodeConfig| {
        config.federation.default_deadline_ms = DEADLINE_MS;
        federate(config, [agreed]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_refused_our_certificate_is_named_refused_with_the_reason() {
    let ca = TestCa::new("england.patchwork");
    let (surrey_l, brighton_l) = (
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    );
    let (surrey_a, brighton_a) = (
        surrey_l.local_addr().expect("addr"),
        brighton_l.local_addr().expect("addr"),
    );
    let portal = ca.client("portal");
    let grants = [ClientGrant {
        client: &portal,
        roles: &["records", "lookup"],
    }];
    let options = |listener, peer, address| {
        NodeOptions {
            listener: Some(listener),
            secret_files: vec![("england.key".to_owned(), SECRET.to_owned())],
            ..Default::default()
        }
        .with(federation(&ca, peer, address))
    };
    let surrey = TestNode::start_with(
        &ca,
        "surrey",
        &grants,
        options(surrey_l, "brighton", brighton_a),
    )
    .await;
    // Brighton has revoked Surrey's certificate.
    let _brighton = TestNode::start_with(
        &ca,
        "brighton",
        &grants,
        NodeOptions {
            crl: Some(ca.crl(&[&surrey.node_cert], 7)),
            ..options(brighton_l, "surrey", surrey_a)
        },
    )
    .await;

    let mut directory = surrey.directory(&portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(organisation("ORG-S", "Surrey CS", v1::Sector::SocialCare)),
        })
        .await
        .expect("organisation");
    directory
        .create_practitioner(v1::CreatePractitionerRequest {
            practitioner: Some(practitioner("PR-S1", "Sam Patel", "social worker", "ORG-S")),
        })
        .await
        .expect("practitioner");

    let started = Instant::now();
    let response = directory
        .lookup(v1::LookupRequest {
            subject: Some(v1::Demographics {
                given_name: "Amelia".into(),
                family_name: "Smith-Jones".into(),
                date_of_birth: date(2015, 3, 14),
                postcode: String::new(),
                national_id: None,
            }),
            purpose: Some(v1::Purpose {
                lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
                reason: "s.47 enquiry after a school referral".into(),
            }),
            requester: Some(v1::Requester {
                practitioner_id: "PR-S1".into(),
                ..Default::default()
            }),
            local_only: false,
            peer_deadline_ms: 0,
            include_family: false,
        })
        .await
        .expect("lookup")
        .into_inner();
    let took = started.elapsed();
    let answer = response
        .answers
        .iter()
        .find(|a| a.node_id.ends_with("/node/brighton"))
        .unwrap_or_else(|| panic!("no answer from brighton: {response:#?}"));
    assert_eq!(
        v1::NodeOutcome::try_from(answer.outcome),
        Ok(v1::NodeOutcome::Refused),
        "{response:#?}"
    );
    assert!(
        answer
            .detail
            .contains("refused this node at the tls handshake")
            && answer.detail.contains("CertificateRevoked"),
        "{}",
        answer.detail
    );
    // Named as soon as the peer said it, not at the deadline.
    assert!(
        took < Duration::from_millis(u64::from(DEADLINE_MS)),
        "took {took:?}"
    );
}
