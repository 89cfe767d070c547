//! Reading the council's CSV exports into import rows. The header row names
//! the columns (any order, case-insensitive, a UTF-8 byte-order mark is
//! ignored); a missing or unknown column stops the import before any row is
//! read. Cells are parsed here (dates, enums); every other check happens on
//! the node, so both halves report errors by line and column.
//!
//! Files must be UTF-8: a Windows-1252 export is refused row by row with the
//! advice to save it as UTF-8, rather than guessed at and stored as mojibake.

use std::collections::HashMap;
use std::io::Read;

use patchwork_proto::v1::{self, import_row::Record};

use patchwork_server::base::validate::{FieldError, parse_iso_date};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CsvKind {
    Persons,
    Practitioners,
    Organisations,
    Involvements,
}

impl CsvKind {
    /// (columns every file must have, columns a file may have).
    pub fn columns(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            CsvKind::Persons => (
                &[
                    "id",
                    "given_name",
                    "family_name",
                    "date_of_birth",
                    "postcode",
                    "address",
                    "national_id",
                ],
                &["national_id_scheme"],
            ),
            CsvKind::Practitioners => (
                &["id", "name", "role", "organisation_id", "phone", "email"],
                &["team"],
            ),
            CsvKind::Organisations => (&["id", "name", "sector"], &[]),
            CsvKind::Involvements => (
                &[
                    "id",
                    "person_id",
                    "practitioner_id",
                    "service",
                    "start_date",
                    "sensitivity",
                ],
                &[
                    "end_date",
                    "gatekeeper_name",
                    "gatekeeper_phone",
                    "gatekeeper_email",
                    "end_reason",
                ],
            ),
        }
    }

    pub(crate) fn record_kind(self) -> v1::RecordKind {
        match self {
            CsvKind::Persons => v1::RecordKind::Person,
            CsvKind::Practitioners => v1::RecordKind::Practitioner,
            CsvKind::Organisations => v1::RecordKind::Organisation,
            CsvKind::Involvements => v1::RecordKind::Involvement,
        }
    }
}

/// The file as a whole cannot be read as this kind of export.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("header row: {0}")]
    Header(String),
    #[error("cannot read the file: {0}")]
    Read(#[from] csv::Error),
}

/// Which column each field is in.
#[derive(Debug, Clone)]
struct Columns {
    position: HashMap<&'static str, usize>,
}

impl Columns {
    fn from_header(kind: CsvKind, header: &csv::ByteRecord) -> Result<Self, CsvError> {
        let (required, optional) = kind.columns();
        let mut position = HashMap::new();
        for (i, raw) in header.iter().enumerate() {
            let raw = if i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
            } else {
                raw
            };
            let name = std::str::from_utf8(raw)
                .map_err(|_| CsvError::Header(format!("column {} is not valid UTF-8", i + 1)))?
                .trim()
                .to_ascii_lowercase();
            let Some(known) = required.iter().chain(optional).find(|c| **c == name) else {
                return Err(CsvError::Header(format!(
                    "unknown column \"{name}\"; {kind:?} files have: {}",
                    required
                        .iter()
                        .chain(optional)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if position.insert(*known, i).is_some() {
                return Err(CsvError::Header(format!("column \"{name}\" appears twice")));
            }
        }
        let missing: Vec<_> = required
            .iter()
            .filter(|c| !position.contains_key(*c))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(CsvError::Header(format!(
                "missing column(s): {}",
                missing.join(", ")
            )));
        }
        Ok(Columns { position })
    }
}

/// One data row: its line in the file and the record, or what is wrong with it.
pub(crate) type CsvRow = (u64, Result<Record, FieldError>);

pub struct CsvRows<R: Read> {
    kind: CsvKind,
    reader: csv::Reader<R>,
    columns: Columns,
    record: csv::ByteRecord,
}

/// Reads `inner` with every CRLF turned into LF, and keeps where each line
/// ends, so a row's line number is counted here rather than by the csv
/// crate: it counts a CRLF-terminated row one line too low
/// (BurntSushi/rust-csv#395) and the row after a blank line one too low too
/// (#208), so errors would name the line above the bad one.
pub struct CrlfAsLf<R> {
    inner: std::io::BufReader<R>,
    /// Bytes handed out so far.
    emitted: u64,
    /// Where each LF handed out and not yet counted stands.
    line_ends: std::collections::VecDeque<u64>,
    /// LFs counted: before the last row asked about.
    lines_before: u64,
}

impl<R: Read> CrlfAsLf<R> {
    pub fn new(inner: R) -> Self {
        CrlfAsLf {
            inner: std::io::BufReader::with_capacity(1 << 16, inner),
            emitted: 0,
            line_ends: std::collections::VecDeque::new(),
            lines_before: 0,
        }
    }

    /// The line (from 1) of the first character at or after byte `at` (of
    /// what was handed out) that does not end a line: where a row starting at
    /// `at`, after any blank lines, really is. `at` must not go backwards.
    fn line_of(&mut self, at: u64) -> u64 {
        let mut at = at;
        while let Some(&end) = self.line_ends.front() {
            if end < at {
                self.line_ends.pop_front();
                self.lines_before += 1;
            } else if end == at {
                // A blank line before the row.
                self.line_ends.pop_front();
                self.lines_before += 1;
                at += 1;
            } else {
                break;
            }
        }
        self.lines_before + 1
    }

    fn hand_out(&mut self, out: &mut [u8], written: &mut usize, byte: u8) {
        if byte == b'\n' {
            self.line_ends.push_back(self.emitted);
        }
        out[*written] = byte;
        *written += 1;
        self.emitted += 1;
    }
}

impl<R: Read> Read for CrlfAsLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let mut written = 0;
        while written < out.len() {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            if buf == b"\r" {
                // A CR at the end of what is buffered: the next byte decides.
                self.inner.consume(1);
                if self.inner.fill_buf()?.first() != Some(&b'\n') {
                    self.hand_out(out, &mut written, b'\r');
                }
                continue;
            }
            let mut kept = Vec::with_capacity(buf.len().min(out.len() - written));
            let mut used = 0;
            while used < buf.len() && written + kept.len() < out.len() {
                let byte = buf[used];
                if byte == b'\r' && used + 1 == buf.len() {
                    // Left for the next turn, alone at the buffer's end.
                    break;
                }
                used += 1;
                if byte == b'\r' && buf[used] == b'\n' {
                    continue;
                }
                kept.push(byte);
            }
            self.inner.consume(used);
            for byte in kept {
                self.hand_out(out, &mut written, byte);
            }
            if written > 0 {
                // What is here now; more on the next call.
                break;
            }
        }
        Ok(written)
    }
}

impl<R: Read> CsvRows<CrlfAsLf<R>> {
    pub fn new(kind: CsvKind, input: R) -> Result<Self, CsvError> {
        let input = CrlfAsLf::new(input);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(input);
        let header = reader.byte_headers()?.clone();
        let columns = Columns::from_header(kind, &header)?;
        Ok(CsvRows {
            kind,
            reader,
            columns,
            record: csv::ByteRecord::new(),
        })
    }
}

impl<R: Read> CsvRows<CrlfAsLf<R>> {
    /// Bytes read so far, for progress (of the file with CRLFs as LFs).
    pub(crate) fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }

    /// The next row, or `None` at the end. A row the CSV layer cannot split
    /// is reported as a bad row, and reading goes on.
    pub fn next_row(&mut self) -> Option<CsvRow> {
        loop {
            let start = self.reader.position().byte();
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {
                    let at = self.record.position().map_or(start, |p| p.byte());
                    let line = self.reader.get_mut().line_of(at);
                    if self
                        .record
                        .iter()
                        .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
                    {
                        continue; // blank line
                    }
                    return Some((line, self.parse()));
                }
                Err(error) => {
                    let at = error.position().map_or(start, |p| p.byte());
                    let line = self.reader.get_mut().line_of(at);
                    if error.is_io_error() {
                        return Some((
                            line,
                            Err(FieldError::new(
                                "",
                                format!("cannot read the file: {error}"),
                            )),
                        ));
                    }
                    return Some((
                        line,
                        Err(FieldError::new(
                            "",
                            format!("not a readable CSV row: {error}"),
                        )),
                    ));
                }
            }
        }
    }

    fn cell(&self, column: &'static str) -> Result<String, FieldError> {
        let Some(&i) = self.columns.position.get(column) else {
            return Ok(String::new());
        };
        let bytes = self.record.get(i).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(|s| s.trim().to_owned())
            .map_err(|_| FieldError::new(column, "is not valid UTF-8 (save the file as UTF-8)"))
    }

    fn date(&self, column: &'static str) -> Result<Option<v1::Date>, FieldError> {
        let text = self.cell(column)?;
        if text.is_empty() {
            Ok(None)
        } else {
            parse_iso_date(&text, column).map(Some)
        }
    }

    fn parse(&self) -> Result<Record, FieldError> {
        let width = self.columns.position.len();
        if self.record.len() != width {
            return Err(FieldError::new(
                "",
                format!("has {} cells, the header has {width}", self.record.len()),
            ));
        }
        Ok(match self.kind {
            CsvKind::Persons => {
                let scheme = self.cell("national_id_scheme")?;
                let value = self.cell("national_id")?;
                Record::Person(v1::Person {
                    id: self.cell("id")?,
                    given_name: self.cell("given_name")?,
                    family_name: self.cell("family_name")?,
                    date_of_birth: self.date("date_of_birth")?,
                    postcode: self.cell("postcode")?,
                    address: self.cell("address")?,
                    national_id: (!value.is_empty() || !scheme.is_empty())
                        .then_some(v1::NationalId { scheme, value }),
                })
            }
            CsvKind::Practitioners => Record::Practitioner(v1::Practitioner {
                id: self.cell("id")?,
                name: self.cell("name")?,
                role: self.cell("role")?,
                team: self.cell("team")?,
                organisation_id: self.cell("organisation_id")?,
                phone: self.cell("phone")?,
                email: self.cell("email")?,
            }),
            CsvKind::Organisations => Record::Organisation(v1::Organisation {
                id: self.cell("id")?,
                name: self.cell("name")?,
                sector: parse_sector(&self.cell("sector")?)? as i32,
            }),
            CsvKind::Involvements => {
                let gatekeeper = v1::Contact {
                    name: self.cell("gatekeeper_name")?,
                    phone: self.cell("gatekeeper_phone")?,
                    email: self.cell("gatekeeper_email")?,
                };
                Record::Involvement(v1::Involvement {
                    id: self.cell("id")?,
                    person_id: self.cell("person_id")?,
                    practitioner_id: self.cell("practitioner_id")?,
                    service: self.cell("service")?,
                    start_date: self.date("start_date")?,
                    end_date: self.date("end_date")?,
                    sensitivity: parse_sensitivity(&self.cell("sensitivity")?)? as i32,
                    gatekeeper: (gatekeeper != v1::Contact::default()).then_some(gatekeeper),
                    last_confirmed: None,
                    end_reason: self.cell("end_reason")?,
                })
            }
        })
    }
}

fn token(text: &str) -> String {
    text.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

pub(crate) fn parse_sector(text: &str) -> Result<v1::Sector, FieldError> {
    use v1::Sector as S;
    Ok(match token(text).as_str() {
        "social_care" => S::SocialCare,
        "health" => S::Health,
        "police" => S::Police,
        "education" => S::Education,
        "housing" => S::Housing,
        "youth" => S::Youth,
        "voluntary" => S::Voluntary,
        "probation" => S::Probation,
        "other" => S::Other,
        "" => return Err(FieldError::new("sector", "is required")),
        _ => {
            return Err(FieldError::new(
                "sector",
                "must be one of social_care, health, police, education, housing, youth, voluntary, probation, other",
            ));
        }
    })
}

pub(crate) fn parse_sensitivity(text: &str) -> Result<v1::Sensitivity, FieldError> {
    Ok(match token(text).as_str() {
        "standard" => v1::Sensitivity::Standard,
        "restricted" => v1::Sensitivity::Restricted,
        "always_findable" => v1::Sensitivity::AlwaysFindable,
        "" => return Err(FieldError::new("sensitivity", "is required")),
        _ => {
            return Err(FieldError::new(
                "sensitivity",
                "must be one of standard, restricted, always_findable",
            ));
        }
    })
}

/// What one pass over an export saw: how many rows, and which lines could
/// not be parsed. The CLI reads a file twice (once to find the bad rows
/// before sending anything, once to send the good ones); if the two passes
/// disagree the file changed in between, and rows the operator was never
/// told about would be dropped or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ParseTally {
    pub rows: u64,
    pub bad_rows: u64,
    /// FNV-1a over the bad rows' line numbers, in order: two passes with
    /// the same bad rows have the same digest.
    bad_lines_digest: u64,
}

impl Default for ParseTally {
    fn default() -> Self {
        ParseTally {
            rows: 0,
            bad_rows: 0,
            bad_lines_digest: Self::FNV_OFFSET,
        }
    }
}

impl ParseTally {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

    /// Counts one row at `line`, parsed or not.
    pub(crate) fn record(&mut self, line: u64, parsed: bool) {
        self.rows += 1;
        if !parsed {
            self.bad_rows += 1;
            for byte in line.to_le_bytes() {
                self.bad_lines_digest =
                    (self.bad_lines_digest ^ u64::from(byte)).wrapping_mul(Self::FNV_PRIME);
            }
        }
    }

    /// Whether a second pass saw the same file as the first.
    pub(crate) fn same_as(&self, first: &ParseTally) -> bool {
        self == first
    }
}

/// The CSV column a node-side field path refers to
/// (`national_id.value` → `national_id`, `gatekeeper.phone` → `gatekeeper_phone`).
pub(crate) fn column_of(field: &str) -> String {
    match field {
        "national_id.value" => "national_id".into(),
        other => other.replace('.', "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(kind: CsvKind, text: &[u8]) -> Result<Vec<CsvRow>, CsvError> {
        let mut reader = CsvRows::new(kind, text)?;
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row() {
            rows.push(row);
        }
        Ok(rows)
    }

    #[test]
    fn reads_persons_with_a_bom_and_columns_in_any_order() {
        let text =
            b"\xEF\xBB\xBFfamily_name,id,given_name,date_of_birth,postcode,address,national_id\n\
                     Smith,P1,Amelia,2015-03-14,RH1 1AA,,943 476 5919\n\n";
        let rows = rows(CsvKind::Persons, text).expect("header");
        assert_eq!(rows.len(), 1);
        let (line, record) = &rows[0];
        assert_eq!(*line, 2);
        let Ok(Record::Person(person)) = record else {
            panic!("not a person: {record:?}")
        };
        assert_eq!(
            (person.id.as_str(), person.family_name.as_str()),
            ("P1", "Smith")
        );
        assert_eq!(
            person.date_of_birth,
            Some(v1::Date {
                year: 2015,
                month: 3,
                day: 14
            })
        );
    }

    #[test]
    fn header_problems_stop_the_file() {
        for (text, expected) in [
            (&b"id,given_name\n"[..], "missing column"),
            (
                b"id,given_name,family_name,dob,date_of_birth,postcode,address,national_id\n",
                "unknown column \"dob\"",
            ),
            (
                b"id,id,given_name,family_name,date_of_birth,postcode,address,national_id\n",
                "appears twice",
            ),
        ] {
            let error = rows(CsvKind::Persons, text)
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn bad_cells_name_their_column_and_line() {
        let text = b"id,given_name,family_name,date_of_birth,postcode,address,national_id\n\
                     P1,Amelia,Smith,14/03/2015,,,\n\
                     P2,Caf\xE9,Smith,2015-03-14,,,\n\
                     P3,Too,Few\n";
        let rows = rows(CsvKind::Persons, text).expect("header");
        let errors: Vec<_> = rows
            .iter()
            .map(|(line, r)| (*line, r.clone().expect_err("bad").field))
            .collect();
        assert_eq!(
            errors,
            vec![
                (2, "date_of_birth".into()),
                (3, "given_name".into()),
                (4, String::new())
            ]
        );
    }

    #[test]
    fn enum_cells() {
        assert_eq!(
            parse_sensitivity("Always findable").expect("ok"),
            v1::Sensitivity::AlwaysFindable
        );
        assert_eq!(
            parse_sector("Social-Care").expect("ok"),
            v1::Sector::SocialCare
        );
        assert_eq!(parse_sector("banking").expect_err("bad").field, "sector");
        assert_eq!(column_of("national_id.value"), "national_id");
        assert_eq!(column_of("gatekeeper.phone"), "gatekeeper_phone");
    }

    fn tally(rows: &[(u64, bool)]) -> ParseTally {
        let mut tally = ParseTally::default();
        for &(line, parsed) in rows {
            tally.record(line, parsed);
        }
        tally
    }

    #[test]
    fn two_passes_agree_only_on_the_same_rows_and_the_same_bad_lines() {
        let first = tally(&[(2, true), (3, false), (4, true)]);
        assert!(tally(&[(2, true), (3, false), (4, true)]).same_as(&first));
        // A row became unparsable between the passes.
        assert!(!tally(&[(2, false), (3, false), (4, true)]).same_as(&first));
        // A different row is bad, same counts.
        assert!(!tally(&[(2, false), (3, true), (4, true)]).same_as(&first));
        // A bad row was fixed.
        assert!(!tally(&[(2, true), (3, true), (4, true)]).same_as(&first));
        // A row was appended.
        assert!(!tally(&[(2, true), (3, false), (4, true), (5, true)]).same_as(&first));
        assert_eq!((first.rows, first.bad_rows), (3, 1));
    }

    #[test]
    fn a_windows_file_names_the_right_line() {
        let lf = b"id,given_name,family_name,date_of_birth,postcode,address,national_id\n\
                   P1,Amelia,Smith,2015-03-14,,,\n\
                   P2,Bad,Date,2015-13-14,,,\n\
                   \n\
                   P3,Also,Bad,14/03/2015,,,\n";
        let crlf: Vec<u8> = String::from_utf8_lossy(lf)
            .replace('\n', "\r\n")
            .into_bytes();
        for text in [&lf[..], &crlf[..]] {
            let lines: Vec<u64> = rows(CsvKind::Persons, text)
                .expect("header")
                .iter()
                .map(|(line, _)| *line)
                .collect();
            assert_eq!(lines, [2, 3, 5]);
        }
    }

    #[test]
    fn crlf_becomes_lf_whatever_the_read_sizes() {
        let text = b"a\r\nb\rc\r\r\n\r";
        for size in 1..=text.len() + 1 {
            let mut reader = CrlfAsLf::new(&text[..]);
            let mut out = Vec::new();
            let mut buf = vec![0_u8; size];
            loop {
                let n = reader.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            assert_eq!(out, b"a\nb\rc\r\n\r", "reads of {size}");
        }
    }
}
