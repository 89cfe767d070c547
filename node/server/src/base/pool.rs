//! Store work off the async threads: sled calls block on disk.

use tonic::Status;

/// Runs `work` on the blocking pool; a worker that panicked or was cancelled
/// acknowledges nothing.
pub(crate) async fn blocking<T, F>(work: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|_| {
        Status::internal("a store worker stopped unexpectedly; nothing was acknowledged")
    })?
}
