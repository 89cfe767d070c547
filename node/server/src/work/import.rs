//! The node's side of a bulk import: every row of the stream is validated
//! (fields, references to records this node holds, ids repeated within the
//! import) before anything is written; then the valid rows are written in
//! batches, each batch one atomic store transaction, and the reply is sent
//! once everything written is flushed.
//!
//! All or nothing by default: one bad row and nothing is written, so a broken
//! nightly export never half-replaces yesterday's good data. `skip_bad_rows`
//! writes the good rows and reports the bad.
//!
//! All or nothing across a crash too, at any size: the valid rows wait for
//! the verdict in a spool file (mode 0600, personal data) in the data
//! folder's `spool/`, which becomes the import's journal. An import of more
//! than one batch makes the journal durable first; each batch's transaction
//! then records in the store how far the import got (a mark naming the
//! journal) and the last clears the mark. A node stopped part-way (a kill, a
//! power cut, a full disk) finishes the import from the journal when it next
//! starts, before it serves ([`finish_pending_imports`]): after a restart an
//! import is whole or absent, never half. Roll forward rather than back: a
//! sled transaction cannot be undone, and the rows were already checked.
//! Start-up removes journals no mark names (an import cut off before its
//! first batch). Between the first batch and the last, readers of the
//! running node see the import arrive batch by batch.
//!
//! Memory is not constant: finding ids repeated within an import means
//! remembering every id seen. Each is kept as a 64-bit hash and the spool
//! offset of its row (about 20–40 bytes per row in the hash table, so a few
//! hundred MB at [`MAX_ROWS_PER_IMPORT`] rows), and a hash hit re-reads the
//! earlier row from the spool to tell a repeat from a collision.
//!
//! A `mirror` import (persons or involvements) is the case system's full
//! export: after its rows are written, the records the node holds and the
//! export lacks are deleted (`delete_mirrored`), each batch audited first.
//! It is all or nothing (no `skip_bad_rows`), and refused whole, before
//! anything is written, when more than `import.mirror_max_share` would go
//! unless forced: a truncated export must not wipe the node.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use patchwork_proto::v1::{self, import_request::Item, import_row};
use serde::{Deserialize, Serialize};
use tempfile::NamedTempFile;
use tonic::{Status, Streaming};

use crate::base::pool::blocking;
use crate::base::validate::{self, FieldError, InvolvementSource, Rules};
use patchwork_store::last_import::LastImport;
use patchwork_store::model::{Involvement, Organisation, Person, Practitioner};
use patchwork_store::{ImportMark, Kind, Store, StoreError, WriteMode, WriteOutcome};

/// Rows per write transaction: big enough to amortise a transaction, small
/// enough to keep each one short.
const WRITE_BATCH: usize = 1000;
/// Rows per message on the wire.
pub(crate) const MAX_ROWS_PER_BATCH: usize = 10_000;
/// Rows per import; larger exports are split into several files.
pub(crate) const MAX_ROWS_PER_IMPORT: u64 = 10_000_000;
/// Errors kept for the report.
const MAX_REPORTED_ERRORS: usize = 1000;

/// One validated row.
#[derive(Debug, Serialize, Deserialize)]
enum Record {
    Person(Person),
    Practitioner(Practitioner),
    Organisation(Organisation),
    Involvement(Involvement),
}

impl Record {
    fn id(&self) -> &str {
        match self {
            Record::Person(r) => &r.id,
            Record::Practitioner(r) => &r.id,
            Record::Organisation(r) => &r.id,
            Record::Involvement(r) => &r.id,
        }
    }
}

/// The store's name for an import's kind.
fn store_kind(kind: v1::RecordKind) -> Kind {
    match kind {
        v1::RecordKind::Practitioner => Kind::Practitioner,
        v1::RecordKind::Organisation => Kind::Organisation,
        v1::RecordKind::Involvement => Kind::Involvement,
        v1::RecordKind::Person | v1::RecordKind::Unspecified => Kind::Person,
    }
}

fn kind_name(kind: v1::RecordKind) -> &'static str {
    match kind {
        v1::RecordKind::Person => "person",
        v1::RecordKind::Practitioner => "practitioner",
        v1::RecordKind::Organisation => "organisation",
        v1::RecordKind::Involvement => "involvement",
        v1::RecordKind::Unspecified => "unspecified",
    }
}

enum RowProblem {
    Field(FieldError),
    Store(StoreError),
}

impl From<FieldError> for RowProblem {
    fn from(error: FieldError) -> Self {
        RowProblem::Field(error)
    }
}

impl From<StoreError> for RowProblem {
    fn from(error: StoreError) -> Self {
        RowProblem::Store(error)
    }
}

fn missing(field: &str, kind: &str, id: &str) -> RowProblem {
    RowProblem::Field(FieldError::new(
        field,
        format!("{kind} {id} does not exist on this node"),
    ))
}

/// Validates one row of an import of `kind`, including that the records it
/// refers to exist.
fn check_row(
    kind: v1::RecordKind,
    record: Option<import_row::Record>,
    store: &Store,
    rules: &Rules,
) -> Result<Record, RowProblem> {
    use import_row::Record as Wire;
    let found = match &record {
        None => return Err(FieldError::new("record", "is required").into()),
        Some(Wire::Person(_)) => v1::RecordKind::Person,
        Some(Wire::Practitioner(_)) => v1::RecordKind::Practitioner,
        Some(Wire::Organisation(_)) => v1::RecordKind::Organisation,
        Some(Wire::Involvement(_)) => v1::RecordKind::Involvement,
    };
    if found != kind {
        return Err(FieldError::new(
            "record",
            format!(
                "is a {}, this import is of {}s",
                kind_name(found),
                kind_name(kind)
            ),
        )
        .into());
    }
    Ok(match record {
        Some(Wire::Person(p)) => Record::Person(validate::person(&p, "", rules)?),
        Some(Wire::Organisation(o)) => Record::Organisation(validate::organisation(&o, "")?),
        Some(Wire::Practitioner(p)) => {
            let practitioner = validate::practitioner(&p, "")?;
            if store.organisation(&practitioner.organisation_id)?.is_none() {
                return Err(missing(
                    "organisation_id",
                    "organisation",
                    &practitioner.organisation_id,
                ));
            }
            Record::Practitioner(practitioner)
        }
        Some(Wire::Involvement(i)) => {
            let involvement = validate::involvement(&i, "", InvolvementSource::Import, rules)?;
            if store.person(&involvement.person_id)?.is_none() {
                return Err(missing("person_id", "person", &involvement.person_id));
            }
            if store.practitioner(&involvement.practitioner_id)?.is_none() {
                return Err(missing(
                    "practitioner_id",
                    "practitioner",
                    &involvement.practitioner_id,
                ));
            }
            Record::Involvement(involvement)
        }
        None => return Err(FieldError::new("record", "is required").into()),
    })
}

/// Validated records waiting for the verdict, on disk, each with its line.
/// The spool is also the import's journal once writing starts (module docs).
struct Spool {
    writer: BufWriter<NamedTempFile>,
    records: u64,
    /// Bytes spooled so far: the offset the next record will have.
    end: u64,
}

/// How a journal's file name starts; start-up removes any such file that no
/// pending import names.
const JOURNAL_PREFIX: &str = "import-";
const JOURNAL_SUFFIX: &str = ".journal";

/// Reads one spooled entry (length, then postcard `(line, record)`); with
/// the bytes it took.
fn read_entry(reader: &mut impl Read) -> std::io::Result<(u64, Record, u64)> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    let mut bytes = vec![0u8; len as usize];
    reader.read_exact(&mut bytes)?;
    let (line, record) = postcard::from_bytes(&bytes).map_err(std::io::Error::other)?;
    Ok((line, record, 4 + u64::from(len)))
}

/// What a pending-import marker holds: where in its journal the next
/// unwritten record starts, and how many are left.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    offset: u64,
    left: u64,
}

impl Spool {
    fn new(dir: &std::path::Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // Named (mode 0600) so that a half-applied import can be finished
        // from it after a crash; removed when the import ends.
        let file = tempfile::Builder::new()
            .prefix(JOURNAL_PREFIX)
            .suffix(JOURNAL_SUFFIX)
            .tempfile_in(dir)?;
        Ok(Spool {
            writer: BufWriter::with_capacity(1 << 20, file),
            records: 0,
            end: 0,
        })
    }

    fn push(&mut self, line: u64, record: &Record) -> std::io::Result<()> {
        let bytes = postcard::to_stdvec(&(line, record)).map_err(std::io::Error::other)?;
        let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        self.writer.write_all(&len.to_le_bytes())?;
        self.writer.write_all(&bytes)?;
        self.records += 1;
        self.end += 4 + u64::from(len);
        Ok(())
    }

    /// The entry spooled at `offset`, leaving the spool ready to append.
    fn read_at(&mut self, offset: u64) -> std::io::Result<(u64, Record)> {
        self.writer.flush()?;
        let file = self.writer.get_mut();
        file.seek(SeekFrom::Start(offset))?;
        let entry = read_entry(file);
        file.seek(SeekFrom::End(0))?;
        entry.map(|(line, record, _)| (line, record))
    }

    /// Writes every spooled record in atomic batches of [`WRITE_BATCH`],
    /// each with `write`. More than one batch: the journal is made durable
    /// first, and each batch's transaction records how far the import got,
    /// the last one clearing the mark (module docs). Returns the journal,
    /// which the caller drops (removing the file) only once the writes are
    /// flushed.
    fn write_with(
        self,
        write: impl FnMut(Vec<Record>, ImportMark<'_>) -> Result<Vec<WriteOutcome>, StoreError>,
    ) -> Result<(Vec<WriteOutcome>, NamedTempFile), Status> {
        let io = |e: std::io::Error| {
            tracing::error!(error = %e, "import spool unusable");
            Status::internal("the import's spool file could not be read back; nothing was imported")
        };
        let journal = self.writer.into_inner().map_err(|e| io(e.into_error()))?;
        let name = journal
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if self.records > WRITE_BATCH as u64 {
            journal.as_file().sync_all().map_err(io)?;
            if let Some(dir) = journal.path().parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        let mut file = journal.reopen().map_err(io)?;
        file.rewind().map_err(io)?;
        let reader = BufReader::with_capacity(1 << 20, file);
        let progress = Progress {
            offset: 0,
            left: self.records,
        };
        match apply_journal(reader, &name, progress, write) {
            Ok(outcomes) => Ok((outcomes, journal)),
            Err(status) => {
                // Part-way, start-up finishes from the journal; if nothing
                // was written, start-up removes it as a leftover.
                if self.records > WRITE_BATCH as u64
                    && let Err(error) = journal.keep()
                {
                    tracing::error!(error = %error, "cannot keep an import journal");
                }
                Err(status)
            }
        }
    }
}

/// Writes the `progress.left` records of journal `name` that `reader` is
/// positioned at, in batches; each batch but the last sets the journal's
/// mark to the progress after it, the last clears it (one batch alone
/// touches no mark). A failure in the first batch wrote nothing of this
/// call; a later one leaves the mark, which start-up finishes from.
fn apply_journal(
    mut reader: impl Read,
    name: &str,
    progress: Progress,
    mut write: impl FnMut(Vec<Record>, ImportMark<'_>) -> Result<Vec<WriteOutcome>, StoreError>,
) -> Result<Vec<WriteOutcome>, Status> {
    let single = progress.left <= WRITE_BATCH as u64 && progress.offset == 0;
    let mut outcomes: Vec<WriteOutcome> =
        Vec::with_capacity(usize::try_from(progress.left).unwrap_or(0));
    let mut offset = progress.offset;
    let mut remaining = progress.left;
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut first = true;
    while remaining > 0 {
        let (_line, record, took) = read_entry(&mut reader).map_err(|e| {
            tracing::error!(error = %e, journal = name, "import journal unreadable");
            if first {
                Status::internal(
                    "the import's spool file could not be read back; nothing was imported",
                )
            } else {
                Status::internal(format!(
                    "the import's journal could not be read back part-way; {FINISHED_AT_START}"
                ))
            }
        })?;
        batch.push(record);
        offset += took;
        remaining -= 1;
        if batch.len() == WRITE_BATCH || remaining == 0 {
            let progress = postcard::to_stdvec(&Progress {
                offset,
                left: remaining,
            })
            .map_err(|e| Status::internal(format!("import progress unencodable: {e}")))?;
            let mark = if single {
                ImportMark::Keep
            } else if remaining == 0 {
                ImportMark::Clear { journal: name }
            } else {
                ImportMark::Set {
                    journal: name,
                    progress: &progress,
                }
            };
            match write(std::mem::take(&mut batch), mark) {
                Ok(written) => outcomes.extend(written),
                // One transaction: the first batch failing wrote nothing,
                // unless only its index entries failed after it.
                Err(error) if first && !matches!(error, StoreError::IndexEntriesPending(_)) => {
                    return Err(crate::base::convert::store_status(error, ""));
                }
                Err(error) => return Err(partly_written(error, outcomes.len())),
            }
            first = false;
        }
    }
    Ok(outcomes)
}

/// What an operator must know when an import stops after writing some of
/// its batches: the node finishes it when it next starts.
const FINISHED_AT_START: &str = "the rows written so far are kept with a journal of the rest, and the node finishes the import when it next starts (restart it); the import is never left half-applied";

/// The status for a store failure after some batches were committed: the
/// code of the store error, and never "nothing was changed".
fn partly_written(error: StoreError, written: usize) -> Status {
    tracing::error!(error = %error, written, "import failed part-way");
    let code = crate::base::convert::store_status(error, "").code();
    Status::new(
        code,
        format!("the import failed part-way: {FINISHED_AT_START}"),
    )
}

/// Finishes every import a crash (or a failure part-way) left half-applied,
/// from its journal, then removes journals no import needs. Start-up runs
/// this before the node serves, so no reader sees a half-applied import
/// after a restart. A journal that is gone or unreadable (a restored backup
/// taken mid-import, a damaged disk) cannot be finished: that is logged as
/// an error naming the journal, and its mark removed.
pub(crate) async fn finish_pending_imports(
    store: &Store,
    spool_dir: &Path,
) -> Result<u64, StoreError> {
    let pending = store.pending_imports()?;
    let mut finished = 0;
    for (name, progress) in pending {
        let writer = store.clone();
        let path = spool_dir.join(&name);
        let outcome = blocking_io(move || {
            let progress: Progress =
                postcard::from_bytes(&progress).map_err(std::io::Error::other)?;
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(progress.offset))?;
            let left = progress.left;
            let reader = BufReader::with_capacity(1 << 20, file);
            Ok(
                apply_journal(reader, &name_of(&path), progress, |batch, mark| {
                    write_batch(&writer, batch, mark)
                })
                .map(|outcomes| (outcomes.len(), left)),
            )
        })
        .await;
        match outcome {
            Ok(Ok((written, left))) => {
                tracing::warn!(journal = %name, rows = written, left, "finished an import a stop cut off");
                finished += 1;
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(StoreError::File(std::io::Error::other(
                    status.message().to_owned(),
                )));
            }
            Ok(Err(status)) => {
                tracing::error!(journal = %name, error = %status.message(), "a half-applied import cannot be finished: run it again");
                store.clear_pending_import(&name)?;
            }
            Err(error) => {
                tracing::error!(journal = %name, error = %error, "a half-applied import's journal is unreadable: run the import again");
                store.clear_pending_import(&name)?;
            }
        }
    }
    store.flush().await?;
    // No import runs yet: every journal left is a crash's leftover.
    if let Ok(entries) = std::fs::read_dir(spool_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(JOURNAL_PREFIX)
                && name.ends_with(JOURNAL_SUFFIX)
                && let Err(error) = std::fs::remove_file(entry.path())
            {
                tracing::warn!(journal = %name, error = %error, "cannot remove an old import journal");
            }
        }
    }
    Ok(finished)
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| std::io::Error::other("import worker stopped"))?
}

/// The imports running on this node now, for `GetStats`: after its upload
/// a client shows the node's own progress (checking, then writing) from
/// here rather than a finished bar over a silent wait.
#[derive(Debug, Default)]
pub(crate) struct RunningImports {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Arc<ImportProgress>>>,
}

/// Where one running import is.
#[derive(Debug)]
pub(crate) struct ImportProgress {
    pub kind: v1::RecordKind,
    /// The header's source (the file's name), to tell imports apart.
    pub source: String,
    /// Rows received and checked so far.
    pub checked: AtomicU64,
    /// Rows to write, once the upload has ended (0 before).
    pub(crate) to_write: AtomicU64,
    pub written: AtomicU64,
}

/// Removes its import from [`RunningImports`] however the import ends.
struct Registered<'a> {
    imports: &'a RunningImports,
    id: u64,
    progress: Arc<ImportProgress>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.imports.lock().remove(&self.id);
    }
}

impl RunningImports {
    fn lock(&self) -> parking_lot::MutexGuard<'_, BTreeMap<u64, Arc<ImportProgress>>> {
        self.running.lock()
    }

    fn register(&self, kind: v1::RecordKind, source: String) -> Registered<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(ImportProgress {
            kind,
            source,
            checked: AtomicU64::new(0),
            to_write: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        self.lock().insert(id, progress.clone());
        Registered {
            imports: self,
            id,
            progress,
        }
    }

    /// Every running import, as `GetStats` shows it.
    pub(crate) fn to_proto(&self) -> Vec<v1::RunningImport> {
        self.lock()
            .values()
            .map(|p| v1::RunningImport {
                kind: p.kind as i32,
                source: p.source.clone(),
                rows_checked: p.checked.load(Ordering::Relaxed),
                rows_to_write: p.to_write.load(Ordering::Relaxed),
                rows_written: p.written.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// The ids an import has seen, compactly (module docs): each id's 64-bit
/// hash and the spool offset of its row; ids whose hash another id already
/// holds (a collision, astronomically rare with a random key) in full.
struct SeenIds<S = RandomState> {
    hasher: S,
    by_hash: HashMap<u64, u64>,
    collided: HashMap<String, u64>,
}

impl SeenIds {
    fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

impl<S: BuildHasher> SeenIds<S> {
    fn with_hasher(hasher: S) -> Self {
        SeenIds {
            hasher,
            by_hash: HashMap::new(),
            collided: HashMap::new(),
        }
    }

    /// Whether a row with `id` was seen. A different id with the same hash
    /// counts as seen: a `--mirror` import then keeps a record it could
    /// have deleted, never the reverse.
    fn holds(&self, id: &str) -> bool {
        self.by_hash.contains_key(&self.hasher.hash_one(id)) || self.collided.contains_key(id)
    }

    /// The line of an earlier row with `id`; or `None`, having remembered
    /// `id` at `line` as the row the caller spools next.
    fn repeat_of(
        &mut self,
        id: &str,
        line: u64,
        spool: &mut Spool,
    ) -> std::io::Result<Option<u64>> {
        let hash = self.hasher.hash_one(id);
        let Some(&offset) = self.by_hash.get(&hash) else {
            self.by_hash.insert(hash, spool.end);
            return Ok(None);
        };
        let (first_line, first) = spool.read_at(offset)?;
        if first.id() == id {
            return Ok(Some(first_line));
        }
        if let Some(&first_line) = self.collided.get(id) {
            return Ok(Some(first_line));
        }
        self.collided.insert(id.to_owned(), line);
        Ok(None)
    }
}

/// A mirror's deletions, a batch at a time: the `ImportMirrored` entry
/// durably first, then one transaction (a person erased with everything
/// naming them). A crash in between leaves the records; the next mirror
/// import deletes them and names them again.
async fn delete_mirrored(
    store: &Store,
    context: &ImportContext,
    source: &str,
    plan: MirrorPlan,
) -> Result<(), Status> {
    for batch in plan.to_delete.chunks(MIRROR_BATCH) {
        let (person_ids, involvement_ids) = match plan.kind {
            Kind::Person => (batch.to_vec(), Vec::new()),
            _ => (Vec::new(), batch.to_vec()),
        };
        let event = patchwork_store::AuditEvent::ImportMirrored {
            caller: context.caller.clone(),
            source: source.to_owned(),
            person_ids,
            involvement_ids,
        };
        if let Err(e) = store.append_audits_durably(vec![event]).await {
            return Err(store_failed(context, "mirror audit", e).await);
        }
        let writer = store.clone();
        let kind = plan.kind;
        let ids = batch.to_vec();
        let deleted = blocking(move || {
            Ok(match kind {
                Kind::Person => writer.erase_persons(&ids, |_| true).map(|_| ()),
                _ => writer.delete_involvements(&ids).map(|_| ()),
            })
        })
        .await?;
        if let Err(e) = deleted {
            return Err(store_failed(context, "mirror deletion", e).await);
        }
    }
    if let Err(e) = store.flush().await {
        return Err(store_failed(context, "flush", e).await);
    }
    Ok(())
}

/// The status for a store error of a mirror's deletions; an I/O error also
/// makes health report NOT_SERVING, as any write's does (see
/// `NodeState::write_failed`).
async fn store_failed(context: &ImportContext, what: &'static str, error: StoreError) -> Status {
    if matches!(error, StoreError::Io(_) | StoreError::File(_)) {
        context.health.store_failed(what, &error).await;
    }
    crate::base::convert::store_status(error, "")
}

/// One atomic transaction for a batch of records of one kind, moving the
/// import's mark with it.
fn write_batch(
    store: &Store,
    batch: Vec<Record>,
    mark: ImportMark<'_>,
) -> Result<Vec<WriteOutcome>, StoreError> {
    let mut persons = Vec::new();
    let mut practitioners = Vec::new();
    let mut organisations = Vec::new();
    let mut involvements = Vec::new();
    for record in batch {
        match record {
            Record::Person(r) => persons.push(r),
            Record::Practitioner(r) => practitioners.push(r),
            Record::Organisation(r) => organisations.push(r),
            Record::Involvement(r) => involvements.push(r),
        }
    }
    // An import holds one kind, so exactly one of these is non-empty.
    let mut outcomes = Vec::new();
    if !persons.is_empty() {
        outcomes.extend(store.put_persons_marked(&persons, WriteMode::Upsert, mark)?);
    }
    if !organisations.is_empty() {
        outcomes.extend(store.put_organisations_marked(&organisations, WriteMode::Upsert, mark)?);
    }
    if !practitioners.is_empty() {
        outcomes.extend(store.put_practitioners_marked(&practitioners, WriteMode::Upsert, mark)?);
    }
    if !involvements.is_empty() {
        outcomes.extend(store.put_involvements_marked(&involvements, WriteMode::Upsert, mark)?);
    }
    Ok(outcomes)
}

struct Session {
    kind: v1::RecordKind,
    progress: Arc<ImportProgress>,
    rules: Rules,
    spool: Spool,
    seen: SeenIds,
    rows: u64,
    bad_rows: u64,
    errors: Vec<v1::RowError>,
}

impl Session {
    fn check_batch(&mut self, batch: v1::ImportBatch, store: &Store) -> Result<(), Status> {
        if batch.rows.len() > MAX_ROWS_PER_BATCH {
            return Err(Status::invalid_argument(format!(
                "batch.rows: at most {MAX_ROWS_PER_BATCH} rows per batch"
            )));
        }
        let spool_error = |e: std::io::Error| {
            tracing::error!(error = %e, "import spool unusable");
            Status::unavailable("the node cannot use its import spool; nothing was imported")
        };
        for row in batch.rows {
            self.rows += 1;
            if self.rows > MAX_ROWS_PER_IMPORT {
                return Err(Status::invalid_argument(format!(
                    "batch.rows: at most {MAX_ROWS_PER_IMPORT} rows per import; split the file"
                )));
            }
            let problem = match check_row(self.kind, row.record, store, &self.rules) {
                Ok(record) => match self
                    .seen
                    .repeat_of(record.id(), row.line, &mut self.spool)
                    .map_err(spool_error)?
                {
                    Some(first) => Some(FieldError::new(
                        "id",
                        format!("{} is also on line {first}", record.id()),
                    )),
                    None => {
                        self.spool.push(row.line, &record).map_err(spool_error)?;
                        None
                    }
                },
                Err(RowProblem::Field(error)) => Some(error),
                Err(RowProblem::Store(error)) => {
                    return Err(crate::base::convert::store_status(error, ""));
                }
            };
            self.progress.checked.store(self.rows, Ordering::Relaxed);
            if let Some(error) = problem {
                self.bad_rows += 1;
                if self.errors.len() < MAX_REPORTED_ERRORS {
                    self.errors.push(v1::RowError {
                        line: row.line,
                        field: error.field,
                        message: error.message,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Who imports, and the `--mirror` share guard in force.
pub(crate) struct ImportContext {
    /// The caller's SPIFFE id, for the audit of a mirror's deletions.
    pub caller: String,
    /// What health reports: a mirror whose audit or deletion cannot be
    /// written makes it NOT_SERVING, as any failed write does.
    pub health: crate::transport::health::Health,
    /// `import.mirror_max_share`.
    pub mirror_max_share: f64,
}

/// Deleting fewer than this many records never trips the mirror's share
/// guard: on a node of 20 persons, one is 5 %.
const SMALL_MIRROR: usize = 10;
/// Ids each `ImportMirrored` entry (and deletion transaction) names.
const MIRROR_BATCH: usize = 256;

/// What a mirror import deletes: the ids of `kind` the node holds and the
/// import does not, and whether that is more than the guard allows.
struct MirrorPlan {
    kind: Kind,
    to_delete: Vec<String>,
    held: usize,
}

/// Runs one import stream to its report. `spool_dir` holds the unnamed
/// spool file while the import runs.
pub(crate) async fn run_import(
    store: Store,
    rules: Rules,
    spool_dir: PathBuf,
    running: &RunningImports,
    context: ImportContext,
    mut stream: Streaming<v1::ImportRequest>,
) -> Result<v1::ImportReport, Status> {
    let header = match stream.message().await? {
        Some(v1::ImportRequest {
            item: Some(Item::Header(header)),
        }) => header,
        _ => {
            return Err(Status::invalid_argument(
                "header: the first message must be the import header",
            ));
        }
    };
    let kind = match v1::RecordKind::try_from(header.kind) {
        Ok(v1::RecordKind::Unspecified) => {
            return Err(FieldError::new("header.kind", "is required").into());
        }
        Ok(kind) => kind,
        Err(_) => {
            return Err(
                FieldError::new("header.kind", format!("unknown value {}", header.kind)).into(),
            );
        }
    };
    let source = validate::optional_text(&header.source, "header.source", 200)?;
    if header.mirror && !matches!(kind, v1::RecordKind::Person | v1::RecordKind::Involvement) {
        return Err(FieldError::new(
            "header.mirror",
            "only imports of persons or involvements can mirror an export",
        )
        .into());
    }
    if header.mirror && header.skip_bad_rows {
        return Err(FieldError::new(
            "header.skip_bad_rows",
            "cannot be combined with mirror: a bad row's record would be deleted",
        )
        .into());
    }
    if header.force && !header.mirror {
        return Err(FieldError::new("header.force", "only applies to a mirror import").into());
    }
    let started = std::time::Instant::now();
    let spool = blocking(move || {
        Spool::new(&spool_dir).map_err(|e| {
            tracing::error!(error = %e, "cannot create an import spool");
            Status::unavailable("the node cannot create its import spool; nothing was imported")
        })
    })
    .await?;
    let registered = running.register(kind, source.clone().unwrap_or_default());
    let mut session = Session {
        kind,
        progress: registered.progress.clone(),
        rules,
        spool,
        seen: SeenIds::new(),
        rows: 0,
        bad_rows: 0,
        errors: Vec::new(),
    };
    while let Some(message) = stream.message().await? {
        let batch = match message.item {
            Some(Item::Batch(batch)) => batch,
            Some(Item::Header(_)) => {
                return Err(Status::invalid_argument(
                    "header: only the first message may be a header",
                ));
            }
            None => return Err(Status::invalid_argument("item: is required")),
        };
        let store = store.clone();
        session = blocking(move || {
            let mut session = session;
            session.check_batch(batch, &store).map(|()| session)
        })
        .await?;
    }
    let Session {
        spool,
        rows,
        bad_rows,
        mut errors,
        seen,
        ..
    } = session;
    errors.sort_by_key(|e| e.line);
    let mut report = v1::ImportReport {
        rows,
        valid_rows: spool.records,
        bad_rows,
        errors,
        ..Default::default()
    };
    let mirror = if header.mirror && bad_rows == 0 {
        let reader = store.clone();
        let kind = store_kind(kind);
        let plan = blocking(move || {
            let held = reader
                .ids_of(kind)
                .map_err(|e| crate::base::convert::store_status(e, ""))?;
            let count = held.len();
            let to_delete = held.into_iter().filter(|id| !seen.holds(id)).collect();
            Ok(MirrorPlan {
                kind,
                to_delete,
                held: count,
            })
        })
        .await?;
        report.deleted = plan.to_delete.len() as u64;
        report.deleted_ids = plan.to_delete.iter().take(1000).cloned().collect();
        let going = plan.to_delete.len();
        if !header.force
            && going > SMALL_MIRROR
            && going as f64 > context.mirror_max_share * plan.held as f64
        {
            report.refused = format!(
                "the export lacks {going} of the {} {}s this node holds, more than \
                 import.mirror_max_share ({}): is it cut short? Check it; if those records \
                 really are gone from the case system, import it again with --force",
                plan.held, plan.kind, context.mirror_max_share
            );
            tracing::warn!(
                source = source.as_deref().unwrap_or(""),
                would_delete = going,
                held = plan.held,
                "mirror import refused: it would delete more than import.mirror_max_share"
            );
            return Ok(report);
        }
        Some(plan)
    } else {
        None
    };
    let checked_in = started.elapsed();
    if !header.dry_run && (bad_rows == 0 || header.skip_bad_rows) && spool.records > 0 {
        let writer = store.clone();
        let progress = registered.progress.clone();
        progress.to_write.store(spool.records, Ordering::Relaxed);
        let (outcomes, journal) = blocking(move || {
            spool.write_with(|batch, mark| {
                let rows = batch.len() as u64;
                let written = write_batch(&writer, batch, mark)?;
                progress.written.fetch_add(rows, Ordering::Relaxed);
                Ok(written)
            })
        })
        .await?;
        let written = outcomes.len();
        for outcome in outcomes {
            match outcome {
                WriteOutcome::Created => report.created += 1,
                WriteOutcome::Updated => report.updated += 1,
                WriteOutcome::Unchanged => report.unchanged += 1,
            }
        }
        let last = LastImport {
            at_unix_seconds: time::OffsetDateTime::now_utc().unix_timestamp(),
            rows: report.rows,
            created: report.created,
            updated: report.updated,
            unchanged: report.unchanged,
            bad_rows: report.bad_rows,
        };
        let recorder = store.clone();
        let recorded = blocking(move || {
            recorder
                .record_import(store_kind(kind), &last)
                .map_err(|e| crate::base::convert::store_status(e, ""))
        })
        .await;
        if let Err(status) = recorded {
            // The import itself is whole; only `stats` misses it.
            tracing::warn!(error = %status.message(), "the last import's summary was not recorded");
        }
        store
            .flush()
            .await
            .map_err(|e| partly_written(e, written))?;
        // Only now: until the last batch's cleared mark is durable, a crash
        // must find the journal to finish from.
        drop(journal);
        report.applied = true;
    }
    if let Some(plan) = mirror
        && !header.dry_run
    {
        delete_mirrored(&store, &context, source.as_deref().unwrap_or(""), plan).await?;
        report.applied = true;
    }
    tracing::info!(
        source = source.as_deref().unwrap_or(""),
        kind = kind_name(kind),
        rows = report.rows,
        bad_rows = report.bad_rows,
        created = report.created,
        updated = report.updated,
        applied = report.applied,
        check_ms = u64::try_from(checked_in.as_millis()).unwrap_or(u64::MAX),
        write_ms = u64::try_from((started.elapsed() - checked_in).as_millis()).unwrap_or(u64::MAX),
        "import finished"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchwork_store::model::Sector;

    fn organisation(id: &str) -> Record {
        Record::Organisation(Organisation {
            id: id.into(),
            name: format!("Organisation {id}"),
            sector: Sector::Health,
        })
    }

    /// Every id hashes alike: every lookup after the first is a hash hit.
    #[derive(Clone, Default)]
    struct AllCollide;

    impl std::hash::Hasher for AllCollide {
        fn finish(&self) -> u64 {
            7
        }
        fn write(&mut self, _bytes: &[u8]) {}
    }

    impl BuildHasher for AllCollide {
        type Hasher = AllCollide;
        fn build_hasher(&self) -> AllCollide {
            AllCollide
        }
    }

    /// Checks `ids` (line = index + 2, as in a CSV file) the way a session
    /// does; returns (line, first line) for each repeat.
    fn repeats<S: BuildHasher>(seen: &mut SeenIds<S>, ids: &[&str]) -> Vec<(u64, u64)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::new(dir.path()).expect("spool");
        let mut found = Vec::new();
        for (line, id) in (2u64..).zip(ids) {
            match seen.repeat_of(id, line, &mut spool).expect("spool") {
                Some(first) => found.push((line, first)),
                None => spool.push(line, &organisation(id)).expect("push"),
            }
        }
        found
    }

    #[test]
    fn repeated_ids_are_found_by_hash_and_told_apart_from_collisions() {
        let ids = ["O1", "O2", "O1", "O3", "O2", "O1"];
        let expected = vec![(4, 2), (6, 3), (7, 2)];
        assert_eq!(repeats(&mut SeenIds::new(), &ids), expected);
        // With every hash the same, the spool tells the ids apart.
        let mut colliding = SeenIds::with_hasher(AllCollide);
        assert_eq!(repeats(&mut colliding, &ids), expected);
        assert_eq!(colliding.by_hash.len(), 1);
        assert_eq!(colliding.collided.len(), 2, "O2 and O3 kept in full");
    }

    fn spool_of(records: usize) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::new(dir.path()).expect("spool");
        for i in 0..records {
            let line = u64::try_from(i).expect("small") + 2;
            spool
                .push(line, &organisation(&format!("O{i}")))
                .expect("push");
        }
        (dir, spool)
    }

    fn disk_full() -> StoreError {
        StoreError::File(std::io::Error::other("no space left on device"))
    }

    #[test]
    fn a_write_failing_after_earlier_batches_does_not_claim_nothing_changed() {
        let (_dir, spool) = spool_of(WRITE_BATCH + 500);
        let mut batches = 0;
        let status = spool
            .write_with(|batch, _| {
                batches += 1;
                if batches == 2 {
                    return Err(disk_full());
                }
                Ok(vec![WriteOutcome::Created; batch.len()])
            })
            .expect_err("second batch fails");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.message().contains(FINISHED_AT_START),
            "{}",
            status.message()
        );
        assert!(
            !status.message().contains("nothing"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_write_failing_in_the_first_batch_wrote_nothing() {
        let (_dir, spool) = spool_of(WRITE_BATCH + 500);
        let mut written = 0;
        let status = spool
            .write_with(|_, _| Err(disk_full()))
            .expect_err("first batch fails");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("nothing was changed"));
        let (_dir, spool) = spool_of(WRITE_BATCH + 500);
        let outcomes = spool
            .write_with(|batch, _| {
                written += batch.len();
                Ok(vec![WriteOutcome::Unchanged; batch.len()])
            })
            .expect("written")
            .0;
        assert_eq!(
            (outcomes.len(), written),
            (WRITE_BATCH + 500, WRITE_BATCH + 500)
        );
    }

    /// A store failing part-way leaves a mark and the journal; start-up
    /// finishes the import from them, whole, and removes the journal.
    #[tokio::test]
    async fn an_import_cut_off_part_way_is_finished_at_start_up() {
        let data = tempfile::tempdir().expect("tempdir");
        let spool_dir = data.path().join("spool");
        let store = Store::open(&data.path().join("store"), &Default::default()).expect("open");
        let total = 2 * WRITE_BATCH + 500;
        let mut spool = Spool::new(&spool_dir).expect("spool");
        for i in 0..total {
            let line = u64::try_from(i).expect("small") + 2;
            spool
                .push(line, &organisation(&format!("O{i}")))
                .expect("push");
        }
        let mut batches = 0;
        let status = spool
            .write_with(|batch, mark| {
                batches += 1;
                if batches == 2 {
                    return Err(disk_full());
                }
                write_batch(&store, batch, mark)
            })
            .expect_err("second batch fails");
        assert!(status.message().contains(FINISHED_AT_START));
        assert_eq!(store.counts().expect("counts").organisations, 1000);
        assert_eq!(store.pending_imports().expect("marks").len(), 1);

        let finished = finish_pending_imports(&store, &spool_dir)
            .await
            .expect("finished");
        assert_eq!(finished, 1);
        assert_eq!(
            store.counts().expect("counts").organisations,
            total as u64,
            "every row, once"
        );
        assert!(store.pending_imports().expect("marks").is_empty());
        assert!(store.check_consistency().expect("check").is_empty());
        let left: Vec<_> = std::fs::read_dir(&spool_dir)
            .expect("spool dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "journals left: {left:?}");
    }

    /// A mark whose journal is gone (a backup restored mid-import) is
    /// removed, and the node still starts.
    #[tokio::test]
    async fn a_mark_without_its_journal_is_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&data.path().join("store"), &Default::default()).expect("open");
        let progress = postcard::to_stdvec(&Progress { offset: 0, left: 5 }).expect("encode");
        store
            .put_organisations_marked(
                &[],
                WriteMode::Upsert,
                ImportMark::Set {
                    journal: "import-gone.journal",
                    progress: &progress,
                },
            )
            .expect("mark");
        assert_eq!(
            finish_pending_imports(&store, &data.path().join("spool"))
                .await
                .expect("start-up goes on"),
            0
        );
        assert!(store.pending_imports().expect("marks").is_empty());
    }
}
