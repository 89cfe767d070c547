//! Calling a node over mutually authenticated TLS with our own connector
//! (tonic's cannot check CRLs or SPIFFE identities): the CLI on the node's
//! machine uses it to reach its node — by default as the node itself, since
//! whoever can read the node's key can already act as the node — and so will
//! a node calling its peers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use patchwork_certs::{OwnCertificate, SpiffeId, certs_from_pem, private_key_from_pem};
use rustls::pki_types::ServerName;
use tonic::transport::Channel;

use patchwork_server::base::config::NodeConfig;
use patchwork_server::transport::tls::{load_trust, read_own_chain};
use patchwork_server::{NodeError, read_private_key};

/// The address the CLI dials: `cli.address`, else `api.listen` with a
/// wildcard address replaced by loopback.
pub(crate) fn cli_address(config: &NodeConfig) -> SocketAddr {
    if let Some(address) = config.cli.address {
        return address;
    }
    let mut address = config.api.listen;
    if address.ip().is_unspecified() {
        address.set_ip(match address.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    address
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    KeyMaterial(#[from] NodeError),
    #[error("cannot reach {identity} at {address}: {detail}")]
    Unreachable {
        identity: SpiffeId,
        address: SocketAddr,
        detail: String,
    },
}

pub use patchwork_federation::transport::tls_channel;

/// Opens a channel to the node `config` describes, as the CLI.
pub async fn connect(config: &NodeConfig) -> Result<Channel, ConnectError> {
    connect_checking(config, true).await
}

/// Opens a channel for `patchwork reload`, which must reach the node even when a CRL on
/// disk is broken: judging the new files is the node's job, and its refusal is logged and
/// counted there. The CRLs are left out of checking the node's own certificate (the CA
/// and its identity still are checked) — the node is on this machine and the CLI
/// already holds its key.
pub(crate) async fn connect_for_reload(config: &NodeConfig) -> Result<Channel, ConnectError> {
    connect_checking(config, false).await
}

async fn connect_checking(config: &NodeConfig, with_crls: bool) -> Result<Channel, ConnectError> {
    // The node's certificate says whom to expect; its key is only read when
    // the CLI calls as the node (no `cli.cert_file`).
    let (node_chain, node_summary) = read_own_chain(&config.tls)?;
    let expected =
        patchwork_certs::identity_from_cert_der(node_chain[0].as_ref()).map_err(|e| {
            NodeError::KeyMaterial {
                key: "tls.cert_file",
                message: e.to_string(),
            }
        })?;
    let (trust, _) = if with_crls {
        load_trust(&config.tls)?
    } else {
        let mut section = config.tls.clone();
        section.crl_files.clear();
        load_trust(&section)?
    };
    let (cert_key, cert_file, key_key, key_file) =
        match (&config.cli.cert_file, &config.cli.key_file) {
            (Some(cert), Some(key)) => ("cli.cert_file", cert, "cli.key_file", key),
            _ => (
                "tls.cert_file",
                &config.tls.cert_file,
                "tls.key_file",
                &config.tls.key_file,
            ),
        };
    let chain = std::fs::read(cert_file)
        .map_err(|e| e.to_string())
        .and_then(|pem| certs_from_pem(&pem).map_err(|e| e.to_string()))
        .map_err(|message| NodeError::KeyMaterial {
            key: cert_key,
            message,
        })?;
    let key = private_key_from_pem(&read_private_key(key_key, key_file)?).map_err(|e| {
        NodeError::KeyMaterial {
            key: key_key,
            message: e.to_string(),
        }
    })?;
    let own = OwnCertificate::new(chain, key).map_err(|e| NodeError::KeyMaterial {
        key: cert_key,
        message: e.to_string(),
    })?;
    let address = cli_address(config);
    let server_name = match &config.cli.server_name {
        Some(name) => ServerName::try_from(name.clone()).map_err(|e| NodeError::KeyMaterial {
            key: "cli.server_name",
            message: e.to_string(),
        })?,
        None => node_summary
            .dns_names
            .into_iter()
            .next()
            .and_then(|name| ServerName::try_from(name).ok())
            .unwrap_or(ServerName::IpAddress(address.ip().into())),
    };
    let client = patchwork_certs::client_config(
        &own,
        &trust,
        expected.clone(),
        config.tls.min_version.into(),
    )
    .map_err(|e| NodeError::KeyMaterial {
        key: "tls.trust_bundle",
        message: e.to_string(),
    })?;
    tls_channel(
        address,
        server_name,
        Arc::new(client),
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| ConnectError::Unreachable {
        identity: expected,
        address,
        detail: error_chain(&e),
    })
}

/// An error with its causes, which for transport errors hold the useful part.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
