//! Starting and stopping a node: read and check its key material, open the
//! store, serve the gRPC services over our own TLS acceptor until shutdown,
//! reload TLS material on SIGHUP, drain in-flight requests, flush the store
//! last.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use patchwork_proto::v1::{
    admin_server::AdminServer, directory_server::DirectoryServer,
    federation_server::FederationServer,
};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::access::AccessPolicy;
use crate::config::{ConfigError, NodeConfig};
use crate::service::{AdminService, DirectoryService, FederationService, NodeState};
use crate::store::{Store, StoreError, StoreOptions};
use crate::tls::{TlsMaterial, TlsState, accept_tls};

/// Largest request or reply message: a full import batch fits with room.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How often the node re-logs how long its certificates and CRLs have left.
const EXPIRY_LOG_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);

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
    #[error("{key}: {message}")]
    Federation { key: String, message: String },
}

fn key_error(key: &'static str, message: impl Into<String>) -> NodeError {
    NodeError::KeyMaterial {
        key,
        message: message.into(),
    }
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
    std::fs::read(path).map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))
}

/// Reloads TLS material when the process gets SIGHUP.
fn reload_on_sighup(tls: Arc<TlsState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            let Ok(mut hangups) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload with `patchwork reload`");
                return;
            };
            while hangups.recv().await.is_some() {
                // A refused reload is logged; the old material stays in force.
                let _ = crate::service::reload_tls(&tls, "SIGHUP");
            }
        }
        #[cfg(not(unix))]
        drop(tls);
    })
}

fn log_expiries_periodically(tls: Arc<TlsState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EXPIRY_LOG_INTERVAL);
        ticks.tick().await; // the first tick is now; start-up already logged
        loop {
            ticks.tick().await;
            tls.current().log_expiries();
        }
    })
}

/// Runs a node on `listener` until `shutdown` completes, then drains and
/// flushes. `main` passes a bound port and SIGTERM; tests pass `127.0.0.1:0`
/// and their own signal. SIGHUP reloads the node's certificate, key, trust
/// bundle and CRLs.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let material = TlsMaterial::load(&config.tls)?;
    material.log_expiries();
    let node_identity = material.own.identity().clone();
    let tls = Arc::new(TlsState::new(config.tls.clone(), material));
    let store_dir = config.store_dir();
    let key_sets = crate::peers::load_key_sets(&config.federation)?;
    let options = StoreOptions {
        cache_capacity_bytes: config.store.cache_mb * 1024 * 1024,
    };
    let store = {
        let dir = store_dir.clone();
        let sets = key_sets.clone();
        tokio::task::spawn_blocking(move || Store::open(&dir, &options)?.with_key_sets(sets))
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
        access: Arc::new(AccessPolicy::new(
            node_identity.clone(),
            &config.api,
            tls.clone(),
        )),
        tls: tls.clone(),
        federation: Arc::new(crate::peers::Federation::new(
            &config.federation,
            key_sets,
            tls.clone(),
        )),
        node_identity: node_identity.clone(),
        display_name: config.node.display_name.clone(),
        default_id_scheme: config.node.default_id_scheme.clone(),
        spool_dir: config.node.data_dir.join("spool"),
    };
    let (incoming, acceptor) = accept_tls(
        listener,
        tls.clone(),
        Duration::from_millis(config.tls.handshake_timeout_ms),
    );
    let reloader = reload_on_sighup(tls.clone());
    let expiry_logger = log_expiries_periodically(tls.clone());
    tracing::info!(identity = %node_identity, listen = %config.api.listen, "node serving");
    let served = Server::builder()
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
        .add_service(FederationServer::new(FederationService::new(state.clone())))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    acceptor.abort();
    reloader.abort();
    expiry_logger.abort();
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
