//! `Directory.RaiseAttention`, `ClearAttention` and `Watch`: the team around
//! the person (events are made in the store, delivered by `crate::work::team`).

use patchwork_proto::v1;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::info;

use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::base::validate::{self, FieldError};
use crate::transport::access::Caller;
use crate::work::state::NodeState;
use patchwork_store::AuditEvent;

/// Attention reasons: long enough to mean something, short enough to hold
/// no case notes.
const MIN_REASON: usize = 10;
const MAX_REASON: usize = 500;
/// Events buffered per watcher before the stream waits for the client.
const WATCH_BUFFER: usize = 64;

/// Raises (`raise`) or clears a person's attention flag.
pub(super) async fn set_attention(
    state: &NodeState,
    person_id: &str,
    practitioner_id: &str,
    reason: &str,
    raise: bool,
) -> Result<(), Status> {
    let person_id = validate::id(person_id, "person_id")?;
    let practitioner_id = validate::id(practitioner_id, "practitioner_id")?;
    let reason = if raise {
        let reason = validate::required_text(reason, "reason", MAX_REASON)?;
        if reason.chars().count() < MIN_REASON {
            return Err(FieldError::new(
                "reason",
                format!("must be at least {MIN_REASON} characters"),
            )
            .into());
        }
        reason
    } else {
        validate::optional_text(reason, "reason", MAX_REASON)?.unwrap_or_default()
    };
    let person = person_id.clone();
    state
        .write("", move |store| {
            Ok(store.set_attention(&person, &practitioner_id, raise, &reason)?)
        })
        .await?;
    info!(person = %person_id, raised = raise, "attention flag changed");
    Ok(())
}

/// Starts streaming a practitioner's team events after `after_cursor`, for
/// a caller already allowed to watch them; audited (durably) before the
/// first event goes.
pub(super) async fn watch(
    state: &NodeState,
    caller: &Caller,
    practitioner_id: String,
    after_cursor: &str,
) -> Result<ReceiverStream<Result<v1::TeamEvent, Status>>, Status> {
    let after = crate::work::team::parse_cursor(after_cursor, "after_cursor")?;
    let store = state.store.clone();
    let who = practitioner_id.clone();
    let (known, epoch) = blocking(move || {
        let read = || -> Result<_, patchwork_store::StoreError> {
            Ok((store.practitioner(&who)?.is_some(), store.event_epoch()?))
        };
        read().map_err(|e| store_status(e, ""))
    })
    .await?;
    if !known {
        return Err(Status::not_found(format!(
            "practitioner_id: practitioner {practitioner_id} not found"
        )));
    }
    // "From now on" is fixed before the reply, so nothing written after it is missed.
    let durable = state.store.durable_events().borrow().durable;
    let after = match after {
        Some(cursor) => crate::work::team::check_cursor(cursor, epoch, durable, "after_cursor")?,
        None => durable,
    };
    crate::work::lookup::audit(
        state,
        AuditEvent::WatchOpened {
            caller: caller.identity.to_string(),
            practitioner_id: practitioner_id.clone(),
            after_cursor: after,
        },
    )
    .await?;
    info!(caller = %caller.identity, practitioner = %practitioner_id, after, "watch opened");
    let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_BUFFER);
    crate::work::team::spawn_watch(state.store.clone(), practitioner_id, after, sender);
    Ok(ReceiverStream::new(receiver))
}
