//! What every request handler needs (the node's state, cheap to clone) and
//! the two ways a request touches the store: `read` (on the worker while no
//! write runs) and `NodeState::write` (store work, then health on an I/O
//! error, then a flush, so a reply acknowledges durable data).

use std::sync::Arc;

use patchwork_certs::SpiffeId;
use tonic::Status;

use crate::base::pool::blocking;
use crate::base::validate::Rules;
use crate::transport::access::AccessPolicy;
use patchwork_store::Store;

/// What every handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub store: Store,
    pub access: Arc<AccessPolicy>,
    pub tls: Arc<crate::transport::tls::TlsState>,
    /// Peers, agreements and key sets in force (a reload swaps them).
    pub federation: Arc<crate::work::peers::FederationHandle>,
    /// `patchwork reload` (and SIGHUP) put a changed config in force.
    pub(crate) reloader: Arc<crate::work::reload::Reloader>,
    pub node_identity: SpiffeId,
    pub display_name: String,
    pub default_id_scheme: String,
    /// `[node] confirm_after_days`: when an involvement counts as unconfirmed.
    pub(crate) confirm_after_days: u32,
    /// Where imports spool validated rows (their journals, see `import`)
    /// and backups their snapshots (unnamed temporary files).
    pub(crate) spool_dir: std::path::PathBuf,
    /// Imports running now, for `GetStats`.
    pub imports: Arc<crate::work::import::RunningImports>,
    /// What grpc.health.v1 reports; handlers flag store failures here.
    pub health: crate::transport::health::Health,
    pub metrics: Arc<crate::transport::metrics::Metrics>,
    /// Peers' refusals counted, not written one by one; audited as summaries
    /// (`federation::spawn_refusal_summaries`, and once more at shutdown).
    pub refusals: Arc<patchwork_federation::hostile::RefusalTally>,
    /// Signs this node's audit checkpoints and cosigns its peers' (see
    /// `witness`).
    pub audit_key: Arc<patchwork_federation::checkpoint::SigningKey>,
    /// `[import] mirror_max_share`, as the node started with it.
    pub(crate) mirror_max_share: f64,
    /// `[retention]`, as the node started with it.
    pub(crate) retention: Arc<crate::base::config::RetentionSection>,
}

impl NodeState {
    pub(crate) fn rules(&self) -> Rules {
        Rules::new(&self.default_id_scheme)
    }

    /// The one way a request writes: `work` on the blocking pool, then a
    /// flush, so the reply acknowledges durable data. A store error from
    /// the write is named under `prefix`, and an I/O error (from the write
    /// or the flush) makes health report NOT_SERVING; a refusal of the
    /// work's own checks passes through as it is.
    pub(crate) async fn write<T, F>(&self, prefix: &'static str, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&patchwork_store::Store) -> Result<T, WriteFailure> + Send + 'static,
    {
        let store = self.store.clone();
        match blocking(move || Ok(work(&store))).await? {
            Ok(value) => {
                self.flush().await?;
                Ok(value)
            }
            Err(WriteFailure::Refused(status)) => Err(status),
            Err(WriteFailure::Store(error)) => Err(self.write_failed(error, prefix).await),
        }
    }

    /// The status for a store error from a write; an I/O error also makes
    /// health report NOT_SERVING, as a failed flush does: once sled cannot
    /// write its log, a write can fail before it ever reaches a flush, and
    /// the node must not go on reporting SERVING while refusing everything.
    pub(crate) async fn write_failed(
        &self,
        error: patchwork_store::StoreError,
        prefix: &str,
    ) -> Status {
        if matches!(
            error,
            patchwork_store::StoreError::Io(_) | patchwork_store::StoreError::File(_)
        ) {
            self.health.store_failed("write", &error).await;
        }
        crate::base::convert::store_status(error, prefix)
    }

    /// Makes every write so far durable before a reply acknowledges it. A
    /// failure makes health report NOT_SERVING until a write succeeds again
    /// (after sled failed to write its log, that means a restart: see
    /// [`crate::transport::health::Health::store_failed`]).
    pub(crate) async fn flush(&self) -> Result<(), Status> {
        match self.store.flush().await {
            Ok(()) => {
                self.health.store_ok().await;
                Ok(())
            }
            Err(e) => {
                self.health.store_failed("flush", &e).await;
                Err(crate::base::convert::unflushed_status(e))
            }
        }
    }
}

/// Why a request's write did not happen: its own checks refused it, or the
/// store failed (see [`NodeState::write`]).
#[derive(Debug)]
pub(crate) enum WriteFailure {
    Refused(Status),
    Store(patchwork_store::StoreError),
}

impl From<Status> for WriteFailure {
    fn from(status: Status) -> Self {
        WriteFailure::Refused(status)
    }
}

impl From<patchwork_store::StoreError> for WriteFailure {
    fn from(error: patchwork_store::StoreError) -> Self {
        WriteFailure::Store(error)
    }
}

/// Runs a request's store reads: on the runtime's worker while no record
/// write is running, since a lookup's few dozen reads from sled's cache cost
/// less than the hop to the blocking pool and back (measured: 113 against
/// 240-307 µs of CPU a lookup, BENCHMARKS.md); on the blocking pool while
/// one is, because sled 0.34's reads wait for its process-wide transaction
/// lock and an import batch holds that long enough to stall a worker. A
/// read the store cannot serve makes health report NOT_SERVING: sled
/// answers reads with a log-write error it keeps (a full disk), so the store
/// is failing whichever operation saw it first.
pub(crate) async fn read<T, F>(state: &NodeState, work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce(&patchwork_store::Store) -> Result<T, Status> + Send + 'static,
{
    let result = if state.store.writes_in_progress() {
        let store = state.store.clone();
        blocking(move || work(&store)).await
    } else {
        work(&state.store)
    };
    if let Err(status) = &result
        && status.code() == tonic::Code::Unavailable
    {
        state
            .health
            .store_failed("store read", &status.message())
            .await;
    }
    result
}
