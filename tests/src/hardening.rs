//! Attacker-shaped material for the hardening tests (issue 12, findings 8–10):
//! node certificates a CA's policy would never issue, and file-mode checks
//! for what a node writes.

use crate::{ClientCert, TestCa};
use patchwork_certs::SpiffeId;

/// A node certificate for `name` (node identity, `localhost` and 127.0.0.1)
/// signed by `ca`, starting from the policy's shape and then changed by
/// `shape` — e.g. with no extended key usage at all, or clientAuth only.
pub fn custom_node_leaf(
    ca: &TestCa,
    name: &str,
    shape: impl FnOnce(&mut rcgen::CertificateParams),
) -> ClientCert {
    let identity = SpiffeId::node(ca.ca.trust_domain(), name).expect("node identity");
    let mut cert = ca.custom_leaf(name, |params| {
        params.subject_alt_names = vec![
            rcgen::SanType::URI(identity.to_string().try_into().expect("uri")),
            rcgen::SanType::DnsName("localhost".try_into().expect("dns")),
            rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")),
        ];
        shape(params);
    });
    cert.identity = identity;
    cert
}

/// Everything under `top` (a folder, itself included) that a user other
/// than the owner could read: a file readable by others, or a folder they
/// may list, with every folder from `top` down to it open to them (`o+x`).
/// Folders above `top` are not considered: a test's temporary folder is
/// private already, a real data folder's parent (e.g. /var/lib) is not.
#[cfg(unix)]
pub fn readable_by_others(top: &std::path::Path) -> Vec<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mut open = Vec::new();
    let mut folders = vec![top.to_owned()];
    while let Some(folder) = folders.pop() {
        let mode = std::fs::metadata(&folder)
            .expect("metadata")
            .permissions()
            .mode();
        if mode & 0o004 != 0 {
            open.push(folder.clone());
        }
        if mode & 0o001 == 0 {
            continue; // others cannot reach anything inside
        }
        for entry in std::fs::read_dir(&folder).expect("read_dir") {
            let path = entry.expect("entry").path();
            let metadata = std::fs::symlink_metadata(&path).expect("metadata");
            if metadata.is_dir() {
                folders.push(path);
            } else if metadata.permissions().mode() & 0o004 != 0 {
                open.push(path);
            }
        }
    }
    open
}

/// A file's or folder's permission bits.
#[cfg(unix)]
pub fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

/// Starts `node`'s config (the node stopped) expecting the start to be
/// refused; returns the error as the binary would print it.
pub async fn start_refused(node: &crate::TestNode) -> String {
    let listeners = patchwork_server::Listeners {
        api: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        metrics: Some(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        ),
    };
    let run = patchwork_server::run_with(node.config(), listeners, std::future::pending());
    match tokio::time::timeout(std::time::Duration::from_secs(20), run).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(())) => panic!("the node started and stopped"),
        Err(_) => panic!("the node started"),
    }
}

/// One request a webhook receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The request line and headers.
    pub head: String,
    pub event_id: String,
    pub signature: String,
    pub body: String,
    /// What the receiver answered.
    pub status: u16,
}

/// A header's value in a request head (names are case-insensitive).
pub fn header(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default()
}

/// A TLS server config for a webhook receiver presenting `cert` (no client
/// certificates asked for), ring only like the rest of the workspace.
pub fn receiver_tls(cert: &ClientCert) -> std::sync::Arc<rustls::ServerConfig> {
    let chain = patchwork_certs::certs_from_pem(cert.cert_pem.as_bytes()).expect("pem");
    let key = patchwork_certs::private_key_from_pem(cert.key_pem.as_bytes()).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("receiver certificate");
    std::sync::Arc::new(config)
}

/// A webhook receiver on `listener`, over TLS when `tls` is given: answers
/// 500 to the first `failures` requests, then 200, one request per
/// connection; reports each request, and each failed TLS handshake as
/// `Err(reason)`.
pub async fn webhook_receiver(
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    failures: usize,
    report: tokio::sync::mpsc::Sender<Result<Delivery, String>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut seen = 0;
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let delivery = match &acceptor {
            Some(acceptor) => match acceptor.accept(socket).await {
                Ok(stream) => answer(stream, &mut seen, failures).await,
                Err(error) => Some(Err(format!("tls handshake failed: {error}"))),
            },
            None => answer(socket, &mut seen, failures).await,
        };
        if let Some(delivery) = delivery
            && report.send(delivery).await.is_err()
        {
            return;
        }
    }
}

/// Reads one request from `stream` and answers it; None if the client went
/// away before sending one.
async fn answer(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    seen: &mut usize,
    failures: usize,
) -> Option<Result<Delivery, String>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let read = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) if data.is_empty() => return None,
            Ok(0) => return Some(Err("request cut short".into())),
            Ok(read) => read,
            Err(error) => return Some(Err(format!("reading the request: {error}"))),
        };
        data.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = header(head, "content-length").parse().unwrap_or(0);
            if body.len() >= length {
                break (head.to_owned(), body[..length].to_owned());
            }
        }
    };
    *seen += 1;
    let status = if *seen <= failures { 500 } else { 200 };
    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
    Some(Ok(Delivery {
        event_id: header(&head, "x-patchwork-event-id"),
        signature: header(&head, "x-patchwork-signature"),
        head,
        body,
        status,
    }))
}

/// Checks `delivery`'s `X-Patchwork-Signature` (sha256=<hex HMAC>) against
/// its body with `secret`.
pub fn signature_verifies(delivery: &Delivery, secret: &[u8]) -> bool {
    let Some(hex) = delivery.signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = hex::decode(hex) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, delivery.body.as_bytes(), &tag).is_ok()
}
