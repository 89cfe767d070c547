//! The audit log: an append-only, hash-chained record of every lookup this
//! node made and every question a peer asked it, so a data-protection
//! officer can say who saw what and why, and can tell if anyone altered,
//! removed, reordered or cut off entries since.
//!
//! Layout:
//! - `audit`: sequence number (u64 big-endian, from 1, no gaps) → entry:
//!   a format byte, then `seq` (u64 BE), `at_unix_ms` (i64 BE), `prev_hash`
//!   (32 bytes), `hash` (32 bytes), then the event (postcard). Fixed-width
//!   header so an entry's bytes are unambiguous.
//! - `audit_by_person`: `person id \0 seq` → (), for subject-access reports
//!   (the person a local lookup matched, the person a peer's question
//!   matched, each family member a family lookup disclosed about).
//! - `audit_by_lookup`: lookup id → seq of its `LookupStarted`, so a
//!   report can say who asked and why next to what was disclosed.
//! - `meta` key `audit/head`: the last seq and its hash (40 bytes).
//!
//! `hash = SHA-256(DOMAIN_TAG || prev_hash || seq || at_unix_ms || event
//! bytes)`, the event bytes exactly as stored: verifying never re-encodes,
//! so a later version of the event types cannot change old hashes. The first
//! entry's `prev_hash` is all zeros.
//!
//! Invariants: an append is one transaction over the entries, their index
//! entries and the head, so concurrent appends chain one after another and a
//! crash never leaves an entry without its head or the reverse. Appending
//! does not flush: **if the audit cannot be written, nothing is disclosed**
//! is the caller's duty — call [`Store::append_audits_durably`] and disclose
//! only once it returns `Ok`.
//!
//! Durable appends are group-written: callers queue their events, and one
//! leader task at a time appends everything queued in a single transaction,
//! then hands the flush (itself group-committed, [`Store::flush`]) to its
//! own task and takes the next batch. sled 0.34 runs every transaction
//! under one process-wide lock, so a transaction per lookup (hundreds in
//! flight, each on its own blocking thread, all reading the same head)
//! spent the node's time switching threads; a transaction per batch does
//! not.
//!
//! What the chain cannot show: someone who can write the store can rewrite
//! the whole chain consistently from the point they changed. Anchoring the
//! head elsewhere (publishing or signing it) closes that; not done yet.
//!
//! No names, dates of birth or identifiers of a person are ever written
//! here: person ids (the council's own), involvement ids, practitioner ids
//! and the purpose the requester gave.

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::TransactionalTree;
use tokio::sync::oneshot;

use super::{Kind, Store, StoreError, TxResult, abort, prefix_key, tx_error};
use crate::model::LawfulBasis;

/// Separates audit hashes from every other SHA-256 use; names the version.
const DOMAIN_TAG: &[u8] = b"patchwork audit entry v1\0";

const ENTRY_FORMAT_V1: u8 = 1;
/// format + seq + at + prev_hash + hash.
const HEADER_LEN: usize = 1 + 8 + 8 + 32 + 32;

const HEAD_KEY: &[u8] = b"audit/head";

/// Most events one group write appends: bounds a transaction's size and
/// the time the leader holds sled's transaction lock.
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
    pub(crate) fn person_ids(&self) -> Vec<&str> {
        match self {
            AuditEvent::LookupAnswered {
                local_person_id, ..
            } => local_person_id.as_deref().into_iter().collect(),
            AuditEvent::PeerAsked { person_id, .. } => person_id.as_deref().into_iter().collect(),
            AuditEvent::NotificationSent { person_id, .. } => vec![person_id],
            AuditEvent::FamilyDisclosed { members, .. } => {
                members.iter().map(|m| m.person_id.as_str()).collect()
            }
            AuditEvent::LookupStarted { .. }
            | AuditEvent::SubscriptionMade { .. }
            | AuditEvent::NotificationReceived { .. }
            | AuditEvent::PeerRefusals { .. }
            | AuditEvent::FederationChanged { .. }
            | AuditEvent::WatchOpened { .. } => Vec::new(),
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
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

/// The result of walking the chain.
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
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        kind: Kind::AuditEntry,
        detail: detail.into(),
    }
}

fn entry_hash(prev_hash: &[u8; 32], seq: u64, at_unix_ms: i64, event: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(DOMAIN_TAG);
    context.update(prev_hash);
    context.update(&seq.to_be_bytes());
    context.update(&at_unix_ms.to_be_bytes());
    context.update(event);
    let mut hash = [0; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// An entry as stored, before its event is decoded.
struct RawEntry<'a> {
    seq: u64,
    at_unix_ms: i64,
    prev_hash: [u8; 32],
    hash: [u8; 32],
    event: &'a [u8],
}

impl RawEntry<'_> {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.event.len());
        bytes.push(ENTRY_FORMAT_V1);
        bytes.extend_from_slice(&self.seq.to_be_bytes());
        bytes.extend_from_slice(&self.at_unix_ms.to_be_bytes());
        bytes.extend_from_slice(&self.prev_hash);
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(self.event);
        bytes
    }

    fn hash_matches(&self) -> bool {
        entry_hash(&self.prev_hash, self.seq, self.at_unix_ms, self.event) == self.hash
    }

    fn decode(&self) -> Result<AuditEntry, String> {
        let event = postcard::from_bytes(self.event).map_err(|e| format!("event: {e}"))?;
        Ok(AuditEntry {
            seq: self.seq,
            at_unix_ms: self.at_unix_ms,
            event,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

fn parse_entry(bytes: &[u8]) -> Result<RawEntry<'_>, String> {
    match bytes.first() {
        Some(&ENTRY_FORMAT_V1) => {}
        Some(format) => return Err(format!("unknown entry format {format}")),
        None => return Err("empty entry".into()),
    }
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "entry is {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    let (header, event) = bytes.split_at(HEADER_LEN);
    let array = |range: std::ops::Range<usize>| -> [u8; 32] {
        let mut out = [0; 32];
        out.copy_from_slice(&header[range]);
        out
    };
    let word = |at: usize| -> [u8; 8] {
        let mut out = [0; 8];
        out.copy_from_slice(&header[at..at + 8]);
        out
    };
    Ok(RawEntry {
        seq: u64::from_be_bytes(word(1)),
        at_unix_ms: i64::from_be_bytes(word(9)),
        prev_hash: array(17..49),
        hash: array(49..81),
        event,
    })
}

fn decode_entry(bytes: &[u8]) -> Result<AuditEntry, StoreError> {
    parse_entry(bytes)
        .and_then(|raw| raw.decode())
        .map_err(corrupt)
}

fn seq_of_key(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// The head: the last seq and its hash; `None` for an empty log.
fn decode_head(bytes: Option<&[u8]>) -> Result<Option<(u64, [u8; 32])>, String> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    if bytes.len() != 40 {
        return Err(format!("head record is {} bytes, not 40", bytes.len()));
    }
    let mut seq = [0; 8];
    seq.copy_from_slice(&bytes[..8]);
    let mut hash = [0; 32];
    hash.copy_from_slice(&bytes[8..]);
    Ok(Some((u64::from_be_bytes(seq), hash)))
}

fn encode_head(seq: u64, hash: &[u8; 32]) -> [u8; 40] {
    let mut bytes = [0; 40];
    bytes[..8].copy_from_slice(&seq.to_be_bytes());
    bytes[8..].copy_from_slice(hash);
    bytes
}

fn person_key(person_id: &str, seq: u64) -> Vec<u8> {
    let mut key = prefix_key(person_id.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn read_head(meta: &TransactionalTree) -> TxResult<Option<(u64, [u8; 32])>> {
    match decode_head(meta.get(HEAD_KEY)?.as_deref()) {
        Ok(head) => Ok(head),
        Err(detail) => abort(corrupt(detail)),
    }
}

pub(crate) fn now_unix_ms() -> i64 {
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
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

    /// Appends `events` in order, in one transaction, all stamped `at_unix_ms`.
    fn append_audit_batch(
        &self,
        events: &[AuditEvent],
        at_unix_ms: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let _gate = self.audit_gate();
        self.append_audit_batch_gated(events, at_unix_ms)
    }

    /// [`Store::append_audit_batch`], for a caller already through the write
    /// gate.
    fn append_audit_batch_gated(
        &self,
        events: &[AuditEvent],
        at_unix_ms: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let encoded = events
            .iter()
            .map(|event| postcard::to_stdvec(event).map_err(|e| corrupt(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let chained = (
            &self.audit,
            &self.audit_by_person,
            &self.audit_by_lookup,
            &self.meta,
        )
            .transaction(|(audit, by_person, by_lookup, meta)| {
                let (mut seq, mut prev_hash) = match read_head(meta)? {
                    Some((last, hash)) => (last, hash),
                    None => (0, [0; 32]),
                };
                let mut chained = Vec::with_capacity(events.len());
                for (event, event_bytes) in events.iter().zip(&encoded) {
                    seq += 1;
                    let hash = entry_hash(&prev_hash, seq, at_unix_ms, event_bytes);
                    let raw = RawEntry {
                        seq,
                        at_unix_ms,
                        prev_hash,
                        hash,
                        event: event_bytes,
                    };
                    let key = seq.to_be_bytes();
                    // sled reads the old value on every transactional insert
                    // anyway: an entry there means the head lags it, and the
                    // abort undoes this overwrite with the rest.
                    if audit.insert(&key, raw.encode())?.is_some() {
                        return abort(corrupt(format!(
                            "entry {seq} exists beyond the log's head; run audit verify"
                        )));
                    }
                    for person_id in event.person_ids() {
                        by_person.insert(person_key(person_id, seq), &[])?;
                    }
                    if let AuditEvent::LookupStarted { lookup_id, .. } = event {
                        by_lookup.insert(lookup_id.as_bytes(), &key)?;
                    }
                    chained.push((seq, prev_hash, hash));
                    prev_hash = hash;
                }
                meta.insert(HEAD_KEY, &encode_head(seq, &prev_hash)[..])?;
                Ok(chained)
            })
            .map_err(tx_error)?;
        Ok(events
            .iter()
            .zip(chained)
            .map(|(event, (seq, prev_hash, hash))| AuditEntry {
                seq,
                at_unix_ms,
                event: event.clone(),
                prev_hash,
                hash,
            })
            .collect())
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
                match store.flush().await {
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

    /// How many entries the log has (its head's seq; no walk).
    pub fn audit_len(&self) -> Result<u64, StoreError> {
        let head = decode_head(self.meta.get(HEAD_KEY)?.as_deref()).map_err(corrupt)?;
        Ok(head.map_or(0, |(seq, _)| seq))
    }

    /// Entry `seq`, if there is one (not verified: see [`Store::verify_audit`]).
    pub fn audit_entry(&self, seq: u64) -> Result<Option<AuditEntry>, StoreError> {
        self.audit
            .get(seq.to_be_bytes())?
            .map(|bytes| decode_entry(&bytes))
            .transpose()
    }

    /// The entries about `person_id`, in order: local lookups that matched
    /// them and peers' questions that did. For subject-access reports.
    pub fn audit_for_person(&self, person_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let prefix = prefix_key(person_id.as_bytes());
        let mut entries = Vec::new();
        for item in self.audit_by_person.scan_prefix(&prefix) {
            let (key, _) = item?;
            let seq = seq_of_key(&key[prefix.len()..])
                .ok_or_else(|| corrupt("malformed subject-access index key"))?;
            let entry = self.audit_entry(seq)?.ok_or_else(|| {
                corrupt(format!("subject-access index names missing entry {seq}"))
            })?;
            // The index is not chained; trust only what the entry says.
            if entry.event.person_ids().contains(&person_id) {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// The `LookupStarted` entry of `lookup_id`: who asked and why.
    pub fn audit_lookup_started(&self, lookup_id: &str) -> Result<Option<AuditEntry>, StoreError> {
        let Some(key) = self.audit_by_lookup.get(lookup_id.as_bytes())? else {
            return Ok(None);
        };
        let seq = seq_of_key(&key).ok_or_else(|| corrupt("malformed lookup index entry"))?;
        Ok(self.audit_entry(seq)?.filter(|entry| {
            matches!(&entry.event, AuditEvent::LookupStarted { lookup_id: id, .. } if id == lookup_id)
        }))
    }

    /// Walks the chain from entry 1 and reports the first entry that was
    /// altered (its hash does not match), removed (a gap), moved or
    /// reordered (its seq or its link to the previous entry is wrong), or
    /// left out of the subject-access index; and a head that disagrees with
    /// the last entry (the log was cut short, or extended behind the log's
    /// back). Safe while appends go on: it verifies up to the head it sees.
    /// `Err` only if the store cannot be read.
    pub fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        let mut walk = Walk::new();
        loop {
            for item in self.audit.range(walk.next.to_be_bytes()..) {
                let (key, value) = item?;
                walk.visit(self, &key, &value)?;
            }
            if walk.bad.is_some() {
                break;
            }
            // The head and the next entry in one transaction: a consistent view.
            let last = walk.next - 1;
            let (head, next_exists) = (&self.audit, &self.meta)
                .transaction(|(audit, meta)| {
                    Ok((
                        meta.get(HEAD_KEY)?,
                        audit.get((last + 1).to_be_bytes())?.is_some(),
                    ))
                })
                .map_err(tx_error)?;
            match decode_head(head.as_deref()) {
                Err(detail) => walk.fail(last.max(1), format!("the log's {detail}")),
                Ok(head) => match head {
                    None if last == 0 => {}
                    None => walk.fail(
                        1,
                        format!("the log has {last} entries but no head: its head was removed"),
                    ),
                    // Appended while we walked: walk on.
                    Some((seq, _)) if seq > last && next_exists => continue,
                    Some((seq, _)) if seq > last => walk.fail(
                        last + 1,
                        format!(
                            "entries {} to {seq} are missing: the log was cut short after entry {last}",
                            last + 1
                        ),
                    ),
                    Some((seq, _)) if seq < last => walk.fail(
                        seq + 1,
                        format!(
                            "entries {} to {last} lie beyond the log's head (entry {seq}): \
                             written behind the log's back, or its head was rolled back",
                            seq + 1
                        ),
                    ),
                    Some((_, hash)) if hash != walk.prev_hash => walk.fail(
                        last,
                        format!("the log's head disagrees with entry {last}: entry {last} was rewritten"),
                    ),
                    Some(_) => {}
                },
            }
            break;
        }
        Ok(walk.finish())
    }
}

/// The state of a chain walk.
struct Walk {
    /// The seq the next entry must have.
    next: u64,
    prev_hash: [u8; 32],
    entries: u64,
    bad: Option<(u64, String)>,
}

impl Walk {
    fn new() -> Self {
        Walk {
            next: 1,
            prev_hash: [0; 32],
            entries: 0,
            bad: None,
        }
    }

    fn fail(&mut self, seq: u64, detail: String) {
        if self.bad.is_none() {
            self.bad = Some((seq, detail));
        }
    }

    fn visit(&mut self, store: &Store, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.entries += 1;
        if self.bad.is_some() {
            return Ok(()); // only counting now
        }
        let expected = self.next;
        let Some(seq) = seq_of_key(key) else {
            self.fail(expected, "an entry is stored under a malformed key".into());
            return Ok(());
        };
        if seq != expected {
            let detail = if expected == 1 {
                format!("entry 1 is missing: the log starts at entry {seq}")
            } else {
                format!(
                    "entry {expected} is missing: the log jumps from entry {} to entry {seq}",
                    expected - 1
                )
            };
            self.fail(expected, detail);
            return Ok(());
        }
        let raw = match parse_entry(value) {
            Ok(raw) => raw,
            Err(detail) => {
                self.fail(
                    seq,
                    format!("entry {seq} is unreadable ({detail}): it was altered"),
                );
                return Ok(());
            }
        };
        if raw.seq != seq {
            self.fail(
                seq,
                format!(
                    "the entry stored as entry {seq} says it is entry {}: entries were moved or reordered",
                    raw.seq
                ),
            );
            return Ok(());
        }
        if !raw.hash_matches() {
            self.fail(
                seq,
                format!("entry {seq} was altered: its contents do not match its hash"),
            );
            return Ok(());
        }
        if raw.prev_hash != self.prev_hash {
            let detail = if seq == 1 {
                "entry 1 does not start the chain: it was replaced".to_owned()
            } else {
                format!(
                    "entry {seq} does not follow entry {}: one of them was rewritten, or entries were reordered",
                    seq - 1
                )
            };
            self.fail(seq, detail);
            return Ok(());
        }
        let entry = match raw.decode() {
            Ok(entry) => entry,
            Err(detail) => {
                self.fail(seq, format!("entry {seq} is unreadable ({detail})"));
                return Ok(());
            }
        };
        for person_id in entry.event.person_ids() {
            if !store
                .audit_by_person
                .contains_key(person_key(person_id, seq))?
            {
                self.fail(
                    seq,
                    format!("entry {seq} was removed from the subject-access index"),
                );
                return Ok(());
            }
        }
        if let AuditEvent::LookupStarted { lookup_id, .. } = &entry.event
            && !store.audit_by_lookup.contains_key(lookup_id.as_bytes())?
        {
            self.fail(
                seq,
                format!("entry {seq} was removed from the lookup index"),
            );
            return Ok(());
        }
        self.prev_hash = raw.hash;
        self.next = seq + 1;
        Ok(())
    }

    fn finish(self) -> AuditVerification {
        match self.bad {
            Some((seq, detail)) => AuditVerification {
                entries: self.entries,
                intact: false,
                first_bad_entry: Some(seq),
                detail,
            },
            None => AuditVerification {
                entries: self.entries,
                intact: true,
                first_bad_entry: None,
                detail: if self.entries == 0 {
                    "the audit log is empty".into()
                } else {
                    format!(
                        "all {} entries verify, each chained to the one before",
                        self.entries
                    )
                },
            },
        }
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

    #[test]
    fn entries_chain_from_a_zero_genesis() {
        let (_dir, store) = open();
        assert_eq!(
            store.verify_audit().expect("verify"),
            AuditVerification {
                entries: 0,
                intact: true,
                first_bad_entry: None,
                detail: "the audit log is empty".into()
            }
        );
        let entries = fill(&store, 3);
        assert_eq!(entries[0].prev_hash, [0; 32]);
        let mut prev = [0; 32];
        for (i, entry) in entries.iter().enumerate() {
            assert_eq!(entry.seq, i as u64 + 1);
            assert_eq!(entry.prev_hash, prev);
            let bytes = postcard::to_stdvec(&entry.event).expect("encode");
            assert_eq!(
                entry.hash,
                entry_hash(&prev, entry.seq, entry.at_unix_ms, &bytes)
            );
            assert_eq!(
                store.audit_entry(entry.seq).expect("get").as_ref(),
                Some(entry)
            );
            prev = entry.hash;
        }
        assert_eq!(store.audit_len().expect("len"), 3);
        let verification = store.verify_audit().expect("verify");
        assert!(verification.intact, "{verification:?}");
        assert_eq!(verification.entries, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_writes_chain_in_order_and_answer_each_caller_with_its_own() {
        let (_dir, store) = open();
        let mut callers = Vec::new();
        for caller in 0..64u64 {
            let store = store.clone();
            callers.push(tokio::spawn(async move {
                let events = vec![asked(2 * caller, Some("P-1")), asked(2 * caller + 1, None)];
                // Half wait for the flush, half only for the append.
                let entries = if caller % 2 == 0 {
                    store.append_audits_durably(events.clone()).await
                } else {
                    store.append_audits(events.clone()).await
                }
                .expect("append");
                let got: Vec<AuditEvent> = entries.iter().map(|e| e.event.clone()).collect();
                assert_eq!(got, events, "caller {caller} got someone else's entries");
                assert_eq!(entries[1].seq, entries[0].seq + 1, "not consecutive");
                assert_eq!(entries[1].prev_hash, entries[0].hash);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_group_write_fails_its_callers_and_the_next_one_succeeds() {
        let (_dir, store) = open();
        store.append_audit(asked(1, None)).expect("first");
        // An entry beyond the head: the next append must refuse, not
        // overwrite it.
        let stray = RawEntry {
            seq: 2,
            at_unix_ms: 0,
            prev_hash: [0; 32],
            hash: [0; 32],
            event: b"x",
        };
        store
            .audit
            .insert(2u64.to_be_bytes(), stray.encode())
            .expect("stray");
        let refused = store.append_audits_durably(vec![asked(2, None)]).await;
        assert!(
            matches!(&refused, Err(e) if e.to_string().contains("beyond the log's head")),
            "{refused:?}"
        );
        assert_eq!(store.audit_len().expect("len"), 1, "the head moved");
        // The leader stepped down cleanly: once the stray is gone, the next
        // caller gets a new one and its write lands.
        store.audit.remove(2u64.to_be_bytes()).expect("remove");
        let entries = store
            .append_audits_durably(vec![asked(3, None)])
            .await
            .expect("append after a failure");
        assert_eq!(entries[0].seq, 2);
    }

    #[test]
    fn the_hash_covers_every_field() {
        let prev = [7; 32];
        let base = entry_hash(&prev, 5, 1000, b"event");
        assert_ne!(base, entry_hash(&[8; 32], 5, 1000, b"event"));
        assert_ne!(base, entry_hash(&prev, 6, 1000, b"event"));
        assert_ne!(base, entry_hash(&prev, 5, 1001, b"event"));
        assert_ne!(base, entry_hash(&prev, 5, 1000, b"evenT"));
    }

    #[test]
    fn the_chain_continues_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let last = {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            fill(&store, 4).pop().expect("entries")
        };
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("reopen");
        let next = store.append_audit(asked(5, None)).expect("append");
        assert_eq!((next.seq, next.prev_hash), (5, last.hash));
        assert_eq!(bad_entry(&store), None);
    }

    #[test]
    fn changing_any_byte_of_an_entry_is_found_at_that_entry() {
        let (_dir, store) = open();
        fill(&store, 5);
        let key = 3u64.to_be_bytes();
        let original = store.audit.get(key).expect("get").expect("entry 3");
        for position in 0..original.len() {
            let mut altered = original.to_vec();
            altered[position] ^= 0x01;
            store.audit.insert(key, altered).expect("tamper");
            assert_eq!(bad_entry(&store), Some(3), "byte {position}");
        }
        store.audit.insert(key, original).expect("restore");
        assert_eq!(bad_entry(&store), None);
    }

    #[test]
    fn a_rewritten_and_rehashed_entry_breaks_the_next_link() {
        let (_dir, store) = open();
        let entries = fill(&store, 5);
        let forged = postcard::to_stdvec(&asked(99, None)).expect("encode");
        let entry = &entries[2];
        let raw = RawEntry {
            seq: 3,
            at_unix_ms: entry.at_unix_ms,
            prev_hash: entry.prev_hash,
            hash: entry_hash(&entry.prev_hash, 3, entry.at_unix_ms, &forged),
            event: &forged,
        };
        store
            .audit
            .insert(3u64.to_be_bytes(), raw.encode())
            .expect("forge");
        let verification = store.verify_audit().expect("verify");
        assert_eq!(verification.first_bad_entry, Some(4), "{verification:?}");
        assert!(verification.detail.contains("does not follow entry 3"));
    }

    #[test]
    fn a_rewritten_last_entry_disagrees_with_the_head() {
        let (_dir, store) = open();
        let entries = fill(&store, 3);
        let forged = postcard::to_stdvec(&asked(99, None)).expect("encode");
        let entry = &entries[2];
        let raw = RawEntry {
            seq: 3,
            at_unix_ms: entry.at_unix_ms,
            prev_hash: entry.prev_hash,
            hash: entry_hash(&entry.prev_hash, 3, entry.at_unix_ms, &forged),
            event: &forged,
        };
        store
            .audit
            .insert(3u64.to_be_bytes(), raw.encode())
            .expect("forge");
        assert_eq!(bad_entry(&store), Some(3));
    }

    #[test]
    fn a_cut_short_log_and_a_rolled_back_head_are_found() {
        let (_dir, store) = open();
        let entries = fill(&store, 6);
        store.audit.remove(6u64.to_be_bytes()).expect("cut");
        store.audit.remove(5u64.to_be_bytes()).expect("cut");
        let verification = store.verify_audit().expect("verify");
        assert_eq!(verification.first_bad_entry, Some(5), "{verification:?}");
        assert_eq!(verification.entries, 4);

        let (_dir, store) = open();
        fill(&store, 6);
        store
            .meta
            .insert(HEAD_KEY, &encode_head(4, &entries[3].hash)[..])
            .expect("roll back");
        assert_eq!(bad_entry(&store), Some(5));
        store.meta.remove(HEAD_KEY).expect("remove head");
        assert_eq!(bad_entry(&store), Some(1));
    }

    #[test]
    fn appending_refuses_to_overwrite_an_entry_beyond_the_head() {
        let (_dir, store) = open();
        let entries = fill(&store, 3);
        store
            .meta
            .insert(HEAD_KEY, &encode_head(2, &entries[1].hash)[..])
            .expect("roll back");
        assert!(matches!(
            store.append_audit(asked(4, None)),
            Err(StoreError::Corrupt {
                kind: Kind::AuditEntry,
                ..
            })
        ));
        assert_eq!(store.audit_entry(3).expect("get"), Some(entries[2].clone()));
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
        store
            .audit_by_person
            .remove(person_key("P-1", 4))
            .expect("hide");
        assert_eq!(bad_entry(&store), Some(4));
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
        store
            .audit_by_person
            .remove(person_key("P-3", 2))
            .expect("hide");
        assert_eq!(bad_entry(&store), Some(2));
        assert_eq!(
            AuditEvent::family_disclosed("R-2", None, "P-1", vec![]),
            None,
            "nothing disclosed about the family: no entry"
        );
    }

    #[test]
    fn a_lookup_start_is_found_by_its_id() {
        let (_dir, store) = open();
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
            store.audit_lookup_started("L-1").expect("get"),
            Some(started)
        );
        assert_eq!(store.audit_lookup_started("L-2").expect("get"), None);
        assert_eq!(
            store.audit_for_person("P-1").expect("report"),
            vec![answered]
        );
        assert_eq!(bad_entry(&store), None);
    }
}
