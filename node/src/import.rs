//! The node's side of a bulk import: every row of the stream is validated
//! (fields, references to records this node holds, ids repeated within the
//! import) before anything is written; then the valid rows are written in
//! batches, each batch one atomic store transaction, and the reply is sent
//! once everything written is flushed.
//!
//! All or nothing by default: one bad row and nothing is written, so a broken
//! nightly export never half-replaces yesterday's good data. `skip_bad_rows`
//! writes the good rows and reports the bad. A crash while writing leaves some
//! whole batches written and the import unacknowledged; imports are idempotent
//! by id, so running it again finishes the job.
//!
//! Valid rows wait for the verdict in a spool file, not in memory. The spool
//! is an unnamed temporary file (mode 0600, personal data) in the data
//! folder: the kernel removes it when the import ends, even by a crash.
//!
//! Memory is not constant: finding ids repeated within an import means
//! remembering every id seen. Each is kept as a 64-bit hash and the spool
//! offset of its row (about 20–40 bytes per row in the hash table, so a few
//! hundred MB at [`MAX_ROWS_PER_IMPORT`] rows), and a hash hit re-reads the
//! earlier row from the spool to tell a repeat from a collision.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use patchwork_proto::v1::{self, import_request::Item, import_row};
use serde::{Deserialize, Serialize};
use tonic::{Status, Streaming};

use crate::model::{Involvement, Organisation, Person, Practitioner};
use crate::service::blocking;
use crate::store::{Store, StoreError, WriteMode, WriteOutcome};
use crate::validate::{self, FieldError, InvolvementSource, Rules};

/// Rows per write transaction: big enough to amortise a transaction, small
/// enough to keep each one short.
const WRITE_BATCH: usize = 1000;
/// Rows per message on the wire.
pub const MAX_ROWS_PER_BATCH: usize = 10_000;
/// Rows per import; larger exports are split into several files.
pub const MAX_ROWS_PER_IMPORT: u64 = 10_000_000;
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
struct Spool {
    writer: BufWriter<File>,
    records: u64,
    /// Bytes spooled so far: the offset the next record will have.
    end: u64,
}

/// Reads one spooled entry (length, then postcard `(line, record)`).
fn read_entry(reader: &mut impl Read) -> std::io::Result<(u64, Record)> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len)?;
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    reader.read_exact(&mut bytes)?;
    postcard::from_bytes(&bytes).map_err(std::io::Error::other)
}

impl Spool {
    fn new(dir: &std::path::Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Spool {
            writer: BufWriter::with_capacity(1 << 20, tempfile::tempfile_in(dir)?),
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
        entry
    }

    /// Writes every spooled record in atomic batches of [`WRITE_BATCH`],
    /// each with `write`.
    fn write_with(
        self,
        mut write: impl FnMut(Vec<Record>) -> Result<Vec<WriteOutcome>, StoreError>,
    ) -> Result<Vec<WriteOutcome>, Status> {
        let mut outcomes: Vec<WriteOutcome> =
            Vec::with_capacity(usize::try_from(self.records).unwrap_or(0));
        let io = |e: std::io::Error, written: usize| {
            tracing::error!(error = %e, written, "import spool unreadable");
            if written == 0 {
                Status::internal(
                    "the import's spool file could not be read back; nothing was imported",
                )
            } else {
                Status::internal(format!(
                    "the import's spool file could not be read back; {PARTLY_WRITTEN}"
                ))
            }
        };
        let mut file = self
            .writer
            .into_inner()
            .map_err(|e| io(e.into_error(), 0))?;
        file.rewind().map_err(|e| io(e, 0))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        let mut remaining = self.records;
        while remaining > 0 {
            let (_line, record) = read_entry(&mut reader).map_err(|e| io(e, outcomes.len()))?;
            batch.push(record);
            remaining -= 1;
            if batch.len() == WRITE_BATCH || remaining == 0 {
                match write(std::mem::take(&mut batch)) {
                    Ok(written) => outcomes.extend(written),
                    Err(error) if outcomes.is_empty() => {
                        // One transaction: the first batch failing wrote nothing.
                        return Err(crate::convert::store_status(error, ""));
                    }
                    Err(error) => return Err(partly_written(error, outcomes.len())),
                }
            }
        }
        Ok(outcomes)
    }
}

/// What an operator must know when an import stops after writing something.
const PARTLY_WRITTEN: &str = "some rows may have been written before the failure; run the import again: imports are idempotent by id";

/// The status for a store failure after some batches were committed: the
/// code of the store error, and never "nothing was changed".
fn partly_written(error: StoreError, written: usize) -> Status {
    tracing::error!(error = %error, written, "import failed part-way");
    let code = crate::convert::store_status(error, "").code();
    Status::new(
        code,
        format!("the import failed part-way: {PARTLY_WRITTEN}"),
    )
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

/// One atomic transaction for a batch of records of one kind.
fn write_batch(store: &Store, batch: Vec<Record>) -> Result<Vec<WriteOutcome>, StoreError> {
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
        outcomes.extend(store.put_persons(&persons, WriteMode::Upsert)?);
    }
    if !organisations.is_empty() {
        outcomes.extend(store.put_organisations(&organisations, WriteMode::Upsert)?);
    }
    if !practitioners.is_empty() {
        outcomes.extend(store.put_practitioners(&practitioners, WriteMode::Upsert)?);
    }
    if !involvements.is_empty() {
        outcomes.extend(store.put_involvements(&involvements, WriteMode::Upsert)?);
    }
    Ok(outcomes)
}

struct Session {
    kind: v1::RecordKind,
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
                    return Err(crate::convert::store_status(error, ""));
                }
            };
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

/// Runs one import stream to its report. `spool_dir` holds the unnamed
/// spool file while the import runs.
pub async fn run_import(
    store: Store,
    rules: Rules,
    spool_dir: PathBuf,
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
    let started = std::time::Instant::now();
    let spool = blocking(move || {
        Spool::new(&spool_dir).map_err(|e| {
            tracing::error!(error = %e, "cannot create an import spool");
            Status::unavailable("the node cannot create its import spool; nothing was imported")
        })
    })
    .await?;
    let mut session = Session {
        kind,
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
    let checked_in = started.elapsed();
    if !header.dry_run && (bad_rows == 0 || header.skip_bad_rows) && spool.records > 0 {
        let writer = store.clone();
        let outcomes =
            blocking(move || spool.write_with(|batch| write_batch(&writer, batch))).await?;
        store
            .flush()
            .await
            .map_err(|e| partly_written(e, outcomes.len()))?;
        for outcome in outcomes {
            match outcome {
                WriteOutcome::Created => report.created += 1,
                WriteOutcome::Updated => report.updated += 1,
                WriteOutcome::Unchanged => report.unchanged += 1,
            }
        }
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
    use crate::model::Sector;

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
            .write_with(|batch| {
                batches += 1;
                if batches == 2 {
                    return Err(disk_full());
                }
                Ok(vec![WriteOutcome::Created; batch.len()])
            })
            .expect_err("second batch fails");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status
                .message()
                .contains("some rows may have been written before the failure; run the import again: imports are idempotent by id"),
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
            .write_with(|_| Err(disk_full()))
            .expect_err("first batch fails");
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().contains("nothing was changed"));
        let (_dir, spool) = spool_of(WRITE_BATCH + 500);
        let outcomes = spool
            .write_with(|batch| {
                written += batch.len();
                Ok(vec![WriteOutcome::Unchanged; batch.len()])
            })
            .expect("written");
        assert_eq!(
            (outcomes.len(), written),
            (WRITE_BATCH + 500, WRITE_BATCH + 500)
        );
    }
}
