//! Live reload (`patchwork reload`, SIGHUP): the node re-reads its config
//! file and the files it names, and puts in force, all or nothing, its TLS
//! material and its federation: peers, agreements, key sets and the
//! federation's limits. A key set that is new or whose secret changed has
//! its match index built first, while the old index goes on answering (see
//! `store::match_index`). A change that cannot be made live (a listen
//! address, the data folder, webhooks ...) is named in the answer and the
//! log and waits for a restart; a bad change is refused with its reason and
//! nothing changes. A change to who this node federates with, or on what
//! terms, is audited before it is in force.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::base::config::{ConfigError, NodeConfig};
use crate::base::error::NodeError;
use crate::transport::health::Health;
use crate::transport::metrics::Metrics;
use crate::transport::tls::TlsState;
use crate::work::peers::FederationHandle;
use patchwork_store::{AuditEvent, Store, StoreError};

/// Why a reload was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Files(#[from] NodeError),
    #[error("the match index could not be built: {0}")]
    Index(StoreError),
    #[error("the audit log cannot be written, so the federation stays as it is: {0}")]
    Audit(StoreError),
    #[error("the node is still opening its store; reload once it serves")]
    Starting,
    #[error("reading the files stopped unexpectedly")]
    Stopped,
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReloadReport {
    /// What is now in force that was not, one line each.
    pub changes: Vec<String>,
    /// Config keys that changed in the file but wait for a restart.
    pub needs_restart: Vec<String>,
}

/// Everything a reload replaces, and the config in force.
#[derive(Debug)]
pub(crate) struct Reloader {
    /// The file to re-read; `None` for a node started from a config made in
    /// code, whose reload re-reads only the TLS files.
    config_path: Option<PathBuf>,
    /// The config in force; held for the whole of a reload, so two reloads
    /// (a SIGHUP during `patchwork reload`) run one after the other.
    in_force: tokio::sync::Mutex<NodeConfig>,
    tls: Arc<TlsState>,
    federation: Arc<FederationHandle>,
    store: Arc<OnceLock<Store>>,
    health: Health,
    metrics: Arc<Metrics>,
    /// The peers' addresses, whose handshakes get reserved slots.
    peer_addresses: tokio::sync::watch::Sender<Vec<String>>,
}

/// The parts of a reload that are handed to the reloader at start.
#[derive(Debug)]
pub(crate) struct ReloadParts {
    pub tls: Arc<TlsState>,
    pub federation: Arc<FederationHandle>,
    pub store: Arc<OnceLock<Store>>,
    pub health: Health,
    pub metrics: Arc<Metrics>,
    pub(crate) peer_addresses: tokio::sync::watch::Sender<Vec<String>>,
}

/// The peers' "host:port" addresses in `config`.
pub(crate) fn peer_addresses(config: &NodeConfig) -> Vec<String> {
    config
        .federation
        .peers
        .iter()
        .map(|peer| peer.address.clone())
        .collect()
}

/// The config keys whose change waits for a restart, as dotted names.
fn needs_restart(running: &NodeConfig, next: &NodeConfig) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, changed: bool| {
        if changed {
            keys.push(key.to_owned());
        }
    };
    differs("node", running.node != next.node);
    differs("tls", running.tls != next.tls);
    differs("api", running.api != next.api);
    differs("store", running.store != next.store);
    differs("log", running.log != next.log);
    differs("metrics", running.metrics != next.metrics);
    differs("webhooks", running.webhooks != next.webhooks);
    differs("retention", running.retention != next.retention);
    differs("import", running.import != next.import);
    differs(
        "federation.poll_interval_ms",
        running.federation.poll_interval_ms != next.federation.poll_interval_ms,
    );
    keys
}

impl Reloader {
    pub(crate) fn new(config: NodeConfig, parts: ReloadParts) -> Self {
        Reloader {
            config_path: config.source.clone(),
            in_force: tokio::sync::Mutex::new(config),
            tls: parts.tls,
            federation: parts.federation,
            store: parts.store,
            health: parts.health,
            metrics: parts.metrics,
            peer_addresses: parts.peer_addresses,
        }
    }

    /// Reloads, logs what happened either way and counts a refusal
    /// (`patchwork_tls_reloads_refused_total`); `trigger` says what asked.
    pub(crate) async fn reload(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let result = self.try_reload(trigger).await;
        match &result {
            Ok(report) => {
                tracing::info!(
                    trigger,
                    generation = self.tls.generation(),
                    changes = ?report.changes,
                    "reloaded: tls material and federation in force"
                );
                self.tls.current().log_expiries();
                if !report.needs_restart.is_empty() {
                    tracing::warn!(
                        trigger,
                        keys = ?report.needs_restart,
                        "these config changes wait for a restart"
                    );
                }
            }
            Err(error) => {
                self.tls.count_refused_reload();
                tracing::error!(
                    trigger,
                    error = %error,
                    "reload refused; the previous tls material and federation stay in force"
                );
            }
        }
        result
    }

    /// Builds the match index for `key_sets` (see `Store::rekey`) on the
    /// blocking pool.
    async fn rekey(
        &self,
        store: &Store,
        key_sets: Vec<patchwork_federation::matchkeys::KeySet>,
    ) -> Result<patchwork_store::RekeyReport, ReloadError> {
        let rekeying = store.clone();
        let built = tokio::task::spawn_blocking(move || rekeying.rekey(key_sets))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Invalid {
                    field: "match_index",
                    message: "the build stopped".into(),
                })
            });
        if let Err(error) = &built
            && matches!(error, StoreError::Io(_) | StoreError::File(_))
        {
            self.health.store_failed("match index build", error).await;
        }
        built.map_err(ReloadError::Index)
    }

    /// Drops the old secrets' index entries after the reload has answered
    /// (they answer nobody once retired, and a crash leaves them recorded
    /// for the next start to drop).
    fn drop_retired_in_background(&self, store: Store) {
        let health = self.health.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match tokio::task::spawn_blocking(move || store.drop_retired()).await {
                Ok(Ok(entries)) => tracing::info!(
                    entries,
                    seconds = started.elapsed().as_secs_f64(),
                    "retired match-index entries dropped"
                ),
                Ok(Err(error)) => {
                    tracing::error!(error = %error, "dropping retired match-index entries failed; the next start drops them");
                    if matches!(error, StoreError::Io(_) | StoreError::File(_)) {
                        health.store_failed("match index clean-up", &error).await;
                    }
                }
                Err(_) => tracing::error!(
                    "dropping retired match-index entries stopped; the next start drops them"
                ),
            }
        });
    }

    async fn try_reload(&self, trigger: &str) -> Result<ReloadReport, ReloadError> {
        let mut in_force = self.in_force.lock().await;
        // Everything is read and checked before anything changes, off the
        // async workers (files, and the key checks).
        let (path, tls, running_config) =
            (self.config_path.clone(), self.tls.clone(), in_force.clone());
        let (next, key_sets, material) = tokio::task::spawn_blocking(move || {
            let next = match path {
                Some(path) => NodeConfig::load(&path)?,
                None => running_config,
            };
            let key_sets = crate::work::peers::load_key_sets(&next.federation)?;
            let material = tls.load_checked()?;
            Ok::<_, ReloadError>((next, key_sets, material))
        })
        .await
        .map_err(|_| ReloadError::Stopped)??;
        let running = self.federation.current();
        let successor = running.succeeded_by(&next.federation, key_sets.clone());
        let mut changes = running.changes_to(&successor);
        let rekey = successor.fingerprints() != running.fingerprints();
        let store = self.store.get().cloned();
        if !changes.is_empty() {
            let Some(store) = &store else {
                return Err(ReloadError::Starting);
            };
            // Audited, durably, before any of it is in force.
            let event = AuditEvent::FederationChanged {
                trigger: trigger.to_owned(),
                changes: changes.clone(),
            };
            if let Err(error) = store.append_audits(vec![event]).await {
                self.health.store_failed("audit append", &error).await;
                return Err(ReloadError::Audit(error));
            }
            if rekey {
                let built = self.rekey(store, key_sets).await;
                let report = match built {
                    Ok(report) => report,
                    Err(error) => {
                        // The entry above announced a change that did not
                        // happen; say so (best effort: the store is failing).
                        let event = AuditEvent::FederationChanged {
                            trigger: trigger.to_owned(),
                            changes: vec![format!(
                                "reload refused, none of the changes above is in force: {error}"
                            )],
                        };
                        let _ = store.append_audits(vec![event]).await;
                        return Err(error);
                    }
                };
                for (name, persons, took) in &report.built {
                    changes.push(format!(
                        "key set {name}: match index built over {persons} persons in {:.1} s",
                        took.as_secs_f64()
                    ));
                }
            }
        }
        self.tls.install(Arc::new(material));
        changes.push(format!(
            "tls material re-read (generation {})",
            self.tls.generation()
        ));
        self.metrics.add_peers(
            successor
                .registry
                .all()
                .iter()
                .map(|peer| peer.identity.clone()),
        );
        self.federation.install(successor);
        if rekey && let Some(store) = store {
            self.drop_retired_in_background(store);
        }
        self.peer_addresses.send_replace(peer_addresses(&next));
        let needs_restart = needs_restart(&in_force, &next);
        // What is in force now: the new federation, the rest as it started.
        let poll_interval_ms = in_force.federation.poll_interval_ms;
        in_force.federation = next.federation;
        in_force.federation.poll_interval_ms = poll_interval_ms;
        Ok(ReloadReport {
            changes,
            needs_restart,
        })
    }
}
