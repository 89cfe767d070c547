//! Starting and stopping a node: read and check its key material, open the
//! store, serve the gRPC services over TLS with client certificates until
//! shutdown, drain in-flight requests, flush the store last.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use patchwork_certs::{
    SpiffeId, certs_from_pem, identity_from_cert_der, private_key_from_pem, summarize_cert_der,
};
use patchwork_proto::v1::{
    admin_server::AdminServer, directory_server::DirectoryServer,
    federation_server::FederationServer,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::access::AccessPolicy;
use crate::config::{ConfigError, NodeConfig};
use crate::service::{AdminService, DirectoryService, FederationService, NodeState};
use crate::store::{Store, StoreError, StoreOptions};

/// Largest request or reply message: a full import batch fits with room.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{key}: {message}")]
    KeyMaterial { key: &'static str, message: String },
    #[error("store in {path}: {source}")]
    Store { path: String, source: StoreError },
    #[error("serving failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

fn key_error(key: &'static str, message: impl Into<String>) -> NodeError {
    NodeError::KeyMaterial {
        key,
        message: message.into(),
    }
}

/// The node's own TLS material, read from the files its config names and
/// checked before anything listens.
#[derive(Clone)]
pub struct KeyMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Vec<u8>,
    pub identity: SpiffeId,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))
}

/// Reads a private key, refusing one other users could read: a node key that
/// leaked lets anyone speak as this council.
pub fn read_private_key(key: &'static str, path: &Path) -> Result<Vec<u8>, NodeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path)
            .map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_error(
                key,
                format!(
                    "{} is readable by group or others (mode {mode:o}); run chmod 600 on it",
                    path.display()
                ),
            ));
        }
    }
    read_file(key, path)
}

impl KeyMaterial {
    pub fn load(config: &NodeConfig) -> Result<Self, NodeError> {
        let cert_pem = read_file("tls.cert_file", &config.tls.cert_file)?;
        let key_pem = read_private_key("tls.key_file", &config.tls.key_file)?;
        let client_ca_pem = read_file("tls.client_ca_file", &config.tls.client_ca_file)?;
        let certs =
            certs_from_pem(&cert_pem).map_err(|e| key_error("tls.cert_file", e.to_string()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| key_error("tls.cert_file", "holds no certificate"))?;
        let identity = identity_from_cert_der(leaf.as_ref())
            .map_err(|e| key_error("tls.cert_file", e.to_string()))?;
        let summary = summarize_cert_der(leaf.as_ref())
            .map_err(|e| key_error("tls.cert_file", e.to_string()))?;
        if summary.not_after < time::OffsetDateTime::now_utc() {
            return Err(key_error(
                "tls.cert_file",
                format!("the node's certificate expired on {}", summary.not_after),
            ));
        }
        private_key_from_pem(&key_pem).map_err(|e| key_error("tls.key_file", e.to_string()))?;
        certs_from_pem(&client_ca_pem)
            .map_err(|e| key_error("tls.client_ca_file", e.to_string()))?;
        Ok(KeyMaterial {
            cert_pem,
            key_pem,
            client_ca_pem,
            identity,
        })
    }
}

/// Runs a node on `listener` until `shutdown` completes, then drains and
/// flushes. `main` passes a bound port and SIGTERM; tests pass `127.0.0.1:0`
/// and their own signal.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let material = KeyMaterial::load(&config)?;
    let store_dir = config.store_dir();
    let options = StoreOptions {
        cache_capacity_bytes: config.store.cache_mb * 1024 * 1024,
    };
    let store = {
        let dir = store_dir.clone();
        tokio::task::spawn_blocking(move || Store::open(&dir, &options))
            .await
            .map_err(|_| NodeError::Store {
                path: store_dir.display().to_string(),
                source: StoreError::Invalid {
                    field: "store",
                    message: "opening the store failed".into(),
                },
            })?
            .map_err(|source| NodeError::Store {
                path: store_dir.display().to_string(),
                source,
            })?
    };
    let state = NodeState {
        store: store.clone(),
        access: Arc::new(AccessPolicy::new(material.identity.clone(), &config.api)),
        node_identity: material.identity.clone(),
        display_name: config.node.display_name.clone(),
        default_id_scheme: config.node.default_id_scheme.clone(),
        spool_dir: config.node.data_dir.join("spool"),
    };
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&material.cert_pem, &material.key_pem))
        .client_ca_root(Certificate::from_pem(&material.client_ca_pem));
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        // serve_with_incoming ignores Server::tcp_nodelay.
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    tracing::info!(
        identity = %material.identity,
        listen = %config.api.listen,
        "node serving"
    );
    let served = Server::builder()
        .tls_config(tls)?
        .concurrency_limit_per_connection(config.api.max_concurrent_requests_per_connection)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(
            DirectoryServer::new(DirectoryService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            AdminServer::new(AdminService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(FederationServer::new(FederationService))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    // Flush last, whatever happened: everything acknowledged is already on
    // disk, this only saves sled's next start some work.
    let flushed = store.flush().await;
    tracing::info!("node stopped");
    served?;
    flushed.map_err(|source| NodeError::Store {
        path: store_dir.display().to_string(),
        source,
    })
}
