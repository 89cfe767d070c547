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
