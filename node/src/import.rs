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

use std::collections::HashMap;

use patchwork_proto::v1::{self, import_request::Item, import_row::Record};
use tonic::{Status, Streaming};

use crate::model::{Involvement, Organisation, Person, Practitioner};
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

enum Records {
    Persons(Vec<Person>),
    Practitioners(Vec<Practitioner>),
    Organisations(Vec<Organisation>),
    Involvements(Vec<Involvement>),
}

impl Records {
    fn kind_name(&self) -> &'static str {
        match self {
            Records::Persons(_) => "person",
            Records::Practitioners(_) => "practitioner",
            Records::Organisations(_) => "organisation",
            Records::Involvements(_) => "involvement",
        }
    }

    fn len(&self) -> usize {
        match self {
            Records::Persons(v) => v.len(),
            Records::Practitioners(v) => v.len(),
            Records::Organisations(v) => v.len(),
            Records::Involvements(v) => v.len(),
        }
    }

    /// Validates one row and keeps it; returns its id.
    fn accept(
        &mut self,
        record: Option<Record>,
        store: &Store,
        rules: &Rules,
    ) -> Result<String, RowProblem> {
        let expected = self.kind_name();
        let wrong_kind = |found: &str| {
            RowProblem::Field(FieldError::new(
                "record",
                format!("is a {found}, this import is of {expected}s"),
            ))
        };
        match (self, record) {
            (Records::Persons(out), Some(Record::Person(p))) => {
                let person = validate::person(&p, "", rules)?;
                let id = person.id.clone();
                out.push(person);
                Ok(id)
            }
            (Records::Practitioners(out), Some(Record::Practitioner(p))) => {
                let practitioner = validate::practitioner(&p, "")?;
                if store.organisation(&practitioner.organisation_id)?.is_none() {
                    return Err(RowProblem::Field(FieldError::new(
                        "organisation_id",
                        format!(
                            "organisation {} does not exist on this node",
                            practitioner.organisation_id
                        ),
                    )));
                }
                let id = practitioner.id.clone();
                out.push(practitioner);
                Ok(id)
            }
            (Records::Organisations(out), Some(Record::Organisation(o))) => {
                let organisation = validate::organisation(&o, "")?;
                let id = organisation.id.clone();
                out.push(organisation);
                Ok(id)
            }
            (Records::Involvements(out), Some(Record::Involvement(i))) => {
                let involvement = validate::involvement(&i, "", InvolvementSource::Import, rules)?;
                if store.person(&involvement.person_id)?.is_none() {
                    return Err(RowProblem::Field(FieldError::new(
                        "person_id",
                        format!(
                            "person {} does not exist on this node",
                            involvement.person_id
                        ),
                    )));
                }
                if store.practitioner(&involvement.practitioner_id)?.is_none() {
                    return Err(RowProblem::Field(FieldError::new(
                        "practitioner_id",
                        format!(
                            "practitioner {} does not exist on this node",
                            involvement.practitioner_id
                        ),
                    )));
                }
                let id = involvement.id.clone();
                out.push(involvement);
                Ok(id)
            }
            (_, None) => Err(RowProblem::Field(FieldError::new("record", "is required"))),
            (_, Some(Record::Person(_))) => Err(wrong_kind("person")),
            (_, Some(Record::Practitioner(_))) => Err(wrong_kind("practitioner")),
            (_, Some(Record::Organisation(_))) => Err(wrong_kind("organisation")),
            (_, Some(Record::Involvement(_))) => Err(wrong_kind("involvement")),
        }
    }

    /// Writes everything in atomic batches; returns the outcome of each record.
    fn write(&self, store: &Store) -> Result<Vec<WriteOutcome>, StoreError> {
        fn chunks<T>(
            records: &[T],
            write: impl Fn(&[T]) -> Result<Vec<WriteOutcome>, StoreError>,
        ) -> Result<Vec<WriteOutcome>, StoreError> {
            let mut outcomes = Vec::with_capacity(records.len());
            for chunk in records.chunks(WRITE_BATCH) {
                outcomes.extend(write(chunk)?);
            }
            Ok(outcomes)
        }
        match self {
            Records::Persons(v) => chunks(v, |c| store.put_persons(c, WriteMode::Upsert)),
            Records::Practitioners(v) => {
                chunks(v, |c| store.put_practitioners(c, WriteMode::Upsert))
            }
            Records::Organisations(v) => {
                chunks(v, |c| store.put_organisations(c, WriteMode::Upsert))
            }
            Records::Involvements(v) => chunks(v, |c| store.put_involvements(c, WriteMode::Upsert)),
        }
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

struct Session {
    records: Records,
    rules: Rules,
    first_line_of: HashMap<String, u64>,
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
        for row in batch.rows {
            self.rows += 1;
            if self.rows > MAX_ROWS_PER_IMPORT {
                return Err(Status::invalid_argument(format!(
                    "batch.rows: at most {MAX_ROWS_PER_IMPORT} rows per import; split the file"
                )));
            }
            let before = self.records.len();
            let outcome = self.records.accept(row.record, store, &self.rules);
            let problem = match outcome {
                Ok(id) => match self.first_line_of.get(&id) {
                    Some(first) => Some(FieldError::new(
                        "id",
                        format!("{id} is also on line {first}"),
                    )),
                    None => {
                        self.first_line_of.insert(id, row.line);
                        None
                    }
                },
                Err(RowProblem::Field(error)) => Some(error),
                Err(RowProblem::Store(error)) => {
                    return Err(crate::convert::store_status(error, ""));
                }
            };
            if let Some(error) = problem {
                self.records_truncate(before);
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

    /// Drops a row `accept` kept before a later check (a repeated id) failed.
    fn records_truncate(&mut self, len: usize) {
        match &mut self.records {
            Records::Persons(v) => v.truncate(len),
            Records::Practitioners(v) => v.truncate(len),
            Records::Organisations(v) => v.truncate(len),
            Records::Involvements(v) => v.truncate(len),
        }
    }
}

/// Runs one import stream to its report.
pub async fn run_import(
    store: Store,
    rules: Rules,
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
    let records = match v1::RecordKind::try_from(header.kind) {
        Ok(v1::RecordKind::Person) => Records::Persons(Vec::new()),
        Ok(v1::RecordKind::Practitioner) => Records::Practitioners(Vec::new()),
        Ok(v1::RecordKind::Organisation) => Records::Organisations(Vec::new()),
        Ok(v1::RecordKind::Involvement) => Records::Involvements(Vec::new()),
        Ok(v1::RecordKind::Unspecified) => {
            return Err(FieldError::new("header.kind", "is required").into());
        }
        Err(_) => {
            return Err(
                FieldError::new("header.kind", format!("unknown value {}", header.kind)).into(),
            );
        }
    };
    let source = validate::optional_text(&header.source, "header.source", 200)?;
    let mut session = Session {
        records,
        rules,
        first_line_of: HashMap::new(),
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
        session = crate::service::blocking(move || {
            let mut session = session;
            session.check_batch(batch, &store).map(|()| session)
        })
        .await?;
    }
    session.errors.sort_by_key(|e| e.line);
    let mut report = v1::ImportReport {
        rows: session.rows,
        valid_rows: session.records.len() as u64,
        bad_rows: session.bad_rows,
        errors: session.errors,
        ..Default::default()
    };
    let write =
        !header.dry_run && (report.bad_rows == 0 || header.skip_bad_rows) && report.valid_rows > 0;
    if write {
        let records = session.records;
        let writer = store.clone();
        let outcomes = crate::service::blocking(move || {
            records
                .write(&writer)
                .map_err(|e| crate::convert::store_status(e, ""))
        })
        .await?;
        store
            .flush()
            .await
            .map_err(|e| crate::convert::store_status(e, ""))?;
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
        rows = report.rows,
        bad_rows = report.bad_rows,
        created = report.created,
        updated = report.updated,
        applied = report.applied,
        "import finished"
    );
    Ok(report)
}
