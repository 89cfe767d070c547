//! Witnessing: agreed peers keep each other's audit logs honest, as
//! transparency logs' witnesses do. A node's audit log is a Merkle tree
//! (`patchwork_store::audit`); its checkpoint (size, root, time) is signed
//! with the node's Ed25519 key (`<data_dir>/audit-signing.key`, made 0600 at
//! the first start). Every `[federation] witness_interval_ms`, each node asks
//! each peer for its latest checkpoint with the consistency proof from the
//! last one it verified (`Federation.GetCheckpoint`), checks the signature
//! against the key it pinned the first time, checks that the log only grew,
//! cosigns it and hands the cosignature back (`Federation.AddCosignature`),
//! which the peer keeps as the latest cosigned checkpoint of its own log.
//!
//! A log that was rewritten (the proof fails, or the same size has another
//! root), cut short (a smaller size) or signed with another key is reported
//! by its witnesses: an error in the log, `patchwork_witness_alarms_total`,
//! and an alarm record with the evidence in the witness's store. And
//! `audit verify` on the node itself holds its log to the checkpoints its
//! witnesses cosigned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use patchwork_federation::agreement::Peer;
use patchwork_federation::checkpoint::{Checkpoint, SignedCheckpoint, SigningKey, VerifierKey};
use patchwork_proto::v1;
use patchwork_store::witness::WitnessRecord;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::work::state::NodeState;

/// A consistency proof holds at most 2 × 64 hashes; more is not a proof.
const MAX_PROOF_HASHES: usize = 128;

/// The checkpoint key's file in the data folder.
pub const KEY_FILE: &str = "audit-signing.key";

/// Loads the node's checkpoint key from `data_dir`, making one (0600) the
/// first time. It signs as the node's log origin.
pub fn load_or_create_key(data_dir: &Path, identity: &str) -> Result<SigningKey, String> {
    let path: PathBuf = data_dir.join(KEY_FILE);
    let pkcs8 = match std::fs::read(&path) {
        Ok(bytes) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(format!(
                        "{} is readable by group or others (mode {:o}); run chmod 600 {} (it signs the audit log's checkpoints)",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    ));
                }
            }
            bytes
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Written whole to a temporary file, then renamed into place: a
            // crash never leaves an empty or half key behind the name.
            let pkcs8 = SigningKey::generate().map_err(|e| e.to_string())?;
            let made = tempfile::Builder::new()
                .prefix(".audit-signing.key.")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .tempfile_in(data_dir)
                .and_then(|mut file| {
                    std::io::Write::write_all(&mut file, &pkcs8)?;
                    file.as_file().sync_all()?;
                    file.persist_noclobber(&path).map_err(|e| e.error)?;
                    std::fs::File::open(data_dir)?.sync_all()
                });
            made.map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            tracing::info!(path = %path.display(), "made the audit log's checkpoint key");
            pkcs8
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    SigningKey::from_pkcs8(&Checkpoint::origin_of(identity), &pkcs8)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This node's latest checkpoint, over the entries that are durable,
/// signed; and the consistency proof from `old_size` when there is one.
pub(crate) async fn checkpoint(
    state: &NodeState,
    old_size: u64,
) -> Result<v1::GetCheckpointResponse, Status> {
    let store = state.store.clone();
    let key = state.audit_key.clone();
    let origin = Checkpoint::origin_of(&state.node_identity.to_string());
    blocking(move || {
        let (checkpoint, note) =
            sign_checkpoint(&store, &key, origin).map_err(|e| store_status(e, ""))?;
        let size = checkpoint.size;
        let consistency_proof = if old_size > 0 && old_size < size {
            store
                .audit_consistency_proof(old_size, size)
                .map_err(|e| store_status(e, ""))?
                .into_iter()
                .map(|hash| hash.to_vec())
                .collect()
        } else {
            Vec::new()
        };
        Ok(v1::GetCheckpointResponse {
            checkpoint: note,
            consistency_proof,
            verifier_key: key.verifier_key(),
        })
    })
    .await
}

/// A checkpoint of this node's log over the entries durable now, and the
/// signed note of it.
pub(crate) fn sign_checkpoint(
    store: &patchwork_store::Store,
    key: &SigningKey,
    origin: String,
) -> Result<(Checkpoint, String), patchwork_store::StoreError> {
    let size = store.audit_durable_len();
    let checkpoint = Checkpoint {
        origin,
        size,
        root: store.audit_root(size)?,
        time_unix: i64::try_from(now_unix()).unwrap_or(i64::MAX),
    };
    let note = key.sign(&checkpoint);
    Ok((checkpoint, note))
}

/// A witness's cosignature of one of this node's checkpoints: checked, then
/// kept as that witness's latest (a smaller one than kept is ignored).
pub(crate) async fn add_cosignature(
    state: &NodeState,
    witness: &str,
    request: v1::AddCosignatureRequest,
) -> Result<(), Status> {
    let invalid = |field: &str, why: String| Status::invalid_argument(format!("{field}: {why}"));
    let key = VerifierKey::parse(&request.verifier_key)
        .map_err(|e| invalid("verifier_key", e.to_string()))?;
    if key.name != Checkpoint::origin_of(witness) {
        return Err(invalid(
            "verifier_key",
            format!(
                "names {}, not the calling node's log ({})",
                key.name,
                Checkpoint::origin_of(witness)
            ),
        ));
    }
    let signed = SignedCheckpoint::parse(&request.cosigned_checkpoint)
        .map_err(|e| invalid("cosigned_checkpoint", e.to_string()))?;
    let own = VerifierKey::parse(&state.audit_key.verifier_key())
        .map_err(|e| Status::internal(e.to_string()))?;
    signed
        .verify_signed_by(&own)
        .map_err(|_| invalid("cosigned_checkpoint", "this node did not sign it".into()))?;
    signed
        .cosigned_by(&key)
        .map_err(|e| invalid("cosigned_checkpoint", e.to_string()))?;
    // Kept with this node's signature and this witness's only.
    let mut signed = signed;
    signed.retain_signatures(|name| name == own.name || name == key.name);
    let store = state.store.clone();
    let witness = witness.to_owned();
    let note = signed.note();
    let size = signed.checkpoint.size;
    let changed = blocking(move || {
        if let Some(pinned) = store
            .pin_witness_key(&witness, &key.encode())
            .map_err(|e| store_status(e, ""))?
        {
            return Err(invalid(
                "verifier_key",
                format!(
                    "{witness} cosigned with another key before ({pinned}); a changed key is refused"
                ),
            ));
        }
        let kept = store
            .witness_record(WitnessRecord::Cosigned, &witness)
            .map_err(|e| store_status(e, ""))?;
        let kept_size = kept
            .as_deref()
            .and_then(|note| SignedCheckpoint::parse(note).ok())
            .map_or(0, |kept| kept.checkpoint.size);
        if size < kept_size || kept.as_deref() == Some(note.as_str()) {
            return Ok(false); // nothing newer: nothing to write
        }
        store
            .put_witness_record(WitnessRecord::Cosigned, &witness, &note)
            .map_err(|e| store_status(e, ""))?;
        Ok(true)
    })
    .await?;
    if changed {
        state.store.flush().await.map_err(|e| store_status(e, ""))?;
    }
    Ok(())
}

/// Starts the witness: every `interval`, each peer's log is witnessed. The
/// first round is one interval after start, when peers started together
/// are up (a round that finds one down only waits for the next).
pub(crate) fn spawn_witness(state: NodeState, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            witness_round(&state).await;
        }
    })
}

/// One round over every peer, all at once (a slow one delays none).
pub(crate) async fn witness_round(state: &NodeState) {
    let peers: Vec<Arc<Peer>> = state.federation.current().registry.all().to_vec();
    futures::future::join_all(peers.into_iter().map(|peer| async move {
        match witness_peer(state, peer.clone()).await {
            Ok(()) => state.metrics.witness_cosigned(&peer.identity),
            Err(Finding::Unreachable(why)) => {
                tracing::debug!(peer = %peer.identity, why = %why, "witness round: peer not reached");
            }
            Err(Finding::Alarm(why)) => {
                // The finding's first line only: the evidence after it holds
                // what the peer sent, kept in the store, not echoed to logs.
                let finding = why.lines().next().unwrap_or_default().to_owned();
                tracing::error!(peer = %peer.identity, finding = %finding, "witness: the peer's audit log failed its check (evidence: patchwork audit witness)");
                state.metrics.witness_alarm(&peer.identity);
                let store = state.store.clone();
                let identity = peer.identity.to_string();
                let kept = blocking(move || {
                    store
                        .add_witness_alarm(&identity, &why)
                        .map_err(|e| store_status(e, ""))
                })
                .await;
                if let Err(status) = kept {
                    tracing::error!(error = %status.message(), "witness: could not keep the alarm's evidence");
                }
            }
        }
    }))
    .await;
}

/// Why a round with one peer did not end in a cosignature.
enum Finding {
    /// The peer could not be asked, or answered with an error: try later.
    Unreachable(String),
    /// The peer's log or key failed a check: an alarm, with the evidence.
    Alarm(String),
}

async fn witness_peer(state: &NodeState, peer: Arc<Peer>) -> Result<(), Finding> {
    let identity = peer.identity.to_string();
    let store = state.store.clone();
    let who = identity.clone();
    let (pinned, seen) = blocking(move || {
        Ok((
            store
                .witness_record(WitnessRecord::Pin, &who)
                .map_err(|e| store_status(e, ""))?,
            store
                .witness_record(WitnessRecord::Seen, &who)
                .map_err(|e| store_status(e, ""))?,
        ))
    })
    .await
    .map_err(|s| Finding::Unreachable(s.message().to_owned()))?;
    // A kept checkpoint that no longer parses is never taken for "none
    // seen yet", or any log would be accepted as new.
    let seen = match seen {
        None => None,
        Some(note) => Some(SignedCheckpoint::parse(&note).map_err(|e| {
            Finding::Alarm(format!(
                "the last checkpoint of its log verified here does not parse ({e}); nothing \
                 is cosigned until an operator looks"
            ))
        })?),
    };
    let old_size = seen.as_ref().map_or(0, |s| s.checkpoint.size);
    let federation = state.federation.current();
    let reply = federation
        .ask_one(
            &state.metrics,
            peer.clone(),
            v1::GetCheckpointRequest { old_size },
            |mut client, request| async move { client.get_checkpoint(request).await },
        )
        .await
        .map_err(|(outcome, detail)| {
            Finding::Unreachable(format!("{}: {detail}", outcome.as_str_name()))
        })?;
    let evidence = |why: String| {
        let mut shown: String = reply
            .checkpoint
            .chars()
            .take(patchwork_federation::checkpoint::MAX_NOTE_BYTES)
            .collect();
        if shown.len() < reply.checkpoint.len() {
            shown.push_str(" [cut]");
        }
        Finding::Alarm(format!(
            "{why}\n-- checkpoint shown:\n{shown}\n-- consistency proof from {old_size} ({} hashes): {}\n-- last verified:\n{}",
            reply.consistency_proof.len(),
            reply
                .consistency_proof
                .iter()
                .take(MAX_PROOF_HASHES)
                .map(hex::encode)
                .collect::<Vec<_>>()
                .join(" "),
            seen.as_ref().map_or("none".to_owned(), |s| s.note())
        ))
    };
    let origin = Checkpoint::origin_of(&identity);
    let key = match &pinned {
        Some(pinned) => VerifierKey::parse(pinned)
            .map_err(|e| Finding::Alarm(format!("the pinned key does not parse: {e}")))?,
        None => VerifierKey::parse(&reply.verifier_key)
            .map_err(|e| evidence(format!("its verifier key is not one: {e}")))?,
    };
    if key.name != origin {
        return Err(evidence(format!(
            "its key names {}, not {origin}",
            key.name
        )));
    }
    let mut signed = SignedCheckpoint::parse(&reply.checkpoint)
        .map_err(|e| evidence(format!("its checkpoint is not one: {e}")))?;
    if signed.verify_signed_by(&key).is_err() {
        return Err(evidence(
            if pinned.is_some() && reply.verifier_key != key.encode() {
                "its checkpoint is signed with another key than the one pinned: a changed key is refused".to_owned()
            } else {
                "its checkpoint's signature does not verify".to_owned()
            },
        ));
    }
    let checkpoint = &signed.checkpoint;
    if checkpoint.origin != origin {
        return Err(evidence(format!(
            "its checkpoint names the log {}, not {origin}",
            checkpoint.origin
        )));
    }
    if let Some(seen) = &seen {
        let old = &seen.checkpoint;
        if checkpoint.size < old.size {
            return Err(evidence(format!(
                "its log shrank from {} to {} entries: it was cut short",
                old.size, checkpoint.size
            )));
        }
        if checkpoint.size == old.size && checkpoint.root != old.root {
            return Err(evidence(format!(
                "its log of {} entries has another root than when it was last verified: it was rewritten (a fork)",
                old.size
            )));
        }
        if checkpoint.size > old.size && old.size > 0 {
            let proof: Option<Vec<tlog_tiles::Hash>> = reply
                .consistency_proof
                .iter()
                .take(MAX_PROOF_HASHES + 1)
                .map(|h| {
                    <[u8; 32]>::try_from(h.as_slice())
                        .ok()
                        .map(tlog_tiles::Hash)
                })
                .collect();
            let consistent = proof.is_some_and(|proof| {
                tlog_tiles::check_tree(
                    &proof,
                    checkpoint.size,
                    tlog_tiles::Hash(checkpoint.root),
                    old.size,
                    tlog_tiles::Hash(old.root),
                )
                .is_ok()
            });
            if !consistent {
                return Err(evidence(format!(
                    "its log of {} entries does not extend the one of {} last verified: it was rewritten (the consistency proof fails)",
                    checkpoint.size, old.size
                )));
            }
        }
    }
    // Verified: kept (and the key pinned), then cosigned and handed back,
    // with the log's signature and this node's only: a note padded with
    // other lines never grows past what parses when it is read back.
    let own_name = state.audit_key.name().to_owned();
    signed.retain_signatures(|name| name == key.name || name == own_name);
    let cosignature = state.audit_key.cosign(signed.text(), now_unix());
    signed
        .add_cosignature(&cosignature)
        .map_err(|e| Finding::Unreachable(e.to_string()))?;
    let store = state.store.clone();
    let note = signed.note();
    let pin = key.encode();
    let who = identity.clone();
    let repinned = blocking(move || {
        let other = store
            .pin_witness_key(&who, &pin)
            .map_err(|e| store_status(e, ""))?;
        if other.is_none() {
            store
                .put_witness_record(WitnessRecord::Seen, &who, &note)
                .map_err(|e| store_status(e, ""))?;
        }
        Ok(other)
    })
    .await
    .map_err(|s| Finding::Unreachable(s.message().to_owned()))?;
    if let Some(other) = repinned {
        return Err(evidence(format!(
            "another key ({other}) was pinned for it meanwhile: a changed key is refused"
        )));
    }
    state
        .store
        .flush()
        .await
        .map_err(|e| Finding::Unreachable(e.to_string()))?;
    let request = v1::AddCosignatureRequest {
        cosigned_checkpoint: signed.note(),
        verifier_key: state.audit_key.verifier_key(),
    };
    federation
        .ask_one(
            &state.metrics,
            peer,
            request,
            |mut client, request| async move { client.add_cosignature(request).await },
        )
        .await
        .map_err(|(outcome, detail)| {
            Finding::Unreachable(format!(
                "handing back the cosignature: {}: {detail}",
                outcome.as_str_name()
            ))
        })?;
    Ok(())
}

/// What witnessing knows, for `Admin.GetWitnessStatus` and `patchwork audit
/// witness --offline`: the peers configured now, and any others records
/// name (a peer since removed).
pub fn status(
    store: &patchwork_store::Store,
    verifier_key: String,
    peers: impl IntoIterator<Item = String>,
) -> Result<v1::WitnessStatus, patchwork_store::StoreError> {
    let mut names: std::collections::BTreeSet<String> = peers.into_iter().collect();
    let pins = store.witness_records(WitnessRecord::Pin)?;
    let seen = store.witness_records(WitnessRecord::Seen)?;
    let alarms = store.witness_alarms()?;
    names.extend(pins.iter().map(|(peer, _)| peer.clone()));
    names.extend(seen.iter().map(|(peer, _)| peer.clone()));
    names.extend(alarms.iter().map(|alarm| alarm.peer.clone()));
    let find = |records: &[(String, String)], peer: &str| {
        records
            .iter()
            .find(|(p, _)| p == peer)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let peers = names
        .into_iter()
        .map(|peer| v1::WitnessedPeer {
            pinned_key: find(&pins, &peer),
            last_verified: find(&seen, &peer),
            alarms: alarms
                .iter()
                .filter(|alarm| alarm.peer == peer)
                .map(|alarm| v1::WitnessAlarm {
                    at_unix_ms: alarm.at_unix_ms,
                    detail: alarm.detail.clone(),
                })
                .collect(),
            node_id: peer,
        })
        .collect();
    let cosigned = store
        .witness_records(WitnessRecord::Cosigned)?
        .into_iter()
        .map(|(witness, checkpoint)| v1::CosignedCheckpoint {
            witness,
            checkpoint,
        })
        .collect();
    Ok(v1::WitnessStatus {
        verifier_key,
        peers,
        cosigned,
    })
}
