//! Backups of a running node's store, and restoring one on a stopped node.
//!
//! A backup is one consistent snapshot of every tree — records, indexes, the
//! match index, the audit log and its indexes, counters — because the walk
//! holds the store's write gate exclusively while every write transaction
//! holds it shared (`Store::writing`): each transaction is wholly in the
//! snapshot or wholly after it. Writes pause for the walk; reads go on.
//! (sled's own `export` walks trees one after another while writes go on, so
//! a record could be in it without its index entries, or an audit entry
//! without the head that chains it.)
//!
//! File format, version 1, integers big-endian:
//! - `PWBACKUP`, the format version (u16), the header's length (u32) and the
//!   header (JSON, [`BackupHeader`]);
//! - each tree, in name order: `T`, the name's length (u16), the name; each
//!   entry as `K`, key length (u32), key, value length (u32), value; then `E`
//!   and the tree's entry count (u64);
//! - `Z` and the number of trees (u32);
//! - the SHA-256 of every byte before it (32 bytes).
//!
//! Restoring checks the checksum before anything else, writes into a staging
//! folder beside the store folder, and renames it into place only once every
//! entry is written and on disk: a failed restore never leaves a half-written
//! store where the node would open it. Backups hold personal data; they are
//! created 0600 by whoever writes them.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Counts, FORMAT_V1, Store, StoreError, StoreOptions};
use crate::AuditVerification;

/// The first bytes of every backup file.
pub(crate) const MAGIC: &[u8; 8] = b"PWBACKUP";
/// The file format this binary writes, and the newest it reads. Version 2
/// added the audit log's entries, which left sled for their own files, as
/// one more tree ([`LOG_TREE`]); a version 1 backup holds them as the old
/// hash chain's tree, which the store moves into its log when it opens.
pub(crate) const FORMAT_VERSION: u16 = 2;
/// The audit log's entries in a backup: written as a tree of this name, after
/// sled's trees, `seq` (u64 BE) → the entry's body.
const LOG_TREE: &[u8] = b"audit-log";
/// The tree over the entries audit retention archived, in a backup: just
/// before the log's entries, two entries: `blocks` (the archived blocks'
/// hashes) and `manifest` (the log's `archived` file).
const ARCHIVED_TREE: &[u8] = b"audit-archived";

/// [`ARCHIVED_TREE`]'s two entries, as a restore reads them.
#[derive(Default)]
struct ArchivedParts {
    blocks: Option<Vec<u8>>,
    manifest: Option<Vec<u8>>,
}
/// The trailing SHA-256.
pub(crate) const DIGEST_LEN: usize = 32;

const TAG_TREE: u8 = b'T';
const TAG_ENTRY: u8 = b'K';
const TAG_TREE_END: u8 = b'E';
const TAG_END: u8 = b'Z';
const MAX_HEADER_LEN: u32 = 64 * 1024;
/// Far above any key or value the store writes: a larger length is damage,
/// refused before it is allocated.
const MAX_ITEM_LEN: u32 = 256 << 20;
/// Entries written per batch while restoring.
const RESTORE_BATCH: usize = 10_000;
/// Audit entries appended per write while restoring.
const RESTORE_LOG_BATCH: usize = 1_024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "the backup's checksum does not match its contents: the file is damaged, cut short or was altered"
    )]
    Checksum,
    #[error("not a readable patchwork backup: {0}")]
    Format(String),
    #[error(
        "backup format version {0} is newer than this binary reads (up to {FORMAT_VERSION}): restore with a newer patchwork"
    )]
    Version(u16),
    #[error(
        "{} is not empty: restore only into an empty store folder, or pass --force to move the old one aside",
        .0.display()
    )]
    NotEmpty(PathBuf),
    #[error(
        "cannot open the store in {} to move it aside (is the node still running? stop it first): {source}",
        .path.display()
    )]
    InUse { path: PathBuf, source: StoreError },
    #[error("{}: {source}", .path.display())]
    File { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DataDir(#[from] super::data_dir::DataDirError),
}

impl From<sled::Error> for BackupError {
    fn from(error: sled::Error) -> Self {
        BackupError::Store(StoreError::Io(error))
    }
}

fn file_error(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::File {
        path: path.to_owned(),
        source,
    }
}

/// What a backup says about itself, readable without restoring it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The format byte every stored record starts with.
    pub(crate) store_format: u8,
    /// When the snapshot was taken, milliseconds since the Unix epoch.
    pub created_unix_ms: i64,
    /// The SPIFFE id of the node it was taken from.
    pub node_identity: String,
    /// The patchwork version that wrote it.
    pub software_version: String,
}

/// A backup's contents, as written or as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub format_version: u16,
    pub header: BackupHeader,
    /// Each tree's name and number of entries, in file order.
    pub trees: Vec<(String, u64)>,
    /// Entries across all trees.
    pub entries: u64,
    /// The file's length, checksum included.
    pub bytes: u64,
    pub sha256: [u8; DIGEST_LEN],
}

impl BackupInfo {
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// What writing a backup did.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub info: BackupInfo,
    /// Entries in the audit log at the snapshot.
    pub audit_entries: u64,
    /// How long writes waited for the walk.
    pub write_pause: Duration,
}

/// What a restore found once the store was in place.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub info: BackupInfo,
    pub counts: Counts,
    /// `Store::check_consistency`: empty when every index agrees.
    pub problems: Vec<String>,
    pub audit: AuditVerification,
    /// Where the store that was in the way went (`--force`).
    pub moved_aside: Option<PathBuf>,
}

impl RestoreReport {
    /// Consistent indexes and an intact audit log.
    pub fn clean(&self) -> bool {
        self.problems.is_empty() && self.audit.intact
    }
}

/// Counts and hashes every byte written through it.
struct HashingWriter<W> {
    inner: W,
    digest: ring::digest::Context,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.digest.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes every byte read through it.
struct HashingReader<R> {
    inner: R,
    digest: ring::digest::Context,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.digest.update(&buf[..read]);
        self.bytes += read as u64;
        Ok(read)
    }
}

fn digest_bytes(context: ring::digest::Context) -> [u8; DIGEST_LEN] {
    let mut out = [0; DIGEST_LEN];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Checks a backup's trailing SHA-256 as it arrives in pieces, e.g. over
/// the network: everything but the last 32 bytes is hashed, and those must
/// equal the hash.
pub struct StreamingCheck {
    digest: ring::digest::Context,
    /// The last bytes seen, which may turn out to be the checksum.
    tail: Vec<u8>,
    bytes: u64,
}

impl Default for StreamingCheck {
    fn default() -> Self {
        StreamingCheck {
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            tail: Vec::with_capacity(2 * DIGEST_LEN),
            bytes: 0,
        }
    }
}

impl StreamingCheck {
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.tail.extend_from_slice(data);
        if self.tail.len() > DIGEST_LEN {
            let hashed = self.tail.len() - DIGEST_LEN;
            self.digest.update(&self.tail[..hashed]);
            self.tail.drain(..hashed);
        }
    }

    /// The checksum (hex) and length if the bytes seen so far are a whole
    /// backup whose checksum matches.
    pub fn finish(self) -> Result<(String, u64), BackupError> {
        if self.tail.len() < DIGEST_LEN || digest_bytes(self.digest)[..] != self.tail[..] {
            return Err(BackupError::Checksum);
        }
        Ok((hex::encode(&self.tail), self.bytes))
    }
}

fn format_error(detail: impl Into<String>) -> BackupError {
    BackupError::Format(detail.into())
}

/// Reading the body: a file that ends early is damage, not an i/o failure.
fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), BackupError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => format_error("the file ends early: it was cut short"),
        _ => BackupError::Store(StoreError::File(e)),
    })
}

fn read_u8(input: &mut impl Read) -> Result<u8, BackupError> {
    let mut buf = [0; 1];
    read_exact(input, &mut buf)?;
    Ok(buf[0])
}

fn read_u16(input: &mut impl Read) -> Result<u16, BackupError> {
    let mut buf = [0; 2];
    read_exact(input, &mut buf)?;
    Ok(u16::from_be_bytes(buf))
}

fn read_u32(input: &mut impl Read) -> Result<u32, BackupError> {
    let mut buf = [0; 4];
    read_exact(input, &mut buf)?;
    Ok(u32::from_be_bytes(buf))
}

fn read_u64(input: &mut impl Read) -> Result<u64, BackupError> {
    let mut buf = [0; 8];
    read_exact(input, &mut buf)?;
    Ok(u64::from_be_bytes(buf))
}

fn read_item(input: &mut impl Read, what: &str) -> Result<Vec<u8>, BackupError> {
    let len = read_u32(input)?;
    if len > MAX_ITEM_LEN {
        return Err(format_error(format!("a {what} claims {len} bytes")));
    }
    let mut item = vec![0; len as usize];
    read_exact(input, &mut item)?;
    Ok(item)
}

/// What reading a backup's body hands to its visitor.
enum Item<'a> {
    Tree(&'a [u8]),
    Entry(Vec<u8>, Vec<u8>),
}

/// Parses a whole backup, handing every tree and entry to `visit`, and
/// checks the trailing checksum and that nothing follows it.
fn read_backup(
    input: impl Read,
    mut visit: impl FnMut(Item<'_>) -> Result<(), BackupError>,
) -> Result<BackupInfo, BackupError> {
    let mut input = HashingReader {
        inner: input,
        digest: ring::digest::Context::new(&ring::digest::SHA256),
        bytes: 0,
    };
    let mut magic = [0; MAGIC.len()];
    read_exact(&mut input, &mut magic)?;
    if &magic != MAGIC {
        return Err(format_error("it does not start with PWBACKUP"));
    }
    let format_version = read_u16(&mut input)?;
    if format_version > FORMAT_VERSION {
        return Err(BackupError::Version(format_version));
    }
    let header_len = read_u32(&mut input)?;
    if header_len > MAX_HEADER_LEN {
        return Err(format_error(format!(
            "its header claims {header_len} bytes"
        )));
    }
    let mut header = vec![0; header_len as usize];
    read_exact(&mut input, &mut header)?;
    let header: BackupHeader =
        serde_json::from_slice(&header).map_err(|e| format_error(format!("header: {e}")))?;
    let mut trees: Vec<(String, u64)> = Vec::new();
    let mut entries = 0u64;
    let mut current: Option<(Vec<u8>, u64)> = None;
    loop {
        match (read_u8(&mut input)?, &mut current) {
            (TAG_TREE, None) => {
                let len = read_u16(&mut input)?;
                let mut name = vec![0; usize::from(len)];
                read_exact(&mut input, &mut name)?;
                visit(Item::Tree(&name))?;
                current = Some((name, 0));
            }
            (TAG_ENTRY, Some((_, count))) => {
                let key = read_item(&mut input, "key")?;
                let value = read_item(&mut input, "value")?;
                *count += 1;
                entries += 1;
                visit(Item::Entry(key, value))?;
            }
            (TAG_TREE_END, Some((name, count))) => {
                let name = String::from_utf8_lossy(name).into_owned();
                let declared = read_u64(&mut input)?;
                if declared != *count {
                    return Err(format_error(format!(
                        "tree {name} declares {declared} entries but holds {count}"
                    )));
                }
                trees.push((name, *count));
                current = None;
            }
            (TAG_END, None) => {
                let declared = read_u32(&mut input)?;
                if declared as usize != trees.len() {
                    return Err(format_error(format!(
                        "it declares {declared} trees but holds {}",
                        trees.len()
                    )));
                }
                break;
            }
            (tag, _) => {
                return Err(format_error(format!(
                    "unexpected record {tag:#04x} after {} bytes",
                    input.bytes - 1
                )));
            }
        }
    }
    let body_bytes = input.bytes;
    let computed = digest_bytes(input.digest);
    let mut rest = input.inner;
    let mut stored = [0; DIGEST_LEN];
    read_exact(&mut rest, &mut stored).map_err(|_| BackupError::Checksum)?;
    if stored != computed {
        return Err(BackupError::Checksum);
    }
    let mut extra = [0; 1];
    if rest.read(&mut extra).map_err(StoreError::File)? != 0 {
        return Err(format_error("bytes follow its checksum"));
    }
    Ok(BackupInfo {
        format_version,
        header,
        trees,
        entries,
        bytes: body_bytes + DIGEST_LEN as u64,
        sha256: stored,
    })
}

/// Checks the file's trailing SHA-256 over its raw bytes, before anything
/// tries to make sense of them.
fn check_checksum(path: &Path) -> Result<(), BackupError> {
    let file = File::open(path).map_err(file_error(path))?;
    let len = file.metadata().map_err(file_error(path))?.len();
    if len < DIGEST_LEN as u64 {
        return Err(BackupError::Checksum);
    }
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut hashing = HashingReader {
        inner: (&mut reader).take(len - DIGEST_LEN as u64),
        digest: ring::digest::Context::new(&ring::digest::SHA256),
        bytes: 0,
    };
    io::copy(&mut hashing, &mut io::sink()).map_err(file_error(path))?;
    if hashing.bytes != len - DIGEST_LEN as u64 {
        return Err(BackupError::Checksum);
    }
    let computed = digest_bytes(hashing.digest);
    let mut stored = [0; DIGEST_LEN];
    reader
        .read_exact(&mut stored)
        .map_err(|_| BackupError::Checksum)?;
    if stored != computed {
        return Err(BackupError::Checksum);
    }
    Ok(())
}

/// Checks a backup file whole — checksum first, then its structure —
/// without writing anything.
pub fn verify_backup(path: &Path) -> Result<BackupInfo, BackupError> {
    check_checksum(path)?;
    let file = File::open(path).map_err(file_error(path))?;
    read_backup(BufReader::with_capacity(1 << 20, file), |_| Ok(()))
}

fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(file_error(dir)(e)),
    }
}

/// `dir` with `suffix` appended to its last component.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error(dir))
}

impl Store {
    /// Writes a consistent snapshot of every tree to `out` as a backup file
    /// (see the module's doc for the format). Writes pause while the trees
    /// are walked; the caller should give a fast local `out` (a spool file)
    /// and ship it elsewhere afterwards. Runs on a blocking thread.
    pub fn write_backup(
        &self,
        out: impl Write,
        node_identity: &str,
    ) -> Result<BackupSummary, BackupError> {
        let mut out = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, out),
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            bytes: 0,
        };
        let io = |e: io::Error| BackupError::Store(StoreError::File(e));
        // No prune until the last log entry is written: the log's entries
        // start where the record of the archived ones ends.
        let _no_prune = self.audit.prune_gate.read();
        let (header, trees, entries, audit_entries, write_pause) = {
            // Every write transaction holds the gate shared: once we hold it
            // exclusively, none is half-done and none starts until we let go.
            let _paused = self.write_gate.write();
            let started = Instant::now();
            let header = BackupHeader {
                store_format: FORMAT_V1,
                created_unix_ms: crate::audit::now_unix_ms(),
                node_identity: node_identity.to_owned(),
                software_version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let header_json =
                serde_json::to_vec(&header).map_err(|e| format_error(format!("header: {e}")))?;
            out.write_all(MAGIC).map_err(io)?;
            out.write_all(&FORMAT_VERSION.to_be_bytes()).map_err(io)?;
            out.write_all(&(header_json.len() as u32).to_be_bytes())
                .map_err(io)?;
            out.write_all(&header_json).map_err(io)?;
            let mut names = self.db.tree_names();
            names.sort();
            let mut trees = Vec::with_capacity(names.len());
            let mut entries = 0u64;
            for name in names {
                let name_len = u16::try_from(name.len())
                    .map_err(|_| format_error("a tree name is longer than 65535 bytes"))?;
                out.write_all(&[TAG_TREE]).map_err(io)?;
                out.write_all(&name_len.to_be_bytes()).map_err(io)?;
                out.write_all(&name).map_err(io)?;
                let mut count = 0u64;
                for item in self.db.open_tree(&name)?.iter() {
                    let (key, value) = item?;
                    out.write_all(&[TAG_ENTRY]).map_err(io)?;
                    out.write_all(&(key.len() as u32).to_be_bytes())
                        .map_err(io)?;
                    out.write_all(&key).map_err(io)?;
                    out.write_all(&(value.len() as u32).to_be_bytes())
                        .map_err(io)?;
                    out.write_all(&value).map_err(io)?;
                    count += 1;
                }
                out.write_all(&[TAG_TREE_END]).map_err(io)?;
                out.write_all(&count.to_be_bytes()).map_err(io)?;
                entries += count;
                trees.push((String::from_utf8_lossy(&name).into_owned(), count));
            }
            // The indexes just written cover exactly this many entries: audit
            // appends hold the gate too.
            let audit_entries = self.audit_len()?;
            (header, trees, entries, audit_entries, started.elapsed())
        };
        // The log is append-only: its first `audit_entries` entries are read
        // after the gate is let go, and are the ones the snapshot indexed.
        let (mut trees, mut entries) = (trees, entries);
        // Entries audit retention archived: the tree over them, which the
        // log's entries continue (they are in the archive files).
        if let Some((manifest, hashes)) = self.audit.log.archived_state() {
            out.write_all(&[TAG_TREE]).map_err(io)?;
            out.write_all(&(ARCHIVED_TREE.len() as u16).to_be_bytes())
                .map_err(io)?;
            out.write_all(ARCHIVED_TREE).map_err(io)?;
            for (key, value) in [(&b"blocks"[..], &hashes), (&b"manifest"[..], &manifest)] {
                out.write_all(&[TAG_ENTRY]).map_err(io)?;
                out.write_all(&(key.len() as u32).to_be_bytes())
                    .map_err(io)?;
                out.write_all(key).map_err(io)?;
                out.write_all(&(value.len() as u32).to_be_bytes())
                    .map_err(io)?;
                out.write_all(value).map_err(io)?;
            }
            out.write_all(&[TAG_TREE_END]).map_err(io)?;
            out.write_all(&2u64.to_be_bytes()).map_err(io)?;
            trees.push((String::from_utf8_lossy(ARCHIVED_TREE).into_owned(), 2));
            entries += 2;
        }
        out.write_all(&[TAG_TREE]).map_err(io)?;
        out.write_all(&(LOG_TREE.len() as u16).to_be_bytes())
            .map_err(io)?;
        out.write_all(LOG_TREE).map_err(io)?;
        self.audit.log.read_each(audit_entries, |index, body| {
            let seq = index + 1;
            out.write_all(&[TAG_ENTRY])?;
            out.write_all(&8u32.to_be_bytes())?;
            out.write_all(&seq.to_be_bytes())?;
            out.write_all(&(body.len() as u32).to_be_bytes())?;
            out.write_all(body)?;
            Ok(())
        })?;
        let log_entries = audit_entries - self.audit.log.archived().min(audit_entries);
        out.write_all(&[TAG_TREE_END]).map_err(io)?;
        out.write_all(&log_entries.to_be_bytes()).map_err(io)?;
        trees.push((String::from_utf8_lossy(LOG_TREE).into_owned(), log_entries));
        entries += log_entries;
        out.write_all(&[TAG_END]).map_err(io)?;
        out.write_all(&(trees.len() as u32).to_be_bytes())
            .map_err(io)?;
        let sha256 = digest_bytes(out.digest.clone());
        out.inner.write_all(&sha256).map_err(io)?;
        out.inner.flush().map_err(io)?;
        Ok(BackupSummary {
            info: BackupInfo {
                format_version: FORMAT_VERSION,
                header,
                trees,
                entries,
                bytes: out.bytes + DIGEST_LEN as u64,
                sha256,
            },
            audit_entries,
            write_pause,
        })
    }

    /// Restores the backup at `backup` into the store folder `dir` of a
    /// stopped node: checks the checksum first, refuses a `dir` that is not
    /// empty unless `force` (which moves it aside to `<dir>.before-restore-
    /// <time>`), writes into `<dir>.restoring` and renames that into place,
    /// then runs the consistency check and the audit verification on the
    /// result and reports both. Nothing is written if the checksum fails.
    pub fn restore_backup(
        backup: &Path,
        dir: &Path,
        options: &StoreOptions,
        force: bool,
    ) -> Result<RestoreReport, BackupError> {
        check_checksum(backup)?;
        let occupied = !is_empty_dir(dir)?;
        if occupied {
            if !force {
                return Err(BackupError::NotEmpty(dir.to_owned()));
            }
            // A running node holds sled's lock on its store: opening fails.
            drop(
                Store::open(dir, options).map_err(|source| BackupError::InUse {
                    path: dir.to_owned(),
                    source,
                })?,
            );
        }
        if let Some(parent) = dir.parent() {
            super::data_dir::create_private(parent)?;
        }
        let staging = sibling(dir, ".restoring");
        if staging.exists() {
            // Only an earlier restore that stopped half-way makes this folder.
            std::fs::remove_dir_all(&staging).map_err(file_error(&staging))?;
        }
        let info = match Self::load_into(backup, &staging, options) {
            Ok(info) => info,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(error);
            }
        };
        let moved_aside = if occupied {
            let now = time::OffsetDateTime::now_utc();
            let stamp = format!(
                "{}{:02}{:02}T{:02}{:02}{:02}Z",
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second()
            );
            let aside = sibling(dir, &format!(".before-restore-{stamp}"));
            std::fs::rename(dir, &aside).map_err(file_error(dir))?;
            Some(aside)
        } else {
            if dir.exists() {
                std::fs::remove_dir(dir).map_err(file_error(dir))?;
            }
            None
        };
        std::fs::rename(&staging, dir).map_err(file_error(&staging))?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let store = Store::open(dir, options)?;
        let problems = store.check_consistency()?;
        let audit = store.verify_audit()?;
        let counts = store.counts()?;
        Ok(RestoreReport {
            info,
            counts,
            problems,
            audit,
            moved_aside,
        })
    }

    /// Writes every tree of the backup into a new store at `staging` and
    /// makes it durable. The checksum is checked again at the end, so a file
    /// that changed after the first check is refused too.
    fn load_into(
        backup: &Path,
        staging: &Path,
        options: &StoreOptions,
    ) -> Result<BackupInfo, BackupError> {
        let store = Store::open(staging, options)?;
        let file = File::open(backup).map_err(file_error(backup))?;
        let mut tree: Option<sled::Tree> = None;
        let mut batch = sled::Batch::default();
        let mut pending = 0usize;
        // The audit log's entries, once its tree begins.
        let mut log_bodies: Option<Vec<Vec<u8>>> = None;
        // The tree over archived entries, once its tree begins: `blocks`
        // and `manifest`, taken up when the log's entries begin.
        let mut archived: Option<ArchivedParts> = None;
        fn apply(
            tree: &Option<sled::Tree>,
            batch: &mut sled::Batch,
            pending: &mut usize,
        ) -> Result<(), BackupError> {
            if let Some(tree) = tree {
                tree.apply_batch(std::mem::take(batch))?;
            }
            *pending = 0;
            Ok(())
        }
        let info = read_backup(BufReader::with_capacity(1 << 20, file), |item| {
            match item {
                Item::Tree(name) if name == ARCHIVED_TREE => {
                    apply(&tree, &mut batch, &mut pending)?;
                    tree = None;
                    if archived.is_some() || log_bodies.is_some() {
                        return Err(format_error(
                            "the archived audit entries' tree appears twice or after the log",
                        ));
                    }
                    archived = Some(ArchivedParts::default());
                }
                Item::Entry(key, value) if tree.is_none() && log_bodies.is_none() => {
                    match (archived.as_mut(), key.as_slice()) {
                        (Some(parts @ ArchivedParts { blocks: None, .. }), b"blocks") => {
                            parts.blocks = Some(value);
                        }
                        (Some(parts @ ArchivedParts { manifest: None, .. }), b"manifest") => {
                            parts.manifest = Some(value);
                        }
                        _ => return Err(format_error("an entry outside any tree")),
                    }
                }
                Item::Tree(name) if name == LOG_TREE => {
                    apply(&tree, &mut batch, &mut pending)?;
                    tree = None;
                    if log_bodies.is_some() || store.audit.log.len() > 0 {
                        return Err(format_error("the audit log appears twice"));
                    }
                    match archived.take() {
                        Some(ArchivedParts {
                            blocks: Some(blocks),
                            manifest: Some(manifest),
                        }) => {
                            store.audit.log.adopt_archived(&manifest, &blocks)?;
                        }
                        Some(_) => {
                            return Err(format_error(
                                "the archived audit entries' tree lacks its blocks or manifest",
                            ));
                        }
                        None => {}
                    }
                    log_bodies = Some(Vec::with_capacity(RESTORE_LOG_BATCH));
                }
                Item::Entry(key, body) if tree.is_none() && log_bodies.is_some() => {
                    let expected = store.audit.log.len()
                        + log_bodies.as_ref().map_or(0, |b| b.len() as u64)
                        + 1;
                    if key != expected.to_be_bytes() {
                        return Err(format_error(format!(
                            "the audit log's entry {expected} is missing or out of order"
                        )));
                    }
                    if let Some(bodies) = log_bodies.as_mut() {
                        bodies.push(body);
                        if bodies.len() == RESTORE_LOG_BATCH {
                            store.audit.log.append(bodies)?;
                            bodies.clear();
                        }
                    }
                }
                Item::Tree(name) => {
                    apply(&tree, &mut batch, &mut pending)?;
                    if let Some(bodies) = log_bodies.take() {
                        store.audit.log.append(&bodies)?;
                    }
                    let next = store.db.open_tree(name)?;
                    if !next.is_empty() {
                        return Err(format_error(format!(
                            "tree {} appears twice",
                            String::from_utf8_lossy(name)
                        )));
                    }
                    tree = Some(next);
                }
                Item::Entry(key, value) => {
                    batch.insert(key, value);
                    pending += 1;
                    if pending == RESTORE_BATCH {
                        apply(&tree, &mut batch, &mut pending)?;
                    }
                }
            }
            Ok(())
        })?;
        apply(&tree, &mut batch, &mut pending)?;
        if archived.is_some() {
            return Err(format_error(
                "the archived audit entries' tree is not followed by the audit log",
            ));
        }
        if let Some(bodies) = log_bodies.take() {
            store.audit.log.append(&bodies)?;
        }
        store.audit.log.sync()?;
        // A new history for the team-event outbox: the sequence numbers
        // after the backup's last event will be handed out again, so Watch
        // cursors from before the restore must not match them. Random, so
        // two restores of one backup differ too; never 0 (a store never
        // restored).
        let epoch = rand::random::<u64>().max(1);
        store
            .meta
            .insert(super::events::EVENT_EPOCH, &epoch.to_be_bytes())?;
        if info.header.store_format != FORMAT_V1 {
            return Err(format_error(format!(
                "its records are in store format {}, which this binary does not read",
                info.header.store_format
            )));
        }
        store.db.flush()?;
        store
            .durability
            .log_file
            .sync_all()
            .map_err(StoreError::File)?;
        drop(store);
        sync_dir(staging)?;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LawfulBasis, Person};
    use crate::{AuditEvent, WriteMode, fixtures};

    /// Each person a family name of their own.
    fn person(id: &str) -> Person {
        fixtures::person(id, &format!("Smith{id}"))
    }

    fn lookup(n: usize) -> AuditEvent {
        AuditEvent::LookupStarted {
            lookup_id: format!("L-{n}"),
            caller: "spiffe://test/client/portal".into(),
            requester: "PR1".into(),
            lawful_basis: LawfulBasis::ChildSafeguarding,
            reason: "s.47 enquiry".into(),
            peers_asked: Vec::new(),
        }
    }

    fn seeded() -> (tempfile::TempDir, Store) {
        let (dir, store) = fixtures::empty_store();
        fixtures::put_council(&store, &["PR1"]);
        let persons: Vec<Person> = (0..50).map(|i| person(&format!("P{i}"))).collect();
        store
            .put_persons(&persons, WriteMode::Create)
            .expect("persons");
        for n in 0..10 {
            store.append_audit(lookup(n)).expect("audit");
        }
        (dir, store)
    }

    /// A tree's name and its entries.
    type TreeDump = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

    /// Every tree's contents, for comparing two stores.
    fn dump(store: &Store) -> Vec<TreeDump> {
        let mut names = store.db.tree_names();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let tree = store.db.open_tree(&name).expect("tree");
                let entries = tree
                    .iter()
                    .map(|e| {
                        let (k, v) = e.expect("entry");
                        (k.to_vec(), v.to_vec())
                    })
                    .collect();
                (name.to_vec(), entries)
            })
            .collect()
    }

    fn write_file(store: &Store, path: &Path) -> BackupSummary {
        let file = File::create(path).expect("create");
        store
            .write_backup(file, "spiffe://test/node/a")
            .expect("backup")
    }

    #[test]
    fn a_backup_restores_every_tree_exactly() {
        let (dir, store) = seeded();
        let path = dir.path().join("backup.pwb");
        let summary = write_file(&store, &path);
        assert_eq!(summary.audit_entries, 10);
        assert_eq!(
            std::fs::metadata(&path).expect("meta").len(),
            summary.info.bytes
        );
        let verified = verify_backup(&path).expect("verify");
        assert_eq!(verified, summary.info);

        let target = dir.path().join("restored/store");
        let report = Store::restore_backup(&path, &target, &StoreOptions::default(), false)
            .expect("restore");
        assert!(report.clean(), "{report:?}");
        assert_eq!(report.counts.persons, 50);
        assert_eq!(report.audit.entries, 10);
        assert!(!sibling(&target, ".restoring").exists());
        let restored = Store::open(&target, &StoreOptions::default()).expect("open");
        // Exact, but for the new history of team events a restore starts.
        assert_ne!(restored.event_epoch().expect("epoch"), 0);
        assert_eq!(store.event_epoch().expect("epoch"), 0);
        let mut restored_trees = dump(&restored);
        for (name, entries) in &mut restored_trees {
            if name.as_slice() == b"meta" {
                entries.retain(|(key, _)| key.as_slice() != super::super::events::EVENT_EPOCH);
            }
        }
        assert_eq!(restored_trees, dump(&store));
    }

    #[test]
    fn a_damaged_or_cut_backup_is_refused_and_nothing_is_written() {
        let (dir, store) = seeded();
        let path = dir.path().join("backup.pwb");
        write_file(&store, &path);
        let bytes = std::fs::read(&path).expect("read");
        let target = dir.path().join("restored/store");

        let mut altered = bytes.clone();
        altered[bytes.len() / 2] ^= 0x01;
        let damaged = dir.path().join("damaged.pwb");
        std::fs::write(&damaged, &altered).expect("write");
        let cut = dir.path().join("cut.pwb");
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).expect("write");
        for file in [&damaged, &cut] {
            assert!(matches!(verify_backup(file), Err(BackupError::Checksum)));
            let error = Store::restore_backup(file, &target, &StoreOptions::default(), false)
                .expect_err("refused");
            assert!(matches!(error, BackupError::Checksum), "{error}");
            assert!(!target.exists() && !sibling(&target, ".restoring").exists());
        }
    }

    #[test]
    fn restoring_over_a_store_needs_force_and_moves_it_aside() {
        let (dir, store) = seeded();
        let path = dir.path().join("backup.pwb");
        write_file(&store, &path);
        let target = dir.path().join("other/store");
        drop(Store::open(&target, &StoreOptions::default()).expect("make a store"));
        let error = Store::restore_backup(&path, &target, &StoreOptions::default(), false)
            .expect_err("not empty");
        assert!(matches!(error, BackupError::NotEmpty(_)), "{error}");
        // The live store holds sled's lock, as a running node would.
        let error = Store::restore_backup(
            &path,
            &dir.path().join("store"),
            &StoreOptions::default(),
            true,
        )
        .expect_err("in use");
        assert!(matches!(error, BackupError::InUse { .. }), "{error}");
        let report =
            Store::restore_backup(&path, &target, &StoreOptions::default(), true).expect("force");
        let aside = report.moved_aside.clone().expect("moved aside");
        assert!(aside.join("db").exists(), "the old store is kept");
        assert!(report.clean());
        assert_eq!(report.counts.persons, 50);
    }

    /// Writers that change several trees per transaction (a person and its
    /// indexes and counter; an audit entry, its indexes and the head) go on
    /// while backups are taken: every backup restores consistent.
    #[test]
    fn backups_taken_during_writes_are_consistent() {
        let (dir, store) = seeded();
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in 0..100 {
                        let batch: Vec<Person> =
                            (0..10).map(|i| person(&format!("W{w}-{n}-{i}"))).collect();
                        store
                            .put_persons(&batch, WriteMode::Create)
                            .expect("persons");
                        store
                            .append_audit(lookup(1000 * (w + 1) + n))
                            .expect("audit");
                    }
                })
            })
            .collect();
        let mut backups = Vec::new();
        while backups.len() < 2 || (backups.len() < 6 && !writers.iter().all(|w| w.is_finished())) {
            let path = dir.path().join(format!("backup-{}.pwb", backups.len()));
            write_file(&store, &path);
            backups.push(path);
        }
        for writer in writers {
            writer.join().expect("writer");
        }
        for (round, path) in backups.iter().enumerate() {
            let target = dir.path().join(format!("restored-{round}/store"));
            let report = Store::restore_backup(path, &target, &StoreOptions::default(), false)
                .expect("restore");
            assert!(
                report.clean(),
                "backup {round}: {} problem(s), first {:?}; audit: {}",
                report.problems.len(),
                report.problems.first(),
                report.audit.detail
            );
        }
    }
}
