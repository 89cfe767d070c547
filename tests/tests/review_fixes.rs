//! Regression tests for defects a review found, each through a real node:
//! a trusted CA vouching for another trust domain through a lookalike
//! intermediate; idle connections locking everyone else out of the
//! handshake; an import aborted mid-stream applying what it had sent.

use std::time::{Duration, Instant};

use patchwork_node::client::error_chain;
use patchwork_tests::{ClientCert, ClientGrant, NodeOptions, TRUST_DOMAIN, TestCa, TestNode, v1};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Connects as `client` and makes one call; how it was refused, or None if
/// it worked (a refusal can surface at connect or at the first call).
async fn refusal(node: &TestNode, client: &ClientCert) -> Option<String> {
    let channel = match node.try_channel(client).await {
        Ok(channel) => channel,
        Err(error) => return Some(error_chain(&error)),
    };
    match v1::admin_client::AdminClient::new(channel)
        .get_trust_status(v1::GetTrustStatusRequest {})
        .await
    {
        Ok(_) => None,
        Err(status) => {
            let cause = std::error::Error::source(&status)
                .map(error_chain)
                .unwrap_or_default();
            Some(format!("{:?}: {} {cause}", status.code(), status.message()))
        }
    }
}

/// `foreign` (trusted, for its own domain) signs an intermediate named
/// exactly like `home`'s CA, and under it a leaf claiming `name` in `home`'s
/// trust domain. The chain is sent whole: leaf, then intermediate.
fn lookalike_chain(home: &TestCa, foreign: &TestCa, name: &str) -> ClientCert {
    let foreign_issuer = Issuer::from_ca_cert_pem(
        foreign.ca.cert_pem(),
        KeyPair::from_pem(&foreign.ca.key_pem()).expect("foreign key"),
    )
    .expect("foreign issuer");
    let now = time::OffsetDateTime::now_utc();
    // TestCa names its CA "<trust domain> test CA", as CN and O.
    let home_name = format!("{} test CA", home.ca.trust_domain());
    let mut named_like_home = DistinguishedName::new();
    named_like_home.push(DnType::CommonName, home_name.as_str());
    named_like_home.push(DnType::OrganizationName, home_name.as_str());
    let mut intermediate = CertificateParams::default();
    intermediate.distinguished_name = named_like_home;
    intermediate.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    intermediate.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    intermediate.not_before = now - time::Duration::hours(1);
    intermediate.not_after = now + time::Duration::days(1);
    let intermediate_key = KeyPair::generate().expect("key");
    let intermediate_cert = intermediate
        .signed_by(&intermediate_key, &foreign_issuer)
        .expect("sign intermediate");

    let identity = patchwork_certs::SpiffeId::client(home.ca.trust_domain(), name).expect("id");
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().expect("uri"))];
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.not_before = now - time::Duration::hours(1);
    leaf.not_after = now + time::Duration::days(1);
    let leaf_key = KeyPair::generate().expect("key");
    let leaf_cert = leaf
        .signed_by(&leaf_key, &Issuer::new(intermediate, intermediate_key))
        .expect("sign leaf");
    ClientCert {
        identity,
        cert_pem: format!("{}{}", leaf_cert.pem(), intermediate_cert.pem()),
        key_pem: leaf_key.serialize_pem(),
    }
}

#[tokio::test]
async fn a_trusted_ca_cannot_impersonate_another_domain_through_a_lookalike_intermediate() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let victoria = TestCa::new("victoria.example");
    let admin = ca.client("admin");
    let node = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        NodeOptions {
            extra_trust: vec![victoria.ca.cert_pem().to_owned()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(refusal(&node, &admin).await, None, "the real admin gets in");

    let forged = lookalike_chain(&ca, &victoria, "admin");
    assert_eq!(forged.identity, admin.identity);
    let refused = refusal(&node, &forged)
        .await
        .expect("Victoria's CA cannot vouch for the test domain's admin");
    // Refused in the handshake itself (a chain with an intermediate), not
    // later by the identity check.
    assert!(refused.contains("CertificateUnknown"), "{refused}");
}

#[tokio::test]
async fn idle_connections_from_one_host_do_not_lock_everyone_else_out() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let node = TestNode::start_with(
        &ca,
        "surrey",
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        NodeOptions {
            // Long enough that waiting for an idle handshake to time out
            // would fail the deadline below.
            handshake_timeout_ms: Some(30_000),
            ..Default::default()
        },
    )
    .await;

    // More idle connections than the node has handshake slots, all from
    // 127.0.0.2, none of them ever saying hello.
    let mut idle = Vec::new();
    for _ in 0..600 {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.2:0".parse().expect("addr"))
            .expect("bind 127.0.0.2");
        idle.push(socket.connect(node.addr).await.expect("connect"));
    }

    // A real client from 127.0.0.1 still gets in, and quickly.
    let started = Instant::now();
    assert_eq!(refusal(&node, &admin).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    drop(idle);
}

#[tokio::test]
async fn an_import_stream_with_an_empty_message_is_refused_and_applies_nothing() {
    // The CLI aborts an import this way when its file changes between its
    // two passes: ending the stream instead would apply what was sent.
    let ca = TestCa::new(TRUST_DOMAIN);
    let node = TestNode::start(&ca, "surrey", &[]).await;
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let messages = [
        v1::import_request::Item::Header(v1::ImportHeader {
            kind: v1::RecordKind::Organisation as i32,
            dry_run: false,
            skip_bad_rows: true,
            source: "organisations.csv".into(),
        }),
        v1::import_request::Item::Batch(v1::ImportBatch {
            rows: vec![v1::ImportRow {
                line: 2,
                record: Some(v1::import_row::Record::Organisation(
                    patchwork_tests::organisation("O1", "Surrey CC", v1::Sector::SocialCare),
                )),
            }],
        }),
    ];
    for item in messages {
        sender
            .send(v1::ImportRequest { item: Some(item) })
            .await
            .expect("queue");
    }
    sender
        .send(v1::ImportRequest { item: None })
        .await
        .expect("queue");
    drop(sender);
    let status = node
        .admin()
        .await
        .import(ReceiverStream::new(receiver))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(node.stats().await.organisations, 0, "nothing was applied");
}
