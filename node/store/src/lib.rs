//! `patchwork-store`: one council's records. It owns the domain model
//! (`model`, with its one mapping to and from the wire enums) and the store
//! on disk (this crate's root and its modules: records, indexes, the audit
//! log, the team-event outbox, subscriptions, backups). The checks that turn
//! raw input into model values live one crate up, in the server's
//! `base::validate`. It is the only crate that
//! names sled: everything above speaks domain records, so a second engine
//! means a second implementation of this crate's surface, nothing more. It
//! knows nothing of gRPC services, TLS, configuration files or the command
//! line; it sits on `proto` (wire enums it indexes by) and `federation`
//! (normalisation and match keys), and `server` and `cli` sit on it.
//!
//! Layout (one sled tree each):
//! - `persons`, `practitioners`, `organisations`, `involvements`: id → record
//!   (a format byte, then postcard).
//! - `involvements_by_person`, `involvements_by_practitioner`:
//!   `owner id \0 involvement id` → ().
//! - `person_index`: `demographic key \0 person id` → (), the keys lookups and
//!   searches start from (see [`person_index_keys`]).
//! - `meta`: record counts, kept in the same transactions as the records;
//!   the pending-import markers (see [`ImportMark`]) and the last import of
//!   each kind (see `last_import`).
//! - `events`, `events_by_practitioner`, `attention`: the team-event outbox
//!   and attention flags, written with the changes they report (see `events`).
//! - `links`: family links between persons, both ways (see `links`).
//! - `subscriptions`, `remote_subscriptions`, `remote_event_details`:
//!   cross-border subscriptions, both sides (see `subscriptions`).
//! - the audit log and its indexes are files of their own in `audit-log/`
//!   (see `audit`).
//! - `witness`: checkpoints of this node's log its peers cosigned, and of
//!   theirs it verified (see `witness`).
//! - `retention`: person id → since when they have had no current
//!   involvement, as retention saw it (see `retention`).
//!
//! Invariants: every multi-tree change happens in one sled transaction, so a
//! crash never leaves a record without its index entries or the reverse
//! (except for a batch of a multi-batch import of persons, whose entries follow
//! its transaction under a flag that start-up finishes: see
//! [`Store::put_persons_marked`]); an
//! involvement's person and practitioner exist (checked inside the same
//! transaction); callers acknowledge a write only after [`Store::flush`];
//! every write transaction holds the write gate shared (`Store::writing`), so
//! a backup holding it exclusively sees every tree at one instant (`backup`).
//!
//! Layers (`.ci/module-cycles` holds them): `model` calls nothing else here;
//! the root and the modules that extend `Store` with their trees sit on it;
//! `backup`, which snapshots them all, is the top.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use patchwork_federation::{normalise_name, normalise_postcode};
use serde::{Serialize, de::DeserializeOwned};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

use crate::model::{Demographics, Involvement, Organisation, Person, Practitioner};

pub mod model;

pub mod audit;
pub mod backup;
pub mod data_dir;
pub mod erasure;
pub mod events;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod freshness;
pub mod last_import;
mod links;
mod match_index;
pub mod retention;
pub mod subscriptions;
pub mod witness;

pub use audit::{AuditEntry, AuditEvent, AuditVerification, PeerOutcome, prove_entry};
pub use events::{AttentionFlag, TeamEvent, TeamEventKind};
pub use match_index::{MatchHits, RekeyReport, subject_of};

/// The kinds of record the store holds, for messages and counters
/// ("person", "audit entry").
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum Kind {
    Person,
    Practitioner,
    Organisation,
    Involvement,
    #[strum(serialize = "audit entry")]
    AuditEntry,
    #[strum(serialize = "team event")]
    TeamEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: Kind, id: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },
    #[error("{field}: {kind} {id} does not exist on this node")]
    MissingReference {
        field: &'static str,
        kind: Kind,
        id: String,
    },
    #[error("involvement {id} has already ended")]
    AlreadyEnded { id: String },
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("stored {kind} record is unreadable: {detail}")]
    Corrupt { kind: Kind, detail: String },
    #[error(
        "another node holds this data folder (its store {path} is locked by a running process): \
         stop that node first, or ask the running node instead"
    )]
    Locked { path: String },
    /// A batch of persons is written but writing its index entries failed:
    /// the node writes them from the records at its next start
    /// ([`Store::finish_index_entries`]).
    #[error("the batch's records are written but not their index entries ({0})")]
    IndexEntriesPending(Box<StoreError>),
    /// Audit retention sealed this entry into an archive file and removed
    /// it from the log (`archived`: entries 1 to this many are archived).
    #[error(
        "audit entry {seq} was archived by audit retention: entries 1 to {archived} are in the \
         node's audit archive files, no longer in its log"
    )]
    Archived { seq: u64, archived: u64 },
    #[error("store i/o failed: {0}")]
    Io(#[from] sled::Error),
    #[error("store file i/o failed: {0}")]
    File(#[from] std::io::Error),
}

/// What a write may do to an existing record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Fail with `AlreadyExists` if the id is taken.
    Create,
    /// Fail with `NotFound` if the id is free.
    Update,
    /// Create or replace (imports).
    Upsert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Created,
    Updated,
    Unchanged,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub persons: u64,
    pub practitioners: u64,
    pub organisations: u64,
    pub involvements: u64,
    pub active_involvements: u64,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The file sled 0.34 keeps its log in, inside the store's folder.
const SLED_LOG_FILE: &str = "db";

/// The first byte of every stored record: lets a later version change the
/// encoding and still read what is on disk.
const FORMAT_V1: u8 = 1;

const COUNT_PERSONS: &[u8] = b"count/persons";
const COUNT_PRACTITIONERS: &[u8] = b"count/practitioners";
const COUNT_ORGANISATIONS: &[u8] = b"count/organisations";
const COUNT_INVOLVEMENTS: &[u8] = b"count/involvements";
const COUNT_ACTIVE_INVOLVEMENTS: &[u8] = b"count/active_involvements";
/// The markers of imports written in several transactions, one per
/// import's journal: `import/pending/<journal>` (see `import`).
const PENDING_IMPORT: &[u8] = b"import/pending/";

/// Set, in the same transaction as a batch of persons, when the batch's
/// index entries are written after it (`import/reindex/<journal>` → the
/// batch's person ids), and removed once they are: a flag left by a crash or a
/// failure names the persons whose entries [`Store::finish_index_entries`]
/// writes at the next start, and whom [`Store::check_consistency`] counts as
/// pending rather than damaged.
const PENDING_REINDEX: &[u8] = b"import/reindex/";

/// What a record write does to the pending-import marker, in the same
/// transaction as the records: an import larger than one transaction sets
/// it with every batch but the last (naming its journal and how far it
/// got) and clears it with the last, so start-up can tell a half-applied
/// import and roll it forward (see `import`).
///
/// A batch of persons with a marker also writes its index entries after its
/// transaction (see [`Store::put_persons_marked`]).
#[derive(Debug, Clone, Copy)]
pub enum ImportMark<'a> {
    /// Leave it alone (every write outside a multi-batch import).
    Keep,
    /// Set the marker of `journal` to `progress` (the import's encoding).
    Set {
        journal: &'a str,
        progress: &'a [u8],
    },
    /// Remove the marker of `journal`: its import is whole.
    Clear { journal: &'a str },
}

impl ImportMark<'_> {
    fn journal(&self) -> Option<&str> {
        match self {
            ImportMark::Keep => None,
            ImportMark::Set { journal, .. } | ImportMark::Clear { journal, .. } => Some(journal),
        }
    }
}

fn pending_key(journal: &str) -> Vec<u8> {
    [PENDING_IMPORT, journal.as_bytes()].concat()
}

fn reindex_key(journal: &str) -> Vec<u8> {
    [PENDING_REINDEX, journal.as_bytes()].concat()
}

fn encode_ids<'a>(ids: impl Iterator<Item = &'a str>) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(&ids.collect::<Vec<_>>()).map_err(|e| StoreError::Corrupt {
        kind: Kind::Person,
        detail: format!("a batch's person ids are unencodable: {e}"),
    })
}

fn decode_ids(bytes: &[u8]) -> Result<Vec<String>, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        kind: Kind::Person,
        detail: format!("an import's reindex flag: {e}"),
    })
}

fn apply_mark(meta: &TransactionalTree, mark: ImportMark<'_>) -> TxResult<()> {
    match mark {
        ImportMark::Keep => {}
        ImportMark::Set { journal, progress } => {
            meta.insert(pending_key(journal), progress)?;
        }
        ImportMark::Clear { journal } => {
            meta.remove(pending_key(journal))?;
        }
    }
    Ok(())
}

/// Inserts `entries` (tree, key, value), half on this thread and half on
/// another: plain inserts share sled's lock (a batch or a transaction would
/// take it alone), so two cores write at once.
fn insert_on_two_threads(entries: &[(&Tree, &[u8], &[u8])]) -> Result<(), StoreError> {
    let insert = |part: &[(&Tree, &[u8], &[u8])]| -> Result<(), StoreError> {
        for (tree, key, value) in part {
            tree.insert(*key, *value)?;
        }
        Ok(())
    };
    let (first, second) = entries.split_at(entries.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| insert(second));
        let here = insert(first);
        let there = other
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("an index writer panicked").into()));
        here.and(there)
    })
}

/// Group commit: every caller that needs its writes durable takes a ticket;
/// one flush covers every ticket taken before it started, so concurrent
/// writers share flushes instead of queueing one each.
#[derive(Debug)]
struct Durability {
    requested: AtomicU64,
    completed: AtomicU64,
    turn: tokio::sync::Mutex<()>,
    /// sled's log file. sled's own flush writes with `sync_file_range`,
    /// which neither flushes the disk's write cache nor the file's size, so
    /// a power cut could still lose an acknowledged write; an `fdatasync` of
    /// the same file after sled's flush closes that gap.
    log_file: File,
}

#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    durability: Arc<Durability>,
    persons: Tree,
    practitioners: Tree,
    organisations: Tree,
    involvements: Tree,
    involvements_by_person: Tree,
    involvements_by_practitioner: Tree,
    person_index: Tree,
    /// `key set \0 digest person id` → the index kind, for peers' queries.
    match_index: Tree,
    /// The key sets the match index is kept for (see `match_index`).
    key_sets: Arc<arc_swap::ArcSwap<Vec<match_index::IndexedSet>>>,
    /// One rekey at a time.
    rekey_lock: Arc<parking_lot::Mutex<()>>,
    /// One write of persons at a time, held from a batch's transaction until
    /// its index entries are in: another write of the same person in between
    /// would remove the entries of the version it replaces before they exist,
    /// and they would stay behind.
    person_writes: Arc<parking_lot::Mutex<()>>,
    meta: Tree,
    /// The audit log (its own files) and its indexes (see `audit`).
    audit: Arc<audit::AuditLog>,
    /// Checkpoints, pins and alarms of witnessing (see `witness`).
    witness: Tree,
    /// The team-event outbox and attention flags (see `events`).
    events: Tree,
    events_by_practitioner: Tree,
    attention: Tree,
    team_lock: Arc<parking_lot::Mutex<()>>,
    durable_events: Arc<tokio::sync::watch::Sender<events::Progress>>,
    /// `person \0 other person` → relationship, both ways (see `links`).
    links: Tree,
    /// Person id → the day retention first found them without a current
    /// involvement, or the end of the last involvement it deleted
    /// (see `retention`).
    retention: Tree,
    /// Durable audit appends waiting for the next group write (see `audit`).
    audit_queue: Arc<audit::AuditQueue>,
    /// Record writes running now (see [`Store::writes_in_progress`]).
    writers: Arc<AtomicUsize>,
    /// Held shared by every write transaction, exclusively by a backup's
    /// walk: writes pause while a backup reads, reads go on.
    write_gate: Arc<parking_lot::RwLock<()>>,
}

/// A record write's hold on the write gate, counted while it lasts.
struct Writing<'a> {
    _gate: parking_lot::RwLockReadGuard<'a, ()>,
    writers: &'a AtomicUsize,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.writers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn abort<T>(error: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(error))
}

fn tx_error(error: TransactionError<StoreError>) -> StoreError {
    match error {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Io(e),
    }
}

fn encode<T: Serialize>(kind: Kind, record: &T) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![FORMAT_V1];
    postcard::to_io(record, &mut bytes).map_err(|e| StoreError::Corrupt {
        kind,
        detail: e.to_string(),
    })?;
    Ok(bytes)
}

fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt {
            kind,
            detail: e.to_string(),
        }),
        Some((format, _)) => Err(StoreError::Corrupt {
            kind,
            detail: format!("unknown record format {format}"),
        }),
        None => Err(StoreError::Corrupt {
            kind,
            detail: "empty record".into(),
        }),
    }
}

fn tx_decode<T: DeserializeOwned>(kind: Kind, bytes: Option<sled::IVec>) -> TxResult<Option<T>> {
    match bytes.map(|b| decode(kind, &b)).transpose() {
        Ok(record) => Ok(record),
        Err(e) => abort(e),
    }
}

fn tx_encode<T: Serialize>(kind: Kind, record: &T) -> TxResult<Vec<u8>> {
    encode(kind, record).or_else(abort)
}

/// `owner \0 child`: ids never contain NUL (validation allows A-Z a-z 0-9 . _ : -).
fn pair_key(owner: &str, child: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(owner.len() + child.len() + 1);
    key.extend_from_slice(owner.as_bytes());
    key.push(0);
    key.extend_from_slice(child.as_bytes());
    key
}

fn prefix_key(owner: &[u8]) -> Vec<u8> {
    let mut key = owner.to_vec();
    key.push(0);
    key
}

fn child_of(key: &[u8], prefix_len: usize) -> String {
    String::from_utf8_lossy(&key[prefix_len..]).into_owned()
}

/// The demographic keys a person is indexed under, each a way a search or
/// lookup can start: the national id; family name with date of birth; family
/// name with postcode. Normalised, so case, accents and punctuation do not
/// matter. Searches filter the candidates on every field they were given.
/// `20150314`: a date in the person index's keys.
fn compact_date(date: crate::model::Date) -> String {
    let (year, month, day) = crate::model::year_month_day(date);
    format!("{year:04}{month:02}{day:02}")
}

pub fn person_index_keys(person: &Demographics) -> Vec<Vec<u8>> {
    let mut keys = Vec::with_capacity(3);
    if let Some(nid) = &person.national_id {
        keys.push(format!("N{}:{}", nid.scheme, nid.value).into_bytes());
    }
    let family = person
        .family_name
        .as_deref()
        .map(normalise_name)
        .filter(|f| !f.is_empty());
    if let Some(family) = &family {
        if let Some(dob) = person.date_of_birth {
            keys.push(format!("D{}:{family}", compact_date(dob)).into_bytes());
        }
        if let Some(postcode) = &person.postcode {
            keys.push(format!("P{}:{family}", normalise_postcode(postcode)).into_bytes());
        }
    }
    keys
}

fn add_count(meta: &TransactionalTree, counter: &[u8], delta: i64) -> TxResult<()> {
    if delta == 0 {
        return Ok(());
    }
    let current = read_count(meta.get(counter)?.as_deref());
    let next = current.saturating_add_signed(delta);
    meta.insert(counter, &next.to_be_bytes())?;
    Ok(())
}

fn read_count(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Decides what a write does to an existing record under `mode`.
fn write_outcome<T: PartialEq>(
    kind: Kind,
    id: &str,
    old: Option<&T>,
    new: &T,
    mode: WriteMode,
) -> TxResult<WriteOutcome> {
    match (old, mode) {
        (Some(_), WriteMode::Create) => abort(StoreError::AlreadyExists {
            kind,
            id: id.into(),
        }),
        (None, WriteMode::Update) => abort(StoreError::NotFound {
            kind,
            id: id.into(),
        }),
        (None, _) => Ok(WriteOutcome::Created),
        (Some(old), _) if old == new => Ok(WriteOutcome::Unchanged),
        (Some(_), _) => Ok(WriteOutcome::Updated),
    }
}

/// Writes one record that has no index entries of its own (practitioners,
/// organisations) under `mode`, inside the caller's transaction.
fn put_record<T: Serialize + DeserializeOwned + PartialEq>(
    records: &TransactionalTree,
    kind: Kind,
    id: &str,
    record: &T,
    mode: WriteMode,
) -> TxResult<WriteOutcome> {
    let old: Option<T> = tx_decode(kind, records.get(id.as_bytes())?)?;
    let outcome = write_outcome(kind, id, old.as_ref(), record, mode)?;
    if outcome != WriteOutcome::Unchanged {
        records.insert(id.as_bytes(), tx_encode(kind, record)?)?;
    }
    Ok(outcome)
}

impl Store {
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity_bytes)
            .mode(sled::Mode::HighThroughput);
        // sled's IO threads let go of the folder's lock a moment after the
        // last handle of a closed store drops: a reopen in the same process
        // (a restart, a restore, `store check` right after a stop) waits for
        // that, briefly. Another live process keeps the lock, and the error
        // comes after the wait.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    return Err(StoreError::Locked {
                        path: dir.display().to_string(),
                    });
                }
                other => break other?,
            }
        };
        let log_file = File::open(dir.join(SLED_LOG_FILE))?;
        // The log file's directory entry must survive a power cut too.
        File::open(dir)?.sync_all()?;
        let durability = Arc::new(Durability {
            requested: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            log_file,
        });
        let store = Store {
            durability,
            persons: db.open_tree("persons")?,
            practitioners: db.open_tree("practitioners")?,
            organisations: db.open_tree("organisations")?,
            involvements: db.open_tree("involvements")?,
            involvements_by_person: db.open_tree("involvements_by_person")?,
            involvements_by_practitioner: db.open_tree("involvements_by_practitioner")?,
            person_index: db.open_tree("person_index")?,
            match_index: db.open_tree("match_index")?,
            key_sets: Arc::default(),
            rekey_lock: Arc::default(),
            person_writes: Arc::default(),
            meta: db.open_tree("meta")?,
            audit: audit::AuditLog::open(dir)?,
            witness: db.open_tree("witness")?,
            events: db.open_tree("events")?,
            events_by_practitioner: db.open_tree("events_by_practitioner")?,
            attention: db.open_tree("attention")?,
            team_lock: Arc::new(parking_lot::Mutex::new(())),
            durable_events: Arc::new(tokio::sync::watch::channel(events::Progress::default()).0),
            links: db.open_tree("links")?,
            retention: db.open_tree("retention")?,
            audit_queue: Arc::default(),
            writers: Arc::default(),
            write_gate: Arc::new(parking_lot::RwLock::new(())),
            db,
        };
        store.open_audit()?;
        // What sled recovered at open is what is on disk.
        store.publish_durable_events(store.last_event_seq()?);
        Ok(store)
    }

    /// What every write transaction holds while it runs (see `backup`).
    /// Counted, so readers can tell a write is under way (see
    /// [`Store::writes_in_progress`]).
    fn writing(&self) -> Writing<'_> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        Writing {
            _gate: self.audit_gate(),
            writers: &self.writers,
        }
    }

    /// The gate alone, uncounted: for the audit log's group writes, which
    /// are short and which readers need not step aside for.
    fn audit_gate(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.write_gate.read()
    }

    /// The gate if no backup holds it now; `None` rather than waiting.
    fn try_audit_gate(&self) -> Option<parking_lot::RwLockReadGuard<'_, ()>> {
        self.write_gate.try_read()
    }

    /// Whether a record write (an import batch, an API write) is running.
    /// sled 0.34 runs every transaction under one process-wide lock that its
    /// reads wait for too, so a reader on an async worker would stall the
    /// runtime behind a 1,000-record import batch: lookups read on the
    /// blocking pool while this says yes, on the worker otherwise.
    pub fn writes_in_progress(&self) -> bool {
        self.writers.load(Ordering::SeqCst) > 0
    }

    /// Makes every write that happened before this call durable, even
    /// across a power cut. Concurrent callers share flushes (group commit),
    /// so acknowledging many writes costs about one flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let durability = &self.durability;
        let ticket = durability.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = durability.turn.lock().await;
        if durability.completed.load(Ordering::SeqCst) >= ticket {
            return Ok(()); // a flush that started after our write has finished
        }
        // Every ticket up to here was taken after its writes, and before this
        // flush starts: this flush covers all of them.
        let covered = durability.requested.load(Ordering::SeqCst);
        let events_covered = self.last_event_seq()?;
        // `flush`, not `flush_async`, on tokio's blocking pool: `flush_async`
        // parks one of sled's few shared IO threads until the write lands, and
        // with several stores in one process (tests, the benchmark) the parked
        // threads can take every IO thread while the writes they wait for sit
        // in the queue behind them: a deadlock (seen with 10 nodes in-process).
        let db = self.db.clone();
        let log_file = durability.log_file.try_clone()?;
        let audit = Arc::clone(&self.audit);
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            db.flush()?;
            log_file.sync_data()?;
            audit.sync()?;
            Ok(())
        })
        .await
        .map_err(|_| std::io::Error::other("flush worker stopped"))??;
        durability.completed.store(covered, Ordering::SeqCst);
        self.publish_durable_events(events_covered);
        Ok(())
    }

    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    fn get<T: DeserializeOwned>(
        &self,
        tree: &Tree,
        kind: Kind,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        tree.get(id.as_bytes())?
            .map(|bytes| decode(kind, &bytes))
            .transpose()
    }

    pub fn person(&self, id: &str) -> Result<Option<Person>, StoreError> {
        self.get(&self.persons, Kind::Person, id)
    }

    pub fn practitioner(&self, id: &str) -> Result<Option<Practitioner>, StoreError> {
        self.get(&self.practitioners, Kind::Practitioner, id)
    }

    pub fn organisation(&self, id: &str) -> Result<Option<Organisation>, StoreError> {
        self.get(&self.organisations, Kind::Organisation, id)
    }

    pub fn involvement(&self, id: &str) -> Result<Option<Involvement>, StoreError> {
        self.get(&self.involvements, Kind::Involvement, id)
    }

    pub fn counts(&self) -> Result<Counts, StoreError> {
        let count = |key: &[u8]| -> Result<u64, StoreError> {
            Ok(read_count(self.meta.get(key)?.as_deref()))
        };
        Ok(Counts {
            persons: count(COUNT_PERSONS)?,
            practitioners: count(COUNT_PRACTITIONERS)?,
            organisations: count(COUNT_ORGANISATIONS)?,
            involvements: count(COUNT_INVOLVEMENTS)?,
            active_involvements: count(COUNT_ACTIVE_INVOLVEMENTS)?,
        })
    }

    /// The imports cut off part-way: each journal's name and the progress
    /// its last batch recorded.
    pub fn pending_imports(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut pending = Vec::new();
        for entry in self.meta.scan_prefix(PENDING_IMPORT) {
            let (key, value) = entry?;
            pending.push((child_of(&key, PENDING_IMPORT.len()), value.to_vec()));
        }
        Ok(pending)
    }

    /// Removes an import's marker (an import that cannot be finished).
    pub fn clear_pending_import(&self, journal: &str) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.meta.remove(pending_key(journal))?;
        Ok(())
    }

    /// Writes persons and their index entries in one transaction.
    pub fn put_persons(
        &self,
        persons: &[Person],
        mode: WriteMode,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.put_persons_marked(persons, mode, ImportMark::Keep)
    }

    /// [`Store::put_persons`], moving the pending-import marker.
    ///
    /// Without a marker (one batch alone, an API write) the records and all
    /// their index entries are one transaction. A batch of a multi-batch
    /// import is written in two steps, because inside sled's transaction
    /// every insert first reads the key's old value, under one process-wide
    /// lock, and a person has about ten index entries: the import of a
    /// million persons took 169 s that way, 85 s this way (BENCHMARKS.md).
    ///
    /// 1. One transaction writes the records and the counts, removes the index
    ///    entries of the records it replaces, moves the import's marker as
    ///    every batch does, and sets a flag naming the batch's persons.
    /// 2. Then their new entries are inserted outside any transaction, on two
    ///    threads, and the flag goes.
    ///
    /// Between the steps the batch's persons have records without entries
    /// (never an entry without its record): lookups miss them, and an updated
    /// person is found under neither version. A crash there, or a failure of
    /// step 2 (reported as [`StoreError::IndexEntriesPending`]), leaves the flag;
    /// the next start writes the entries from the records
    /// ([`Store::finish_index_entries`]). sled recovers its log as a prefix,
    /// so a flag found removed means the entries inserted before it are there.
    /// Person writes take one lock through both steps, so no other write of the
    /// same person falls between them.
    pub fn put_persons_marked(
        &self,
        persons: &[Person],
        mode: WriteMode,
        mark: ImportMark<'_>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let _person_writes = self.person_writes.lock();
        // The gate before the key sets: a rekey's barrier then knows that
        // every write it waits for used the sets it replaced, and every
        // later one uses the new (see `match_index`). Held through both steps.
        let _writing = self.writing();
        let sets = self.indexed_sets();
        // Everything derived from the new records (encoding, index keys,
        // blinded match keys: HMACs and phonetics) is computed before the
        // transaction, which holds sled's process-wide lock while it runs.
        let prepared = persons
            .iter()
            .map(|person| {
                let index_keys: Vec<Vec<u8>> = person_index_keys(&person.into())
                    .iter()
                    .map(|key| pair_key_bytes(key, &person.id))
                    .collect();
                Ok((
                    encode(Kind::Person, person)?,
                    index_keys,
                    Self::match_entries(&sets, person),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let entries_after = mark.journal();
        let batch_ids = match entries_after {
            Some(_) => encode_ids(persons.iter().map(|p| p.id.as_str()))?,
            None => Vec::new(),
        };
        let outcomes = (
            &self.persons,
            &self.person_index,
            &self.match_index,
            &self.meta,
        )
            .transaction(|(records, index, match_index, meta)| {
                let mut outcomes = Vec::with_capacity(persons.len());
                let mut created = 0;
                for (person, (encoded, index_keys, match_entries)) in persons.iter().zip(&prepared)
                {
                    let old: Option<Person> =
                        tx_decode(Kind::Person, records.get(person.id.as_bytes())?)?;
                    let outcome =
                        write_outcome(Kind::Person, &person.id, old.as_ref(), person, mode)?;
                    outcomes.push(outcome);
                    if outcome == WriteOutcome::Unchanged {
                        continue;
                    }
                    if let Some(old) = &old {
                        for key in person_index_keys(&old.into()) {
                            index.remove(pair_key_bytes(&key, &old.id))?;
                        }
                        for (key, _) in Self::match_entries(&sets, old) {
                            match_index.remove(key)?;
                        }
                    } else {
                        created += 1;
                    }
                    if entries_after.is_none() {
                        for key in index_keys {
                            index.insert(key.as_slice(), &[])?;
                        }
                        for (key, kind) in match_entries {
                            match_index.insert(key.as_slice(), &[*kind])?;
                        }
                    }
                    records.insert(person.id.as_bytes(), encoded.as_slice())?;
                }
                add_count(meta, COUNT_PERSONS, created)?;
                apply_mark(meta, mark)?;
                if let Some(journal) = entries_after {
                    meta.insert(reindex_key(journal), batch_ids.as_slice())?;
                }
                Ok(outcomes)
            })
            .map_err(tx_error)?;
        let Some(journal) = entries_after else {
            return Ok(outcomes);
        };
        // The entries of each person's last version in the batch (a person
        // twice in one batch is written twice; the first version's entries
        // were never made).
        let last_of: std::collections::HashMap<&str, usize> = persons
            .iter()
            .enumerate()
            .map(|(at, person)| (person.id.as_str(), at))
            .collect();
        let entries: Vec<(&Tree, &[u8], &[u8])> = persons
            .iter()
            .zip(&prepared)
            .zip(&outcomes)
            .enumerate()
            .filter(|(at, ((person, _), outcome))| {
                **outcome != WriteOutcome::Unchanged && last_of.get(person.id.as_str()) == Some(at)
            })
            .flat_map(|(_, ((_, (_, index_keys, match_entries)), _))| {
                let index = index_keys
                    .iter()
                    .map(|key| (&self.person_index, key.as_slice(), &[][..]));
                let matching = match_entries.iter().map(|(key, kind)| {
                    (
                        &self.match_index,
                        key.as_slice(),
                        std::slice::from_ref(kind),
                    )
                });
                index.chain(matching)
            })
            .collect();
        insert_on_two_threads(&entries)
            .and_then(|()| Ok(self.meta.remove(reindex_key(journal)).map(|_| ())?))
            .map_err(|error| StoreError::IndexEntriesPending(Box::new(error)))?;
        Ok(outcomes)
    }

    /// Writes the index entries of every batch of persons cut off between its
    /// records and its entries (a crash, or [`StoreError::IndexEntriesPending`]),
    /// from the records as they are now, and removes the flags. Start-up runs
    /// it once the key sets are in place ([`Store::with_key_sets`]). Returns the
    /// persons whose entries it wrote.
    pub fn finish_index_entries(&self) -> Result<usize, StoreError> {
        let _person_writes = self.person_writes.lock();
        let _writing = self.writing();
        let sets = self.indexed_sets();
        let flags = self
            .meta
            .scan_prefix(PENDING_REINDEX)
            .collect::<Result<Vec<_>, _>>()?;
        let mut written = 0;
        for (flag, ids) in flags {
            for id in decode_ids(&ids)? {
                let Some(person) = self.person(&id)? else {
                    continue;
                };
                for key in person_index_keys(&(&person).into()) {
                    self.person_index
                        .insert(pair_key_bytes(&key, &person.id), &[])?;
                }
                for (key, kind) in Self::match_entries(&sets, &person) {
                    self.match_index.insert(key, &[kind])?;
                }
                written += 1;
            }
            self.meta.remove(flag)?;
        }
        Ok(written)
    }

    /// Writes practitioners; each one's organisation must exist.
    pub fn put_practitioners(
        &self,
        practitioners: &[Practitioner],
        mode: WriteMode,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.put_practitioners_marked(practitioners, mode, ImportMark::Keep)
    }

    /// [`Store::put_practitioners`] with the pending-import marker.
    pub fn put_practitioners_marked(
        &self,
        practitioners: &[Practitioner],
        mode: WriteMode,
        mark: ImportMark<'_>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let _writing = self.writing();
        (&self.practitioners, &self.organisations, &self.meta)
            .transaction(|(records, organisations, meta)| {
                let mut outcomes = Vec::with_capacity(practitioners.len());
                let mut created = 0;
                for practitioner in practitioners {
                    if organisations
                        .get(practitioner.organisation_id.as_bytes())?
                        .is_none()
                    {
                        return abort(StoreError::MissingReference {
                            field: "organisation_id",
                            kind: Kind::Organisation,
                            id: practitioner.organisation_id.clone(),
                        });
                    }
                    let outcome = put_record(
                        records,
                        Kind::Practitioner,
                        &practitioner.id,
                        practitioner,
                        mode,
                    )?;
                    created += i64::from(outcome == WriteOutcome::Created);
                    outcomes.push(outcome);
                }
                add_count(meta, COUNT_PRACTITIONERS, created)?;
                apply_mark(meta, mark)?;
                Ok(outcomes)
            })
            .map_err(tx_error)
    }

    pub fn put_organisations(
        &self,
        organisations: &[Organisation],
        mode: WriteMode,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.put_organisations_marked(organisations, mode, ImportMark::Keep)
    }

    /// [`Store::put_organisations`] with the pending-import marker.
    pub fn put_organisations_marked(
        &self,
        organisations: &[Organisation],
        mode: WriteMode,
        mark: ImportMark<'_>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let _writing = self.writing();
        (&self.organisations, &self.meta)
            .transaction(|(records, meta)| {
                let mut outcomes = Vec::with_capacity(organisations.len());
                let mut created = 0;
                for organisation in organisations {
                    let outcome = put_record(
                        records,
                        Kind::Organisation,
                        &organisation.id,
                        organisation,
                        mode,
                    )?;
                    created += i64::from(outcome == WriteOutcome::Created);
                    outcomes.push(outcome);
                }
                add_count(meta, COUNT_ORGANISATIONS, created)?;
                apply_mark(meta, mark)?;
                Ok(outcomes)
            })
            .map_err(tx_error)
    }

    /// Writes involvements with their by-person and by-practitioner index
    /// entries; the person and practitioner must exist.
    pub fn put_involvements(
        &self,
        involvements: &[Involvement],
        mode: WriteMode,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        self.put_involvements_marked(involvements, mode, ImportMark::Keep)
    }

    /// [`Store::put_involvements`] with the pending-import marker.
    pub fn put_involvements_marked(
        &self,
        involvements: &[Involvement],
        mode: WriteMode,
        mark: ImportMark<'_>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let _team = self.team_lock();
        let teams_before = self.teams_for_batch(involvements)?;
        let now = events::now_unix_seconds();
        let _writing = self.writing();
        (
            &self.involvements,
            &self.involvements_by_person,
            &self.involvements_by_practitioner,
            &self.persons,
            &self.practitioners,
            &self.meta,
            &self.events,
            &self.events_by_practitioner,
        )
            .transaction(
                |(
                    records,
                    by_person,
                    by_practitioner,
                    persons,
                    practitioners,
                    meta,
                    events,
                    event_index,
                )| {
                    let trees = events::EventTrees {
                        events,
                        by_practitioner: event_index,
                        meta,
                    };
                    let mut teams = teams_before.clone();
                    let mut outcomes = Vec::with_capacity(involvements.len());
                    let (mut created, mut active_delta) = (0i64, 0i64);
                    for involvement in involvements {
                        if persons.get(involvement.person_id.as_bytes())?.is_none() {
                            return abort(StoreError::MissingReference {
                                field: "person_id",
                                kind: Kind::Person,
                                id: involvement.person_id.clone(),
                            });
                        }
                        if practitioners
                            .get(involvement.practitioner_id.as_bytes())?
                            .is_none()
                        {
                            return abort(StoreError::MissingReference {
                                field: "practitioner_id",
                                kind: Kind::Practitioner,
                                id: involvement.practitioner_id.clone(),
                            });
                        }
                        let old: Option<Involvement> =
                            tx_decode(Kind::Involvement, records.get(involvement.id.as_bytes())?)?;
                        let outcome = write_outcome(
                            Kind::Involvement,
                            &involvement.id,
                            old.as_ref(),
                            involvement,
                            mode,
                        )?;
                        outcomes.push(outcome);
                        if outcome == WriteOutcome::Unchanged {
                            continue;
                        }
                        match &old {
                            Some(old) => {
                                by_person.remove(pair_key(&old.person_id, &old.id))?;
                                by_practitioner.remove(pair_key(&old.practitioner_id, &old.id))?;
                                active_delta -= i64::from(old.is_active());
                            }
                            None => created += 1,
                        }
                        active_delta += i64::from(involvement.is_active());
                        by_person.insert(pair_key(&involvement.person_id, &involvement.id), &[])?;
                        by_practitioner
                            .insert(pair_key(&involvement.practitioner_id, &involvement.id), &[])?;
                        records.insert(
                            involvement.id.as_bytes(),
                            tx_encode(Kind::Involvement, involvement)?,
                        )?;
                        events::involvement_changed(
                            &trees,
                            &mut teams,
                            old.as_ref(),
                            involvement,
                            now,
                        )?;
                    }
                    add_count(meta, COUNT_INVOLVEMENTS, created)?;
                    add_count(meta, COUNT_ACTIVE_INVOLVEMENTS, active_delta)?;
                    apply_mark(meta, mark)?;
                    Ok(outcomes)
                },
            )
            .map_err(tx_error)
    }

    /// Ends a current involvement.
    pub fn end_involvement(
        &self,
        id: &str,
        end_date: crate::model::Date,
        reason: Option<String>,
    ) -> Result<Involvement, StoreError> {
        let _team = self.team_lock();
        let person = self.involvement(id)?.map(|i| i.person_id);
        let teams_before = self.teams_of(person.as_deref())?;
        let now = events::now_unix_seconds();
        let _writing = self.writing();
        (
            &self.involvements,
            &self.meta,
            &self.events,
            &self.events_by_practitioner,
        )
            .transaction(|(records, meta, events, by_practitioner)| {
                let Some(mut involvement): Option<Involvement> =
                    tx_decode(Kind::Involvement, records.get(id.as_bytes())?)?
                else {
                    return abort(StoreError::NotFound {
                        kind: Kind::Involvement,
                        id: id.into(),
                    });
                };
                if !involvement.is_active() {
                    return abort(StoreError::AlreadyEnded { id: id.into() });
                }
                if end_date < involvement.start_date {
                    return abort(StoreError::Invalid {
                        field: "end_date",
                        message: format!(
                            "is before the involvement's start date {}",
                            involvement.start_date
                        ),
                    });
                }
                let old = involvement.clone();
                involvement.end_date = Some(end_date);
                involvement.end_reason = reason.clone();
                records.insert(id.as_bytes(), tx_encode(Kind::Involvement, &involvement)?)?;
                add_count(meta, COUNT_ACTIVE_INVOLVEMENTS, -1)?;
                let trees = events::EventTrees {
                    events,
                    by_practitioner,
                    meta,
                };
                events::involvement_changed(
                    &trees,
                    &mut teams_before.clone(),
                    Some(&old),
                    &involvement,
                    now,
                )?;
                Ok(involvement)
            })
            .map_err(tx_error)
    }

    /// A person's involvements, in id order.
    pub fn involvements_of_person(&self, person_id: &str) -> Result<Vec<Involvement>, StoreError> {
        let prefix = prefix_key(person_id.as_bytes());
        let mut involvements = Vec::new();
        for entry in self.involvements_by_person.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let involvement_id = child_of(&key, prefix.len());
            // The index and the records change in one transaction, so a
            // dangling entry means damage, not a race.
            match self.involvement(&involvement_id)? {
                // An involvement moved to another person between the scan
                // and the read belongs to them now.
                Some(involvement) if involvement.person_id == person_id => {
                    involvements.push(involvement)
                }
                Some(_) => {}
                None => {
                    return Err(StoreError::Corrupt {
                        kind: Kind::Involvement,
                        detail: "index entry without a record".into(),
                    });
                }
            }
        }
        Ok(involvements)
    }

    /// Persons indexed under `key` (one of [`person_index_keys`]).
    pub fn persons_with_key(&self, key: &[u8], limit: usize) -> Result<Vec<Person>, StoreError> {
        self.person_ids_with_key(key, limit)?
            .iter()
            .map(|id| self.indexed_person(id))
            .collect()
    }

    /// The ids of at most `limit` persons indexed under `key`.
    pub fn person_ids_with_key(&self, key: &[u8], limit: usize) -> Result<Vec<String>, StoreError> {
        let prefix = prefix_key(key);
        let mut ids = Vec::new();
        for entry in self.person_index.scan_prefix(&prefix).take(limit) {
            let (entry_key, _) = entry?;
            ids.push(child_of(&entry_key, prefix.len()));
        }
        Ok(ids)
    }

    /// A person an index entry names: missing means damage, not a race (the
    /// index and the records change in one transaction).
    pub fn indexed_person(&self, id: &str) -> Result<Person, StoreError> {
        self.person(id)?.ok_or_else(|| StoreError::Corrupt {
            kind: Kind::Person,
            detail: "index entry without a record".into(),
        })
    }

    /// Checks that every index entry has its record and every record its
    /// index entries, and that the counters agree (used by tests and, later,
    /// by `Admin` after a crash).
    pub fn check_consistency(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let mut counts = Counts::default();
        // A batch cut off between its records and its index entries: the
        // next start writes them (`finish_index_entries`).
        let mut entries_to_come = BTreeSet::new();
        for entry in self.meta.scan_prefix(PENDING_REINDEX) {
            let (_, ids) = entry?;
            entries_to_come.extend(decode_ids(&ids)?);
        }
        for entry in self.persons.iter() {
            let (_, bytes) = entry?;
            let person: Person = decode(Kind::Person, &bytes)?;
            counts.persons += 1;
            if entries_to_come.contains(&person.id) {
                continue;
            }
            for key in person_index_keys(&(&person).into()) {
                if !self
                    .person_index
                    .contains_key(pair_key_bytes(&key, &person.id))?
                {
                    problems.push(format!("person {} lacks an index entry", person.id));
                }
            }
        }
        for entry in self.person_index.iter() {
            let (key, _) = entry?;
            let Some(split) = key.iter().rposition(|b| *b == 0) else {
                problems.push("malformed person index key".into());
                continue;
            };
            let person_id = child_of(&key, split + 1);
            match self.person(&person_id)? {
                Some(person) => {
                    let expected = person_index_keys(&(&person).into());
                    if !expected.iter().any(|k| k.as_slice() == &key[..split]) {
                        problems.push(format!("stale index entry for person {person_id}"));
                    }
                }
                None => problems.push(format!("index entry for missing person {person_id}")),
            }
        }
        for entry in self.involvements.iter() {
            let (_, bytes) = entry?;
            let involvement: Involvement = decode(Kind::Involvement, &bytes)?;
            counts.involvements += 1;
            counts.active_involvements += u64::from(involvement.is_active());
            if !self
                .involvements_by_person
                .contains_key(pair_key(&involvement.person_id, &involvement.id))?
                || !self
                    .involvements_by_practitioner
                    .contains_key(pair_key(&involvement.practitioner_id, &involvement.id))?
            {
                problems.push(format!(
                    "involvement {} lacks an index entry",
                    involvement.id
                ));
            }
            if self.person(&involvement.person_id)?.is_none() {
                problems.push(format!("involvement {} has no person", involvement.id));
            }
        }
        for tree in [
            &self.involvements_by_person,
            &self.involvements_by_practitioner,
        ] {
            for entry in tree.iter() {
                let (key, _) = entry?;
                let Some(split) = key.iter().position(|b| *b == 0) else {
                    problems.push("malformed involvement index key".into());
                    continue;
                };
                if !self.involvements.contains_key(&key[split + 1..])? {
                    problems.push("involvement index entry without a record".into());
                }
            }
        }
        counts.practitioners = self.practitioners.len() as u64;
        counts.organisations = self.organisations.len() as u64;
        let recorded = self.counts()?;
        if recorded != counts {
            problems.push(format!(
                "counters {recorded:?} disagree with records {counts:?}"
            ));
        }
        Ok(problems)
    }
}

fn pair_key_bytes(owner: &[u8], child: &str) -> Vec<u8> {
    let mut key = prefix_key(owner);
    key.extend_from_slice(child.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sensitivity;

    use crate::fixtures::{empty_store as open, person};

    /// A batch of a multi-batch import writes its index entries after its
    /// transaction. Killed between the two, the store holds the records
    /// without those entries and a flag naming their persons: `store check`
    /// counts them as pending, and the next start writes them from the records.
    #[test]
    fn an_import_batch_cut_off_before_its_index_entries_is_whole_after_the_next_start() {
        let (_dir, store) = open();
        let batch = [person("P1", "Smith"), person("P2", "Jones")];
        let mark = ImportMark::Set {
            journal: "import-1.journal",
            progress: b"after",
        };
        store
            .put_persons_marked(&batch, WriteMode::Upsert, mark)
            .expect("batch");
        assert!(store.check_consistency().expect("check").is_empty());
        assert_eq!(
            store.pending_imports().expect("marks"),
            vec![("import-1.journal".to_owned(), b"after".to_vec())]
        );
        let flag = reindex_key("import-1.journal");
        assert!(!store.meta.contains_key(&flag).expect("flag"));

        // What a kill between the transaction and the entries leaves.
        for person in &batch {
            for key in person_index_keys(&person.into()) {
                store
                    .person_index
                    .remove(pair_key_bytes(&key, &person.id))
                    .expect("remove");
            }
        }
        assert_eq!(store.check_consistency().expect("check").len(), 4);
        let ids = encode_ids(["P1", "P2"].into_iter()).expect("ids");
        store.meta.insert(&flag, ids).expect("flag");
        // Entries still to come are not damage.
        assert!(store.check_consistency().expect("check").is_empty());

        assert_eq!(store.finish_index_entries().expect("finish"), 2);
        assert!(!store.meta.contains_key(&flag).expect("flag"));
        assert!(store.check_consistency().expect("check").is_empty());
        let smith = person_index_keys(&(&batch[0]).into());
        assert_eq!(
            store.person_ids_with_key(&smith[0], 10).expect("scan"),
            ["P1"]
        );

        // The last batch clears the marker with its records.
        store
            .put_persons_marked(
                &[person("P3", "Brown")],
                WriteMode::Upsert,
                ImportMark::Clear {
                    journal: "import-1.journal",
                },
            )
            .expect("last batch");
        assert!(store.pending_imports().expect("marks").is_empty());
        assert!(store.check_consistency().expect("check").is_empty());
        assert_eq!(store.counts().expect("counts").persons, 3);
    }

    /// A person twice in one batch of an import keeps the index entries of
    /// the last version only.
    #[test]
    fn a_person_twice_in_one_import_batch_is_indexed_as_the_last_version() {
        let (_dir, store) = open();
        store
            .put_persons_marked(
                &[person("P1", "Smith"), person("P1", "Jones")],
                WriteMode::Upsert,
                ImportMark::Set {
                    journal: "import-2.journal",
                    progress: b"after",
                },
            )
            .expect("batch");
        assert!(store.check_consistency().expect("check").is_empty());
        let smith = person_index_keys(&(&person("P1", "Smith")).into());
        assert!(
            store
                .person_ids_with_key(&smith[0], 10)
                .expect("scan")
                .is_empty()
        );
    }

    #[test]
    fn updating_a_person_moves_its_index_entries() {
        let (_dir, store) = open();
        store
            .put_persons(&[person("P1", "Smith")], WriteMode::Create)
            .expect("create");
        store
            .put_persons(&[person("P1", "Jones")], WriteMode::Update)
            .expect("update");
        let jones = person_index_keys(&(&person("P1", "Jones")).into());
        let smith = person_index_keys(&(&person("P1", "Smith")).into());
        assert_eq!(
            store.persons_with_key(&jones[0], 10).expect("scan").len(),
            1
        );
        assert!(
            store
                .persons_with_key(&smith[0], 10)
                .expect("scan")
                .is_empty()
        );
        assert!(store.check_consistency().expect("check").is_empty());
    }

    #[test]
    fn an_involvement_needs_its_person_and_nothing_is_written_otherwise() {
        let (_dir, store) = open();
        crate::fixtures::put_council(&store, &["PR1"]);
        store
            .put_persons(&[person("P1", "Smith")], WriteMode::Create)
            .expect("person");
        let involvement = |id: &str, person_id: &str| Involvement {
            sensitivity: Sensitivity::AlwaysFindable,
            ..crate::fixtures::involvement(id, person_id, "PR1")
        };
        let start = crate::model::calendar_date(2024, 1, 1).expect("date");
        let error = store
            .put_involvements(
                &[involvement("I1", "P1"), involvement("I2", "nobody")],
                WriteMode::Upsert,
            )
            .expect_err("missing person");
        assert!(matches!(
            error,
            StoreError::MissingReference {
                field: "person_id",
                ..
            }
        ));
        assert!(
            store.involvement("I1").expect("get").is_none(),
            "batch must be all or nothing"
        );
        store
            .put_involvements(&[involvement("I1", "P1")], WriteMode::Upsert)
            .expect("write");
        store.end_involvement("I1", start, None).expect("end");
        assert!(matches!(
            store.end_involvement("I1", start, None),
            Err(StoreError::AlreadyEnded { .. })
        ));
        let counts = store.counts().expect("counts");
        assert_eq!((counts.involvements, counts.active_involvements), (1, 0));
        assert!(store.check_consistency().expect("check").is_empty());
    }
}
