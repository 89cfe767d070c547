//! How the CLI on the node's machine reaches the running node: over the same
//! mutually authenticated TLS as any other client, by default as the node
//! itself (whoever can read the node's key can already act as the node).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::NodeConfig;
use crate::server::{NodeError, read_private_key};

/// The address the CLI dials: `cli.address`, else `api.listen` with a
/// wildcard address replaced by loopback.
pub fn cli_address(config: &NodeConfig) -> SocketAddr {
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
    #[error("cannot reach the node at {address}: {detail}")]
    Unreachable { address: SocketAddr, detail: String },
}

/// Opens a channel to the node `config` describes.
pub async fn connect(config: &NodeConfig) -> Result<Channel, ConnectError> {
    let (cert_file, key_file) = match (&config.cli.cert_file, &config.cli.key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => (config.tls.cert_file.clone(), config.tls.key_file.clone()),
    };
    let read = |key: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| NodeError::KeyMaterial {
            key,
            message: format!("cannot read {}: {e}", path.display()),
        })
    };
    let cert = read("cli.cert_file", &cert_file)?;
    let key = read_private_key("cli.key_file", &key_file)?;
    let ca = read(
        "cli.ca_file",
        config
            .cli
            .ca_file
            .as_ref()
            .unwrap_or(&config.tls.client_ca_file),
    )?;
    let address = cli_address(config);
    let server_name = config
        .cli
        .server_name
        .clone()
        .unwrap_or_else(|| "localhost".to_owned());
    let unreachable = |detail: String| ConnectError::Unreachable { address, detail };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(server_name);
    Endpoint::from_shared(format!("https://{address}"))
        .map_err(|e| unreachable(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))
}

/// An error with its causes, which for transport errors hold the useful part.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
