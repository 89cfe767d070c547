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
    let listeners = patchwork_node::Listeners {
        api: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        metrics: Some(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        ),
    };
    let run = patchwork_node::run_with(node.config(), listeners, std::future::pending());
    match tokio::time::timeout(std::time::Duration::from_secs(20), run).await {
        Ok(Err(error)) => error.to_string(),
        Ok(Ok(())) => panic!("the node started and stopped"),
        Err(_) => panic!("the node started"),
    }
}
