//! The audit log's own files: entries appended to segment files, outside
//! sled and its transactions, and hashed into an RFC 6962 Merkle tree (as
//! Certificate Transparency and Go's checksum database do). A tree size and
//! its root commit to every entry before it; an inclusion proof shows that
//! an entry is in the log, a consistency proof that a later log extends an
//! earlier one without changing it. `tlog_tiles` (Cloudflare's port of Go's
//! `sumdb/tlog`) does the tree's arithmetic; this module stores it.
//!
//! Files, in the store's `audit-log/` folder (0700):
//! - `seg-<index of its first entry, 20 digits>.log`: `PWAUDSEG`, that index
//!   (u64 BE), then one record an entry: the body's length (u32 BE), its
//!   CRC-32 (u32 BE), the body. The body is what the tree hashes. A segment
//!   is closed for a new one at a block boundary once it passes 64 MiB, so
//!   segments can be archived and pruned whole (retention).
//! - `blocks`: for each full block of [`BLOCK`] entries, in order, the
//!   block's subtree hash (32 bytes) and the offset of its first record in
//!   its segment (u64 BE). Derived data: written only after the block's
//!   records are durable, and rebuilt from the segments when short or gone;
//!   except the blocks of archived entries, whose records are gone: synced
//!   before the segments are removed, never rewritten, and checked at every
//!   open against the root `archived` recorded.
//! - `archived` (JSON, replaced whole): how many entries from the start were
//!   sealed into archive files and pruned (audit retention), the tree's root
//!   over them, and each archive (file, entries, SHA-256, the checkpoint it
//!   carries). Absent until the first prune. The tree over the pruned prefix
//!   stays whole from the blocks' hashes, so roots and consistency proofs
//!   from any size past it, and inclusion proofs of every entry still here,
//!   are computed as before; an archived entry is read from its archive.
//!
//! In memory: every block's hash and start, the tree's levels above the
//! blocks (all of it about a third of a byte an entry), and the leaf hashes
//! of the last, partial block. The levels below a block's are recomputed
//! from its records when a proof needs them (a read of one block).
//!
//! Durability: [`SegmentLog::append`] writes; [`SegmentLog::sync`] makes
//! everything appended so far durable (`fdatasync`) and only then records
//! the blocks it finished. So a `blocks` file that covers more entries than
//! the segments hold means entries that were once durable are gone: the
//! log was cut short, and opening says so. A torn last record (a crash in
//! the middle of writing entries nobody was told were written) is cut off
//! at open; damage anywhere else refuses to open.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tlog_tiles::{Hash, HashReader};

use crate::{Kind, StoreError};

/// Entries a block: the tree's levels below this are not stored.
pub(crate) const BLOCK: u64 = 256;
/// The tree level of a block's subtree hash (2^8 = [`BLOCK`]).
const BLOCK_LEVEL: u8 = 8;
const SEGMENT_MAGIC: &[u8; 8] = b"PWAUDSEG";
const SEGMENT_HEADER_LEN: u64 = 16;
const RECORD_HEADER_LEN: usize = 8;
const BLOCK_RECORD_LEN: u64 = 40;
/// An entry is an event of ids and a reason: a longer body is damage,
/// refused before it is allocated.
pub(crate) const MAX_BODY_LEN: u32 = 1 << 20;
/// A segment is closed for a new one, at the next block boundary, past this.
pub(crate) const SEGMENT_TARGET_BYTES: u64 = 64 << 20;
const BLOCKS_FILE: &str = "blocks";
/// The last synced size and root (see [`read_head`]).
const HEAD_FILE: &str = "head";
const HEAD_LEN: usize = 8 + 32 + 8 + 8 + 4;
/// An alarm left by an open that found the log cut short or altered.
const ALARM_PREFIX: &str = "ALARM-";
/// What was archived and pruned (see the module's docs).
const ARCHIVED_FILE: &str = "archived";
const ARCHIVED_FORMAT: u32 = 1;
/// An archive file's first bytes and format (the file is `archive`'s to
/// read; written here, from the segments).
pub(crate) const ARCHIVE_MAGIC: &[u8; 8] = b"PWAUDARC";
pub(crate) const ARCHIVE_FORMAT: u8 = 1;

/// A Unix time in milliseconds, as UTC (RFC 3339).
pub(super) fn time_of(unix_ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_ms.to_string())
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        kind: Kind::AuditEntry,
        detail: detail.into(),
    }
}

/// The error for entry `index` (0-based), which audit retention archived.
fn archived_error(index: u64, archived: u64) -> StoreError {
    StoreError::Archived {
        seq: index + 1,
        archived,
    }
}

fn segment_name(first: u64) -> String {
    format!("seg-{first:020}.log")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn create_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a file from an offset without moving a shared cursor, so readers
/// never disturb each other or the writer.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read_at(buf, self.pos)?;
        self.pos += read as u64;
        Ok(read)
    }
}

/// What reading the next record found.
enum Record {
    Body(Vec<u8>),
    /// The file ends here, between records.
    End,
    /// The file ends inside this record: a write cut short.
    Torn,
    /// The record's length is impossible: nothing after it can be found.
    Damaged(String),
    /// The record's body does not match its checksum (the record after it
    /// is where its length says).
    BadChecksum(Vec<u8>),
}

/// Reads records in order from `offset` of one segment.
struct RecordReader<'a> {
    inner: BufReader<ReadAt<'a>>,
    offset: u64,
}

impl<'a> RecordReader<'a> {
    fn new(file: &'a File, offset: u64) -> Self {
        RecordReader {
            inner: BufReader::with_capacity(64 << 10, ReadAt { file, pos: offset }),
            offset,
        }
    }

    /// Fills `buf` unless the file ends first; how many bytes it got.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn next(&mut self) -> io::Result<Record> {
        let mut header = [0u8; RECORD_HEADER_LEN];
        match self.fill(&mut header)? {
            0 => return Ok(Record::End),
            n if n < RECORD_HEADER_LEN => return Ok(Record::Torn),
            _ => {}
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_BODY_LEN {
            return Ok(Record::Damaged(format!("a record claims {len} bytes")));
        }
        let mut body = vec![0u8; len as usize];
        if self.fill(&mut body)? < body.len() {
            return Ok(Record::Torn);
        }
        self.offset += RECORD_HEADER_LEN as u64 + u64::from(len);
        if crc32fast::hash(&body) != crc {
            return Ok(Record::BadChecksum(body));
        }
        Ok(Record::Body(body))
    }
}

fn encode_record(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
    out.extend_from_slice(body);
}

/// The RFC 6962 root over `hashes` as leaves (of perfect subtrees of one
/// size: the blocks').
fn tree_root(hashes: &[Hash]) -> Hash {
    match hashes.len() {
        0 => tlog_tiles::EMPTY_HASH,
        1 => hashes[0],
        n => {
            let split = 1usize << (n - 1).ilog2();
            tlog_tiles::node_hash(tree_root(&hashes[..split]), tree_root(&hashes[split..]))
        }
    }
}

/// The hash of a perfect subtree over `leaves` (a power of two of them).
fn subtree_hash(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => tlog_tiles::EMPTY_HASH,
        1 => leaves[0],
        n => {
            let (left, right) = leaves.split_at(n / 2);
            tlog_tiles::node_hash(subtree_hash(left), subtree_hash(right))
        }
    }
}

#[derive(Debug)]
struct Segment {
    first: u64,
    file: Arc<File>,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    hash: Hash,
    segment: usize,
    offset: u64,
}

/// Where a record is: its segment's position in the list, and its offset.
#[derive(Debug, Clone, Copy)]
struct Position {
    segment: usize,
    offset: u64,
}

#[derive(Debug)]
struct Inner {
    /// In order; the last one is the one appended to.
    segments: Vec<Segment>,
    /// Every full block.
    blocks: Vec<Block>,
    /// `upper[k]`: the hashes of tree level `BLOCK_LEVEL + 1 + k`.
    upper: Vec<Vec<Hash>>,
    /// Where the partial block starts.
    tail_start: Position,
    /// The leaf hashes of the partial block.
    tail: Vec<Hash>,
    /// Entries in the log.
    len: u64,
    /// The byte length of the last segment.
    end: u64,
    /// Blocks recorded in the `blocks` file.
    blocks_recorded: u64,
    blocks_file: File,
    head_file: File,
    /// Entries (0-based) whose checksum failed when the log was opened.
    damaged: Vec<u64>,
    /// Where the last sync recorded in `head` ended: the segment's first
    /// entry and the byte offset. `None` for a log without one.
    synced_end: Option<(u64, u64)>,
    /// Entries from the start that were archived and pruned: their blocks
    /// are the first `archived / BLOCK`, and no segment holds them.
    archived: u64,
    /// What `archived` records (`None` before the first prune).
    manifest: Option<ArchivedManifest>,
}

/// One archive file that holds entries pruned from the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveRecord {
    /// The file's name (it was written into the archive folder the
    /// operator configured; operators may move it).
    pub file: String,
    /// The entries it holds, `first_seq..=last_seq`.
    pub first_seq: u64,
    pub last_seq: u64,
    /// SHA-256 of the whole file (hex).
    pub sha256: String,
    /// Its length in bytes.
    pub bytes: u64,
    /// The signed checkpoint of the log at `last_seq` entries it carries.
    pub checkpoint: String,
    pub sealed_unix_ms: i64,
}

/// The `archived` file.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct ArchivedManifest {
    pub(crate) format: u32,
    /// Entries archived and pruned, from the first.
    pub(crate) entries: u64,
    /// The tree's root over them (hex), as computed when they were pruned.
    pub(crate) root: String,
    pub(crate) archives: Vec<ArchiveRecord>,
}

fn read_manifest(dir: &Path) -> Result<Option<ArchivedManifest>, StoreError> {
    let path = dir.join(ARCHIVED_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let manifest: ArchivedManifest = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("{} is unreadable: {e}", path.display())))?;
    if manifest.format != ARCHIVED_FORMAT
        || !manifest.entries.is_multiple_of(BLOCK)
        || parse_hash(&manifest.root).is_none()
    {
        return Err(corrupt(format!(
            "{} is not a record of archived audit entries this version reads",
            path.display()
        )));
    }
    Ok(Some(manifest))
}

fn parse_hash(hex_text: &str) -> Option<Hash> {
    let bytes = hex::decode(hex_text).ok()?;
    Some(Hash(bytes.try_into().ok()?))
}

/// Replaces `dir/name` with `bytes` whole: written beside it, synced, renamed
/// into place, the folder synced.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let temp = dir.join(format!("{name}.new"));
    let _ = std::fs::remove_file(&temp);
    let file = create_file(&temp)?;
    file.write_all_at(bytes, 0)?;
    file.sync_all()?;
    std::fs::rename(&temp, dir.join(name))?;
    sync_dir(dir)
}

/// The append-only log of audit entries (see the module's docs).
#[derive(Debug)]
pub(crate) struct SegmentLog {
    dir: PathBuf,
    inner: RwLock<Inner>,
    /// One `fdatasync` at a time; later callers find theirs done.
    sync_turn: Mutex<()>,
    /// Entries known durable.
    synced: AtomicU64,
    segment_target: u64,
}

/// What opening found that an operator must hear about: the log opened,
/// but something it held is gone (it was cut short), or derived data had
/// to be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenReport {
    /// The log holds fewer entries than it once recorded as durable, or
    /// entries that no longer hash to what it recorded: found at this open
    /// or an earlier one, and not yet dealt with.
    /// The first entry it concerns, and what was found.
    pub(crate) alarm: Option<(u64, String)>,
    /// A torn last record was cut off (entries never acknowledged).
    pub(crate) torn_tail_bytes: u64,
}

/// What a full re-read of the log found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LogCheck {
    /// Entries read, and archived before them.
    pub(crate) entries: u64,
    /// Entries from the start that were archived (not read, their blocks'
    /// hashes taken as kept).
    pub(crate) archived: u64,
    /// The first entry (0-based index) that is damaged or no longer matches
    /// what was recorded when it was written, and why.
    pub(crate) problem: Option<(u64, String)>,
    /// The root recomputed from the entries (over `entries`).
    pub(crate) root: Hash,
}

impl SegmentLog {
    /// Opens the log in `dir`, creating it if it does not exist.
    pub(crate) fn open(dir: &Path) -> Result<(Self, OpenReport), StoreError> {
        Self::open_with(dir, SEGMENT_TARGET_BYTES)
    }

    /// [`SegmentLog::open`] with another segment size (tests).
    pub(crate) fn open_with(
        dir: &Path,
        segment_target: u64,
    ) -> Result<(Self, OpenReport), StoreError> {
        crate::data_dir::create_private(dir)
            .map_err(|e| StoreError::File(io::Error::other(e.to_string())))?;
        let mut firsts = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let name = item?.file_name();
            if let Some(first) = name.to_str().and_then(parse_segment_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let manifest = read_manifest(dir)?;
        let archived = manifest.as_ref().map_or(0, |m| m.entries);
        if let Some(manifest) = &manifest {
            let mut next = 1;
            for archive in &manifest.archives {
                if archive.first_seq != next || archive.last_seq < archive.first_seq {
                    break;
                }
                next = archive.last_seq + 1;
            }
            if next != archived + 1 {
                return Err(corrupt(format!(
                    "{} says {archived} entries were archived, but its archives do not hold \
                     entries 1 to {archived} one after another: restore the store from a backup",
                    dir.join(ARCHIVED_FILE).display()
                )));
            }
        }
        // Segments a prune recorded as archived but was stopped before it
        // removed them: each must end where a later one starts, at or
        // before the archived point. Removed only once the tree over the
        // archived entries is found whole (below).
        let (leftover, live): (Vec<u64>, Vec<u64>) =
            firsts.into_iter().partition(|&first| first < archived);
        if !leftover.is_empty() && live.first() != Some(&archived) {
            return Err(corrupt(format!(
                "{} says entries 1 to {archived} were archived, but no segment starts after \
                 them: restore the store from a backup",
                dir.join(ARCHIVED_FILE).display()
            )));
        }
        let mut firsts = live;
        if firsts.is_empty() {
            let path = dir.join(segment_name(archived));
            let file = create_file(&path)?;
            let mut header = SEGMENT_MAGIC.to_vec();
            header.extend_from_slice(&archived.to_be_bytes());
            file.write_all_at(&header, 0)?;
            file.sync_all()?;
            sync_dir(dir)?;
            firsts.push(archived);
        }
        let mut segments = Vec::with_capacity(firsts.len());
        let last_first = firsts.last().copied();
        for first in firsts {
            let path = dir.join(segment_name(first));
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
            let got = file.read_at(&mut header, 0)?;
            if got < header.len() && Some(first) == last_first && first > 0 {
                // A crash while the next segment was being started: nothing
                // was written to it yet.
                drop(file);
                std::fs::remove_file(&path)?;
                continue;
            }
            if got < header.len()
                || &header[..8] != SEGMENT_MAGIC
                || header[8..] != first.to_be_bytes()
            {
                return Err(corrupt(format!(
                    "{} does not start with an audit segment's header",
                    path.display()
                )));
            }
            segments.push(Segment {
                first,
                file: Arc::new(file),
            });
        }
        let blocks_path = dir.join(BLOCKS_FILE);
        let blocks_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&blocks_path)?;
        let head_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(HEAD_FILE))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            blocks_file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            head_file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let archived_blocks = (archived / BLOCK) as usize;
        let recorded = read_block_records(&blocks_file, &segments, archived_blocks)?;
        if recorded.len() < archived_blocks {
            return Err(corrupt(format!(
                "{} holds the hashes of {} blocks, but {archived} entries were archived ({} \
                 blocks): the tree over them is lost; restore the store from a backup",
                blocks_path.display(),
                recorded.len(),
                archived_blocks
            )));
        }
        let recorded_entries = recorded.len() as u64 * BLOCK;
        let archived_whole = manifest.as_ref().is_none_or(|m| {
            let hashes: Vec<Hash> = recorded[..archived_blocks].iter().map(|b| b.hash).collect();
            Some(tree_root(&hashes)) == parse_hash(&m.root)
        });
        if archived_whole && !leftover.is_empty() {
            for first in &leftover {
                std::fs::remove_file(dir.join(segment_name(*first)))?;
            }
            sync_dir(dir)?;
            tracing::info!(
                segments = leftover.len(),
                "removed audit segments an interrupted prune had archived"
            );
        }
        let mut inner = Inner {
            segments,
            blocks: Vec::new(),
            upper: Vec::new(),
            tail_start: Position {
                segment: 0,
                offset: SEGMENT_HEADER_LEN,
            },
            tail: Vec::new(),
            len: 0,
            end: SEGMENT_HEADER_LEN,
            blocks_recorded: 0,
            blocks_file,
            head_file,
            damaged: Vec::new(),
            synced_end: None,
            archived,
            manifest,
        };
        // The archived blocks: taken as recorded (checked against the root
        // recorded with them below), the segments read from after them.
        for block in &recorded[..archived_blocks] {
            inner.push_block(Block {
                segment: 0,
                ..*block
            });
        }
        inner.reset();
        // What the records written after each sync say the log held.
        let head = read_head(&dir.join(HEAD_FILE))?;
        inner.synced_end = head.map(|h| h.end);
        // Trust the recorded blocks but the last, and read on from there:
        // the last one's records must still be there and hash to it, and
        // whatever follows is added. If they are not, read everything.
        let mut torn_tail_bytes = 0;
        let mut intact = false;
        if let Some((last, trusted)) = recorded[archived_blocks..].split_last() {
            let in_file = inner.segments[last.segment].file.metadata()?.len();
            if last.offset <= in_file {
                for block in trusted {
                    inner.push_block(*block);
                }
                inner.len = inner.blocks.len() as u64 * BLOCK;
                inner.tail_start = Position {
                    segment: last.segment,
                    offset: last.offset,
                };
                if let Ok(cut) = inner.scan_to_end() {
                    torn_tail_bytes = cut;
                    intact = inner.len >= recorded_entries
                        && inner
                            .blocks
                            .get(archived_blocks + trusted.len())
                            .map(|b| b.hash)
                            == Some(last.hash);
                }
            }
            if intact {
                inner.blocks_recorded = (archived_blocks + trusted.len()) as u64;
            } else {
                inner.reset();
            }
        }
        if !intact {
            torn_tail_bytes += inner.scan_to_end()?;
        }
        let mut finding: Option<(u64, String)> = None;
        if !intact && recorded.len() > archived_blocks {
            let altered = recorded
                .iter()
                .zip(&inner.blocks)
                .position(|(was, is)| was.hash != is.hash);
            finding = Some(match altered {
                Some(block) if inner.len >= recorded_entries => (
                    block as u64 * BLOCK + 1,
                    format!(
                        "entries {} to {} were altered after they were written: they no longer \
                         hash to what the log recorded",
                        block as u64 * BLOCK + 1,
                        (block as u64 + 1) * BLOCK
                    ),
                ),
                _ => cut_short(inner.len, recorded_entries),
            });
        }
        if let (None, Some(Head { size, root, .. })) = (&finding, head) {
            if size < archived {
                // Kept from before a prune that went past it: nothing to
                // compare (the prune checked the tree).
            } else if size > inner.len {
                finding = Some(cut_short(inner.len, size));
            } else {
                let reader = TreeReader::new(&inner);
                let now_root = reader.result(tlog_tiles::tree_hash(size, &reader))?;
                if now_root != root {
                    let from = inner.blocks.len() as u64 * BLOCK;
                    let from = if from >= size {
                        (size - 1) / BLOCK * BLOCK
                    } else {
                        from
                    };
                    finding = Some((
                        from + 1,
                        format!(
                            "entries among {} to {size} were altered after they were written: \
                             the log's first {size} entries no longer hash to the root it recorded",
                            from + 1
                        ),
                    ));
                }
            }
        }
        // Damaged records explain a mismatch on their own (and are reported
        // at every open below): the record of what was written stays as it
        // is, the reference a restore is checked against.
        let damaged = !inner.damaged.is_empty();
        if damaged {
            inner.blocks_recorded = inner.blocks_recorded.max(recorded.len() as u64);
        }
        if let Some((first_bad, finding)) = finding.filter(|_| !damaged) {
            // Keep the evidence, rebuild the record from what is there, and
            // leave an alarm that every open repeats until someone deals
            // with it (restores the store, or removes the alarm file).
            let now = super::now_unix_ms();
            let aside = dir.join(format!("{BLOCKS_FILE}.evidence-{now}"));
            std::fs::copy(&blocks_path, &aside)?;
            let alarm_path = dir.join(format!("{ALARM_PREFIX}{now}-entry-{first_bad}.txt"));
            let alarm = format!(
                "{finding} (found {}; the record is kept in {}; restore the store from a backup, \
                 then remove {})",
                time_of(now),
                aside.display(),
                alarm_path.display()
            );
            let alarm_file = create_file(&alarm_path)?;
            alarm_file.write_all_at(alarm.as_bytes(), 0)?;
            alarm_file.sync_all()?;
            sync_dir(dir)?;
            // The archived blocks' hashes are the only record of them.
            inner
                .blocks_file
                .set_len(archived_blocks as u64 * BLOCK_RECORD_LEN)?;
            inner.blocks_recorded = archived_blocks as u64;
        }
        let mut alarms = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            // ALARM-<when>-entry-<first bad entry>.txt
            let first_bad = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(ALARM_PREFIX)?.strip_suffix(".txt"))
                .and_then(|n| n.split_once("-entry-")?.1.parse::<u64>().ok());
            if let Some(first_bad) = first_bad {
                alarms.push((first_bad, std::fs::read_to_string(&path)?));
            }
        }
        if let Some(&index) = inner.damaged.first() {
            alarms.push((
                index + 1,
                format!(
                    "{} entr{} damaged, the first entry {}: {} checksum does not match (the disk, \
                     or someone, changed it); restore the store from a backup",
                    inner.damaged.len(),
                    if inner.damaged.len() == 1 {
                        "y is"
                    } else {
                        "ies are"
                    },
                    index + 1,
                    if inner.damaged.len() == 1 {
                        "its"
                    } else {
                        "whose"
                    },
                ),
            ));
        }
        if let Some(manifest) = &inner.manifest {
            let reader = TreeReader::new(&inner);
            let now_root = reader.result(tlog_tiles::tree_hash(archived, &reader))?;
            if Some(now_root) != parse_hash(&manifest.root) {
                alarms.push((
                    1,
                    format!(
                        "the hashes kept of the {archived} archived entries no longer give the \
                         root recorded when they were archived ({}): the blocks file was \
                         altered; restore the store from a backup",
                        manifest.root
                    ),
                ));
            }
        }
        alarms.sort();
        let alarm = alarms.first().map(|(first_bad, _)| {
            let texts: Vec<&str> = alarms.iter().map(|(_, text)| text.as_str()).collect();
            (*first_bad, texts.join("; "))
        });
        // Blocks that were durable but not yet recorded (a crash between the
        // two), or the whole record after a cut: write them now.
        inner.record_blocks(inner.len)?;
        if !damaged {
            let end = inner.end_position();
            inner.record_head(inner.len, end)?;
        }
        let len = inner.len;
        Ok((
            SegmentLog {
                dir: dir.to_owned(),
                inner: RwLock::new(inner),
                sync_turn: Mutex::new(()),
                synced: AtomicU64::new(len),
                segment_target,
            },
            OpenReport {
                alarm,
                torn_tail_bytes,
            },
        ))
    }

    /// Entries in the log (durable or not yet).
    pub(crate) fn len(&self) -> u64 {
        self.inner.read().len
    }

    /// Entries known durable.
    pub(crate) fn durable_len(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    /// Appends `bodies` in order and returns the index of the first. Not
    /// durable until [`SegmentLog::sync`].
    pub(crate) fn append(&self, bodies: &[Vec<u8>]) -> Result<u64, StoreError> {
        if let Some(body) = bodies
            .iter()
            .find(|b| b.is_empty() || b.len() > MAX_BODY_LEN as usize)
        {
            return Err(corrupt(format!(
                "an audit entry of {} bytes cannot be written",
                body.len()
            )));
        }
        let mut inner = self.inner.write();
        let first = inner.len;
        // Records are written a run at a time, a run being what goes into
        // one segment; the log's state changes only once a run is written.
        let mut buffer = Vec::with_capacity(bodies.iter().map(|b| b.len() + 8).sum());
        let mut run: Vec<(Hash, u64)> = Vec::with_capacity(bodies.len());
        for body in bodies {
            let len = inner.len + run.len() as u64;
            let end = inner.end + buffer.len() as u64;
            if len.is_multiple_of(BLOCK) && len > 0 && end >= self.segment_target {
                inner.commit(&buffer, &run)?;
                buffer.clear();
                run.clear();
                inner.start_segment(&self.dir)?;
            }
            let offset = inner.end + buffer.len() as u64;
            encode_record(body, &mut buffer);
            run.push((tlog_tiles::record_hash(body), offset));
        }
        inner.commit(&buffer, &run)?;
        Ok(first)
    }

    /// Makes every entry appended so far durable, then records the blocks
    /// that finished. Blocking; concurrent callers share one `fdatasync`.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let wanted = self.len();
        let _turn = self.sync_turn.lock();
        if self.synced.load(Ordering::SeqCst) >= wanted {
            return Ok(());
        }
        // Everything up to `covered` is in this segment or an earlier one,
        // and earlier ones were synced when they were closed.
        let (file, covered, end) = {
            let inner = self.inner.read();
            let last = inner.segments.last().ok_or_else(|| corrupt("no segment"))?;
            (Arc::clone(&last.file), inner.len, inner.end_position())
        };
        file.sync_data()?;
        self.synced.store(covered, Ordering::SeqCst);
        let mut inner = self.inner.write();
        inner.record_blocks(covered)?;
        inner.record_head(covered, end)
    }

    /// The body of entry `index` (0-based).
    pub(crate) fn read(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let (file, start, skip) = {
            let inner = self.inner.read();
            if index >= inner.len {
                return Ok(None);
            }
            if index < inner.archived {
                return Err(archived_error(index, inner.archived));
            }
            let start = inner.block_start(index / BLOCK);
            (
                Arc::clone(&inner.segments[start.segment].file),
                start,
                index % BLOCK,
            )
        };
        let mut reader = RecordReader::new(&file, start.offset);
        for at in 0..=skip {
            match reader.next()? {
                Record::Body(body) if at == skip => return Ok(Some(body)),
                Record::Body(_) => {}
                Record::End | Record::Torn => {
                    return Err(corrupt(format!(
                        "entry {} is missing from its segment",
                        index - skip + at + 1
                    )));
                }
                Record::Damaged(why) => {
                    return Err(corrupt(format!(
                        "entry {} is damaged: {why}",
                        index - skip + at + 1
                    )));
                }
                Record::BadChecksum(_) if at == skip => {
                    return Err(corrupt(format!(
                        "entry {} is damaged: its checksum does not match",
                        index + 1
                    )));
                }
                Record::BadChecksum(_) => {}
            }
        }
        Ok(None)
    }

    /// The bodies of the entries still here among the first `count`, in
    /// order (from [`SegmentLog::archived`] on), read once from start to end
    /// (backups). A damaged record is an error naming it.
    pub(crate) fn read_each(
        &self,
        count: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let (segments, mut index): (Vec<Arc<File>>, u64) = {
            let inner = self.inner.read();
            if count > inner.len {
                return Err(corrupt(format!(
                    "the log has {} entries, not {count}",
                    inner.len
                )));
            }
            (
                inner.segments.iter().map(|s| Arc::clone(&s.file)).collect(),
                inner.archived,
            )
        };
        for file in &segments {
            let mut reader = RecordReader::new(file, SEGMENT_HEADER_LEN);
            while index < count {
                match reader.next()? {
                    Record::Body(body) => visit(index, &body)?,
                    Record::End => break,
                    Record::Torn | Record::Damaged(_) | Record::BadChecksum(_) => {
                        return Err(corrupt(format!("entry {} is damaged", index + 1)));
                    }
                }
                index += 1;
            }
        }
        if index < count {
            return Err(corrupt(format!(
                "entries from {} on are missing",
                index + 1
            )));
        }
        Ok(())
    }

    /// The tree's root over its first `size` entries.
    pub(crate) fn root(&self, size: u64) -> Result<Hash, StoreError> {
        let inner = self.inner.read();
        if size > inner.len {
            return Err(corrupt(format!(
                "no tree of {size} entries: the log has {}",
                inner.len
            )));
        }
        let reader = TreeReader::new(&inner);
        let root = tlog_tiles::tree_hash(size, &reader);
        reader.result(root)
    }

    /// The proof that entry `index` is in the tree of `size` entries.
    pub(crate) fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        let inner = self.inner.read();
        if index >= size || size > inner.len {
            return Err(corrupt(format!(
                "no entry {} in a tree of {size} entries (the log has {})",
                index + 1,
                inner.len
            )));
        }
        let reader = TreeReader::new(&inner);
        let proof = tlog_tiles::prove_record(size, index, &reader);
        reader.result(proof)
    }

    /// The proof that the tree of `new` entries extends the one of `old`.
    pub(crate) fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, StoreError> {
        let inner = self.inner.read();
        if old == 0 || old > new || new > inner.len {
            return Err(corrupt(format!(
                "no consistency proof from {old} to {new} entries (the log has {})",
                inner.len
            )));
        }
        let reader = TreeReader::new(&inner);
        let proof = tlog_tiles::prove_tree(new, old, &reader);
        reader.result(proof)
    }

    /// Closes the last segment now and starts the next (tests: segments
    /// close at [`SEGMENT_TARGET_BYTES`] otherwise). At a block boundary
    /// only, as [`SegmentLog::append`] closes them.
    #[cfg(any(test, feature = "fixtures"))]
    pub(crate) fn close_segment(&self) -> Result<(), StoreError> {
        let mut inner = self.inner.write();
        if !inner.len.is_multiple_of(BLOCK) || inner.end == SEGMENT_HEADER_LEN {
            return Err(corrupt(format!(
                "a segment closes at a block boundary, after an entry: the log has {}",
                inner.len
            )));
        }
        inner.start_segment(&self.dir)
    }

    /// Entries from the start that were archived and pruned.
    pub(crate) fn archived(&self) -> u64 {
        self.inner.read().archived
    }

    /// The archives that hold them, oldest first.
    pub(crate) fn archives(&self) -> Vec<ArchiveRecord> {
        self.inner
            .read()
            .manifest
            .as_ref()
            .map(|m| m.archives.clone())
            .unwrap_or_default()
    }

    /// The segments that could be archived, in order: every one but the
    /// last (which is appended to), each as its entries `[first, end)`.
    pub(crate) fn closed_segments(&self) -> Vec<(u64, u64)> {
        let inner = self.inner.read();
        inner
            .segments
            .windows(2)
            .map(|pair| (pair[0].first, pair[1].first))
            .collect()
    }

    /// The `blocks` file's records and the `archived` file, for a backup:
    /// what a restore needs to rebuild the tree over the archived entries.
    pub(crate) fn archived_state(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let inner = self.inner.read();
        let manifest = inner.manifest.as_ref()?;
        let hashes = inner.blocks[..(inner.archived / BLOCK) as usize]
            .iter()
            .flat_map(|b| b.hash.0)
            .collect();
        Some((serde_json::to_vec(manifest).ok()?, hashes))
    }

    /// Seals the entries from [`SegmentLog::archived`] to `end` (the start of
    /// a later segment) into a new archive file at `path` (see `archive`):
    /// every record read back and checked against the tree on the way,
    /// written beside `path`, synced and renamed into place. Returns the
    /// file's SHA-256 and length. The log does not change.
    pub(crate) fn write_archive(
        &self,
        end: u64,
        path: &Path,
        header_json: &[u8],
    ) -> Result<([u8; 32], u64), StoreError> {
        let (first, prefix, files, blocks) = {
            let inner = self.inner.read();
            let upto = inner.segment_starting(end)?;
            let reader = TreeReader::new(&inner);
            let mut prefix = Vec::new();
            let mut start = 0u64;
            // The tree's maximal perfect subtrees over [0, first), left to
            // right: with the entries after them, they give any root.
            for level in (0..64u8).rev() {
                if inner.archived & (1 << level) != 0 {
                    prefix.push(reader.hash(level, start >> level)?);
                    start += 1 << level;
                }
            }
            let blocks: Vec<Hash> = inner.blocks
                [(inner.archived / BLOCK) as usize..(end / BLOCK) as usize]
                .iter()
                .map(|b| b.hash)
                .collect();
            let files: Vec<Arc<File>> = inner.segments[..upto]
                .iter()
                .map(|s| Arc::clone(&s.file))
                .collect();
            (inner.archived, prefix, files, blocks)
        };
        // Its own name: two writers never share a file half-written.
        let temp = path.with_extension(format!(
            "partial-{}-{}",
            std::process::id(),
            super::now_unix_ms()
        ));
        let out = create_file(&temp)?;
        let written = (|| {
            let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
            let mut at = 0u64;
            let mut put = |bytes: &[u8]| -> Result<(), StoreError> {
                out.write_all_at(bytes, at)?;
                digest.update(bytes);
                at += bytes.len() as u64;
                Ok(())
            };
            let mut head = ARCHIVE_MAGIC.to_vec();
            head.push(ARCHIVE_FORMAT);
            head.extend_from_slice(&first.to_be_bytes());
            head.extend_from_slice(&end.to_be_bytes());
            head.push(prefix.len() as u8);
            for hash in &prefix {
                head.extend_from_slice(&hash.0);
            }
            head.extend_from_slice(&(header_json.len() as u32).to_be_bytes());
            head.extend_from_slice(header_json);
            put(&head)?;
            let mut index = first;
            let mut leaves = Vec::with_capacity(BLOCK as usize);
            let mut buffer = Vec::with_capacity(1 << 20);
            for file in &files {
                let mut reader = RecordReader::new(file, SEGMENT_HEADER_LEN);
                loop {
                    let body = match reader.next()? {
                        Record::Body(body) => body,
                        Record::End => break,
                        _ => {
                            return Err(corrupt(format!(
                                "entry {} is damaged: it cannot be archived; restore the store \
                                 from a backup",
                                index + 1
                            )));
                        }
                    };
                    leaves.push(tlog_tiles::record_hash(&body));
                    encode_record(&body, &mut buffer);
                    index += 1;
                    if leaves.len() as u64 == BLOCK {
                        let block = ((index - 1 - first) / BLOCK) as usize;
                        if blocks.get(block) != Some(&subtree_hash(&leaves)) {
                            return Err(corrupt(format!(
                                "entries {} to {index} no longer hash to what the log recorded: \
                                 they are not archived",
                                index - BLOCK + 1
                            )));
                        }
                        leaves.clear();
                    }
                    if buffer.len() >= 1 << 20 {
                        put(&buffer)?;
                        buffer.clear();
                    }
                }
            }
            put(&buffer)?;
            if index != end || !leaves.is_empty() {
                return Err(corrupt(format!(
                    "the segments before entry {} hold {} entries, not {}",
                    end + 1,
                    index - first,
                    end - first
                )));
            }
            let sha256: [u8; 32] = digest
                .finish()
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("a SHA-256 of another length"))?;
            out.write_all_at(&sha256, at)?;
            out.sync_all()?;
            Ok((sha256, at + 32))
        })();
        match written {
            Ok(done) => {
                // Never over a file already there (another run's, whose
                // SHA-256 may be in the log).
                if let Err(e) = std::fs::hard_link(&temp, path) {
                    let _ = std::fs::remove_file(&temp);
                    return Err(e.into());
                }
                std::fs::remove_file(&temp)?;
                if let Some(parent) = path.parent() {
                    sync_dir(parent)?;
                }
                Ok(done)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    /// Removes the entries before `end` (the start of a later segment),
    /// once sealed into the archive `record` names: records the tree over
    /// them (the blocks' hashes, synced) and the `archived` file, which is
    /// the moment they are gone, then deletes their segments. A crash
    /// after that deletes them at the next open.
    pub(crate) fn prune(&self, end: u64, record: ArchiveRecord) -> Result<(), StoreError> {
        // Syncs write the blocks and head files too.
        let _turn = self.sync_turn.lock();
        let mut inner = self.inner.write();
        let upto = inner.segment_starting(end)?;
        // Closed segments were synced when the next began: their blocks may
        // be recorded, and must be, durably, before the records go.
        inner.record_blocks(end)?;
        if inner.blocks_recorded < end / BLOCK {
            return Err(corrupt(format!(
                "the hashes of entries before {} are not all recorded",
                end + 1
            )));
        }
        inner.blocks_file.sync_data()?;
        let reader = TreeReader::new(&inner);
        let root = reader.result(tlog_tiles::tree_hash(end, &reader))?;
        let mut manifest = inner.manifest.clone().unwrap_or(ArchivedManifest {
            format: ARCHIVED_FORMAT,
            ..ArchivedManifest::default()
        });
        manifest.entries = end;
        manifest.root = hex::encode(root.0);
        manifest.archives.push(record);
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| corrupt(e.to_string()))?;
        replace_file(&self.dir, ARCHIVED_FILE, &bytes)?;
        let removed: Vec<Segment> = inner.segments.drain(..upto).collect();
        for block in &mut inner.blocks {
            block.segment = block.segment.saturating_sub(upto);
        }
        // The partial block starts in the first segment kept, or (nothing
        // appended to it yet) at its start.
        inner.tail_start = match inner.tail_start.segment.checked_sub(upto) {
            Some(segment) => Position {
                segment,
                offset: inner.tail_start.offset,
            },
            None => Position {
                segment: 0,
                offset: SEGMENT_HEADER_LEN,
            },
        };
        inner.archived = end;
        inner.manifest = Some(manifest);
        drop(inner);
        for segment in removed {
            let path = self.dir.join(segment_name(segment.first));
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(%error, path = %path.display(), "an archived audit segment was not removed; the next start removes it");
            }
        }
        sync_dir(&self.dir)?;
        Ok(())
    }

    /// Makes this new, empty log continue from the archived state of a
    /// backup ([`SegmentLog::archived_state`]): the tree over the archived
    /// entries, checked against the root recorded with them, then an empty
    /// segment after them.
    pub(crate) fn adopt_archived(&self, manifest: &[u8], hashes: &[u8]) -> Result<(), StoreError> {
        let manifest: ArchivedManifest = serde_json::from_slice(manifest)
            .map_err(|e| corrupt(format!("the archived audit record: {e}")))?;
        let blocks = manifest.entries / BLOCK;
        if manifest.format != ARCHIVED_FORMAT
            || !manifest.entries.is_multiple_of(BLOCK)
            || hashes.len() as u64 != blocks * 32
        {
            return Err(corrupt(format!(
                "the archived audit record does not describe {} block hashes",
                hashes.len() / 32
            )));
        }
        {
            let _turn = self.sync_turn.lock();
            let mut inner = self.inner.write();
            if inner.len != 0 || inner.segments.len() != 1 {
                return Err(corrupt("only an empty audit log continues an archived one"));
            }
            let mut check = Inner {
                segments: Vec::new(),
                blocks: Vec::new(),
                upper: Vec::new(),
                tail_start: inner.tail_start,
                tail: Vec::new(),
                len: manifest.entries,
                end: SEGMENT_HEADER_LEN,
                blocks_recorded: 0,
                blocks_file: inner.blocks_file.try_clone()?,
                head_file: inner.head_file.try_clone()?,
                damaged: Vec::new(),
                synced_end: None,
                archived: manifest.entries,
                manifest: None,
            };
            for hash in hashes.chunks_exact(32) {
                check.push_block(Block {
                    hash: Hash(hash.try_into().map_err(|_| corrupt("a short hash"))?),
                    segment: 0,
                    offset: SEGMENT_HEADER_LEN,
                });
            }
            let reader = TreeReader::new(&check);
            let root = reader.result(tlog_tiles::tree_hash(manifest.entries, &reader))?;
            if Some(root) != parse_hash(&manifest.root) {
                return Err(corrupt(
                    "the archived entries' hashes do not give the root recorded with them",
                ));
            }
            check.record_blocks(manifest.entries)?;
            inner.blocks_file.sync_data()?;
            let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| corrupt(e.to_string()))?;
            replace_file(&self.dir, ARCHIVED_FILE, &bytes)?;
            // The empty first segment goes; opening starts one after the
            // archived entries.
            let first = inner.segments.remove(0);
            std::fs::remove_file(self.dir.join(segment_name(first.first)))?;
            inner.head_file.set_len(0)?;
            sync_dir(&self.dir)?;
        }
        let (fresh, _) = Self::open_with(&self.dir, self.segment_target)?;
        *self.inner.write() = fresh.inner.into_inner();
        self.synced.store(manifest.entries, Ordering::SeqCst);
        Ok(())
    }

    /// Re-reads every entry up to the current length, calling `visit` with
    /// each (0-based index and body) in order, recomputes the tree, and
    /// compares each block with the hash recorded when it was written.
    /// Appends may go on meanwhile: it checks the log as it was when it
    /// started. Stops at the first problem.
    pub(crate) fn check(
        &self,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<LogCheck, StoreError> {
        let (segments, blocks, len, tail, archived) = {
            let inner = self.inner.read();
            let segments: Vec<(u64, Arc<File>)> = inner
                .segments
                .iter()
                .map(|s| (s.first, Arc::clone(&s.file)))
                .collect();
            (
                segments,
                inner.blocks.clone(),
                inner.len,
                inner.tail.clone(),
                inner.archived,
            )
        };
        let mut leaves: Vec<Hash> = Vec::with_capacity(BLOCK as usize);
        let mut block_hashes: Vec<Hash> = Vec::with_capacity(blocks.len());
        // The archived entries' blocks are taken as kept (opening checked
        // them against the root recorded when they were archived).
        block_hashes.extend(
            blocks
                .iter()
                .take((archived / BLOCK) as usize)
                .map(|b| b.hash),
        );
        let mut index = archived;
        let mut problem = None;
        'segments: for (position, (first, file)) in segments.iter().enumerate() {
            if *first != index {
                problem = Some((
                    index,
                    format!(
                        "entries {} to {first} are missing: segment {} starts at entry {}",
                        index + 1,
                        segment_name(*first),
                        first + 1
                    ),
                ));
                break;
            }
            let mut reader = RecordReader::new(file, SEGMENT_HEADER_LEN);
            while index < len {
                let body = match reader.next()? {
                    Record::Body(body) => body,
                    Record::End if position + 1 < segments.len() => continue 'segments,
                    Record::End | Record::Torn => {
                        problem = Some((
                            index,
                            format!(
                                "entries {} to {len} are missing: the log was cut short",
                                index + 1
                            ),
                        ));
                        break 'segments;
                    }
                    Record::Damaged(why) => {
                        problem = Some((index, format!("entry {} is damaged: {why}", index + 1)));
                        break 'segments;
                    }
                    Record::BadChecksum(_) => {
                        problem = Some((
                            index,
                            format!(
                                "entry {} is damaged: its checksum does not match (the disk, or \
                                 someone, changed it)",
                                index + 1
                            ),
                        ));
                        break 'segments;
                    }
                };
                leaves.push(tlog_tiles::record_hash(&body));
                visit(index, &body)?;
                index += 1;
                if leaves.len() as u64 == BLOCK {
                    let hash = subtree_hash(&leaves);
                    let b = block_hashes.len();
                    if blocks.get(b).is_some_and(|block| block.hash != hash) {
                        problem = Some((
                            b as u64 * BLOCK,
                            format!(
                                "entries {} to {} were altered after they were written: \
                                 they no longer hash to what the log recorded",
                                b as u64 * BLOCK + 1,
                                (b as u64 + 1) * BLOCK
                            ),
                        ));
                        break 'segments;
                    }
                    block_hashes.push(hash);
                    leaves.clear();
                }
            }
            break;
        }
        if problem.is_none() && leaves != tail {
            let from = block_hashes.len() as u64 * BLOCK;
            problem = Some((
                from,
                format!(
                    "entries from {} on were altered after they were written",
                    from + 1
                ),
            ));
        }
        // The root over what was read, from the blocks and the leaves.
        let mut root_parts = Vec::new();
        let mut start = 0usize;
        let mut remaining = block_hashes.len();
        while remaining > 0 {
            let size = 1usize << remaining.ilog2();
            root_parts.push(subtree_hash(&block_hashes[start..start + size]));
            start += size;
            remaining -= size;
        }
        let mut start = 0usize;
        let mut remaining = leaves.len();
        while remaining > 0 {
            let size = 1usize << remaining.ilog2();
            root_parts.push(subtree_hash(&leaves[start..start + size]));
            start += size;
            remaining -= size;
        }
        let root = root_parts
            .into_iter()
            .rev()
            .reduce(|right, left| tlog_tiles::node_hash(left, right))
            .unwrap_or(tlog_tiles::EMPTY_HASH);
        Ok(LogCheck {
            entries: index,
            archived,
            problem,
            root,
        })
    }
}

fn cut_short(holds: u64, was: u64) -> (u64, String) {
    (
        holds + 1,
        format!(
            "the audit log holds {holds} entries, but {was} were once written and durable: \
             entries were removed"
        ),
    )
}

/// What `head` records after each sync: the size, its root, and where the
/// synced records end (the segment's first entry, the byte offset).
#[derive(Debug, Clone, Copy)]
struct Head {
    size: u64,
    root: Hash,
    end: (u64, u64),
}

/// Reads `head`: size (u64 BE), root, the end's segment and offset (u64 BE
/// each), then a CRC-32 of all of it. `None` if there is none, or it was
/// torn (a crash while writing it).
fn read_head(path: &Path) -> Result<Option<Head>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let body = HEAD_LEN - 4;
    if bytes.len() != HEAD_LEN || crc32fast::hash(&bytes[..body]).to_be_bytes() != bytes[body..] {
        return Ok(None);
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(w)
    };
    let mut root = [0u8; 32];
    root.copy_from_slice(&bytes[8..40]);
    Ok(Some(Head {
        size: word(0),
        root: Hash(root),
        end: (word(40), word(48)),
    }))
}

fn encode_head(head: &Head) -> [u8; HEAD_LEN] {
    let mut bytes = [0u8; HEAD_LEN];
    bytes[..8].copy_from_slice(&head.size.to_be_bytes());
    bytes[8..40].copy_from_slice(&head.root.0);
    bytes[40..48].copy_from_slice(&head.end.0.to_be_bytes());
    bytes[48..56].copy_from_slice(&head.end.1.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..HEAD_LEN - 4]);
    bytes[HEAD_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// The `blocks` file's records, each placed in its segment (the first
/// `archived_blocks`, whose segments are gone, in none: their offsets are
/// not used). A torn last record (a crash while writing it) is dropped.
fn read_block_records(
    file: &File,
    segments: &[Segment],
    archived_blocks: usize,
) -> Result<Vec<Block>, StoreError> {
    let len = file.metadata()?.len();
    let count = len / BLOCK_RECORD_LEN;
    let mut bytes = vec![0u8; (count * BLOCK_RECORD_LEN) as usize];
    file.read_exact_at(&mut bytes, 0)?;
    let mut blocks = Vec::with_capacity(count as usize);
    for (b, record) in bytes.chunks_exact(BLOCK_RECORD_LEN as usize).enumerate() {
        let first = b as u64 * BLOCK;
        let segment = segments
            .partition_point(|s| s.first <= first)
            .saturating_sub(1);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&record[..32]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&record[32..]);
        let offset = u64::from_be_bytes(offset);
        if b >= archived_blocks && offset < SEGMENT_HEADER_LEN {
            // Not a place a block can start: rebuild from here.
            break;
        }
        blocks.push(Block {
            hash: Hash(hash),
            segment,
            offset,
        });
    }
    Ok(blocks)
}

impl Inner {
    /// Forgets everything read, to read the segments again from the start
    /// (the first, after the archived blocks).
    fn reset(&mut self) {
        let archived_blocks = (self.archived / BLOCK) as usize;
        let mut kept = std::mem::take(&mut self.blocks);
        kept.truncate(archived_blocks);
        self.upper.clear();
        for block in kept {
            self.push_block(block);
        }
        self.tail.clear();
        self.len = self.archived;
        self.tail_start = Position {
            segment: 0,
            offset: SEGMENT_HEADER_LEN,
        };
        self.end = SEGMENT_HEADER_LEN;
        self.blocks_recorded = archived_blocks as u64;
        self.damaged.clear();
    }

    /// The position of the segment that starts at entry `end` (0-based),
    /// if it is not the first: the segments before it are whole and closed,
    /// what archiving and pruning take.
    fn segment_starting(&self, end: u64) -> Result<usize, StoreError> {
        self.segments
            .iter()
            .position(|s| s.first == end)
            .filter(|&k| k > 0)
            .ok_or_else(|| {
                corrupt(format!(
                    "entry {} does not start a segment after the first: only whole closed \
                     segments are archived and pruned",
                    end + 1
                ))
            })
    }

    fn block_start(&self, block: u64) -> Position {
        match self.blocks.get(block as usize) {
            Some(b) => Position {
                segment: b.segment,
                offset: b.offset,
            },
            None => self.tail_start,
        }
    }

    /// Adds a finished block and the upper levels it completes.
    fn push_block(&mut self, block: Block) {
        self.blocks.push(block);
        let mut count = self.blocks.len();
        let mut hash = block.hash;
        let mut level = 0usize;
        while count.is_multiple_of(2) {
            let left = if level == 0 {
                self.blocks[count - 2].hash
            } else {
                self.upper[level - 1][count - 2]
            };
            hash = tlog_tiles::node_hash(left, hash);
            if self.upper.len() == level {
                self.upper.push(Vec::new());
            }
            self.upper[level].push(hash);
            count = self.upper[level].len();
            level += 1;
        }
    }

    fn add_leaf(&mut self, leaf: Hash) {
        self.tail.push(leaf);
        self.len += 1;
        if self.tail.len() as u64 == BLOCK {
            let hash = subtree_hash(&self.tail);
            let start = self.tail_start;
            self.push_block(Block {
                hash,
                segment: start.segment,
                offset: start.offset,
            });
            self.tail.clear();
        }
    }

    /// Writes a run of records at the end of the last segment, then adds
    /// them (leaf hash and offset each) to the tree. Nothing changes if the
    /// write fails.
    fn commit(&mut self, bytes: &[u8], run: &[(Hash, u64)]) -> Result<(), StoreError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let segment = self.segments.len() - 1;
        let file = &self.segments[segment].file;
        if let Err(e) = file.write_all_at(bytes, self.end) {
            // Leave no half-written record for the next append to follow.
            let _ = file.set_len(self.end);
            return Err(e.into());
        }
        self.end += bytes.len() as u64;
        for &(leaf, offset) in run {
            if self.len.is_multiple_of(BLOCK) {
                self.tail_start = Position { segment, offset };
            }
            self.add_leaf(leaf);
        }
        Ok(())
    }

    /// Closes the last segment (durably) and starts the next.
    fn start_segment(&mut self, dir: &Path) -> Result<(), StoreError> {
        let last = self.segments.last().ok_or_else(|| corrupt("no segment"))?;
        last.file.sync_data()?;
        let first = self.len;
        let path = dir.join(segment_name(first));
        let file = create_file(&path)?;
        let mut header = SEGMENT_MAGIC.to_vec();
        header.extend_from_slice(&first.to_be_bytes());
        let written = file
            .write_all_at(&header, 0)
            .and_then(|()| file.sync_data())
            .and_then(|()| sync_dir(dir));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        self.segments.push(Segment {
            first,
            file: Arc::new(file),
        });
        self.end = SEGMENT_HEADER_LEN;
        Ok(())
    }

    /// Reads from the partial block's start to the end of the log, adding
    /// each entry; cuts a torn last record off. Returns the bytes cut.
    fn scan_to_end(&mut self) -> Result<u64, StoreError> {
        let mut position = self.tail_start;
        loop {
            let segment_first = self.segments[position.segment].first;
            let is_last = position.segment + 1 == self.segments.len();
            if position.offset == SEGMENT_HEADER_LEN && segment_first != self.len {
                return Err(corrupt(format!(
                    "{} should start at entry {}: entries are missing",
                    segment_name(segment_first),
                    self.len + 1
                )));
            }
            let file = Arc::clone(&self.segments[position.segment].file);
            let file_len = file.metadata()?.len();
            // Where the last sync ended in this segment: records past it were
            // never acknowledged, and a power cut may have kept any subset of
            // their pages (a batch's write spans many).
            let synced_to = match self.synced_end {
                Some((first, offset)) if first == segment_first => Some(offset),
                Some((first, _)) if first < segment_first => Some(SEGMENT_HEADER_LEN),
                Some(_) => Some(u64::MAX),
                None => None,
            };
            let mut reader = RecordReader::new(&file, position.offset);
            let mut cut_at = None;
            loop {
                let at = reader.offset;
                let record = reader.next()?;
                let unacknowledged = is_last && synced_to.is_some_and(|end| at >= end);
                match record {
                    Record::Body(body) => {
                        if self.len.is_multiple_of(BLOCK) {
                            self.tail_start = Position {
                                segment: position.segment,
                                offset: at,
                            };
                        }
                        self.add_leaf(tlog_tiles::record_hash(&body));
                    }
                    Record::End => break,
                    // Past the last sync, or (with no record of it) the last
                    // record of the last segment: a write a crash cut short,
                    // never acknowledged. Every segment before the last was
                    // synced when the next began.
                    _ if unacknowledged => {
                        cut_at = Some(at);
                        break;
                    }
                    Record::Torn if is_last => {
                        cut_at = Some(at);
                        break;
                    }
                    Record::BadChecksum(_)
                        if is_last && synced_to.is_none() && reader.offset >= file_len =>
                    {
                        cut_at = Some(at);
                        break;
                    }
                    Record::Damaged(_)
                        if is_last
                            && synced_to.is_none()
                            && self.is_last_record(&file, at, file_len)? =>
                    {
                        cut_at = Some(at);
                        break;
                    }
                    // Damage in what was synced, with the record after it
                    // where its length says: the entry stays where it is (its
                    // hash will not match what the log recorded), and opening
                    // says so.
                    Record::BadChecksum(body) => {
                        self.damaged.push(self.len);
                        if self.len.is_multiple_of(BLOCK) {
                            self.tail_start = Position {
                                segment: position.segment,
                                offset: at,
                            };
                        }
                        self.add_leaf(tlog_tiles::record_hash(&body));
                    }
                    Record::Torn | Record::Damaged(_) => {
                        return Err(corrupt(format!(
                            "entry {} in {} is damaged: restore the store from a backup",
                            self.len + 1,
                            segment_name(segment_first)
                        )));
                    }
                }
            }
            if is_last {
                let mut cut = 0;
                if let Some(at) = cut_at {
                    cut = file_len - at;
                    file.set_len(at)?;
                }
                // What opening found is what is on disk from here on.
                file.sync_data()?;
                self.end = cut_at.unwrap_or(reader.offset);
                if self.len.is_multiple_of(BLOCK) {
                    self.tail_start = Position {
                        segment: position.segment,
                        offset: self.end,
                    };
                }
                return Ok(cut);
            }
            if cut_at.is_some() {
                return Err(corrupt(format!(
                    "{} ends inside entry {}: restore the store from a backup",
                    segment_name(segment_first),
                    self.len + 1
                )));
            }
            position = Position {
                segment: position.segment + 1,
                offset: SEGMENT_HEADER_LEN,
            };
        }
    }

    /// Whether the record at `at` reaches the end of the file (so damage in
    /// it is a torn write, not an altered entry with others after it).
    fn is_last_record(&self, file: &File, at: u64, file_len: u64) -> io::Result<bool> {
        let mut header = [0u8; 4];
        if file.read_at(&mut header, at)? < 4 {
            return Ok(true);
        }
        let len = u64::from(u32::from_be_bytes(header));
        Ok(at + RECORD_HEADER_LEN as u64 + len >= file_len)
    }

    /// Writes the records of the blocks finished within the first `durable`
    /// entries that the `blocks` file does not hold yet.
    fn record_blocks(&mut self, durable: u64) -> Result<(), StoreError> {
        let finished = (durable / BLOCK).min(self.blocks.len() as u64);
        if finished <= self.blocks_recorded {
            return Ok(());
        }
        let mut bytes =
            Vec::with_capacity(((finished - self.blocks_recorded) * BLOCK_RECORD_LEN) as usize);
        for block in &self.blocks[self.blocks_recorded as usize..finished as usize] {
            bytes.extend_from_slice(&block.hash.0);
            bytes.extend_from_slice(&block.offset.to_be_bytes());
        }
        self.blocks_file
            .write_all_at(&bytes, self.blocks_recorded * BLOCK_RECORD_LEN)?;
        self.blocks_recorded = finished;
        Ok(())
    }

    /// Writes the size and root of the first `durable` entries, and where
    /// their records end (`end`), to `head`.
    fn record_head(&mut self, durable: u64, end: (u64, u64)) -> Result<(), StoreError> {
        let reader = TreeReader::new(self);
        let root = reader.result(tlog_tiles::tree_hash(durable, &reader))?;
        let head = Head {
            size: durable,
            root,
            end,
        };
        self.head_file.write_all_at(&encode_head(&head), 0)?;
        self.synced_end = Some(end);
        Ok(())
    }

    /// Where the records end now: the last segment's first entry, and the
    /// byte length written to it.
    fn end_position(&self) -> (u64, u64) {
        (self.segments.last().map_or(0, |s| s.first), self.end)
    }

    /// The leaf hashes of block `block`, read from its records unless it is
    /// the partial one.
    fn block_leaves(&self, block: u64) -> Result<Vec<Hash>, StoreError> {
        if block * BLOCK < self.archived {
            return Err(archived_error(block * BLOCK, self.archived));
        }
        let Some(b) = self.blocks.get(block as usize) else {
            return Ok(self.tail.clone());
        };
        let file = &self.segments[b.segment].file;
        let mut reader = RecordReader::new(file, b.offset);
        let mut leaves = Vec::with_capacity(BLOCK as usize);
        while (leaves.len() as u64) < BLOCK {
            match reader.next()? {
                Record::Body(body) => leaves.push(tlog_tiles::record_hash(&body)),
                Record::End | Record::Torn => {
                    return Err(corrupt(format!(
                        "entries of block {block} are missing from their segment"
                    )));
                }
                Record::Damaged(why) => {
                    return Err(corrupt(format!(
                        "entry {} is damaged: {why}",
                        block * BLOCK + leaves.len() as u64 + 1
                    )));
                }
                Record::BadChecksum(_) => {
                    return Err(corrupt(format!(
                        "entry {} is damaged: its checksum does not match",
                        block * BLOCK + leaves.len() as u64 + 1
                    )));
                }
            }
        }
        if subtree_hash(&leaves) != b.hash {
            return Err(corrupt(format!(
                "entries {} to {} were altered after they were written",
                block * BLOCK + 1,
                (block + 1) * BLOCK
            )));
        }
        Ok(leaves)
    }
}

/// Serves `tlog_tiles` the stored hashes it asks for, from memory or, below
/// a block's level, from the block's records.
struct TreeReader<'a> {
    inner: &'a Inner,
    /// The first failure to read (`tlog_tiles`' error type cannot carry ours).
    failure: Mutex<Option<StoreError>>,
    /// The last block read, for the several hashes a proof asks of one.
    cached: Mutex<Option<(u64, Vec<Hash>)>>,
}

impl<'a> TreeReader<'a> {
    fn new(inner: &'a Inner) -> Self {
        TreeReader {
            inner,
            failure: Mutex::new(None),
            cached: Mutex::new(None),
        }
    }

    fn hash(&self, level: u8, n: u64) -> Result<Hash, StoreError> {
        let missing = || corrupt(format!("no tree hash at level {level}, node {n}"));
        if level == BLOCK_LEVEL {
            return self
                .inner
                .blocks
                .get(n as usize)
                .map(|b| b.hash)
                .ok_or_else(missing);
        }
        if level > BLOCK_LEVEL {
            return self
                .inner
                .upper
                .get(usize::from(level - BLOCK_LEVEL - 1))
                .and_then(|hashes| hashes.get(n as usize))
                .copied()
                .ok_or_else(missing);
        }
        let first_leaf = n << level;
        let block = first_leaf / BLOCK;
        let width = 1usize << level;
        let from = (first_leaf % BLOCK) as usize;
        let mut cached = self.cached.lock();
        if cached.as_ref().is_none_or(|(b, _)| *b != block) {
            *cached = Some((block, self.inner.block_leaves(block)?));
        }
        let leaves = cached
            .as_ref()
            .map(|(_, leaves)| leaves)
            .ok_or_else(missing)?;
        leaves
            .get(from..from + width)
            .map(subtree_hash)
            .ok_or_else(missing)
    }

    fn result<T>(&self, outcome: Result<T, tlog_tiles::Error>) -> Result<T, StoreError> {
        if let Some(failure) = self.failure.lock().take() {
            return Err(failure);
        }
        outcome.map_err(|e| corrupt(format!("the audit tree: {e}")))
    }
}

impl HashReader for TreeReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let mut hashes = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let (level, n) = tlog_tiles::split_stored_hash_index(index);
            match self.hash(level, n) {
                Ok(hash) => hashes.push(hash),
                Err(e) => {
                    *self.failure.lock() = Some(e);
                    return Err(tlog_tiles::Error::IndexesNotInTree);
                }
            }
        }
        Ok(hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u64) -> Vec<u8> {
        format!("entry {n} {}", "x".repeat((n % 37) as usize)).into_bytes()
    }

    /// The root computed the plain way, from every leaf.
    fn reference_root(count: u64) -> Hash {
        let leaves: Vec<Hash> = (0..count)
            .map(|n| tlog_tiles::record_hash(&body(n)))
            .collect();
        fn mth(leaves: &[Hash]) -> Hash {
            match leaves.len() {
                0 => tlog_tiles::EMPTY_HASH,
                1 => leaves[0],
                n => {
                    let k = 1usize << (n - 1).ilog2();
                    tlog_tiles::node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
                }
            }
        }
        mth(&leaves)
    }

    fn fill(log: &SegmentLog, from: u64, to: u64) {
        let bodies: Vec<Vec<u8>> = (from..to).map(body).collect();
        for chunk in bodies.chunks(97) {
            log.append(chunk).expect("append");
        }
        log.sync().expect("sync");
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn roots_and_proofs_match_rfc_6962_across_segments_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        // Small segments: several of them, each closed at a block boundary.
        let (log, report) = SegmentLog::open_with(&path, 5_000).expect("open");
        assert_eq!(report.alarm, None);
        fill(&log, 0, 1_300);
        assert!(
            files(&path)
                .iter()
                .filter(|n| n.starts_with("seg-"))
                .count()
                > 3
        );
        for size in [1, 2, 3, 255, 256, 257, 511, 512, 1_000, 1_300] {
            let root = log.root(size).expect("root");
            assert_eq!(root, reference_root(size), "root of {size}");
            for index in [0, size / 2, size - 1] {
                let proof = log.inclusion_proof(index, size).expect("inclusion");
                tlog_tiles::check_record(
                    &proof,
                    size,
                    root,
                    index,
                    tlog_tiles::record_hash(&body(index)),
                )
                .expect("inclusion verifies");
                // The proof names this entry, no other.
                let other = tlog_tiles::record_hash(b"another entry");
                assert!(tlog_tiles::check_record(&proof, size, root, index, other).is_err());
            }
            for old in [1, size / 3 + 1, size] {
                let proof = log.consistency_proof(old, size).expect("consistency");
                tlog_tiles::check_tree(&proof, size, root, old, reference_root(old))
                    .expect("consistency verifies");
            }
        }
        assert_eq!(log.read(777).expect("read"), Some(body(777)));
        assert_eq!(log.read(1_300).expect("read"), None);
        drop(log);

        let (log, report) = SegmentLog::open_with(&path, 5_000).expect("reopen");
        assert_eq!((report.alarm, report.torn_tail_bytes), (None, 0));
        assert_eq!(log.len(), 1_300);
        assert_eq!(log.root(1_300).expect("root"), reference_root(1_300));
        fill(&log, 1_300, 1_400);
        assert_eq!(log.root(1_400).expect("root"), reference_root(1_400));
        let check = log.check(|_, _| Ok(())).expect("check");
        assert_eq!(
            (check.entries, check.problem, check.root),
            (1_400, None, reference_root(1_400))
        );
    }

    /// Archives and prunes the log's first segments up to `end`.
    fn archive_to(log: &SegmentLog, end: u64, folder: &Path) -> ArchiveRecord {
        let file = folder.join(format!("archive-{end}.pwar"));
        let (sha256, bytes) = log.write_archive(end, &file, b"{}").expect("archive");
        let record = ArchiveRecord {
            file: file.display().to_string(),
            first_seq: log.archived() + 1,
            last_seq: end,
            sha256: hex::encode(sha256),
            bytes,
            checkpoint: String::new(),
            sealed_unix_ms: 0,
        };
        log.prune(end, record.clone()).expect("prune");
        record
    }

    #[test]
    fn a_pruned_log_still_proves_and_verifies_everything_after_the_pruned_point() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open_with(&path, 5_000).expect("open");
        fill(&log, 0, 1_300);
        let closed = log.closed_segments();
        assert!(closed.len() >= 3, "{closed:?}");
        // Only whole closed segments: not the middle of one, not the last.
        let end = closed[1].1;
        assert!(
            log.write_archive(end + 1, &dir.path().join("x"), b"{}")
                .is_err()
        );
        assert!(log.prune(log.len(), archive_record()).is_err());
        let segments_before = files(&path)
            .iter()
            .filter(|n| n.starts_with("seg-"))
            .count();
        let record = archive_to(&log, end, dir.path());
        assert!(std::fs::metadata(&record.file).expect("archive").len() > 0);
        assert_eq!(log.archived(), end);
        assert_eq!(log.archives(), vec![record]);
        let segments: Vec<String> = files(&path)
            .into_iter()
            .filter(|n| n.starts_with("seg-"))
            .collect();
        assert_eq!(segments.len(), segments_before - 2);
        assert_eq!(segments[0], segment_name(end));

        let check_all = |log: &SegmentLog, len: u64| {
            assert!(matches!(
                log.read(end - 1),
                Err(StoreError::Archived { seq, archived }) if seq == end && archived == end
            ));
            assert_eq!(log.read(end).expect("read"), Some(body(end)));
            // Every size from the pruned point on, and whole blocks before.
            for size in [256, end, end + 1, end + 300, len] {
                assert_eq!(
                    log.root(size).expect("root"),
                    reference_root(size),
                    "{size}"
                );
            }
            assert!(matches!(
                log.root(end - 3),
                Err(StoreError::Archived { .. })
            ));
            for index in [end, end + 1, len - 1] {
                let proof = log.inclusion_proof(index, len).expect("inclusion");
                tlog_tiles::check_record(
                    &proof,
                    len,
                    reference_root(len),
                    index,
                    tlog_tiles::record_hash(&body(index)),
                )
                .expect("inclusion verifies");
            }
            assert!(log.inclusion_proof(end - 1, len).is_err());
            for old in [end, end + 7, len - 1] {
                let proof = log.consistency_proof(old, len).expect("consistency");
                tlog_tiles::check_tree(&proof, len, reference_root(len), old, reference_root(old))
                    .expect("consistency verifies");
            }
            let mut visited = Vec::new();
            let check = log
                .check(|index, _| {
                    visited.push(index);
                    Ok(())
                })
                .expect("check");
            assert_eq!(
                (check.entries, check.archived, check.problem, check.root),
                (len, end, None, reference_root(len))
            );
            assert_eq!(visited.first(), Some(&end));
            assert_eq!(visited.len() as u64, len - end);
        };
        check_all(&log, 1_300);
        drop(log);
        let (log, report) = SegmentLog::open_with(&path, 5_000).expect("reopen");
        assert_eq!(report.alarm, None);
        check_all(&log, 1_300);
        fill(&log, 1_300, 1_500);
        check_all(&log, 1_500);
        // A lost blocks file cannot be rebuilt for archived entries: the
        // open refuses rather than start a different tree.
        drop(log);
        let blocks = std::fs::read(path.join(BLOCKS_FILE)).expect("blocks");
        std::fs::write(path.join(BLOCKS_FILE), &blocks[..BLOCK_RECORD_LEN as usize]).expect("cut");
        let refused = SegmentLog::open_with(&path, 5_000).expect_err("refused");
        assert!(refused.to_string().contains("archived"), "{refused}");
        // An altered hash of an archived block is caught against the root
        // recorded with them.
        let mut altered = blocks.clone();
        altered[5] ^= 1;
        std::fs::write(path.join(BLOCKS_FILE), &altered).expect("alter");
        let (_, report) = SegmentLog::open_with(&path, 5_000).expect("reopen");
        let (first, alarm) = report.alarm.expect("alarm");
        assert_eq!(first, 1);
        assert!(alarm.contains("archived entries"), "{alarm}");
    }

    fn archive_record() -> ArchiveRecord {
        ArchiveRecord {
            file: String::new(),
            first_seq: 1,
            last_seq: 1,
            sha256: String::new(),
            bytes: 0,
            checkpoint: String::new(),
            sealed_unix_ms: 0,
        }
    }

    #[test]
    fn an_archived_file_that_does_not_fit_the_tree_removes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open_with(&path, 5_000).expect("open");
        fill(&log, 0, 900);
        let end = log.closed_segments()[0].1;
        drop(log);
        let first = path.join(segment_name(0));
        let mut manifest = ArchivedManifest {
            format: ARCHIVED_FORMAT,
            entries: end,
            root: hex::encode([7u8; 32]),
            archives: vec![ArchiveRecord {
                first_seq: 1,
                last_seq: end,
                ..archive_record()
            }],
        };
        // Its archives do not hold what it says: refused.
        manifest.archives[0].last_seq = end - 1;
        let json = serde_json::to_vec(&manifest).expect("json");
        std::fs::write(path.join(ARCHIVED_FILE), &json).expect("write");
        let refused = SegmentLog::open_with(&path, 5_000).expect_err("refused");
        assert!(
            refused.to_string().contains("one after another"),
            "{refused}"
        );
        assert!(first.exists());
        // Written by someone who did not know the tree: an alarm, and the
        // segments it names stay on disk for the restore.
        manifest.archives[0].last_seq = end;
        let json = serde_json::to_vec(&manifest).expect("json");
        std::fs::write(path.join(ARCHIVED_FILE), &json).expect("write");
        let (_, report) = SegmentLog::open_with(&path, 5_000).expect("opens");
        let (_, alarm) = report.alarm.expect("alarm");
        assert!(alarm.contains("archived entries"), "{alarm}");
        assert!(first.exists());
    }

    #[test]
    fn segments_a_prune_left_behind_are_removed_at_the_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open_with(&path, 5_000).expect("open");
        fill(&log, 0, 900);
        let end = log.closed_segments()[0].1;
        let first = path.join(segment_name(0));
        let kept = std::fs::read(&first).expect("segment");
        archive_to(&log, end, dir.path());
        drop(log);
        // A crash after the `archived` file, before the segment went.
        std::fs::write(&first, &kept).expect("put back");
        let (log, report) = SegmentLog::open_with(&path, 5_000).expect("reopen");
        assert_eq!(report.alarm, None);
        assert!(!first.exists());
        assert_eq!(log.len(), 900);
        assert_eq!(log.root(900).expect("root"), reference_root(900));
        assert!(log.check(|_, _| Ok(())).expect("check").problem.is_none());
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_a_lost_blocks_file_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open(&path).expect("open");
        fill(&log, 0, 600);
        drop(log);
        // A crash in the middle of writing a record nobody was told about.
        let segment = path.join(segment_name(0));
        let mut torn = Vec::new();
        encode_record(&body(600), &mut torn);
        let file = OpenOptions::new()
            .append(true)
            .open(&segment)
            .expect("segment");
        std::io::Write::write_all(&mut &file, &torn[..torn.len() - 3]).expect("write");
        std::fs::remove_file(path.join(BLOCKS_FILE)).expect("remove");

        let (log, report) = SegmentLog::open(&path).expect("reopen");
        assert_eq!(report.torn_tail_bytes, torn.len() as u64 - 3);
        assert_eq!(report.alarm, None);
        assert_eq!(log.len(), 600);
        assert_eq!(log.root(600).expect("root"), reference_root(600));
        assert_eq!(
            std::fs::metadata(path.join(BLOCKS_FILE))
                .expect("blocks")
                .len(),
            2 * BLOCK_RECORD_LEN
        );
        fill(&log, 600, 700);
        assert_eq!(log.root(700).expect("root"), reference_root(700));
    }

    /// Appends raw bytes to the end of segment 0 (what a crash left there).
    fn append_raw(path: &Path, bytes: &[u8]) {
        let file = OpenOptions::new()
            .append(true)
            .open(path.join(segment_name(0)))
            .expect("segment");
        std::io::Write::write_all(&mut &file, bytes).expect("write");
    }

    #[test]
    fn a_last_record_whose_body_never_reached_the_disk_is_cut_and_leaves_no_hole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open(&path).expect("open");
        fill(&log, 0, 10);
        drop(log);
        // Its header and full length are there, its body pages are zeros.
        let mut record = Vec::new();
        encode_record(&body(10), &mut record);
        for byte in &mut record[8..] {
            *byte = 0;
        }
        append_raw(&path, &record);
        let (log, report) = SegmentLog::open(&path).expect("open");
        assert_eq!(report.torn_tail_bytes, record.len() as u64);
        fill(&log, 10, 20);
        drop(log);
        let (log, report) = SegmentLog::open(&path).expect("reopens");
        assert_eq!((report.alarm, report.torn_tail_bytes), (None, 0));
        assert_eq!(log.len(), 20);
        for n in 0..20 {
            assert_eq!(log.read(n).expect("read"), Some(body(n)), "entry {}", n + 1);
        }
        assert_eq!(log.root(20).expect("root"), reference_root(20));
    }

    #[test]
    fn any_damage_past_the_last_sync_is_an_unacknowledged_tail_and_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open(&path).expect("open");
        fill(&log, 0, 300);
        drop(log);
        // A batch of 40 never synced: the page holding the 10th record's
        // header was lost (zeros), later pages were written.
        let mut batch = Vec::new();
        let mut hole = 0..0;
        for n in 300..340 {
            if n == 309 {
                hole = batch.len()..batch.len() + 8;
            }
            encode_record(&body(n), &mut batch);
        }
        for byte in &mut batch[hole] {
            *byte = 0;
        }
        append_raw(&path, &batch);
        let (log, report) = SegmentLog::open(&path).expect("opens");
        assert_eq!(report.alarm, None, "nothing acknowledged was lost");
        assert_eq!(log.len(), 309);
        assert_eq!(log.root(309).expect("root"), reference_root(309));
        drop(log);
        let (log, report) = SegmentLog::open(&path).expect("reopens");
        assert_eq!((report.alarm, log.len()), (None, 309));
    }

    #[test]
    fn a_log_cut_short_is_reported_at_open_and_its_record_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open(&path).expect("open");
        fill(&log, 0, 700);
        drop(log);
        // Cut the segment back to 300 entries, at a record boundary.
        let (log, _) = SegmentLog::open(&path).expect("reopen");
        let offset = log.inner.read().blocks[1].offset;
        drop(log);
        let file = OpenOptions::new()
            .write(true)
            .open(path.join(segment_name(0)))
            .expect("segment");
        file.set_len(offset).expect("cut");

        let (log, report) = SegmentLog::open(&path).expect("opens all the same");
        let (first_bad, said) = report.alarm.expect("reported");
        assert_eq!(first_bad, 257);
        assert!(
            said.contains("holds 256 entries, but 512 were once written"),
            "{said}"
        );
        assert_eq!(log.len(), 256);
        assert!(
            files(&path)
                .iter()
                .any(|n| n.starts_with("blocks.evidence-"))
        );
        // Reported at every open until someone deals with it.
        drop(log);
        let (_, report) = SegmentLog::open(&path).expect("reopen");
        assert_eq!(report.alarm, Some((257, said)));
        let alarm = files(&path)
            .into_iter()
            .find(|n| n.starts_with(ALARM_PREFIX))
            .expect("alarm file");
        std::fs::remove_file(path.join(alarm)).expect("dealt with");
        let (_, report) = SegmentLog::open(&path).expect("reopen");
        assert_eq!(report.alarm, None);
    }

    #[test]
    fn an_altered_entry_is_found_by_the_check_and_by_its_proofs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open(&path).expect("open");
        fill(&log, 0, 600);
        drop(log);
        // Rewrite entry 10's body in place, with a valid checksum: what
        // someone editing the file offline would do.
        let segment = path.join(segment_name(0));
        let bytes = std::fs::read(&segment).expect("read");
        let original = body(9);
        let at = bytes
            .windows(original.len())
            .position(|w| w == original.as_slice())
            .expect("entry 10");
        let mut forged = original.clone();
        forged[0] = b'E';
        let mut patched = bytes.clone();
        patched[at..at + forged.len()].copy_from_slice(&forged);
        patched[at - 4..at].copy_from_slice(&crc32fast::hash(&forged).to_be_bytes());
        std::fs::write(&segment, &patched).expect("write");

        let (log, _) = SegmentLog::open(&path).expect("open");
        let check = log.check(|_, _| Ok(())).expect("check");
        let (first, why) = check.problem.expect("found");
        assert_eq!(first, 0);
        assert!(why.contains("entries 1 to 256 were altered"), "{why}");
        let proof = log.inclusion_proof(9, 600);
        assert!(proof.is_err(), "no proof is served from altered entries");
    }

    #[test]
    fn an_entry_altered_in_the_last_partial_block_is_caught_by_the_recorded_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open(&path).expect("open");
        fill(&log, 0, 300);
        drop(log);
        // Entry 290: past the last full block, so no block record covers it.
        let segment = path.join(segment_name(0));
        let mut bytes = std::fs::read(&segment).expect("read");
        let original = body(289);
        let at = bytes
            .windows(original.len())
            .position(|w| w == original.as_slice())
            .expect("entry 290");
        let mut forged = original.clone();
        forged[0] = b'E';
        bytes[at..at + forged.len()].copy_from_slice(&forged);
        bytes[at - 4..at].copy_from_slice(&crc32fast::hash(&forged).to_be_bytes());
        std::fs::write(&segment, &bytes).expect("write");
        let (_, report) = SegmentLog::open(&path).expect("open");
        let (first_bad, said) = report.alarm.expect("caught");
        assert_eq!(first_bad, 257);
        assert!(
            said.contains("entries among 257 to 300 were altered"),
            "{said}"
        );
    }

    #[test]
    fn damage_before_the_end_opens_with_an_alarm_and_fails_the_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit-log");
        let (log, _) = SegmentLog::open(&path).expect("open");
        fill(&log, 0, 300);
        drop(log);
        let segment = path.join(segment_name(0));
        let mut bytes = std::fs::read(&segment).expect("read");
        // A byte of entry 290: its checksum no longer matches, and more follow.
        let original = body(289);
        let at = bytes
            .windows(original.len())
            .position(|w| w == original.as_slice())
            .expect("entry 290");
        bytes[at] ^= 1;
        std::fs::write(&segment, &bytes).expect("write");
        let (log, report) = SegmentLog::open(&path).expect("opens: the node must still start");
        let (_, said) = report.alarm.expect("alarm");
        assert!(said.contains("the first entry 290"), "{said}");
        assert_eq!(log.len(), 300, "nothing after it is lost");
        let check = log.check(|_, _| Ok(())).expect("check");
        let (index, why) = check.problem.expect("found");
        assert_eq!(index, 289);
        assert!(why.contains("entry 290 is damaged"), "{why}");
        assert!(log.read(289).is_err());
        assert_eq!(log.read(290).expect("read"), Some(body(290)));
        // Appends go on after it.
        fill(&log, 300, 310);
        assert_eq!(log.len(), 310);
    }
}
