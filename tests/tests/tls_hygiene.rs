//! TLS hygiene, checked from outside with OpenSSL's own client (which, unlike
//! rustls, can still offer the old protocols and weak suites): no TLS 1.0 or
//! 1.1 ever, TLS 1.2 only when `min_version = "1.2"` and then only AEAD
//! suites with forward secrecy, and no 0-RTT early data even for a client
//! that asks for it on a resumed session.

use patchwork_server::base::config::TlsVersion;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use patchwork_certs::{TrustBundle, certs_from_pem, private_key_from_pem};
use patchwork_tests::{ClientCert, ClientGrant, NodeOptions, TestCa, TestNode};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;

const OPENSSL: &str = "/usr/bin/openssl";

async fn node(ca: &TestCa, client: &ClientCert) -> TestNode {
    TestNode::start_with(
        ca,
        "hygiene",
        &[ClientGrant {
            client,
            roles: &["lookup"],
        }],
        NodeOptions::default(),
    )
    .await
}

/// What `openssl s_client` made of a handshake with `node`: whether it got
/// a session, and everything it printed.
fn s_client(node: &TestNode, client_files: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(OPENSSL)
        .arg("s_client")
        .arg("-connect")
        .arg(node.addr.to_string())
        .arg("-cert")
        .arg(client_files.join("client.crt"))
        .arg("-key")
        .arg(client_files.join("client.key"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A session was agreed when OpenSSL names a real cipher.
    let agreed = text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (agreed, text)
}

fn write_client(dir: &Path, client: &ClientCert) {
    std::fs::write(dir.join("client.crt"), &client.cert_pem).expect("write cert");
    std::fs::write(dir.join("client.key"), &client.key_pem).expect("write key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_protocols_and_weak_suites_are_refused() {
    let ca = TestCa::new("hygiene.patchwork");
    let client = ca.client("probe");
    let files = tempfile::tempdir().expect("tempdir");
    write_client(files.path(), &client);
    let default_node = node(&ca, &client).await;

    // OpenSSL 3 will not offer TLS 1.0/1.1 at its default security level:
    // level 0 makes it try, so the refusal is the node's.
    for old in ["-tls1", "-tls1_1"] {
        let (agreed, text) = s_client(
            &default_node,
            files.path(),
            &[old, "-cipher", "DEFAULT@SECLEVEL=0"],
        );
        assert!(!agreed, "{old} must be refused:\n{text}");
        assert!(
            // rustls answers an old ClientHello with a fatal alert
            // (handshake_failure, 40), not by negotiating down.
            text.contains("alert handshake failure") || text.contains("alert protocol version"),
            "{old}: refused with an alert:\n{text}"
        );
    }
    // The default node speaks TLS 1.3 only.
    let (agreed, text) = s_client(&default_node, files.path(), &["-tls1_2"]);
    assert!(!agreed, "TLS 1.2 refused unless configured:\n{text}");
    let (agreed, text) = s_client(&default_node, files.path(), &["-tls1_3"]);
    assert!(agreed, "TLS 1.3 works:\n{text}");
    assert!(text.contains("TLSv1.3"), "{text}");
    // No TLS 1.3 suite outside rustls's strong set (CCM_8 has a short tag).
    let (agreed, text) = s_client(
        &default_node,
        files.path(),
        &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256"],
    );
    assert!(!agreed, "CCM_8 refused:\n{text}");

    // With min_version = "1.2": TLS 1.2 with ECDHE + AEAD only.
    let mut v12 = default_node;
    v12.stop().await;
    v12.edit_config(|config| config.tls.min_version = TlsVersion::Tls12);
    v12.start_again().await;
    let (agreed, text) = s_client(
        &v12,
        files.path(),
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    );
    assert!(
        agreed,
        "TLS 1.2 with a strong suite works once allowed:\n{text}"
    );
    for weak in [
        "ECDHE-ECDSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384",
        "AES128-GCM-SHA256",
        "AES128-SHA",
        "DES-CBC3-SHA",
    ] {
        let (agreed, text) = s_client(
            &v12,
            files.path(),
            &["-tls1_2", "-cipher", &format!("{weak}:@SECLEVEL=0")],
        );
        assert!(!agreed, "{weak} must be refused:\n{text}");
    }
    for old in ["-tls1", "-tls1_1"] {
        let (agreed, text) = s_client(&v12, files.path(), &[old, "-cipher", "DEFAULT@SECLEVEL=0"]);
        assert!(!agreed, "{old} refused with min_version 1.2 too:\n{text}");
    }
    v12.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_early_data_even_on_a_resumed_session() {
    let ca = TestCa::new("hygiene.patchwork");
    let client = ca.client("probe");
    let node = node(&ca, &client).await;
    let bundle = TrustBundle::new(
        certs_from_pem(ca.ca.cert_pem().as_bytes()).expect("ca pem"),
        Vec::new(),
    )
    .expect("bundle");
    let mut config =
        rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .dangerous()
            .with_custom_certificate_verifier(
                bundle
                    .server_verifier(node.identity.clone())
                    .expect("verifier"),
            )
            .with_client_auth_cert(
                certs_from_pem(client.cert_pem.as_bytes()).expect("cert"),
                private_key_from_pem(client.key_pem.as_bytes()).expect("key"),
            )
            .expect("client config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    // Ask for 0-RTT: the node must never grant it.
    config.enable_early_data = true;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").expect("name");

    let mut resumed = false;
    for attempt in 0..3 {
        let tcp = tokio::net::TcpStream::connect(node.addr)
            .await
            .expect("connect");
        let mut offered_early_data = false;
        let mut tls = connector
            .connect_with(name.clone(), tcp, |conn| {
                offered_early_data = conn.early_data().is_some();
            })
            .await
            .expect("handshake");
        let (_, conn) = tls.get_ref();
        assert!(
            !offered_early_data,
            "attempt {attempt}: the node's tickets allow no early data"
        );
        assert!(
            !conn.is_early_data_accepted(),
            "attempt {attempt}: no early data accepted"
        );
        resumed |= conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        // Read the server's first bytes so its session tickets arrive.
        let mut buffer = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_millis(500), tls.read(&mut buffer)).await;
    }
    // Resumption works, so the absence of early data is the node's choice.
    assert!(resumed, "a later connection resumed the session");
}

/// Issue 13, point 8: checking health with curl, as the operations guide says. OpenSSL
/// sends the CA it found in its own trust store after the leaf; the node accepts a chain
/// whose extra certificate is a trusted CA itself (and still refuses other extras).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_checks_health_with_the_ca_in_its_chain() {
    let ca = TestCa::new("hygiene.patchwork");
    let client = ca.client("monitor");
    let node = node(&ca, &client).await;
    let files = tempfile::tempdir().expect("tempdir");
    write_client(files.path(), &client);
    std::fs::write(files.path().join("ca.crt"), ca.ca.cert_pem()).expect("ca");
    // What OpenSSL sends: the leaf, then the root.
    std::fs::write(
        files.path().join("chain.crt"),
        format!("{}{}", client.cert_pem, ca.ca.cert_pem()),
    )
    .expect("chain");
    let curl = |cert: &str| {
        let out = Command::new("curl")
            .current_dir(files.path())
            .args(["-sS", "--http2-prior-knowledge", "--cacert", "ca.crt"])
            .args(["--cert", cert, "--key", "client.key"])
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .args(["--data-binary", "@-", "--output", "-"])
            .arg(format!(
                "https://127.0.0.1:{}/grpc.health.v1.Health/Check",
                node.addr.port()
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run curl");
        let mut child = out;
        // An empty HealthCheckRequest: one uncompressed gRPC frame of length 0.
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), &[0, 0, 0, 0, 0])
            .expect("write");
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("curl");
        (
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // HealthCheckResponse { status: SERVING (1) } in one frame.
    let serving = vec![0, 0, 0, 0, 2, 0x08, 0x01];
    let (body, err) = curl("client.crt");
    assert_eq!(body, serving, "{err}");
    let (body, err) = curl("chain.crt");
    assert_eq!(body, serving, "leaf + root is refused: {err}");

    // Another certificate after the leaf is still refused.
    let other = TestCa::new("other.patchwork");
    std::fs::write(
        files.path().join("odd.crt"),
        format!("{}{}", client.cert_pem, other.ca.cert_pem()),
    )
    .expect("odd chain");
    let (body, _) = curl("odd.crt");
    assert_ne!(body, serving);
}
