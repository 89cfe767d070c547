//! The audit log's indexes, in files of their own next to the log
//! (`audit-log/index/`), append-only and derived: rebuilt from the log.
//! They replace two sled trees whose transactions cost a lookup more than
//! its two log entries did (BENCHMARKS.md, issue 16).
//!
//! - `persons-NN.idx` (64 shards, by a fixed hash of the person id): one
//!   record per (person, entry) an entry is about: the id's length (u8), the
//!   id, the entry's seq (u64 BE). In seq order within a shard, so a
//!   subject-access report reads one shard, and `verify_audit` checks them
//!   all in one pass beside the log.
//! - `starts.idx`: for each entry that refers to a local lookup by id (its
//!   answer, a family disclosure), that entry's seq and the seq of the
//!   lookup's `LookupStarted` (u64 BE each), in seq order: found by binary
//!   search. The starts of lookups in flight are held in memory while they
//!   run; one found nowhere (a lookup that spanned a crash) is looked for
//!   in the log, backwards from its answer.
//! - `head`: how many entries the files cover and each file's length then,
//!   with a CRC-32; rewritten (synced, renamed into place) about every
//!   [`PERSIST_EVERY`] entries, once the log's sync has made the entries it
//!   covers durable (a head never covers more than a crash keeps). The
//!   files are never synced between: at open they are cut back to the lengths the
//!   head records and the entries after it indexed again from the log, so
//!   a crash costs a re-read of at most that many entries, never an index
//!   entry missing or twice. A head missing or unreadable rebuilds all.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::AuditEvent;
use crate::StoreError;

/// Person shards.
const SHARDS: usize = 64;
const HEAD_MAGIC: &[u8; 8] = b"PWAUDIDX";
const HEAD_VERSION: u8 = 1;
/// Entries indexed between two rewrites of the head.
pub(crate) const PERSIST_EVERY: u64 = 16_384;
/// Lookups in flight whose start is kept in memory, at most.
const STARTS_IN_FLIGHT: usize = 262_144;
const STARTS_FILE: usize = SHARDS;
const FILES: usize = SHARDS + 1;

fn shard_of(person_id: &str) -> usize {
    // FNV-1a: fixed across versions and processes (the files depend on it).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in person_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % SHARDS as u64) as usize
}

fn file_name(file: usize) -> String {
    if file == STARTS_FILE {
        "starts.idx".to_owned()
    } else {
        format!("persons-{file:02}.idx")
    }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        kind: crate::Kind::AuditEntry,
        detail: detail.into(),
    }
}

/// What the index files hold, and the lookups in flight.
#[derive(Debug)]
struct State {
    files: Vec<File>,
    /// Each file's length: what readers may read, and where the next
    /// record goes.
    lens: Vec<u64>,
    /// Entries covered (the last seq indexed).
    indexed: u64,
    /// `indexed` when the head was last written.
    persisted: u64,
    /// A head to write once the log is durable up to its `indexed`: the
    /// entries it covers must never be more than a crash keeps.
    due: Option<(u64, Vec<u64>)>,
    /// Lookup id → seq of its `LookupStarted`, while it runs.
    starts: HashMap<String, u64>,
    /// Insertion order of `starts`, to forget the oldest past the cap.
    order: VecDeque<(String, u64)>,
}

/// The index files of one log.
#[derive(Debug)]
pub(crate) struct AuditIndex {
    dir: PathBuf,
    state: Mutex<State>,
}

/// One entry to index: its seq and event.
pub(crate) type Indexed<'a> = (u64, &'a AuditEvent);

impl AuditIndex {
    /// Opens the index in `dir`: files cut back to the head's lengths.
    /// Returns it and how many entries it covers (0 with no head: index
    /// everything).
    pub(crate) fn open(dir: &Path) -> Result<(Self, u64), StoreError> {
        crate::data_dir::create_private(dir)
            .map_err(|e| StoreError::File(io::Error::other(e.to_string())))?;
        let head = read_head(&dir.join("head"));
        let mut files = Vec::with_capacity(FILES);
        let mut lens = Vec::with_capacity(FILES);
        for file in 0..FILES {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let handle = options.open(dir.join(file_name(file)))?;
            let len = head.as_ref().map_or(0, |(_, lens)| lens[file]);
            if handle.metadata()?.len() < len {
                // Shorter than the head says: not this head's files.
                return Self::rebuilt(dir);
            }
            handle.set_len(len)?;
            files.push(handle);
            lens.push(len);
        }
        let indexed = head.map_or(0, |(indexed, _)| indexed);
        Ok((
            AuditIndex {
                dir: dir.to_owned(),
                state: Mutex::new(State {
                    files,
                    lens,
                    indexed,
                    persisted: indexed,
                    due: None,
                    starts: HashMap::new(),
                    order: VecDeque::new(),
                }),
            },
            indexed,
        ))
    }

    /// Empties the folder's files and head, and opens it as new.
    pub(crate) fn rebuilt(dir: &Path) -> Result<(Self, u64), StoreError> {
        let _ = std::fs::remove_file(dir.join("head"));
        for file in 0..FILES {
            let _ = std::fs::remove_file(dir.join(file_name(file)));
        }
        Self::open(dir)
    }

    /// Forgets everything indexed (the log it indexed is not this one: cut
    /// short, or restored): the caller indexes the log again.
    pub(crate) fn reset(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let _ = std::fs::remove_file(self.dir.join("head"));
        for file in 0..FILES {
            state.files[file].set_len(0)?;
            state.lens[file] = 0;
        }
        state.indexed = 0;
        state.persisted = 0;
        state.due = None;
        state.starts.clear();
        state.order.clear();
        Ok(())
    }

    /// The last seq indexed.
    pub(crate) fn indexed(&self) -> u64 {
        self.state.lock().indexed
    }

    /// Indexes `entries`, which must follow on from [`AuditIndex::indexed`]
    /// with no gap (entries that cannot be read are passed over by the
    /// caller, who then says how far it got with `through`). On a write
    /// failure the files are cut back to where they were and nothing is
    /// counted.
    pub(crate) fn add(&self, entries: &[Indexed<'_>], through: u64) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if through <= state.indexed {
            return Ok(()); // already indexed (a retry after a failure)
        }
        let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); FILES];
        // A family disclosure follows its lookup's answer, which forgets
        // the start: the last answer's is kept for it.
        let mut answered: Option<(String, u64)> = None;
        // Starts this call forgets, put back if its write fails (the retry
        // reads the same entries again).
        let mut forgotten: Vec<(String, u64)> = Vec::new();
        for &(seq, event) in entries {
            if seq <= state.indexed {
                continue;
            }
            for person_id in event.person_ids() {
                let id = person_id.as_bytes();
                let Ok(len) = u8::try_from(id.len()) else {
                    continue; // ids are at most 64 bytes (validate::id)
                };
                let buffer = &mut buffers[shard_of(person_id)];
                buffer.push(len);
                buffer.extend_from_slice(id);
                buffer.extend_from_slice(&seq.to_be_bytes());
            }
            let start = match event {
                AuditEvent::LookupStarted { lookup_id, .. } => {
                    state.starts.insert(lookup_id.clone(), seq);
                    state.order.push_back((lookup_id.clone(), seq));
                    while state.order.len() > STARTS_IN_FLIGHT {
                        if let Some((old, at)) = state.order.pop_front()
                            && state.starts.get(&old) == Some(&at)
                        {
                            state.starts.remove(&old);
                        }
                    }
                    None
                }
                AuditEvent::LookupAnswered { lookup_id, .. } => {
                    let start = state.starts.remove(lookup_id);
                    if let Some(start) = start {
                        answered = Some((lookup_id.clone(), start));
                        forgotten.push((lookup_id.clone(), start));
                    }
                    start
                }
                AuditEvent::FamilyDisclosed {
                    reference,
                    peer: None,
                    ..
                } => state.starts.get(reference).copied().or_else(|| {
                    answered
                        .as_ref()
                        .filter(|(id, _)| id == reference)
                        .map(|(_, start)| *start)
                }),
                _ => None,
            };
            if let Some(start) = start {
                let buffer = &mut buffers[STARTS_FILE];
                buffer.extend_from_slice(&seq.to_be_bytes());
                buffer.extend_from_slice(&start.to_be_bytes());
            }
        }
        let mut written = Vec::new();
        for (file, bytes) in buffers.iter().enumerate() {
            if bytes.is_empty() {
                continue;
            }
            let at = state.lens[file];
            if let Err(e) = state.files[file].write_all_at(bytes, at) {
                // Cut back what this call wrote: a reader never sees half.
                for &(done, at) in written.iter().chain(std::iter::once(&(file, at))) {
                    let _ = state.files[done].set_len(at);
                }
                state.starts.extend(forgotten);
                return Err(e.into());
            }
            written.push((file, at));
        }
        for (file, bytes) in buffers.iter().enumerate() {
            state.lens[file] += bytes.len() as u64;
        }
        state.indexed = through;
        if state.due.is_none() && state.indexed - state.persisted >= PERSIST_EVERY {
            state.due = Some((state.indexed, state.lens.clone()));
        }
        Ok(())
    }

    /// Writes the head that is due once the log is durable up to what it
    /// covers (`durable`: the log's durable length). Called after each sync
    /// of the log. A failure is the caller's to log: the index goes on, and
    /// the next open re-reads a little more.
    pub(crate) fn persist_due(&self, durable: u64) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        let Some((indexed, lens)) = state.due.take() else {
            return Ok(());
        };
        if indexed > durable {
            state.due = Some((indexed, lens));
            return Ok(());
        }
        self.persist(&mut state, indexed, &lens)
    }

    /// Makes the files durable and records everything indexed in the head:
    /// for a caller that knows the log is durable that far (start-up).
    pub(crate) fn persist_now(&self) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        if state.indexed == state.persisted {
            return Ok(());
        }
        let (indexed, lens) = (state.indexed, state.lens.clone());
        state.due = None;
        self.persist(&mut state, indexed, &lens)
    }

    fn persist(&self, state: &mut State, indexed: u64, lens: &[u64]) -> Result<(), StoreError> {
        for file in &state.files {
            file.sync_data()?;
        }
        let mut head = HEAD_MAGIC.to_vec();
        head.push(HEAD_VERSION);
        head.extend_from_slice(&indexed.to_be_bytes());
        for len in lens {
            head.extend_from_slice(&len.to_be_bytes());
        }
        let crc = crc32fast::hash(&head);
        head.extend_from_slice(&crc.to_be_bytes());
        let temp = self.dir.join("head.new");
        let _ = std::fs::remove_file(&temp);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&temp)?;
        file.write_all_at(&head, 0)?;
        file.sync_all()?;
        std::fs::rename(&temp, self.dir.join("head"))?;
        File::open(&self.dir)?.sync_all()?;
        state.persisted = indexed;
        Ok(())
    }

    /// The seqs of the entries about `person_id`, in order (as far as
    /// indexed).
    pub(crate) fn seqs_of(&self, person_id: &str) -> Result<Vec<u64>, StoreError> {
        let shard = shard_of(person_id);
        let (file, len) = {
            let state = self.state.lock();
            (state.files[shard].try_clone()?, state.lens[shard])
        };
        let mut seqs = Vec::new();
        for_each_posting(&file, len, |id, seq| {
            if id == person_id.as_bytes() {
                seqs.push(seq);
            }
        })?;
        Ok(seqs)
    }

    /// The seq of the `LookupStarted` of the lookup entry `seq` refers to,
    /// if recorded: a binary search of `starts.idx`, then the starts held
    /// in memory (`lookup_id`'s).
    pub(crate) fn start_of(&self, seq: u64, lookup_id: &str) -> Result<Option<u64>, StoreError> {
        let (file, len, in_flight) = {
            let state = self.state.lock();
            (
                state.files[STARTS_FILE].try_clone()?,
                state.lens[STARTS_FILE],
                state.starts.get(lookup_id).copied(),
            )
        };
        let (mut low, mut high) = (0u64, len / 16);
        let mut record = [0u8; 16];
        while low < high {
            let middle = low + (high - low) / 2;
            file.read_exact_at(&mut record, middle * 16)?;
            let at = u64::from_be_bytes(record[..8].try_into().unwrap_or_default());
            match at.cmp(&seq) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    return Ok(Some(u64::from_be_bytes(
                        record[8..].try_into().unwrap_or_default(),
                    )));
                }
            }
        }
        Ok(in_flight.filter(|&start| start < seq))
    }

    /// Every shard's postings, each shard in order: `verify_audit` walks
    /// them beside the log.
    pub(crate) fn shards(&self) -> Result<Vec<Postings>, StoreError> {
        let state = self.state.lock();
        (0..SHARDS)
            .map(|shard| {
                Ok(Postings {
                    reader: BufReader::with_capacity(
                        1 << 16,
                        ReadAt {
                            file: state.files[shard].try_clone()?,
                            pos: 0,
                            end: state.lens[shard],
                        },
                    ),
                    peeked: None,
                })
            })
            .collect()
    }

    /// The shard `person_id`'s postings are in.
    pub(crate) fn shard(person_id: &str) -> usize {
        shard_of(person_id)
    }

    /// Adds a posting no entry backs (tests: an index someone tampered
    /// with, to make a report show an entry about someone else).
    #[cfg(test)]
    pub(crate) fn plant_posting(&self, person_id: &str, seq: u64) {
        let mut state = self.state.lock();
        let shard = shard_of(person_id);
        let mut record = vec![u8::try_from(person_id.len()).expect("len")];
        record.extend_from_slice(person_id.as_bytes());
        record.extend_from_slice(&seq.to_be_bytes());
        let at = state.lens[shard];
        state.files[shard].write_all_at(&record, at).expect("write");
        state.lens[shard] += record.len() as u64;
    }

    /// Removes one posting (tests: an index someone tampered with).
    #[cfg(test)]
    pub(crate) fn remove_posting(&self, person_id: &str, seq: u64) {
        let mut state = self.state.lock();
        let shard = shard_of(person_id);
        let mut kept = Vec::new();
        let file = state.files[shard].try_clone().expect("clone");
        for_each_posting(&file, state.lens[shard], |id, at| {
            if !(id == person_id.as_bytes() && at == seq) {
                kept.push(u8::try_from(id.len()).expect("len"));
                kept.extend_from_slice(id);
                kept.extend_from_slice(&at.to_be_bytes());
            }
        })
        .expect("read");
        file.set_len(0).expect("cut");
        file.write_all_at(&kept, 0).expect("write");
        state.lens[shard] = kept.len() as u64;
    }
}

/// Reads a file from an offset up to `end`, without a shared cursor.
struct ReadAt {
    file: File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let read = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += read as u64;
        Ok(read)
    }
}

/// One shard's postings, read in order.
pub(crate) struct Postings {
    reader: BufReader<ReadAt>,
    peeked: Option<(String, u64)>,
}

impl Postings {
    /// The next posting without taking it.
    pub(crate) fn peek(&mut self) -> Result<Option<&(String, u64)>, StoreError> {
        if self.peeked.is_none() {
            self.peeked = read_posting(&mut self.reader)?;
        }
        Ok(self.peeked.as_ref())
    }

    pub(crate) fn take(&mut self) -> Option<(String, u64)> {
        self.peeked.take()
    }
}

fn read_posting(reader: &mut impl Read) -> Result<Option<(String, u64)>, StoreError> {
    let mut len = [0u8; 1];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut id = vec![0u8; usize::from(len[0])];
    let mut seq = [0u8; 8];
    reader
        .read_exact(&mut id)
        .and_then(|()| reader.read_exact(&mut seq))
        .map_err(|_| corrupt("a subject-access index record is cut short"))?;
    Ok(Some((
        String::from_utf8_lossy(&id).into_owned(),
        u64::from_be_bytes(seq),
    )))
}

fn for_each_posting(
    file: &File,
    len: u64,
    mut visit: impl FnMut(&[u8], u64),
) -> Result<(), StoreError> {
    let mut reader = BufReader::with_capacity(
        1 << 16,
        ReadAt {
            file: file.try_clone()?,
            pos: 0,
            end: len,
        },
    );
    while let Some((id, seq)) = read_posting(&mut reader)? {
        visit(id.as_bytes(), seq);
    }
    Ok(())
}

/// The head's entries covered and file lengths, if it reads back whole.
fn read_head(path: &Path) -> Option<(u64, Vec<u64>)> {
    let bytes = std::fs::read(path).ok()?;
    let body_len = 8 + 1 + 8 + 8 * FILES;
    if bytes.len() != body_len + 4 || &bytes[..8] != HEAD_MAGIC || bytes[8] != HEAD_VERSION {
        return None;
    }
    let crc = u32::from_be_bytes(bytes[body_len..].try_into().ok()?);
    if crc32fast::hash(&bytes[..body_len]) != crc {
        return None;
    }
    let number =
        |at: usize| -> Option<u64> { Some(u64::from_be_bytes(bytes[at..at + 8].try_into().ok()?)) };
    let indexed = number(9)?;
    let lens = (0..FILES)
        .map(|file| number(17 + 8 * file))
        .collect::<Option<Vec<_>>>()?;
    Some((indexed, lens))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erased(n: u64) -> AuditEvent {
        AuditEvent::PersonErased {
            person_id: format!("P-{}", n % 7),
            caller: String::new(),
            reason: String::new(),
            removed: Vec::new(),
        }
    }

    #[test]
    fn a_head_is_written_only_once_the_log_holds_what_it_covers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (index, indexed) = AuditIndex::open(dir.path()).expect("open");
        assert_eq!(indexed, 0);
        let events: Vec<AuditEvent> = (1..=PERSIST_EVERY + 10).map(erased).collect();
        let entries: Vec<Indexed<'_>> = (1..).zip(events.iter()).collect();
        index.add(&entries, PERSIST_EVERY + 10).expect("index");
        // The log is durable only to entry 100: a head now would cover
        // entries a crash could take back.
        index.persist_due(100).expect("not yet");
        assert!(!dir.path().join("head").exists());
        // Once the log's sync covers the due head, it is written, with the
        // lengths of that moment.
        index.persist_due(PERSIST_EVERY + 10).expect("due");
        let (reopened, indexed) = AuditIndex::open(dir.path()).expect("reopen");
        assert_eq!(indexed, PERSIST_EVERY + 10);
        assert_eq!(
            reopened.seqs_of("P-3").expect("seqs"),
            (1..=PERSIST_EVERY + 10)
                .filter(|n| n % 7 == 3)
                .collect::<Vec<_>>()
        );
    }
}
