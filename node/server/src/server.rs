//! Starting and stopping a node: read and check its key material, listen
//! (health NOT_SERVING) while the store opens, serve the gRPC services —
//! ours, grpc.health.v1 and server reflection — over our own TLS acceptor
//! until shutdown, with metrics on their own listener; reload TLS material on
//! SIGHUP, report NOT_SERVING and drain in-flight requests on shutdown, flush
//! the store last.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use patchwork_proto::v1::{
    admin_server::AdminServer, directory_server::DirectoryServer,
    federation_server::FederationServer,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Server;

use crate::base::config::NodeConfig;
use crate::base::error::NodeError;
use crate::service::{AdminService, DirectoryService, FederationService};
use crate::transport::access::AccessPolicy;
use crate::transport::health::{Health, Starting, WatchLimits};
use crate::transport::metrics::{Metrics, MetricsLayer};
use crate::transport::scrape::ScrapeSources;
use crate::transport::tls::{HandshakeLimits, PrioritySources, TlsMaterial, TlsState, accept_tls};
use crate::work::state::NodeState;
use patchwork_store::{Store, StoreError};

/// Largest request or reply message: a full import batch fits with room.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How often the node re-logs how long its certificates and CRLs have left.
const EXPIRY_LOG_INTERVAL: Duration = Duration::from_secs(6 * 60 * 60);

/// Everything a node reads from files and checks before it listens.
#[derive(Debug)]
pub struct Preflight {
    /// The node's certificate and key, trust bundle and CRLs.
    pub material: TlsMaterial,
    /// The match-key secrets of `federation.key_sets`.
    pub key_sets: Vec<patchwork_federation::matchkeys::KeySet>,
    /// The webhooks with their secrets and CA files.
    pub webhooks: Vec<crate::work::team::Webhook>,
}

/// Every check `serve` makes before it listens: key files, trust bundle,
/// CRLs, match-key secrets, webhook secrets and CA files, the data folder.
/// `serve` and `config check` both call this one function, so a config that
/// passes the check cannot then be refused at start-up.
pub fn preflight(config: &NodeConfig) -> Result<Preflight, NodeError> {
    let material = TlsMaterial::load(&config.tls)?;
    let key_sets = crate::work::peers::load_key_sets(&config.federation)?;
    let webhooks = crate::work::team::load_webhooks(&config.webhooks)?;
    patchwork_store::data_dir::check(&config.node.data_dir)?;
    Ok(Preflight {
        material,
        key_sets,
        webhooks,
    })
}

/// Reloads the config (TLS material and federation) when the process gets
/// SIGHUP.
fn reload_on_sighup(reloader: Arc<crate::work::reload::Reloader>) -> tokio::task::JoinHandle<()> {
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
                // A refused reload is logged; the old config stays in force.
                let _ = reloader.reload("SIGHUP").await;
            }
        }
        #[cfg(not(unix))]
        drop(reloader);
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

/// The sockets a node serves on.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC API (`api.listen`).
    pub api: TcpListener,
    /// The metrics endpoint; `None` binds `metrics.listen`. Unused (and
    /// closed) when `metrics.enabled` is false.
    pub metrics: Option<TcpListener>,
}

/// Runs a node on `listener` until `shutdown` completes, then drains and
/// flushes. `main` passes a bound port and SIGTERM; tests pass `127.0.0.1:0`
/// and their own signal. SIGHUP reloads the node's certificate, key, trust
/// bundle and CRLs. Metrics go to `metrics.listen` when enabled.
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let listeners = Listeners {
        api: listener,
        metrics: None,
    };
    run_with(config, listeners, shutdown).await
}

/// [`run`] with the metrics listener bound by the caller (tests bind
/// `127.0.0.1:0`). Starting: key material is checked, then the node listens
/// (health NOT_SERVING, the Patchwork services UNAVAILABLE) while its store
/// opens, then serves. Shutdown: health NOT_SERVING, in-flight requests
/// drain, the store is flushed last.
pub async fn run_with(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let Preflight {
        material,
        key_sets,
        webhooks,
    } = preflight(&config)?;
    material.log_expiries();
    let node_identity = material.own.identity().clone();
    let tls = Arc::new(TlsState::new(config.tls.clone(), material));
    let store_dir = config.store_dir();
    // Before anything is written: the store holds personal data.
    patchwork_store::data_dir::prepare(&config.node.data_dir, &store_dir)?;
    let federation = Arc::new(crate::work::peers::FederationHandle::new(
        crate::work::peers::Federation::new(&config.federation, key_sets.clone(), tls.clone()),
    ));
    let (reflection_v1, reflection_v1alpha) = reflection(config.api.reflection)?;
    let metrics = Arc::new(Metrics::new(
        federation
            .current()
            .registry
            .all()
            .iter()
            .map(|peer| peer.identity.clone()),
    ));
    let (health, health_service) = Health::new(WatchLimits {
        total: config.api.max_health_watches,
        per_identity: config.api.max_health_watches_per_identity,
    })
    .await;
    let refusals = Arc::new(patchwork_federation::hostile::RefusalTally::default());
    let opened_store = Arc::new(OnceLock::new());
    let metrics_listener = match (config.metrics.enabled, listeners.metrics) {
        (false, _) => None,
        (true, Some(listener)) => Some(listener),
        (true, None) => crate::transport::scrape::bind(config.metrics.listen).await,
    };
    let metrics_server = metrics_listener.map(|listener| {
        crate::transport::scrape::serve(
            listener,
            ScrapeSources {
                metrics: metrics.clone(),
                tls: tls.clone(),
                health: health.clone(),
                store: opened_store.clone(),
            },
        )
    });

    // The Patchwork services answer UNAVAILABLE until the store is open.
    let directory = Starting::default();
    let admin = Starting::default();
    let federation_service = Starting::default();
    let priority = PrioritySources::default();
    let (peer_addresses, peer_addresses_changed) =
        tokio::sync::watch::channel(crate::work::reload::peer_addresses(&config));
    let priority_refresh =
        priority.spawn_refresh(config.tls.priority_sources.clone(), peer_addresses_changed);
    let reloader = Arc::new(crate::work::reload::Reloader::new(
        config.clone(),
        crate::work::reload::ReloadParts {
            tls: tls.clone(),
            federation: federation.clone(),
            store: opened_store.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            peer_addresses,
        },
    ));
    let (incoming, acceptor) = accept_tls(
        listeners.api,
        tls.clone(),
        HandshakeLimits::new(&config.tls),
        priority,
        metrics.clone(),
    );
    let (abort, aborted) = tokio::sync::oneshot::channel::<()>();
    let signal = {
        let health = health.clone();
        let opened = opened_store.clone();
        async move {
            let aborted = async {
                if aborted.await.is_err() {
                    std::future::pending::<()>().await; // started: never aborts
                }
            };
            tokio::select! {
                () = shutdown => {}
                () = aborted => {}
            }
            health.draining().await;
            // Open Directory.Watch streams end, so they cannot hold the drain.
            if let Some(store) = opened.get() {
                store.close_watchers();
            }
        }
    };
    tracing::info!(identity = %node_identity, listen = %config.api.listen, "node starting");
    let serving = Server::builder()
        .concurrency_limit_per_connection(config.api.max_concurrent_requests_per_connection)
        // Streams beyond the limit are refused by HTTP/2 rather than queued
        // in memory behind it.
        .max_concurrent_streams(
            u32::try_from(config.api.max_concurrent_requests_per_connection).ok(),
        )
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(MetricsLayer::new(metrics.clone()))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(directory.clone())
        .add_service(admin.clone())
        .add_service(federation_service.clone())
        .serve_with_incoming_shutdown(incoming, signal);

    let starting = async {
        let options = config.store_options();
        let dir = store_dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            Store::open(&dir, &options)?.with_key_sets(key_sets)
        })
        .await
        .map_err(|_| StoreError::Invalid {
            field: "store",
            message: "opening the store failed".into(),
        })
        .and_then(|opened| opened);
        let store = match opened {
            Ok(store) => store,
            Err(source) => {
                let _ = abort.send(());
                return Err(NodeError::Store {
                    path: store_dir.display().to_string(),
                    source,
                });
            }
        };
        // Before any service opens, so a new webhook's cursor precedes every
        // event written after start-up.
        let mut webhook_tasks = match crate::work::team::spawn_webhooks(&store, webhooks) {
            Ok(tasks) => tasks,
            Err(source) => {
                let _ = abort.send(());
                return Err(NodeError::Store {
                    path: store_dir.display().to_string(),
                    source,
                });
            }
        };
        // Before any service opens: after a restart no reader sees an
        // import half-applied (see `import`).
        let spool_dir = config.node.data_dir.join("spool");
        if let Err(source) = crate::work::import::finish_pending_imports(&store, &spool_dir).await {
            let _ = abort.send(());
            return Err(NodeError::Store {
                path: store_dir.display().to_string(),
                source,
            });
        }
        let audit_key = match crate::work::witness::load_or_create_key(
            &config.node.data_dir,
            &node_identity.to_string(),
        ) {
            Ok(key) => Arc::new(key),
            Err(message) => {
                let _ = abort.send(());
                return Err(NodeError::Store {
                    path: config.node.data_dir.display().to_string(),
                    source: StoreError::Invalid {
                        field: "audit-signing.key",
                        message,
                    },
                });
            }
        };
        let state = NodeState {
            store: store.clone(),
            access: Arc::new(AccessPolicy::new(
                node_identity.clone(),
                &config.api,
                tls.clone(),
            )),
            tls: tls.clone(),
            federation,
            reloader: reloader.clone(),
            node_identity: node_identity.clone(),
            display_name: config.node.display_name.clone(),
            default_id_scheme: config.node.default_id_scheme.clone(),
            confirm_after_days: config.node.confirm_after_days,
            spool_dir,
            imports: Arc::default(),
            health: health.clone(),
            metrics: metrics.clone(),
            refusals: refusals.clone(),
            audit_key,
            retention: Arc::new(crate::base::config::RetentionSection {
                audit_archive_dir: Some(config.audit_archive_dir()),
                ..config.retention.clone()
            }),
            mirror_max_share: config.import.mirror_max_share,
        };
        webhook_tasks.push(crate::service::spawn_refusal_summaries(state.clone()));
        // Cross-border subscriptions: polls peers, stops with the webhooks.
        webhook_tasks.push(crate::work::subscriptions::spawn_poller(
            state.clone(),
            std::time::Duration::from_millis(u64::from(config.federation.poll_interval_ms)),
        ));
        // Witnessing peers' audit logs (and they this one's).
        webhook_tasks.push(crate::work::witness::spawn_witness(
            state.clone(),
            std::time::Duration::from_millis(u64::from(config.federation.witness_interval_ms)),
        ));
        // The retention schedule's daily run, when a rule is set.
        webhook_tasks.extend(crate::work::retention::spawn_daily(
            state.clone(),
            (*state.retention).clone(),
        ));
        directory.open(
            DirectoryServer::new(DirectoryService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
        admin.open(
            AdminServer::new(AdminService::new(state.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
        federation_service.open(
            FederationServer::new(FederationService::new(state))
                .max_decoding_message_size(patchwork_federation::hostile::MAX_REQUEST_BYTES),
        );
        let _ = opened_store.set(store.clone());
        health.started().await;
        tracing::info!(identity = %node_identity, listen = %config.api.listen, "node serving");
        let store_probe = health.spawn_store_probe(store.clone());
        Ok((store, store_probe, webhook_tasks))
    };
    let reloader = reload_on_sighup(reloader.clone());
    let expiry_logger = log_expiries_periodically(tls.clone());
    let (served, started) = tokio::join!(serving, starting);
    acceptor.abort();
    priority_refresh.abort();
    reloader.abort();
    expiry_logger.abort();
    if let Some(server) = &metrics_server {
        server.abort();
    }
    let (store, store_probe, webhook_tasks) = started?;
    store_probe.abort();
    // A delivery cut short is repeated after the next start (at least once).
    webhook_tasks.iter().for_each(JoinHandle::abort);
    // Wait until the aborted tasks are gone: they hold handles on the store,
    // and it is only closed (its lock released, so the same process can open
    // it again) once the last handle drops.
    let _ = store_probe.await;
    for task in webhook_tasks {
        let _ = task.await;
    }
    let _ = tokio::join!(acceptor, priority_refresh, reloader, expiry_logger);
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    // Refusals counted since the last summary go in the log before it closes.
    if let Err(e) = crate::service::write_refusal_summaries(&store, &refusals) {
        tracing::error!(error = %e, "audit write of refusal summaries failed");
    }
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

/// Server reflection (v1 and v1alpha) of the Patchwork API, health and
/// reflection itself, when `enabled`.
#[allow(clippy::type_complexity)]
fn reflection(
    enabled: bool,
) -> Result<
    (
        Option<
            tonic_reflection::server::v1::ServerReflectionServer<
                impl tonic_reflection::server::v1::ServerReflection,
            >,
        >,
        Option<
            tonic_reflection::server::v1alpha::ServerReflectionServer<
                impl tonic_reflection::server::v1alpha::ServerReflection,
            >,
        >,
    ),
    NodeError,
> {
    if !enabled {
        return Ok((None, None));
    }
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(patchwork_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let failed = |e: tonic_reflection::server::Error| NodeError::Reflection(e.to_string());
    Ok((
        Some(builder().build_v1().map_err(failed)?),
        Some(builder().build_v1alpha().map_err(failed)?),
    ))
}
