//! The gRPC services a node serves, and the state they share. Handlers
//! authorise the caller first (identity from the certificate), validate every
//! field, run store work on the blocking pool, and acknowledge a write only
//! after it is flushed to disk.

mod admin;
mod directory;
mod family;
mod federation;
mod team;

use std::sync::Arc;

use patchwork_certs::SpiffeId;
use tonic::Status;

use crate::access::AccessPolicy;
use crate::store::Store;
use crate::validate::Rules;

pub use admin::AdminService;
pub use directory::DirectoryService;
pub use federation::{FederationService, spawn_refusal_summaries, write_refusal_summaries};

/// What every handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub store: Store,
    pub access: Arc<AccessPolicy>,
    pub tls: Arc<crate::tls::TlsState>,
    /// Peers, agreements and key sets in force (a reload swaps them).
    pub federation: Arc<crate::peers::FederationHandle>,
    /// `patchwork reload` (and SIGHUP) put a changed config in force.
    pub reloader: Arc<crate::reload::Reloader>,
    pub node_identity: SpiffeId,
    pub display_name: String,
    pub default_id_scheme: String,
    /// `[node] confirm_after_days`: when an involvement counts as unconfirmed.
    pub confirm_after_days: u32,
    /// Where imports spool validated rows (their journals, see `import`)
    /// and backups their snapshots (unnamed temporary files).
    pub spool_dir: std::path::PathBuf,
    /// Imports running now, for `GetStats`.
    pub imports: Arc<crate::import::RunningImports>,
    /// What grpc.health.v1 reports; handlers flag store failures here.
    pub health: crate::health::Health,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Peers' refusals counted, not written one by one; audited as summaries
    /// (`federation::spawn_refusal_summaries`, and once more at shutdown).
    pub refusals: Arc<patchwork_federation::hostile::RefusalTally>,
}

impl NodeState {
    fn rules(&self) -> Rules {
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
        F: FnOnce(&crate::store::Store) -> Result<T, WriteFailure> + Send + 'static,
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
    async fn write_failed(&self, error: crate::store::StoreError, prefix: &str) -> Status {
        if matches!(
            error,
            crate::store::StoreError::Io(_) | crate::store::StoreError::File(_)
        ) {
            self.health.store_failed("write", &error).await;
        }
        crate::convert::store_status(error, prefix)
    }

    /// Makes every write so far durable before a reply acknowledges it. A
    /// failure makes health report NOT_SERVING until a write succeeds again
    /// (after sled failed to write its log, that means a restart: see
    /// [`crate::health::Health::store_failed`]).
    pub(crate) async fn flush(&self) -> Result<(), Status> {
        match self.store.flush().await {
            Ok(()) => {
                self.health.store_ok().await;
                Ok(())
            }
            Err(e) => {
                self.health.store_failed("flush", &e).await;
                Err(crate::convert::unflushed_status(e))
            }
        }
    }
}

/// Why a request's write did not happen: its own checks refused it, or the
/// store failed (see [`NodeState::write`]).
#[derive(Debug)]
pub(crate) enum WriteFailure {
    Refused(Status),
    Store(crate::store::StoreError),
}

impl From<Status> for WriteFailure {
    fn from(status: Status) -> Self {
        WriteFailure::Refused(status)
    }
}

impl From<crate::store::StoreError> for WriteFailure {
    fn from(error: crate::store::StoreError) -> Self {
        WriteFailure::Store(error)
    }
}

/// Runs store work off the async threads: sled calls block on disk.
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
    F: FnOnce(&crate::store::Store) -> Result<T, Status> + Send + 'static,
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

pub(crate) async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|_| {
        Status::internal("a store worker stopped unexpectedly; nothing was acknowledged")
    })?
}
