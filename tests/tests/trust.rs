//! Trust between nodes and their callers, with real handshakes: every way a
//! certificate can be wrong is refused, each with its exact refusal; CRLs
//! loaded at start and swapped in at run time cut peers off, live connections
//! included; a node's own certificate rotates under load without one failed
//! request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use patchwork_certs::{LeafParams, SpiffeId, TrustBundle, certs_from_pem};
use patchwork_cli::work::client::error_chain;
use patchwork_tests::hardening::custom_node_leaf;
use patchwork_tests::{
    ClientCert, ClientGrant, NodeOptions, TRUST_DOMAIN, TestCa, TestNode, refusal, v1,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tonic::Code;

async fn node_with(ca: &TestCa, clients: &[ClientGrant<'_>], options: NodeOptions) -> TestNode {
    TestNode::start_with(ca, "surrey", clients, options).await
}

fn issue_with(
    ca: &TestCa,
    name: &str,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> ClientCert {
    let identity = SpiffeId::client(TRUST_DOMAIN, name).expect("identity");
    let issued = ca
        .ca
        .issue_with_validity(
            &LeafParams {
                identity: identity.clone(),
                dns_names: vec![],
                ip_addresses: vec![],
                validity_days: 1,
            },
            not_before,
            not_after,
        )
        .expect("issue");
    ClientCert {
        identity,
        cert_pem: issued.cert_pem,
        key_pem: issued.key_pem,
    }
}

#[tokio::test]
async fn certificates_that_are_wrong_are_refused_each_with_its_reason() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let now = time::OffsetDateTime::now_utc();
    let admin = ca.client("admin");
    let expired = issue_with(
        &ca,
        "expired",
        now - time::Duration::days(10),
        now - time::Duration::days(1),
    );
    let not_yet = issue_with(
        &ca,
        "early",
        now + time::Duration::days(1),
        now + time::Duration::days(2),
    );
    let no_client_auth = ca.custom_leaf("server-only", |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    let ca_leaf = ca.custom_leaf("sneaky-ca", |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages.push(rcgen::KeyUsagePurpose::KeyCertSign);
    });
    let two_identities = ca.custom_leaf("twins", |p| {
        p.subject_alt_names.push(rcgen::SanType::URI(
            format!("spiffe://{TRUST_DOMAIN}/client/admin")
                .try_into()
                .expect("uri"),
        ));
    });
    let unconfigured = ca.client("stranger");
    let foreign = TestCa::new("elsewhere.example").client("admin");
    let everyone = [
        "admin",
        "expired",
        "early",
        "server-only",
        "sneaky-ca",
        "twins",
    ];
    let grants: Vec<_> = [
        &admin,
        &expired,
        &not_yet,
        &no_client_auth,
        &ca_leaf,
        &two_identities,
    ]
    .into_iter()
    .zip(everyone)
    .map(|(client, _)| ClientGrant {
        client,
        roles: &["admin"],
    })
    .collect();
    let node = node_with(&ca, &grants, NodeOptions::default()).await;

    assert_eq!(
        refusal(&node, &admin).await,
        None,
        "the configured admin gets in"
    );
    let cases: [(&str, &ClientCert, &str); 7] = [
        ("unknown CA", &foreign, "UnknownCA"),
        ("expired", &expired, "CertificateExpired"),
        ("not yet valid", &not_yet, "CertificateExpired"),
        (
            "no clientAuth EKU",
            &no_client_auth,
            "UnsupportedCertificate",
        ),
        ("CA:TRUE leaf", &ca_leaf, "CertificateUnknown"),
        (
            "two URI SANs",
            &two_identities,
            "Unauthenticated: client certificate: certificate has 2 URI SANs, expected exactly one",
        ),
        (
            "identity not configured",
            &unconfigured,
            "PermissionDenied: spiffe://test.patchwork/client/stranger is not a configured client of this node",
        ),
    ];
    for (case, client, expected) in cases {
        let refused = refusal(&node, client)
            .await
            .unwrap_or_else(|| panic!("{case}: was let in"));
        assert!(
            refused.contains(expected),
            "{case}: expected {expected:?}, got {refused}"
        );
    }

    // The handshake alert is coarse; the node's verifier says exactly why.
    let bundle = TrustBundle::new(
        certs_from_pem(ca.ca.cert_pem().as_bytes()).expect("ca"),
        vec![],
    )
    .expect("bundle");
    let why = |client: &ClientCert| {
        let chain = certs_from_pem(client.cert_pem.as_bytes()).expect("pem");
        bundle
            .verify_client_chain(&chain, rustls::pki_types::UnixTime::now())
            .expect_err("refused")
            .to_string()
    };
    assert!(
        why(&ca_leaf).contains("CaUsedAsEndEntity"),
        "{}",
        why(&ca_leaf)
    );
    assert!(
        why(&no_client_auth)
            .contains("does not allow extended key usage for client authentication"),
        "{}",
        why(&no_client_auth)
    );
}

/// webpki checks an extended key usage only when the extension is present:
/// a leaf with none at all passed as a client and as a server. Both ends now
/// require the purpose explicitly.
#[tokio::test]
async fn a_certificate_without_the_purpose_it_is_used_for_is_refused_both_ways() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let no_eku = ca.custom_leaf("no-eku", |p| p.extended_key_usages.clear());
    let node = node_with(
        &ca,
        &[
            ClientGrant {
                client: &admin,
                roles: &["admin"],
            },
            ClientGrant {
                client: &no_eku,
                roles: &["admin"],
            },
        ],
        NodeOptions::default(),
    )
    .await;

    // As a client: refused in the handshake, though the identity is configured.
    let refused = refusal(&node, &no_eku).await.expect("no EKU: was let in");
    assert!(refused.contains("CertificateUnknown"), "{refused}");
    let bundle = TrustBundle::new(
        certs_from_pem(ca.ca.cert_pem().as_bytes()).expect("ca"),
        vec![],
    )
    .expect("bundle");
    let chain = certs_from_pem(no_eku.cert_pem.as_bytes()).expect("pem");
    let why = bundle
        .verify_client_chain(&chain, rustls::pki_types::UnixTime::now())
        .expect_err("no EKU refused")
        .to_string();
    assert!(
        why.contains("has no extended key usage; clientAuth is required"),
        "{why}"
    );
    assert_eq!(
        refusal(&node, &admin).await,
        None,
        "the admin still gets in"
    );

    // As a server: the node presents a certificate with no EKU, then one for
    // clientAuth only; a client connecting to it refuses both. The reloads
    // go over one connection opened while the node's certificate was good.
    let mut operator = node.admin().await;
    let good = node.node_cert.clone();
    let servers = [
        (
            custom_node_leaf(&ca, "surrey", |p| p.extended_key_usages.clear()),
            Some("has no extended key usage; serverAuth is required"),
        ),
        (
            custom_node_leaf(&ca, "surrey", |p| {
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            }),
            Some("does not allow extended key usage for server authentication"),
        ),
        (good, None),
    ];
    for (server_cert, expected) in servers {
        node.replace_file("node.crt", &server_cert.cert_pem, false);
        node.replace_file("node.key", &server_cert.key_pem, true);
        operator
            .reload(v1::ReloadRequest {})
            .await
            .expect("the node takes the new certificate");
        let connected = node.try_channel(&admin).await;
        match expected {
            Some(expected) => {
                let text = error_chain(&connected.expect_err("the server is refused"));
                assert!(text.contains(expected), "{text}");
            }
            None => {
                connected.expect("the node's proper certificate is accepted again");
            }
        }
    }
}

#[tokio::test]
async fn a_client_checks_it_reached_the_node_it_meant() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let node = node_with(
        &ca,
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        NodeOptions::default(),
    )
    .await;
    let brighton = SpiffeId::node(TRUST_DOMAIN, "brighton").expect("identity");
    let error = node
        .channel_expecting(&admin, &brighton, &[ca.ca.cert_pem().to_owned()])
        .await
        .expect_err("wrong server identity");
    let text = error_chain(&error);
    assert!(
        text.contains("server identity is spiffe://test.patchwork/node/surrey, expected spiffe://test.patchwork/node/brighton"),
        "{text}"
    );
    // A server whose CA the client does not trust.
    let other = TestCa::new("other.example");
    let error = node
        .channel_expecting(&admin, &node.identity, &[other.ca.cert_pem().to_owned()])
        .await
        .expect_err("unknown server CA");
    assert!(
        error_chain(&error).contains("UnknownIssuer"),
        "{}",
        error_chain(&error)
    );
}

#[tokio::test]
async fn revocation_at_start_and_at_run_time_cuts_peers_off_even_on_live_connections() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let revoked_early = ca.client("revoked-early");
    let portal = ca.client("portal");
    let grants = [
        ClientGrant {
            client: &admin,
            roles: &["admin"],
        },
        ClientGrant {
            client: &revoked_early,
            roles: &["admin"],
        },
        ClientGrant {
            client: &portal,
            roles: &["admin"],
        },
    ];
    let node = node_with(
        &ca,
        &grants,
        NodeOptions {
            crl: Some(ca.crl(&[&revoked_early], 7)),
            ..Default::default()
        },
    )
    .await;
    let refused = refusal(&node, &revoked_early)
        .await
        .expect("revoked at start");
    assert!(refused.contains("CertificateRevoked"), "{refused}");
    assert_eq!(refusal(&node, &portal).await, None);

    // The portal holds a live connection; its certificate is revoked and the
    // new CRL swapped in while the connection stays open.
    let mut live =
        v1::admin_client::AdminClient::new(node.try_channel(&portal).await.expect("connect"));
    live.get_trust_status(v1::GetTrustStatusRequest {})
        .await
        .expect("before revocation");
    node.replace_file("crl.pem", &ca.crl(&[&revoked_early, &portal], 7), false);
    let reloaded = node.reload().await.expect("reload");
    assert!(reloaded.status.expect("status").generation >= 2);
    let status = live
        .get_trust_status(v1::GetTrustStatusRequest {})
        .await
        .expect_err("cut off on the live connection");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("no longer trusted") && status.message().contains("Revoked"),
        "{}",
        status.message()
    );
    let refused = refusal(&node, &portal)
        .await
        .expect("new connections refused too");
    assert!(refused.contains("CertificateRevoked"), "{refused}");
    assert_eq!(refusal(&node, &admin).await, None, "others are unaffected");
}

#[tokio::test]
async fn expired_crls_and_bad_files_fail_closed_and_a_bad_reload_changes_nothing() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let node = node_with(
        &ca,
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        NodeOptions {
            crl: Some(ca.crl(&[], 7)),
            ..Default::default()
        },
    )
    .await;

    // An expired CRL is refused at reload: the node keeps the old one.
    node.replace_file("crl.pem", &ca.crl(&[], -1), false);
    let refused = node.reload().await.expect_err("expired CRL");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("tls.crl_files") && refused.message().contains("expired"),
        "{}",
        refused.message()
    );
    assert_eq!(
        refusal(&node, &admin).await,
        None,
        "the old material stays in force"
    );

    // A certificate with a key that does not fit it.
    let other = ca.node_cert("surrey");
    node.replace_file("crl.pem", &ca.crl(&[], 7), false);
    node.replace_file("node.crt", &other.cert_pem, false);
    let refused = node.reload().await.expect_err("mismatched key");
    assert!(
        refused.message().contains("tls.cert_file") && refused.message().contains("does not fit"),
        "{}",
        refused.message()
    );
    assert_eq!(refusal(&node, &admin).await, None);
    node.replace_file("node.crt", &node.node_cert.cert_pem, false);

    // A node never starts with an expired CRL.
    let config = node.config();
    let mut broken = config.clone();
    node.replace_file("crl.pem", &ca.crl(&[], -1), false);
    broken.api.listen = "127.0.0.1:9".parse().expect("addr");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = patchwork_server::run(broken, listener, async {})
        .await
        .expect_err("expired CRL at start");
    assert!(
        error.to_string().starts_with("tls.crl_files: ") && error.to_string().contains("expired"),
        "{error}"
    );

    // And a verifier facing an expired CRL refuses the chain.
    let bundle = TrustBundle::new(
        certs_from_pem(ca.ca.cert_pem().as_bytes()).expect("ca"),
        patchwork_certs::crls_from_pem(ca.crl(&[], -1).as_bytes()).expect("crl"),
    )
    .expect("bundle");
    let chain = certs_from_pem(admin.cert_pem.as_bytes()).expect("pem");
    let why = bundle
        .verify_client_chain(&chain, rustls::pki_types::UnixTime::now())
        .expect_err("expired CRL")
        .to_string();
    assert!(why.contains("certificate revocation list expired"), "{why}");
}

#[tokio::test]
async fn another_regions_ca_is_trusted_only_once_an_operator_adds_it() {
    let surrey = TestCa::new(TRUST_DOMAIN);
    let victoria = TestCa::new("vic.patchwork");
    let melbourne = victoria.client("melbourne-portal");
    let grants = [ClientGrant {
        client: &melbourne,
        roles: &["admin"],
    }];
    let without = node_with(&surrey, &grants, NodeOptions::default()).await;
    let refused = refusal(&without, &melbourne)
        .await
        .expect("not trusted yet");
    assert!(refused.contains("UnknownCA"), "{refused}");
    let with = node_with(
        &surrey,
        &grants,
        NodeOptions {
            extra_trust: vec![victoria.ca.cert_pem().to_owned()],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(refusal(&with, &melbourne).await, None);
}

#[tokio::test]
async fn tls_1_2_is_refused_unless_configured_as_the_floor() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let node = node_with(
        &ca,
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        NodeOptions::default(),
    )
    .await;
    let bundle = TrustBundle::new(
        certs_from_pem(ca.ca.cert_pem().as_bytes()).expect("ca"),
        vec![],
    )
    .expect("bundle");
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
            .dangerous()
            .with_custom_certificate_verifier(
                bundle
                    .server_verifier(node.identity.clone())
                    .expect("verifier"),
            )
            .with_client_auth_cert(
                certs_from_pem(admin.cert_pem.as_bytes()).expect("pem"),
                patchwork_certs::private_key_from_pem(admin.key_pem.as_bytes()).expect("key"),
            )
            .expect("config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("tcp");
    let error = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect_err("TLS 1.2 refused");
    assert!(error.to_string().contains("ProtocolVersion"), "{error}");
}

/// The serial of the certificate a node presents to a new connection.
async fn presented_serial(node: &TestNode, client: &ClientCert) -> String {
    let bundle = TrustBundle::new(
        certs_from_pem(node_ca_pem(node).as_bytes()).expect("ca"),
        vec![],
    )
    .expect("bundle");
    let config = patchwork_certs::client_config(
        &client.own(),
        &bundle,
        node.identity.clone(),
        patchwork_certs::MinTlsVersion::Tls13,
    )
    .expect("config");
    let tcp = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("tcp");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("handshake");
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .clone();
    patchwork_certs::summarize_cert_der(leaf.as_ref())
        .expect("summary")
        .serial_hex
}

fn node_ca_pem(node: &TestNode) -> String {
    std::fs::read_to_string(node.dir.path().join("ca.crt")).expect("ca.crt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_nodes_certificate_under_load_fails_no_request() {
    let ca = TestCa::new(TRUST_DOMAIN);
    let portal = ca.client("portal");
    let node = node_with(
        &ca,
        &[ClientGrant {
            client: &portal,
            roles: &["records", "lookup"],
        }],
        NodeOptions::default(),
    )
    .await;
    let mut directory = node.directory(&portal).await;
    directory
        .create_organisation(v1::CreateOrganisationRequest {
            organisation: Some(patchwork_tests::organisation(
                "ORG-1",
                "Children's Services",
                v1::Sector::SocialCare,
            )),
        })
        .await
        .expect("organisation");
    directory
        .create_practitioner(v1::CreatePractitionerRequest {
            practitioner: Some(patchwork_tests::practitioner(
                "PR-1",
                "Sam Okafor",
                "Social worker",
                "ORG-1",
            )),
        })
        .await
        .expect("practitioner");
    let before = presented_serial(&node, &portal).await;

    let node = Arc::new(node);
    let stop = Arc::new(AtomicU64::new(0));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for worker in 0..6 {
        let (node, portal, stop, ok, failed) = (
            node.clone(),
            portal.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut round = 0u64;
            while stop.load(Ordering::SeqCst) == 0 {
                // Half the workers reconnect every few calls, so handshakes
                // happen before, during and after the rotation.
                let channel = node.try_channel(&portal).await;
                let Ok(channel) = channel else {
                    failed.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let mut client = v1::directory_client::DirectoryClient::new(channel);
                let calls = if worker % 2 == 0 { 5 } else { 50 };
                for _ in 0..calls {
                    let subject = v1::Demographics {
                        given_name: "Amelia".into(),
                        family_name: "Smith".into(),
                        date_of_birth: patchwork_tests::date(2015, 3, 14),
                        ..Default::default()
                    };
                    match client
                        .lookup(patchwork_tests::lookup_request(subject, "PR-1"))
                        .await
                    {
                        Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                        Err(_) => failed.fetch_add(1, Ordering::SeqCst),
                    };
                }
                round += 1;
            }
            round
        }));
    }
    // Let load build, rotate, let load run on.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok.load(Ordering::SeqCst) < 200 {
        assert!(Instant::now() < deadline, "load never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Two rotations, each followed by a stretch of load.
    let mut renewed = ca.node_cert("surrey");
    for rotation in 0..2 {
        renewed = ca.node_cert("surrey");
        node.replace_file("node.key", &renewed.key_pem, true);
        node.replace_file("node.crt", &renewed.cert_pem, false);
        node.reload()
            .await
            .expect("reload with the renewed certificate");
        let at_rotation = ok.load(Ordering::SeqCst);
        while ok.load(Ordering::SeqCst) < at_rotation + 1000 {
            assert!(
                Instant::now() < deadline,
                "load stalled after rotation {rotation}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(1, Ordering::SeqCst);
    for worker in load {
        worker.await.expect("worker");
    }
    let after = presented_serial(&node, &portal).await;
    eprintln!(
        "{} lookups, {} failed, across a rotation",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "no request may fail across a rotation"
    );
    assert_ne!(before, after, "new connections see the renewed certificate");
    assert_eq!(after, renewed.serial_hex());
}

#[tokio::test]
async fn a_stalled_handshake_times_out_without_holding_up_anyone_else() {
    use tokio::io::AsyncReadExt;
    let ca = TestCa::new(TRUST_DOMAIN);
    let admin = ca.client("admin");
    let node = node_with(
        &ca,
        &[ClientGrant {
            client: &admin,
            roles: &["admin"],
        }],
        NodeOptions::default().with(|config| config.tls.handshake_timeout_ms = 300),
    )
    .await;
    // Connects and never says hello.
    let mut stalled = tokio::net::TcpStream::connect(node.addr)
        .await
        .expect("tcp");
    let started = Instant::now();
    // Meanwhile, others connect and are served.
    for _ in 0..3 {
        assert_eq!(refusal(&node, &admin).await, None);
    }
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buffer))
        .await
        .expect("the node drops a stalled handshake");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without a TLS session: {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "dropped after the timeout, not before: {waited:?}"
    );
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
