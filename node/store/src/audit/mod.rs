//! The audit log: an append-only record of every lookup this node made and
//! every question a peer asked it, so a data-protection officer can say who
//! saw what and why, and anyone holding a checkpoint of it can tell if an
//! entry was altered, removed, reordered or cut off since.
//!
//! The entries live in their own files, outside sled (`log`): segment files
//! appended to with one `fdatasync` a group, each entry a leaf of an RFC 6962
//! Merkle tree. An entry's body, the bytes the tree hashes, is a format byte
//! (2), `at_unix_ms` (i64 big-endian), a salt and the event (postcard), exactly as
//! stored: verifying never re-encodes, so a later version of the event
//! types cannot change old hashes. Between the time and the event, 16
//! random bytes ([`SALT_LEN`]): proofs show peers the hashes of entries next
//! to the ones they prove, and an unsalted hash of a peer's own question
//! would let it test which outcome the answer withheld. Entry `seq` (from 1,
//! no gaps) is leaf `seq - 1`.
//!
//! Indexes, in files of their own beside the log (`index`; derived,
//! rebuilt from the log): by person, for subject-access reports (the person
//! a local lookup matched, the person a peer's question matched, each
//! family member a family lookup disclosed about); and each answer's
//! lookup start, so a report can say who asked and why next to what was
//! disclosed.
//!
//! Writes: callers queue their events and one leader task at a time
//! appends everything queued to the log, then writes their index entries
//! and the indexed count in one sled transaction. The `fdatasync` that makes a group durable runs
//! in its own task while the leader takes the next batch; sled is not
//! flushed for it, because the indexes are rebuilt from the log at open
//! from the indexed count on. **If the audit cannot be written, nothing is
//! disclosed** is the caller's duty: call [`Store::append_audits_durably`]
//! and disclose only once it returns `Ok`.
//!
//! Logs written by versions that kept a hash chain in sled (`legacy`) move
//! into the segment log at the first open, verified as they go; the walk's
//! finding is the first new entry (`AuditMigrated`).
//!
//! What the tree alone cannot show: someone who can write the store can
//! rebuild the whole log consistently. Checkpoints signed by the node and
//! cosigned by its peers close that.
//!
//! No names, dates of birth or identifiers of a person are ever written
//! here: person ids (the council's own), involvement ids, practitioner ids
//! and the purpose the requester gave.

pub mod archive;
mod index;
mod legacy;
mod log;

use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use log::ArchiveRecord;
pub(crate) use log::SegmentLog;

use super::{Kind, Store, StoreError};
use crate::model::LawfulBasis;

/// An entry body's first byte (format 1 was the hash chain's).
const ENTRY_FORMAT_V2: u8 = 2;
/// Random bytes in every entry body. Proofs hand peers the hashes of
/// entries next to the ones they prove; without a salt, a peer could try
/// the few outcomes its own question could have had (`no_match` or
/// `ambiguous_withheld`, at about the time it asked) against the hash of
/// its own entry and learn what the answer withheld.
const SALT_LEN: usize = 16;
/// format + at_unix_ms + salt.
const BODY_HEADER_LEN: usize = 1 + 8 + SALT_LEN;

/// The indexes' folder inside the log's (see `index`).
const INDEX_FOLDER: &str = "index";
/// sled trees older versions kept the indexes in, dropped at open.
const OLD_INDEX_TREES: [&str; 2] = ["audit_by_person", "audit_by_lookup"];
/// How far back from an answer a lookup's start is looked for in the log
/// when the index does not have it (a lookup that spanned a crash).
const START_SEARCH_ENTRIES: u64 = 1 << 20;

/// The log's folder inside the store's.
pub(crate) const LOG_FOLDER: &str = "audit-log";

/// Entries read a batch while moving an old chain or rebuilding indexes.
const CARRY_BATCH: usize = 1_024;

/// Most events one group write appends: bounds the time the leader holds
/// the log.
const MAX_GROUP_EVENTS: usize = 1_024;

/// Durable appends waiting for the leader (see the module's docs).
#[derive(Debug, Default)]
pub(super) struct AuditQueue {
    state: Mutex<QueueState>,
}

#[derive(Debug, Default)]
struct QueueState {
    waiting: Vec<Waiting>,
    /// Whether a leader task is running: it takes everything queued until
    /// the queue is empty, and only then clears this (under the same lock
    /// as the push, so no append is left without a leader).
    leading: bool,
}

type Appended = Result<Vec<AuditEntry>, StoreError>;

#[derive(Debug)]
struct Waiting {
    events: Vec<AuditEvent>,
    /// Answer only once the entries are flushed; otherwise once appended.
    durable: bool,
    reply: oneshot::Sender<Appended>,
}

impl AuditQueue {
    fn lock(&self) -> parking_lot::MutexGuard<'_, QueueState> {
        self.state.lock()
    }
}

/// Clears the leader's flag when the leader task ends in any way but the
/// normal one (which clears it under the lock, with the queue empty).
struct SteppingDown<'a> {
    queue: &'a AuditQueue,
    /// Cleared when the leader steps down normally.
    armed: bool,
}

impl Drop for SteppingDown<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut queue = self.queue.lock();
        if queue.leading {
            queue.leading = false;
            // Dropping their senders tells them the writer stopped.
            queue.waiting.clear();
        }
    }
}

/// The same failure for every caller in a batch (sled's and std's errors
/// are not `Clone`).
fn shared_failure(error: &StoreError) -> StoreError {
    StoreError::File(std::io::Error::other(error.to_string()))
}

/// What happened. Ids only: never a person's name, date of birth or
/// identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditEvent {
    /// A local practitioner's lookup, written before any query leaves the
    /// node.
    LookupStarted {
        lookup_id: String,
        /// The SPIFFE id of the calling system (e.g. the council's portal).
        caller: String,
        /// The practitioner's id on this node.
        requester: String,
        lawful_basis: LawfulBasis,
        reason: String,
        /// The peers' SPIFFE ids.
        peers_asked: Vec<String>,
    },
    /// What that lookup found, written before the answer goes back to the
    /// practitioner.
    LookupAnswered {
        lookup_id: String,
        /// `matched`, `no_match` or `ambiguous`.
        local_outcome: String,
        /// The local person matched, if any (indexed for subject access).
        local_person_id: Option<String>,
        disclosed_involvement_ids: Vec<String>,
        peers: Vec<PeerOutcome>,
    },
    /// A peer's question to this node, and what this node answered.
    PeerAsked {
        request_id: String,
        /// The SPIFFE id from the peer's verified certificate.
        peer: String,
        requester_practitioner_id: String,
        requester_name: String,
        requester_role: String,
        requester_organisation: String,
        /// `None` if the request did not even carry a valid one.
        lawful_basis: Option<LawfulBasis>,
        reason: String,
        /// `matched`, `matched_withheld` (matched, but nothing its agreement
        /// allows was current, so the peer was told `no_match`), `no_match`,
        /// `ambiguous`, `ambiguous_withheld` (doubt only about persons of
        /// whom it may see nothing: told `no_match`) or `refused`.
        outcome: String,
        refusal: Option<String>,
        /// The local person matched, if any (indexed for subject access).
        person_id: Option<String>,
        disclosed_involvement_ids: Vec<String>,
    },
    /// A cross-border subscription notification this node handed to a peer
    /// (`Federation.PollNotifications`), written before the reply.
    NotificationSent {
        /// The SPIFFE id from the peer's verified certificate.
        peer: String,
        subscription_id: String,
        person_id: String,
        /// The event's sequence number in this node's outbox.
        event_cursor: u64,
        disclosed_involvement_ids: Vec<String>,
    },
    /// A cross-border subscription made here for a local practitioner
    /// (`Directory.Subscribe`), one entry per peer asked.
    SubscriptionMade {
        subscription_id: String,
        peer: String,
        requester: String,
        lawful_basis: LawfulBasis,
        reason: String,
        /// `matched`, `no_match`, `ambiguous`, `refused`, `unreachable` ...
        outcome: String,
    },
    /// A peer's notification this node put in a local practitioner's outbox.
    NotificationReceived {
        peer: String,
        subscription_id: String,
        practitioner_id: String,
        /// The peer's cursor for it.
        remote_cursor: u64,
        /// The local outbox sequence number it was written as; 0 in entries
        /// written before the notification entered the outbox (every entry
        /// since the audit was made to come first: peer, subscription and
        /// remote cursor identify the notification).
        event_cursor: u64,
    },
    /// The family members whose involvements a lookup (`include_family`)
    /// disclosed along with the matched person's: written in the same
    /// durable append as, and straight after, that lookup's
    /// `LookupAnswered` or the peer's `PeerAsked`, and indexed under each
    /// member, so their own subject-access reports show it.
    ///
    /// Its own variant, appended last, rather than a field on those two:
    /// events are postcard, which is not self-describing. A struct's fields
    /// are read by position and an old entry has no bytes for a new one, so
    /// it would no longer decode (`#[serde(default)]` cannot help: postcard
    /// never reports a field as missing). A new variant only adds a new tag;
    /// old entries decode as before, and their hashes, over the stored
    /// bytes, are untouched. Never insert a variant above this one.
    FamilyDisclosed {
        /// The lookup id (a local lookup) or the peer's request id.
        reference: String,
        /// The peer that asked (its SPIFFE id); `None` for a local lookup.
        peer: Option<String>,
        /// The matched person whose family this is.
        person_id: String,
        /// Each member something was disclosed about.
        members: Vec<FamilyMemberDisclosed>,
    },
    /// A `Directory.Watch` stream opened on a practitioner's team events
    /// (which say who is on their caseload), written before the first event
    /// goes.
    WatchOpened {
        /// The SPIFFE id of the calling system.
        caller: String,
        /// The practitioner watched, on this node.
        practitioner_id: String,
        /// Events after this sequence number go (the outbox's durable end
        /// when the watch asked for "from now on").
        after_cursor: u64,
    },
    /// Refusals of one caller for one reason over a period, counted rather
    /// than written one by one (a caller without an agreement, or a peer
    /// over its rate, could otherwise make the node write per request):
    /// `patchwork_federation::hostile::RefusalTally`. Carries nothing the
    /// caller wrote, only its verified identity.
    PeerRefusals {
        /// The SPIFFE id from the caller's verified certificate (or "other
        /// callers" once too many distinct ones were refused in a period).
        caller: String,
        /// `no_agreement`, `rate_limited` or `paused_enumeration`.
        reason: String,
        count: u64,
        first_unix_seconds: i64,
        last_unix_seconds: i64,
    },
    /// A reload changed who this node federates with or on what terms
    /// (peers, agreements, key sets, limits), written before the change is
    /// in force. Names identities, purposes and key-set fingerprints, never
    /// a secret or a person.
    FederationChanged {
        /// `SIGHUP`, or `admin reload by` the SPIFFE id of `patchwork reload`'s caller.
        trigger: String,
        /// One line per change, in the config's words.
        changes: Vec<String>,
    },
    /// The first entry a node writes after moving the hash chain an older
    /// version kept into the Merkle log: what the chain's walk found.
    AuditMigrated {
        /// Entries moved (all of them, even past a break).
        entries: u64,
        /// Whether every entry and link of the chain verified.
        intact: bool,
        detail: String,
    },
    /// A person erased (`Directory.ErasePerson`), written durably before
    /// the erasure: who asked, why, and what was to go, counted. The
    /// person's id stays here, nothing else of them.
    PersonErased {
        person_id: String,
        /// The SPIFFE id of the calling system.
        caller: String,
        reason: String,
        /// "the person record", "3 involvements", ... (`erasure::Erased`).
        removed: Vec<String>,
    },
    /// What a retention run is about to delete, written durably before it
    /// does (one entry per batch of at most 256 of each): by which rules,
    /// the ids.
    RetentionApplied {
        /// `daily`, or `patchwork retention run` by the caller's SPIFFE id.
        trigger: String,
        /// The rules in force, in the config's words.
        rules: Vec<String>,
        /// Ended involvements deleted.
        involvement_ids: Vec<String>,
        /// Persons erased, with everything naming them.
        person_ids: Vec<String>,
    },
    /// Items a `RetentionApplied` entry named that were no longer due when
    /// the run came to them (a person active again, an involvement
    /// reopened), and were kept.
    RetentionSkipped {
        involvement_ids: Vec<String>,
        person_ids: Vec<String>,
    },
    /// What a `--mirror` import is about to delete because the case
    /// system's export no longer holds it, written durably before it does
    /// (one entry per batch of at most 256 ids).
    ImportMirrored {
        /// The SPIFFE id of the calling system.
        caller: String,
        /// The import's source (the file's name).
        source: String,
        /// Persons erased, with everything naming them.
        person_ids: Vec<String>,
        /// Involvements deleted.
        involvement_ids: Vec<String>,
    },
    /// A subject-access report produced (`Admin.SubjectAccessReport`),
    /// written before it goes.
    SubjectAccessReported {
        person_id: String,
        /// The SPIFFE id of the calling system.
        caller: String,
        /// The entries it reported.
        entries: u64,
    },
    /// Entries audit retention sealed into an archive file, written
    /// durably after the file and before the entries leave the log: so the
    /// log says, for ever, where its first entries went.
    AuditArchived {
        /// `daily`, or `patchwork retention run` by the caller's SPIFFE id.
        trigger: String,
        /// The rule, in the config's words.
        rule: String,
        /// The entries archived, `first_seq..=last_seq`.
        first_seq: u64,
        last_seq: u64,
        /// The archive file's name and SHA-256 (hex).
        file: String,
        sha256: String,
    },
}

/// One family member's part in a family lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyMemberDisclosed {
    /// The member's person id on this node (indexed for subject access).
    pub person_id: String,
    /// Their involvements whose contacts were disclosed.
    pub disclosed_involvement_ids: Vec<String>,
}

/// One peer's part in a lookup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerOutcome {
    /// The peer's SPIFFE id.
    pub node_id: String,
    /// `matched`, `no_match`, `ambiguous`, `refused`, `timed_out`,
    /// `unreachable` or `error`.
    pub outcome: String,
    pub detail: String,
    /// How many involvements the peer disclosed.
    pub disclosed: u32,
}

impl AuditEvent {
    /// The local persons this event is about: what subject-access reports
    /// find it by (the person a lookup or a peer's question matched, the
    /// family members one disclosed about).
    pub fn person_ids(&self) -> Vec<&str> {
        match self {
            AuditEvent::LookupAnswered {
                local_person_id, ..
            } => local_person_id.as_deref().into_iter().collect(),
            AuditEvent::PeerAsked { person_id, .. } => person_id.as_deref().into_iter().collect(),
            AuditEvent::NotificationSent { person_id, .. } => vec![person_id],
            AuditEvent::FamilyDisclosed { members, .. } => {
                members.iter().map(|m| m.person_id.as_str()).collect()
            }
            AuditEvent::PersonErased { person_id, .. }
            | AuditEvent::SubjectAccessReported { person_id, .. } => vec![person_id],
            AuditEvent::RetentionApplied { person_ids, .. }
            | AuditEvent::RetentionSkipped { person_ids, .. }
            | AuditEvent::ImportMirrored { person_ids, .. } => {
                person_ids.iter().map(String::as_str).collect()
            }
            AuditEvent::LookupStarted { .. }
            | AuditEvent::SubscriptionMade { .. }
            | AuditEvent::NotificationReceived { .. }
            | AuditEvent::PeerRefusals { .. }
            | AuditEvent::FederationChanged { .. }
            | AuditEvent::WatchOpened { .. }
            | AuditEvent::AuditMigrated { .. }
            | AuditEvent::AuditArchived { .. } => Vec::new(),
        }
    }

    /// The `FamilyDisclosed` entry for a family lookup of `person_id`, or
    /// `None` if nothing was disclosed about any member.
    pub fn family_disclosed(
        reference: &str,
        peer: Option<String>,
        person_id: &str,
        members: Vec<FamilyMemberDisclosed>,
    ) -> Option<AuditEvent> {
        (!members.is_empty()).then(|| AuditEvent::FamilyDisclosed {
            reference: reference.to_owned(),
            peer,
            person_id: person_id.to_owned(),
            members,
        })
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// From 1, no gaps.
    pub seq: u64,
    pub at_unix_ms: i64,
    pub event: AuditEvent,
    /// The entry's leaf hash in the log's Merkle tree (RFC 6962:
    /// SHA-256 of 0x00 and the entry's body).
    pub leaf_hash: [u8; 32],
}

/// What the checkpoints its witnesses cosigned say of a log of `len`
/// entries whose root is `root`: a summary, and the first disagreement.
impl Store {
    fn check_against_witnesses(
        &self,
        len: u64,
        root: &tlog_tiles::Hash,
    ) -> Result<(String, Option<(u64, String)>), StoreError> {
        use crate::witness::WitnessRecord;
        use patchwork_federation::checkpoint::{SignedCheckpoint, VerifierKey};
        let mut vouched = Vec::new();
        for (witness, note) in self.witness_records(WitnessRecord::Cosigned)? {
            let pinned = self
                .witness_record(WitnessRecord::Pin, &witness)?
                .and_then(|key| VerifierKey::parse(&key).ok());
            let (Ok(signed), Some(pinned)) = (SignedCheckpoint::parse(&note), pinned) else {
                continue; // not a record this node wrote: nothing to hold the log to
            };
            let Ok(time) = signed.cosigned_by(&pinned) else {
                continue;
            };
            let checkpoint = &signed.checkpoint;
            let when = time_of_unix(time);
            if checkpoint.size > len {
                return Ok((
                    String::new(),
                    Some((
                        len + 1,
                        format!(
                            "the log holds {len} entries, but {witness} cosigned a checkpoint of \
                             {} at {when}: the log was cut short",
                            checkpoint.size
                        ),
                    )),
                ));
            }
            let at_size = if checkpoint.size == len {
                *root
            } else {
                match self.audit.log.root(checkpoint.size) {
                    Ok(at_size) => at_size,
                    // Inside the archived entries: the archives answer for
                    // it (`patchwork audit archive FILE --key KEY`).
                    Err(StoreError::Archived { .. }) => {
                        vouched.push(format!(
                            "{witness} at {} entries ({when}, inside the archived entries: not \
                             checked)",
                            checkpoint.size
                        ));
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            if at_size.0 != checkpoint.root {
                return Ok((
                    String::new(),
                    Some((
                        1,
                        format!(
                            "the log's first {} entries no longer match the checkpoint {witness} \
                             cosigned at {when}: the log was rewritten",
                            checkpoint.size
                        ),
                    )),
                ));
            }
            vouched.push(format!("{witness} at {} entries ({when})", checkpoint.size));
        }
        let summary = if vouched.is_empty() {
            "; no witness has cosigned a checkpoint of it yet".to_owned()
        } else {
            format!(
                "; consistent with the checkpoints cosigned by {}",
                vouched.join(", ")
            )
        };
        Ok((summary, None))
    }
}

fn time_of_unix(seconds: u64) -> String {
    log::time_of(
        i64::try_from(seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
    )
}

/// The result of re-reading the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Entries found in the log.
    pub entries: u64,
    pub intact: bool,
    /// The first entry that does not verify (for a truncated log, the first
    /// one missing).
    pub first_bad_entry: Option<u64>,
    /// What is wrong, or a one-line summary when intact.
    pub detail: String,
    /// Entries from the first that audit retention archived: not read,
    /// the tree over them taken from the hashes kept of them.
    pub archived_entries: u64,
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        kind: Kind::AuditEntry,
        detail: detail.into(),
    }
}

fn encode_body(at_unix_ms: i64, event: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_HEADER_LEN + event.len());
    body.push(ENTRY_FORMAT_V2);
    body.extend_from_slice(&at_unix_ms.to_be_bytes());
    body.extend_from_slice(&rand::random::<[u8; SALT_LEN]>());
    body.extend_from_slice(event);
    body
}

fn decode_body(seq: u64, body: &[u8]) -> Result<AuditEntry, String> {
    match body.first() {
        Some(&ENTRY_FORMAT_V2) if body.len() >= BODY_HEADER_LEN => {}
        Some(format) if body.len() >= BODY_HEADER_LEN => {
            return Err(format!("unknown entry format {format}"));
        }
        _ => {
            return Err(format!(
                "entry is {} bytes, shorter than its header",
                body.len()
            ));
        }
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&body[1..9]);
    let event =
        postcard::from_bytes(&body[BODY_HEADER_LEN..]).map_err(|e| format!("event: {e}"))?;
    Ok(AuditEntry {
        seq,
        at_unix_ms: i64::from_be_bytes(at),
        event,
        leaf_hash: tlog_tiles::record_hash(body).0,
    })
}

/// Checks, offline, that `body` is entry `seq` of the log whose first
/// `size` entries have Merkle root `root`, by its inclusion proof; then
/// reads the entry from it. What `patchwork audit prove` runs for each
/// piece of a subject-access report's evidence.
pub fn prove_entry(
    seq: u64,
    body: &[u8],
    proof: &[[u8; 32]],
    size: u64,
    root: [u8; 32],
) -> Result<AuditEntry, String> {
    let index = seq
        .checked_sub(1)
        .ok_or_else(|| "entry 0 does not exist: entries count from 1".to_owned())?;
    if index >= size {
        return Err(format!(
            "entry {seq} is past the checkpoint, which covers {size} entries"
        ));
    }
    let proof: tlog_tiles::RecordProof = proof.iter().copied().map(tlog_tiles::Hash).collect();
    tlog_tiles::check_record(
        &proof,
        size,
        tlog_tiles::Hash(root),
        index,
        tlog_tiles::record_hash(body),
    )
    .map_err(|_| {
        format!("entry {seq} is not the entry the checkpoint's tree holds: it was changed")
    })?;
    decode_body(seq, body).map_err(|why| format!("entry {seq}: {why}"))
}

pub(crate) fn now_unix_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// The audit log's state a store holds: the log and what opening it found.
#[derive(Debug)]
pub(crate) struct AuditLog {
    pub(crate) log: SegmentLog,
    /// Its indexes (by person, lookup starts), derived from it.
    pub(crate) index: index::AuditIndex,
    /// Set when the log was found cut short or altered at this open or an
    /// earlier one; reported by every verification until dealt with.
    /// The first entry it concerns, and what was found.
    pub(crate) alarm: Option<(u64, String)>,
    /// Held shared by a backup from its snapshot to its last entry, and
    /// exclusively by a prune: a backup's log starts where its record of
    /// the archived entries ends.
    pub(crate) prune_gate: parking_lot::RwLock<()>,
}

impl AuditLog {
    /// Makes every entry appended so far durable; then writes the index's
    /// head if one is due and now covered (a failure there is logged: the
    /// next open re-reads a little more of the log).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.log.sync()?;
        if let Err(error) = self.index.persist_due(self.log.durable_len()) {
            tracing::warn!(%error, "the audit index's head was not written; the next start re-indexes from the last one");
        }
        Ok(())
    }

    pub(crate) fn open(store_dir: &std::path::Path) -> Result<Arc<Self>, StoreError> {
        let (log, report) = SegmentLog::open(&store_dir.join(LOG_FOLDER))?;
        if report.torn_tail_bytes > 0 {
            tracing::warn!(
                bytes = report.torn_tail_bytes,
                "the audit log's last record was cut off by a crash while it was written; it was never acknowledged, and is removed"
            );
        }
        if let Some((_, alarm)) = &report.alarm {
            tracing::error!(alarm = %alarm, "the audit log was cut short or altered");
        }
        let (index, _) = index::AuditIndex::open(&store_dir.join(LOG_FOLDER).join(INDEX_FOLDER))?;
        Ok(Arc::new(AuditLog {
            log,
            index,
            alarm: report.alarm,
            prune_gate: parking_lot::RwLock::new(()),
        }))
    }
}

impl Store {
    /// Appends `event` to the log and returns its entry. Not durable until
    /// [`Store::flush`]: use [`Store::append_audits_durably`] before
    /// disclosing anything.
    pub fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        let mut entries = self.append_audit_batch(std::slice::from_ref(&event), now_unix_ms())?;
        entries
            .pop()
            .ok_or_else(|| corrupt("an append returned no entry"))
    }

    /// Appends `events` in order, all stamped `at_unix_ms`, and indexes them.
    fn append_audit_batch(
        &self,
        events: &[AuditEvent],
        at_unix_ms: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let _gate = self.audit_gate();
        self.append_audit_batch_gated(events, at_unix_ms)
    }

    /// [`Store::append_audit_batch`], for a caller already through the write
    /// gate (a backup sees the log and its indexes at one length).
    fn append_audit_batch_gated(
        &self,
        events: &[AuditEvent],
        at_unix_ms: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let bodies = events
            .iter()
            .map(|event| {
                postcard::to_stdvec(event)
                    .map(|bytes| encode_body(at_unix_ms, &bytes))
                    .map_err(|e| corrupt(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = self.audit.log.append(&bodies)? + 1;
        // Entries of an earlier group whose index write failed (a full
        // disk) are indexed first: the indexed count never jumps a gap.
        let indexed = self.audit_indexed()?;
        if indexed + 1 < first {
            self.index_from_log(indexed + 1, first - 1)?;
        }
        let pairs: Vec<(u64, &AuditEvent)> = (first..).zip(events).collect();
        self.index_audit(&pairs, first + events.len() as u64 - 1)?;
        Ok(events
            .iter()
            .zip(bodies)
            .enumerate()
            .map(|(i, (event, body))| AuditEntry {
                seq: first + i as u64,
                at_unix_ms,
                event: event.clone(),
                leaf_hash: tlog_tiles::record_hash(&body).0,
            })
            .collect())
    }

    /// Indexes `entries` (seq, event), which cover the log through
    /// `through` (see `index`).
    fn index_audit(&self, entries: &[(u64, &AuditEvent)], through: u64) -> Result<(), StoreError> {
        self.audit.index.add(entries, through)
    }

    /// Indexes entries `from..=to` from the log. An entry that cannot be
    /// read or decoded is passed over (logged; `verify_audit` names it): one
    /// damaged entry must not keep the node from starting.
    fn index_from_log(&self, from: u64, to: u64) -> Result<(), StoreError> {
        let mut seq = from;
        while seq <= to {
            let upto = (seq + CARRY_BATCH as u64 - 1).min(to);
            let mut events = Vec::with_capacity(CARRY_BATCH);
            for at in seq..=upto {
                match self.audit_entry(at) {
                    Ok(Some(entry)) => events.push((at, entry.event)),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(entry = at, error = %e, "an audit entry cannot be read to index it");
                    }
                }
            }
            let pairs: Vec<(u64, &AuditEvent)> = events.iter().map(|(s, e)| (*s, e)).collect();
            self.index_audit(&pairs, upto)?;
            seq = upto + 1;
        }
        Ok(())
    }

    /// How many entries the indexes cover.
    fn audit_indexed(&self) -> Result<u64, StoreError> {
        Ok(self.audit.index.indexed())
    }

    /// At open: moves a hash chain left by an older version into the log,
    /// drops the sled trees older versions indexed it in, then indexes
    /// whatever the indexes do not cover yet (everything, the first time;
    /// otherwise the entries since the index last recorded its head).
    pub(crate) fn open_audit(&self) -> Result<(), StoreError> {
        let names = self.db.tree_names();
        if names.iter().any(|name| name.as_ref() == b"audit") {
            self.migrate_audit_chain()?;
        }
        for old in OLD_INDEX_TREES {
            if names.iter().any(|name| name.as_ref() == old.as_bytes()) {
                self.db.drop_tree(old)?;
            }
        }
        let len = self.audit.log.len();
        let mut indexed = self.audit_indexed()?;
        if indexed > len {
            // The index is of a longer log (this one was cut short, or is
            // a restore): start again.
            self.audit.index.reset()?;
            indexed = 0;
        }
        if indexed < len {
            // Archived entries are read from their archives, not the index.
            let archived = self.audit.log.archived();
            if indexed < archived {
                self.audit.index.add(&[], archived)?;
            }
            self.index_from_log(indexed.max(archived) + 1, len)?;
            self.audit.index.persist_now()?;
            tracing::info!(
                entries = len - indexed,
                "indexed audit entries the index did not cover yet"
            );
        }
        Ok(())
    }

    /// Moves the old hash chain (`legacy`) into the log: every entry, in
    /// order, then an `AuditMigrated` entry saying what the chain's walk
    /// found; only then is the old tree dropped. A crash part-way starts
    /// again where the log ends (the old entries come out the same).
    fn migrate_audit_chain(&self) -> Result<(), StoreError> {
        let old = self.db.open_tree("audit")?;
        let head = self.meta.get(legacy::HEAD_KEY)?;
        let already = self.audit.log.len();
        let mut carried = 0u64;
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(CARRY_BATCH);
        let walk = legacy::walk(&old, head.as_deref(), |entry| {
            carried += 1;
            // Entries already moved by an earlier, interrupted start.
            if carried <= already {
                return Ok(());
            }
            if entry.seq != carried {
                // The log's numbering is the position: a gap in the old chain
                // closes up (the walk reports it).
                tracing::warn!(
                    old_seq = entry.seq,
                    new_seq = carried,
                    "audit entry renumbered while migrating"
                );
            }
            batch.push(encode_body(entry.at_unix_ms, &entry.event));
            if batch.len() == CARRY_BATCH {
                self.audit.log.append(&std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        self.audit.log.append(&batch)?;
        self.audit.log.sync()?;
        if self.audit.log.len() == walk.entries {
            let event = AuditEvent::AuditMigrated {
                entries: walk.entries,
                intact: walk.intact,
                detail: walk.detail.clone(),
            };
            let bytes = postcard::to_stdvec(&event).map_err(|e| corrupt(e.to_string()))?;
            self.audit
                .log
                .append(&[encode_body(now_unix_ms(), &bytes)])?;
            self.audit.log.sync()?;
        }
        if walk.intact {
            tracing::info!(
                entries = walk.entries,
                "moved the audit hash chain into the Merkle log"
            );
        } else {
            tracing::error!(entries = walk.entries, finding = %walk.detail, "moved the audit hash chain into the Merkle log; it did not verify");
        }
        // Entries the old index named keep their numbers (a gap aside).
        self.db.drop_tree("audit")?;
        self.meta.remove(legacy::HEAD_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    /// Appends `events`, consecutively and in order, and makes them durable:
    /// queued for the next group write (see the module's docs), then
    /// flushed. On `Err`, disclose nothing.
    pub async fn append_audits_durably(
        &self,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.queue_audit(events, true).await
    }

    /// Appends `events` through the same group write, answering once they
    /// are in the log but before they are flushed: for an entry that must
    /// precede something in the log (a lookup's start, before its questions
    /// go out) but discloses nothing itself, so it can become durable with
    /// the entry that does.
    pub async fn append_audits(
        &self,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.queue_audit(events, false).await
    }

    async fn queue_audit(
        &self,
        events: Vec<AuditEvent>,
        durable: bool,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, appended) = oneshot::channel();
        let lead = {
            let mut queue = self.audit_queue.lock();
            queue.waiting.push(Waiting {
                events,
                durable,
                reply,
            });
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            // Its own task: a caller that gives up (a cancelled RPC) must not
            // take the other callers' writes with it.
            let store = self.clone();
            tokio::spawn(async move { store.lead_audit_writes().await });
        }
        appended
            .await
            .map_err(|_| std::io::Error::other("the audit writer stopped"))?
    }

    /// The leader: appends whatever is queued, one transaction a batch,
    /// until the queue is empty. Each batch's flush and replies run in
    /// their own task, so the next batch is appended while the last one is
    /// flushed (and the flushes themselves group-commit).
    async fn lead_audit_writes(self) {
        // Whichever way this task ends (a panic in an append, the runtime
        // shutting down), the next append must find no leader and start one;
        // whoever is still queued hears that the writer stopped.
        let mut stepping_down = SteppingDown {
            queue: &self.audit_queue,
            armed: true,
        };
        loop {
            // Let the tasks that are ready run first: those about to queue an
            // append join this batch instead of starting the next.
            tokio::task::yield_now().await;
            let batch = {
                let mut queue = self.audit_queue.lock();
                if queue.waiting.is_empty() {
                    queue.leading = false;
                    stepping_down.armed = false;
                    return;
                }
                let mut taken = 0;
                let count = queue
                    .waiting
                    .iter()
                    .take_while(|w| {
                        taken += w.events.len();
                        taken <= MAX_GROUP_EVENTS || taken == w.events.len()
                    })
                    .count();
                queue.waiting.drain(..count).collect::<Vec<_>>()
            };
            let events: Vec<AuditEvent> = batch
                .iter()
                .flat_map(|w| w.events.iter().cloned())
                .collect();
            // Appended right here, on the runtime's worker: one transaction a
            // batch costs less than a hop to the blocking pool and back. But
            // not while a backup holds the write gate (for the whole walk of
            // the store): then on the blocking pool, so no worker waits.
            let inline = self
                .try_audit_gate()
                .map(|_gate| self.append_audit_batch_gated(&events, now_unix_ms()));
            let appended = match inline {
                Some(appended) => appended,
                None => {
                    let store = self.clone();
                    match tokio::task::spawn_blocking(move || {
                        store.append_audit_batch(&events, now_unix_ms())
                    })
                    .await
                    {
                        Ok(appended) => appended,
                        Err(_) => Err(StoreError::File(std::io::Error::other(
                            "the audit append stopped",
                        ))),
                    }
                }
            };
            let (entries, failure) = match appended {
                Ok(entries) => (entries, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            // Each caller's own entries, in the order they were queued.
            let mut entries = entries.into_iter();
            let mut flush_waiters = Vec::new();
            for waiting in batch {
                let mine: Vec<AuditEntry> = entries.by_ref().take(waiting.events.len()).collect();
                match (&failure, waiting.durable) {
                    (Some(e), _) => {
                        let _ = waiting.reply.send(Err(shared_failure(e)));
                    }
                    (None, false) => {
                        let _ = waiting.reply.send(Ok(mine));
                    }
                    (None, true) => flush_waiters.push((waiting.reply, mine)),
                }
            }
            if flush_waiters.is_empty() {
                continue;
            }
            let store = self.clone();
            tokio::spawn(async move {
                match store.sync_audit().await {
                    Ok(()) => {
                        for (reply, mine) in flush_waiters {
                            let _ = reply.send(Ok(mine));
                        }
                    }
                    Err(e) => {
                        for (reply, _) in flush_waiters {
                            let _ = reply.send(Err(shared_failure(&e)));
                        }
                    }
                }
            });
        }
    }

    /// Makes every audit entry appended so far durable (one `fdatasync`
    /// shared by whoever asks meanwhile).
    pub(crate) async fn sync_audit(&self) -> Result<(), StoreError> {
        let audit = Arc::clone(&self.audit);
        tokio::task::spawn_blocking(move || audit.sync())
            .await
            .map_err(|_| std::io::Error::other("the audit sync stopped"))?
    }

    /// How many entries the log has.
    pub fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(self.audit.log.len())
    }

    /// Entry `seq`, if there is one (not verified: see [`Store::verify_audit`]).
    pub fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        let Some(index) = seq.checked_sub(1) else {
            return Ok(None);
        };
        self.audit
            .log
            .read(index)?
            .map(|body| {
                decode_body(seq, &body).map_err(|why| corrupt(format!("entry {seq}: {why}")))
            })
            .transpose()
    }

    /// Entry `seq`'s bytes as the log holds them (what its leaf hash is
    /// over): evidence a subject-access report carries.
    pub fn audit_entry_body(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match seq.checked_sub(1) {
            Some(index) => self.audit.log.read(index),
            None => Ok(None),
        }
    }

    /// The entries about `person_id`, in order: local lookups that matched
    /// them and peers' questions that did. For subject-access reports.
    pub fn audit_for_person(&self, person_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = Vec::new();
        let archived = self.audit.log.archived();
        for seq in self.audit.index.seqs_of(person_id)? {
            if seq <= archived {
                continue; // in an archive file (`audit_archived`)
            }
            let entry = match self.audit_entry(seq) {
                // Archived since this began.
                Err(StoreError::Archived { .. }) => continue,
                read => read?,
            }
            .ok_or_else(|| corrupt(format!("subject-access index names missing entry {seq}")))?;
            // The index is not in the tree; trust only what the entry says.
            if entry.event.person_ids().contains(&person_id) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The `LookupStarted` entry of `lookup_id`, which entry `seq` (its
    /// answer, or a family disclosure of it) refers to: who asked and why.
    pub fn audit_lookup_started(
        &self,
        lookup_id: &str,
        seq: u64,
    ) -> Result<Option<AuditEntry>, StoreError> {
        let is_start = |entry: &AuditEntry| matches!(&entry.event, AuditEvent::LookupStarted { lookup_id: id, .. } if id == lookup_id);
        if let Some(start) = self.audit.index.start_of(seq, lookup_id)? {
            match self.audit_entry(start) {
                Ok(Some(entry)) if is_start(&entry) => return Ok(Some(entry)),
                // Its start went into an archive: the report says so.
                Err(StoreError::Archived { .. }) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        // Not indexed (the lookup spanned a crash), or the index is wrong
        // (`verify_audit` does not check it): look back in the log.
        let floor = seq
            .saturating_sub(START_SEARCH_ENTRIES)
            .max(self.audit.log.archived() + 1);
        for at in (floor..seq).rev() {
            if let Ok(Some(entry)) = self.audit_entry(at)
                && is_start(&entry)
            {
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Entries known durable: what a checkpoint may cover.
    pub fn audit_durable_len(&self) -> u64 {
        self.audit.log.durable_len()
    }

    /// The root of the log's Merkle tree over its first `size` entries.
    pub fn audit_root(&self, size: u64) -> Result<[u8; 32], StoreError> {
        Ok(self.audit.log.root(size)?.0)
    }

    /// The proof that entry `seq` is in the tree of the first `size`
    /// entries (RFC 6962 inclusion proof, leaf `seq - 1`).
    pub fn audit_inclusion_proof(&self, seq: u64, size: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let index = seq
            .checked_sub(1)
            .ok_or_else(|| corrupt("there is no entry 0"))?;
        Ok(self
            .audit
            .log
            .inclusion_proof(index, size)?
            .into_iter()
            .map(|h| h.0)
            .collect())
    }

    /// The proof that the tree of `new` entries extends the tree of `old`
    /// (RFC 6962 consistency proof).
    pub fn audit_consistency_proof(&self, old: u64, new: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        Ok(self
            .audit
            .log
            .consistency_proof(old, new)?
            .into_iter()
            .map(|h| h.0)
            .collect())
    }

    /// Re-reads every entry and reports the first one that was altered
    /// (it no longer hashes to what the log recorded when it was written,
    /// or its checksum fails), removed (the log was cut short, or a
    /// segment is missing), or left out of an index; and a log found cut
    /// short when the store opened. Safe while appends go on: it verifies
    /// the log as long as it was when it started. `Err` only if the store
    /// cannot be read.
    pub fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        // The archived point stays where it is while this reads.
        let _no_prune = self.audit.prune_gate.read();
        let indexed = self.audit_indexed()?;
        let mut index_problem: Option<(u64, String)> = None;
        // The postings of each shard, in seq order, walked beside the log:
        // each entry's persons must be the next postings of their shards,
        // and a posting left behind names an entry not about that person.
        let mut shards = self.audit.index.shards()?;
        // Postings of archived entries stay in the files; nothing reads them.
        let archived = self.audit.log.archived();
        for shard in &mut shards {
            while shard.peek()?.is_some_and(|(_, at)| *at <= archived) {
                shard.take();
            }
        }
        // The log must say, after them, that the archived entries went: an
        // `archived` file alone (anyone with the disk can write one) is no
        // reason to believe they were archived rather than removed.
        let mut archiving_audited = archived == 0;
        let check = self.audit.log.check(|index, body| {
            if index_problem.is_some() {
                return Ok(());
            }
            let seq = index + 1;
            let entry = match decode_body(seq, body) {
                Ok(entry) => entry,
                Err(why) => {
                    index_problem = Some((seq, format!("entry {seq} is unreadable ({why})")));
                    return Ok(());
                }
            };
            if matches!(entry.event, AuditEvent::AuditArchived { last_seq, .. } if last_seq == archived)
            {
                archiving_audited = true;
            }
            if seq > indexed {
                return Ok(()); // being indexed by the group that wrote it
            }
            for person_id in entry.event.person_ids() {
                let shard = &mut shards[index::AuditIndex::shard(person_id)];
                // Postings of earlier entries still waiting were planted.
                if let Some((planted, at)) = shard.peek()?.filter(|(_, at)| *at < seq).cloned() {
                    index_problem = Some((
                        at,
                        format!(
                            "the subject-access index names entry {at} under {planted}, which \
                             it is not about"
                        ),
                    ));
                    return Ok(());
                }
                match shard.peek()? {
                    Some((id, at)) if *at == seq && id == person_id => {
                        shard.take();
                    }
                    _ => {
                        index_problem = Some((
                            seq,
                            format!("entry {seq} was removed from the subject-access index"),
                        ));
                        return Ok(());
                    }
                }
            }
            Ok(())
        })?;
        if index_problem.is_none() {
            for shard in &mut shards {
                if let Some((planted, at)) = shard.peek()?.filter(|(_, at)| *at <= indexed).cloned()
                {
                    index_problem = Some((
                        at,
                        format!(
                            "the subject-access index names entry {at} under {planted}, which it \
                             is not about"
                        ),
                    ));
                    break;
                }
            }
        }
        let entries = check.entries;
        let archived = check.archived;
        let archived_note = if archived == 0 {
            String::new()
        } else {
            let archives = self.audit.log.archives();
            format!(
                "; entries 1 to {archived} were archived by audit retention into {} archive \
                 file{} (the last {}), and the tree over them still gives the root recorded \
                 when they were",
                archives.len(),
                if archives.len() == 1 { "" } else { "s" },
                archives.last().map_or(String::new(), |a| a.file.clone())
            )
        };
        // Held to its witnesses only when the log read back whole: the
        // roots of altered blocks cannot be computed (and need not be).
        let (witnessed, witness_problem) = if check.problem.is_none() && self.audit.alarm.is_none()
        {
            match self.check_against_witnesses(entries, &check.root) {
                Ok(found) => found,
                Err(StoreError::Corrupt { detail, .. }) => (String::new(), Some((1, detail))),
                Err(e) => return Err(e),
            }
        } else {
            (String::new(), None)
        };
        let archive_problem = (!archiving_audited && index_problem.is_none()).then(|| {
            (
                1,
                format!(
                    "entries 1 to {archived} are gone from the log as archived, but no \
                     AuditArchived entry in it says they were: they were removed"
                ),
            )
        });
        let problem = match (&self.audit.alarm, check.problem) {
            (Some(alarm), _) => Some(alarm.clone()),
            (None, Some((index, why))) => Some((index + 1, why)),
            (None, None) => witness_problem.or(archive_problem).or(index_problem),
        };
        Ok(match problem {
            Some((seq, detail)) => AuditVerification {
                entries,
                intact: false,
                first_bad_entry: Some(seq),
                detail,
                archived_entries: archived,
            },
            None => AuditVerification {
                entries,
                intact: true,
                first_bad_entry: None,
                archived_entries: archived,
                detail: if entries == 0 {
                    // Cosigned while empty (a node that has answered nothing yet).
                    let witnessed = witnessed
                        .strip_prefix("; no witness")
                        .map_or(witnessed.as_str(), |_| "");
                    format!("the audit log is empty{witnessed}")
                } else {
                    format!(
                        "all {} entries verify against the log's Merkle tree (root {}){archived_note}{witnessed}",
                        entries - archived,
                        hex::encode(check.root.0)
                    )
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        (dir, store)
    }

    fn asked(n: u64, person: Option<&str>) -> AuditEvent {
        AuditEvent::PeerAsked {
            request_id: format!("R-{n}"),
            peer: "spiffe://vic.patchwork.au/node/melbourne".into(),
            requester_practitioner_id: "PR-9".into(),
            requester_name: "Alex Example".into(),
            requester_role: "Child protection practitioner".into(),
            requester_organisation: "DFFH".into(),
            lawful_basis: Some(LawfulBasis::ChildSafeguarding),
            reason: "family moved interstate".into(),
            outcome: if person.is_some() {
                "matched"
            } else {
                "no_match"
            }
            .into(),
            refusal: None,
            person_id: person.map(Into::into),
            disclosed_involvement_ids: vec!["I-1".into()],
        }
    }

    fn fill(store: &Store, count: u64) -> Vec<AuditEntry> {
        (1..=count)
            .map(|n| {
                let person = (n % 2 == 0).then_some("P-1");
                store.append_audit(asked(n, person)).expect("append")
            })
            .collect()
    }

    fn bad_entry(store: &Store) -> Option<u64> {
        let verification = store.verify_audit().expect("verify");
        assert_eq!(
            verification.intact,
            verification.first_bad_entry.is_none(),
            "{verification:?}"
        );
        verification.first_bad_entry
    }

    /// The log's only segment in `store`'s folder.
    fn segment(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join(LOG_FOLDER).join(format!("seg-{:020}.log", 0))
    }

    #[test]
    fn entries_are_leaves_of_the_tree_numbered_from_one() {
        let (_dir, store) = open();
        assert_eq!(
            store.verify_audit().expect("verify"),
            AuditVerification {
                entries: 0,
                intact: true,
                first_bad_entry: None,
                detail: "the audit log is empty".into(),
                archived_entries: 0,
            }
        );
        let entries = fill(&store, 3);
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64 + 1);
            let body = store.audit.log.read(i as u64).expect("read").expect("body");
            assert_eq!(entry.leaf_hash, tlog_tiles::record_hash(&body).0);
            let bytes = postcard::to_stdvec(&entry.event).expect("encode");
            assert!(body.ends_with(&bytes) && body.len() == BODY_HEADER_LEN + bytes.len());
            assert_eq!(
                store.audit_entry(entry.seq).expect("get").as_ref(),
                Some(entry)
            );
        }
        assert_eq!(store.audit_entry(0).expect("get"), None);
        assert_eq!(store.audit_entry(4).expect("get"), None);
        assert_eq!(store.audit_len().expect("len"), 3);
        let root = store.audit_root(3).expect("root");
        let proof = store.audit_inclusion_proof(2, 3).expect("proof");
        let proof: Vec<tlog_tiles::Hash> = proof.into_iter().map(tlog_tiles::Hash).collect();
        tlog_tiles::check_record(
            &proof,
            3,
            tlog_tiles::Hash(root),
            1,
            tlog_tiles::Hash(entries[1].leaf_hash),
        )
        .expect("entry 2 is in the tree");
        let verification = store.verify_audit().expect("verify");
        assert!(verification.intact, "{verification:?}");
        assert_eq!(verification.entries, 3);
        assert!(
            verification.detail.contains(&hex::encode(root)),
            "{}",
            verification.detail
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_writes_append_in_order_and_answer_each_caller_with_its_own() {
        let (_dir, store) = open();
        let mut callers = Vec::new();
        for caller in 0..64u64 {
            let store = store.clone();
            callers.push(tokio::spawn(async move {
                let events = vec![asked(2 * caller, Some("P-1")), asked(2 * caller + 1, None)];
                // Half wait for the sync, half only for the append.
                let entries = if caller % 2 == 0 {
                    store.append_audits_durably(events.clone()).await
                } else {
                    store.append_audits(events.clone()).await
                }
                .expect("append");
                let got: Vec<AuditEvent> = entries.iter().map(|e| e.event.clone()).collect();
                assert_eq!(got, events, "caller {caller} got someone else's entries");
                assert_eq!(entries[1].seq, entries[0].seq + 1, "not consecutive");
                for entry in entries {
                    assert_eq!(store.audit_entry(entry.seq).expect("read"), Some(entry));
                }
            }));
        }
        for caller in callers {
            caller.await.expect("caller");
        }
        assert_eq!(store.audit_len().expect("len"), 128);
        let verification = store.verify_audit().expect("verify");
        assert!(verification.intact, "{verification:?}");
        assert_eq!(store.audit_for_person("P-1").expect("by person").len(), 64);
    }

    #[test]
    fn the_log_and_its_indexes_continue_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            fill(&store, 4);
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        let next = store.append_audit(asked(5, Some("P-1"))).expect("append");
        assert_eq!(next.seq, 5);
        assert_eq!(bad_entry(&store), None);
        assert_eq!(store.audit_for_person("P-1").expect("report").len(), 3);
    }

    #[test]
    fn entries_a_crash_left_unindexed_are_indexed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            // The index's head records entries 1 and 2; entries 3 and 4 are
            // in its files, but a crash came before the next head: they
            // are cut off at open and indexed again, never twice.
            fill(&store, 2);
            store.audit.index.persist_now().expect("head");
            let more = (3..=4)
                .map(|n| asked(n, (n % 2 == 0).then_some("P-1")))
                .collect::<Vec<_>>();
            for event in more {
                store.append_audit(event).expect("append");
            }
            store.audit.log.sync().expect("sync");
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert_eq!(store.audit_indexed().expect("indexed"), 4);
        assert_eq!(
            store
                .audit_for_person("P-1")
                .expect("report")
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![2, 4]
        );
        assert_eq!(bad_entry(&store), None);
    }

    #[test]
    fn an_entry_rewritten_offline_is_found_and_no_proof_covers_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            // Past one block, so the rewrite falls in a block the log recorded.
            let entries = fill(&store, 300);
            store.audit.log.sync().expect("sync");
            entries
        };
        // Someone with the files rewrites entry 3's reason, checksum and all.
        let path = segment(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        let event = postcard::to_stdvec(&entries[2].event).expect("encode");
        let body = {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            store.audit.log.read(2).expect("read").expect("entry 3")
        };
        let at = bytes
            .windows(body.len())
            .position(|w| w == body.as_slice())
            .expect("entry 3 on disk");
        let forged_event = postcard::to_stdvec(&asked(8, None)).expect("encode");
        assert_eq!(forged_event.len(), event.len());
        let mut forged = body[..BODY_HEADER_LEN].to_vec();
        forged.extend_from_slice(&forged_event);
        bytes[at..at + forged.len()].copy_from_slice(&forged);
        bytes[at - 4..at].copy_from_slice(&crc32fast::hash(&forged).to_be_bytes());
        std::fs::write(&path, &bytes).expect("write");

        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        let verification = store.verify_audit().expect("verify");
        assert!(!verification.intact);
        assert!(
            verification
                .detail
                .contains("entries 1 to 256 were altered"),
            "{}",
            verification.detail
        );
        drop(store);
        // Said again at every open, though the record was rebuilt.
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        let verification = store.verify_audit().expect("verify");
        assert_eq!(verification.first_bad_entry, Some(1));
        assert!(
            verification
                .detail
                .contains("entries 1 to 256 were altered"),
            "{}",
            verification.detail
        );
    }

    #[test]
    fn a_log_cut_short_offline_is_reported_until_restored() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            fill(&store, 600);
            store.audit.log.sync().expect("sync");
        }
        // Cut the segment back to half its length, then back to the last
        // whole record before that (as someone covering tracks would).
        let path = segment(dir.path());
        let bytes = std::fs::read(&path).expect("read");
        let mut at = 16usize;
        while at < bytes.len() / 2 {
            let len = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
            at += 8 + len as usize;
        }
        std::fs::write(&path, &bytes[..at]).expect("cut");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        let verification = store.verify_audit().expect("verify");
        assert!(!verification.intact);
        assert!(
            verification.detail.contains("entries were removed"),
            "{}",
            verification.detail
        );
        assert_eq!(
            verification.first_bad_entry,
            Some(store.audit_len().expect("len") + 1)
        );
    }

    #[test]
    fn an_old_hash_chain_moves_into_the_log_verified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let events: Vec<AuditEvent> = (1..=5)
            .map(|n| asked(n, (n % 2 == 0).then_some("P-1")))
            .collect();
        {
            // A store as the previous version left it.
            let db = sled::open(dir.path()).expect("sled");
            let old = db.open_tree("audit").expect("tree");
            let by_person = db.open_tree("audit_by_person").expect("tree");
            let mut prev = [0u8; 32];
            for (i, event) in events.iter().enumerate() {
                let seq = i as u64 + 1;
                let bytes = postcard::to_stdvec(event).expect("encode");
                let (entry, hash) = legacy::encode(seq, 1_000 + seq as i64, &prev, &bytes);
                old.insert(seq.to_be_bytes(), entry).expect("insert");
                for person in event.person_ids() {
                    let mut key = person.as_bytes().to_vec();
                    key.push(0);
                    key.extend_from_slice(&seq.to_be_bytes());
                    by_person.insert(key, &[]).expect("index");
                }
                prev = hash;
            }
            let mut head = 5u64.to_be_bytes().to_vec();
            head.extend_from_slice(&prev);
            db.open_tree("meta")
                .expect("meta")
                .insert(legacy::HEAD_KEY, head)
                .expect("head");
            db.flush().expect("flush");
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        assert_eq!(store.audit_len().expect("len"), 6);
        for (i, event) in events.iter().enumerate() {
            let entry = store
                .audit_entry(i as u64 + 1)
                .expect("read")
                .expect("moved");
            assert_eq!((&entry.event, entry.at_unix_ms), (event, 1_001 + i as i64));
        }
        match store.audit_entry(6).expect("read").expect("finding").event {
            AuditEvent::AuditMigrated {
                entries, intact, ..
            } => assert_eq!((entries, intact), (5, true)),
            other => panic!("the sixth entry is {other:?}"),
        }
        assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"audit"));
        assert!(
            !store
                .db
                .tree_names()
                .iter()
                .any(|n| n.as_ref() == b"audit_by_person"),
            "the old index tree is dropped"
        );
        assert_eq!(bad_entry(&store), None);
        assert_eq!(store.audit_for_person("P-1").expect("report").len(), 2);
        drop(store);
        // Once only.
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert_eq!(store.audit_len().expect("len"), 6);
    }

    #[test]
    fn a_broken_old_chain_moves_all_the_same_and_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = sled::open(dir.path()).expect("sled");
            let old = db.open_tree("audit").expect("tree");
            let mut prev = [0u8; 32];
            for seq in 1..=3u64 {
                let bytes = postcard::to_stdvec(&asked(seq, None)).expect("encode");
                let (mut entry, hash) = legacy::encode(seq, 1_000, &prev, &bytes);
                if seq == 2 {
                    let last = entry.len() - 1;
                    entry[last] ^= 1; // altered after it was written
                }
                old.insert(seq.to_be_bytes(), entry).expect("insert");
                prev = hash;
            }
            let mut head = 3u64.to_be_bytes().to_vec();
            head.extend_from_slice(&prev);
            db.open_tree("meta")
                .expect("meta")
                .insert(legacy::HEAD_KEY, head)
                .expect("head");
            db.flush().expect("flush");
        }
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        match store.audit_entry(4).expect("read").expect("finding").event {
            AuditEvent::AuditMigrated {
                entries,
                intact,
                detail,
            } => {
                assert_eq!((entries, intact), (3, false));
                assert!(detail.contains("entry 2 was altered"), "{detail}");
            }
            other => panic!("the fourth entry is {other:?}"),
        }
    }

    #[test]
    fn an_entry_hidden_from_the_subject_access_index_is_found() {
        let (_dir, store) = open();
        fill(&store, 6);
        assert_eq!(
            store
                .audit_for_person("P-1")
                .expect("report")
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![2, 4, 6]
        );
        store.audit.index.remove_posting("P-1", 4);
        assert_eq!(bad_entry(&store), Some(4));
    }

    #[test]
    fn a_posting_planted_in_the_subject_access_index_is_found() {
        let (_dir, store) = open();
        fill(&store, 6);
        // Entry 3 is about nobody; the report of P-2 must not show it.
        store.audit.index.plant_posting("P-2", 3);
        assert!(store.audit_for_person("P-2").expect("report").is_empty());
        assert_eq!(bad_entry(&store), Some(3));
    }

    #[test]
    fn each_variants_stored_tag_stays_where_it_was() {
        // postcard writes a variant as its position: moving one would make
        // every stored entry of it decode as another.
        let family = AuditEvent::FamilyDisclosed {
            reference: "L-1".into(),
            peer: None,
            person_id: "P-1".into(),
            members: vec![],
        };
        let received = AuditEvent::NotificationReceived {
            peer: String::new(),
            subscription_id: String::new(),
            practitioner_id: String::new(),
            remote_cursor: 0,
            event_cursor: 0,
        };
        let watch = AuditEvent::WatchOpened {
            caller: String::new(),
            practitioner_id: String::new(),
            after_cursor: 0,
        };
        let refusals = AuditEvent::PeerRefusals {
            caller: String::new(),
            reason: String::new(),
            count: 0,
            first_unix_seconds: 0,
            last_unix_seconds: 0,
        };
        let changed = AuditEvent::FederationChanged {
            trigger: String::new(),
            changes: Vec::new(),
        };
        for (event, tag) in [
            (asked(1, None), 2u8),
            (received, 5),
            (family, 6),
            (watch, 7),
            (refusals, 8),
            (changed, 9),
            (
                AuditEvent::AuditMigrated {
                    entries: 0,
                    intact: true,
                    detail: String::new(),
                },
                10,
            ),
            (
                AuditEvent::PersonErased {
                    person_id: "P-1".into(),
                    caller: String::new(),
                    reason: String::new(),
                    removed: Vec::new(),
                },
                11,
            ),
            (
                AuditEvent::RetentionApplied {
                    trigger: String::new(),
                    rules: Vec::new(),
                    involvement_ids: Vec::new(),
                    person_ids: Vec::new(),
                },
                12,
            ),
            (
                AuditEvent::RetentionSkipped {
                    involvement_ids: Vec::new(),
                    person_ids: Vec::new(),
                },
                13,
            ),
            (
                AuditEvent::ImportMirrored {
                    caller: String::new(),
                    source: String::new(),
                    person_ids: Vec::new(),
                    involvement_ids: Vec::new(),
                },
                14,
            ),
            (
                AuditEvent::SubjectAccessReported {
                    person_id: "P-1".into(),
                    caller: String::new(),
                    entries: 0,
                },
                15,
            ),
            (
                AuditEvent::AuditArchived {
                    trigger: String::new(),
                    rule: String::new(),
                    first_seq: 1,
                    last_seq: 256,
                    file: String::new(),
                    sha256: String::new(),
                },
                16,
            ),
        ] {
            let bytes = postcard::to_stdvec(&event).expect("encode");
            assert_eq!(bytes[0], tag, "{event:?}");
        }
    }

    #[test]
    fn a_family_entry_is_indexed_under_each_member_and_verified() {
        let (_dir, store) = open();
        store.append_audit(asked(1, Some("P-1"))).expect("append");
        let family = AuditEvent::family_disclosed(
            "R-1",
            Some("spiffe://vic.patchwork.au/node/melbourne".into()),
            "P-1",
            vec![
                FamilyMemberDisclosed {
                    person_id: "P-2".into(),
                    disclosed_involvement_ids: vec!["I-2".into()],
                },
                FamilyMemberDisclosed {
                    person_id: "P-3".into(),
                    disclosed_involvement_ids: vec!["I-3".into()],
                },
            ],
        )
        .expect("members");
        let entry = store.append_audit(family).expect("append");
        assert_eq!(entry.seq, 2);
        // The matched person's report has the question, not the family entry.
        let seqs = |person: &str| -> Vec<u64> {
            store
                .audit_for_person(person)
                .expect("report")
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs("P-1"), vec![1]);
        assert_eq!(seqs("P-2"), vec![2]);
        assert_eq!(seqs("P-3"), vec![2]);
        assert_eq!(bad_entry(&store), None);
        store.audit.index.remove_posting("P-3", 2);
        assert_eq!(bad_entry(&store), Some(2));
        assert_eq!(
            AuditEvent::family_disclosed("R-2", None, "P-1", vec![]),
            None,
            "nothing disclosed about the family: no entry"
        );
    }

    #[test]
    fn a_lookup_start_is_found_by_its_id() {
        let (dir, store) = open();
        let started = store
            .append_audit(AuditEvent::LookupStarted {
                lookup_id: "L-1".into(),
                caller: "spiffe://surrey.patchwork.uk/client/portal".into(),
                requester: "PR-4".into(),
                lawful_basis: LawfulBasis::ChildSafeguarding,
                reason: "s.47 enquiry".into(),
                peers_asked: vec![],
            })
            .expect("append");
        let answered = store
            .append_audit(AuditEvent::LookupAnswered {
                lookup_id: "L-1".into(),
                local_outcome: "matched".into(),
                local_person_id: Some("P-1".into()),
                disclosed_involvement_ids: vec!["I-1".into()],
                peers: vec![],
            })
            .expect("append");
        assert_eq!(
            store
                .audit_lookup_started("L-1", answered.seq)
                .expect("get"),
            Some(started.clone())
        );
        assert_eq!(
            store
                .audit_lookup_started("L-2", answered.seq)
                .expect("get"),
            None
        );
        assert_eq!(
            store.audit_for_person("P-1").expect("report"),
            vec![answered.clone()]
        );
        assert_eq!(bad_entry(&store), None);
        // Rebuilt from the log at open, the start is found by binary search;
        // an index that lost it (a lookup that spanned a crash) finds it in
        // the log.
        drop(store);
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        assert_eq!(
            store
                .audit
                .index
                .start_of(answered.seq, "L-1")
                .expect("start"),
            Some(started.seq)
        );
        store.audit.index.reset().expect("forget");
        assert_eq!(
            store
                .audit_lookup_started("L-1", answered.seq)
                .expect("get"),
            Some(started)
        );
    }
}
