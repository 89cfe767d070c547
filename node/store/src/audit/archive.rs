//! Audit archive files: the entries audit retention removes from the log,
//! sealed with what proves them, so a data-protection officer can still
//! answer for them years later without the node (`patchwork audit archive
//! FILE --key KEY`).
//!
//! A file (written by `SegmentLog::write_archive`, read here):
//! - `PWAUDARC`, the format (1), the index of its first entry and the index
//!   after its last (u64 BE each);
//! - the hashes of the tree's maximal perfect subtrees before its first
//!   entry, left to right (a count byte, then 32 bytes each): with the
//!   entries' own hashes they give the tree's root after its last entry;
//! - a JSON header ([`ArchiveHeader`]): which node, when, by which rule, and
//!   the node's signed checkpoints of its log at the archive's last entry
//!   and (unless it starts at the first) just before its first;
//! - the entries' records exactly as the segments held them (length u32 BE,
//!   CRC-32 u32 BE, body);
//! - the SHA-256 of everything before it.
//!
//! So a file checks itself three ways: its SHA-256 (a damaged copy), each
//! record's CRC, and the roots against the checkpoints the node signed: the
//! hashes before its first entry must give the root signed at that size,
//! and with its entries the root signed at its last, so no entry can be
//! changed, added, or dropped from either end without the node's key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;

use super::{AuditEntry, decode_body};

use super::log::{ARCHIVE_FORMAT as FORMAT, ARCHIVE_MAGIC as MAGIC};
/// The SHA-256 at the end.
const DIGEST_LEN: usize = 32;
/// A header is a checkpoint and a few names: a longer one is damage.
const MAX_HEADER_LEN: usize = 1 << 16;

/// What an archive file says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveHeader {
    /// The node whose log the entries were in.
    pub node: String,
    /// When they were sealed (Unix milliseconds).
    pub sealed_unix_ms: i64,
    /// The rule that archived them, in the config's words.
    pub rule: String,
    /// The node's signed checkpoint (C2SP signed note) of its log at the
    /// archive's last entry.
    pub checkpoint: String,
    /// Its signed checkpoint of the log just before the archive's first
    /// entry; empty when that is the log's first entry.
    #[serde(default)]
    pub checkpoint_before: String,
}

/// An archive file read and checked against itself.
#[derive(Debug, Clone)]
pub struct AuditArchive {
    pub path: PathBuf,
    /// Its entries are `first_seq..=last_seq`.
    pub first_seq: u64,
    pub last_seq: u64,
    pub header: ArchiveHeader,
    /// The tree's root over the log's first `last_seq` entries, computed
    /// from the file: what the checkpoint must say.
    pub root: [u8; 32],
    /// The root over the entries before `first_seq`, from the hashes the
    /// file carries: what `checkpoint_before` must say (`None` when the
    /// archive starts at the first entry).
    pub root_before: Option<[u8; 32]>,
    pub sha256: [u8; 32],
    /// Its entries, decoded, in order.
    pub entries: Vec<AuditEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an intact audit archive: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// Reads the archive at `path` and checks its SHA-256, every record's
/// checksum and every entry's encoding, and computes the root its entries
/// give. The checkpoint's signature is the caller's to check (it needs the
/// node's key), against [`AuditArchive::root`].
pub fn read_audit_archive(path: &Path) -> Result<AuditArchive, ArchiveError> {
    let invalid = |detail: String| ArchiveError::Invalid {
        path: path.to_owned(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|source| ArchiveError::Io {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() < MAGIC.len() + 1 + 16 + 1 + 4 + DIGEST_LEN || &bytes[..8] != MAGIC {
        return Err(invalid("it does not start as one".to_owned()));
    }
    let (content, trailer) = bytes.split_at(bytes.len() - DIGEST_LEN);
    let digest = ring::digest::digest(&ring::digest::SHA256, content);
    if digest.as_ref() != trailer {
        return Err(invalid(
            "its SHA-256 does not match: the file was damaged or changed after it was sealed"
                .to_owned(),
        ));
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(trailer);
    let mut cursor = Cursor {
        bytes: content,
        at: MAGIC.len(),
    };
    let ends_early = || invalid("it ends early".to_owned());
    let format = cursor.take(1).ok_or_else(ends_early)?[0];
    if format != FORMAT {
        return Err(invalid(format!(
            "it is in format {format}, which this version does not read"
        )));
    }
    let first = cursor.word().ok_or_else(ends_early)?;
    let end = cursor.word().ok_or_else(ends_early)?;
    if end <= first {
        return Err(invalid(format!("it claims entries {first} to {end}")));
    }
    let prefix_count = usize::from(cursor.take(1).ok_or_else(ends_early)?[0]);
    let mut pieces: Vec<(u64, Hash)> = Vec::with_capacity(prefix_count + 64);
    let mut covered = 0u64;
    for _ in 0..prefix_count {
        let hash = Hash(cursor.hash().ok_or_else(ends_early)?);
        if covered >= first {
            return Err(invalid(format!(
                "its {prefix_count} hashes are more than the {first} entries before it need"
            )));
        }
        // The pieces are the binary digits of `first`, largest first.
        let size = 1u64 << (63 - (first - covered).leading_zeros());
        pieces.push((size, hash));
        covered += size;
    }
    if covered != first {
        return Err(invalid(format!(
            "its {prefix_count} hashes do not cover the {first} entries before it"
        )));
    }
    let root_before = (first > 0).then(|| fold_root(pieces.iter().map(|(_, hash)| *hash)).0);
    let header_len = cursor.take(4).ok_or_else(ends_early)?;
    let header_len =
        u32::from_be_bytes([header_len[0], header_len[1], header_len[2], header_len[3]]);
    if header_len as usize > MAX_HEADER_LEN {
        return Err(invalid(format!("its header claims {header_len} bytes")));
    }
    let header: ArchiveHeader =
        serde_json::from_slice(cursor.take(header_len as usize).ok_or_else(ends_early)?)
            .map_err(|e| invalid(format!("its header: {e}")))?;
    let mut entries = Vec::new();
    for index in first..end {
        let seq = index + 1;
        let record = cursor.take(8).ok_or_else(ends_early)?;
        let len = u32::from_be_bytes([record[0], record[1], record[2], record[3]]);
        let crc = u32::from_be_bytes([record[4], record[5], record[6], record[7]]);
        if len == 0 || len > super::log::MAX_BODY_LEN {
            return Err(invalid(format!("entry {seq} claims {len} bytes")));
        }
        let body = cursor.take(len as usize).ok_or_else(ends_early)?;
        if crc32fast::hash(body) != crc {
            return Err(invalid(format!("entry {seq}'s checksum does not match")));
        }
        let entry = decode_body(seq, body).map_err(|why| invalid(format!("entry {seq}: {why}")))?;
        entries.push(entry);
        // Extend the compact range by one leaf.
        pieces.push((1, tlog_tiles::record_hash(body)));
        while let [.., (left_size, left), (right_size, right)] = pieces[..]
            && left_size == right_size
        {
            pieces.truncate(pieces.len() - 2);
            pieces.push((left_size * 2, tlog_tiles::node_hash(left, right)));
        }
    }
    if cursor.at != content.len() {
        return Err(invalid(format!(
            "{} bytes follow its last entry",
            content.len() - cursor.at
        )));
    }
    let root = fold_root(pieces.into_iter().map(|(_, hash)| hash));
    Ok(AuditArchive {
        path: path.to_owned(),
        first_seq: first + 1,
        last_seq: end,
        header,
        root: root.0,
        root_before,
        sha256,
        entries,
    })
}

/// The RFC 6962 root of a tree given as its maximal perfect subtrees, left
/// to right (largest first): folded from the right.
fn fold_root(pieces: impl DoubleEndedIterator<Item = Hash>) -> Hash {
    pieces
        .rev()
        .reduce(|right, left| tlog_tiles::node_hash(left, right))
        .unwrap_or(tlog_tiles::EMPTY_HASH)
}

/// Reads an archive's bytes in order.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let part = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(part)
    }

    fn word(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn hash(&mut self) -> Option<[u8; 32]> {
        self.take(32)?.try_into().ok()
    }
}

/// Segments one archive holds at most (1 GiB at 64 MiB each): the first
/// run on years of log seals them over several days, in files a records
/// store takes.
const MAX_ARCHIVE_SEGMENTS: usize = 16;

/// What audit retention would archive now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditArchivePlan {
    /// Entries `first_seq..=last_seq` are due: whole closed segments whose
    /// last entry is older than the cutoff.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The time of the last of them (Unix milliseconds).
    pub last_at_unix_ms: i64,
    /// Why entries that are due are kept back (a witness has not yet
    /// cosigned past them), when they are.
    pub held_back: Option<String>,
}

impl crate::Store {
    /// Plans audit retention: the closed segments, from the first still in
    /// the log, whose last entry is older than `cutoff_unix_ms` (at most
    /// [`MAX_ARCHIVE_SEGMENTS`]; the next run takes the next), but not
    /// past the last checkpoint any witness cosigned since the cutoff (its
    /// next round asks for a consistency proof from there, which needs the
    /// entries after it). `None` when nothing is due.
    pub fn audit_archive_plan(
        &self,
        cutoff_unix_ms: i64,
    ) -> Result<Option<AuditArchivePlan>, crate::StoreError> {
        use crate::witness::WitnessRecord;
        use patchwork_federation::checkpoint::SignedCheckpoint;
        let log = &self.audit.log;
        let archived = log.archived();
        let mut due: Option<(u64, i64)> = None;
        let mut boundaries = Vec::new();
        for (_, end) in log.closed_segments() {
            let last = self.audit_entry(end)?.ok_or_else(|| {
                super::corrupt(format!("entry {end} is missing from its segment"))
            })?;
            if last.at_unix_ms >= cutoff_unix_ms || boundaries.len() == MAX_ARCHIVE_SEGMENTS {
                break;
            }
            boundaries.push(end);
            due = Some((end, last.at_unix_ms));
        }
        let Some((mut end, mut last_at)) = due else {
            return Ok(None);
        };
        let mut held_back = None;
        for (witness, note) in self.witness_records(WitnessRecord::Cosigned)? {
            let Ok(signed) = SignedCheckpoint::parse(&note) else {
                continue;
            };
            let size = signed.checkpoint.size;
            let recent = signed.checkpoint.time_unix.saturating_mul(1000) >= cutoff_unix_ms;
            if recent && size < end {
                let allowed = boundaries.iter().copied().filter(|&b| b <= size).max();
                held_back = Some(format!(
                    "entries {} to {end} are due, but witness {witness} last cosigned a \
                     checkpoint of {size} entries: they are archived once it has cosigned a \
                     later one",
                    allowed.unwrap_or(archived) + 1
                ));
                end = allowed.unwrap_or(archived);
            }
        }
        if end <= archived {
            return Ok(held_back.map(|why| AuditArchivePlan {
                first_seq: archived + 1,
                last_seq: archived,
                last_at_unix_ms: 0,
                held_back: Some(why),
            }));
        }
        if held_back.is_some() {
            last_at = self
                .audit_entry(end)?
                .map_or(last_at, |entry| entry.at_unix_ms);
        }
        Ok(Some(AuditArchivePlan {
            first_seq: archived + 1,
            last_seq: end,
            last_at_unix_ms: last_at,
            held_back,
        }))
    }

    /// Seals the entries `plan` names into a new archive file in `folder`
    /// (created 0700 if missing; the file 0600), carrying `header`. The
    /// log does not change: [`crate::Store::prune_audit_archived`] removes
    /// the entries once their archiving is itself audited. If the file is
    /// already there (a run stopped before it pruned) and holds exactly
    /// these entries, it is kept as it is, so the SHA-256 an earlier
    /// `AuditArchived` entry named stays true; one that does not is moved
    /// aside (`.rejected-<time>`) and written again.
    pub fn seal_audit_archive(
        &self,
        plan: &AuditArchivePlan,
        folder: &Path,
        header: &ArchiveHeader,
    ) -> Result<super::ArchiveRecord, crate::StoreError> {
        if plan.first_seq != self.audit.log.archived() + 1 || plan.last_seq < plan.first_seq {
            return Err(super::corrupt(format!(
                "entries {} to {} are not the next to archive",
                plan.first_seq, plan.last_seq
            )));
        }
        let created = !folder.exists();
        crate::data_dir::create_private(folder)
            .map_err(|e| crate::StoreError::File(std::io::Error::other(e.to_string())))?;
        if created && let Some(parent) = folder.parent() {
            // The folder's own name must survive a power cut too.
            std::fs::File::open(parent)?.sync_all()?;
        }
        let file = format!("audit-{:020}-{:020}.pwar", plan.first_seq, plan.last_seq);
        let path = folder.join(&file);
        if path.exists() {
            match read_audit_archive(&path) {
                Ok(found)
                    if found.first_seq == plan.first_seq
                        && found.last_seq == plan.last_seq
                        && found.root == self.audit_root(plan.last_seq)? =>
                {
                    return Ok(super::ArchiveRecord {
                        file,
                        first_seq: plan.first_seq,
                        last_seq: plan.last_seq,
                        sha256: hex::encode(found.sha256),
                        bytes: std::fs::metadata(&path)?.len(),
                        checkpoint: found.header.checkpoint,
                        sealed_unix_ms: found.header.sealed_unix_ms,
                    });
                }
                _ => {
                    let aside = path.with_extension(format!("rejected-{}", super::now_unix_ms()));
                    tracing::warn!(file = %path.display(), aside = %aside.display(), "an audit archive of these entries was there but does not hold them; moved aside");
                    std::fs::rename(&path, &aside)?;
                }
            }
        }
        let json = serde_json::to_vec(header).map_err(|e| super::corrupt(e.to_string()))?;
        let (sha256, bytes) = self.audit.log.write_archive(plan.last_seq, &path, &json)?;
        Ok(super::ArchiveRecord {
            file,
            first_seq: plan.first_seq,
            last_seq: plan.last_seq,
            sha256: hex::encode(sha256),
            bytes,
            checkpoint: header.checkpoint.clone(),
            sealed_unix_ms: header.sealed_unix_ms,
        })
    }

    /// Removes the entries `record` archived from the log (see
    /// `log::SegmentLog::prune`).
    pub fn prune_audit_archived(
        &self,
        record: super::ArchiveRecord,
    ) -> Result<(), crate::StoreError> {
        let _no_backup = self.audit.prune_gate.write();
        self.audit.log.prune(record.last_seq, record)
    }

    /// How many entries from the first were archived, and the archives.
    pub fn audit_archived(&self) -> (u64, Vec<super::ArchiveRecord>) {
        (self.audit.log.archived(), self.audit.log.archives())
    }
}

#[cfg(any(test, feature = "fixtures"))]
impl crate::Store {
    /// Appends `events` stamped `at_unix_ms` (a history older than the
    /// test), durably. Tests only: a node stamps entries with its clock.
    pub fn fixture_append_audit_at(
        &self,
        events: &[super::AuditEvent],
        at_unix_ms: i64,
    ) -> Result<Vec<AuditEntry>, crate::StoreError> {
        let entries = self.append_audit_batch(events, at_unix_ms)?;
        self.audit.sync()?;
        Ok(entries)
    }

    /// Closes the audit log's segment now (its length must be a whole
    /// number of blocks) rather than at 64 MiB, so tests can archive small
    /// segments.
    pub fn fixture_close_audit_segment(&self) -> Result<(), crate::StoreError> {
        self.audit.log.close_segment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use crate::audit::AuditEvent;

    const DAY_MS: i64 = 86_400_000;

    fn asked(n: u64, person: &str) -> AuditEvent {
        AuditEvent::PeerAsked {
            request_id: format!("R-{n}"),
            peer: "spiffe://vic.patchwork.au/node/melbourne".into(),
            requester_practitioner_id: "PR-9".into(),
            requester_name: "Dr Ruth Okafor".into(),
            requester_role: "GP".into(),
            requester_organisation: "Melbourne clinic".into(),
            lawful_basis: None,
            reason: "routine check".into(),
            outcome: "matched".into(),
            refusal: None,
            person_id: Some(person.into()),
            disclosed_involvement_ids: vec![],
        }
    }

    /// A store whose log holds two closed segments of 512 entries each,
    /// written `age_days` ago, and 100 entries of today.
    fn store_with_history(dir: &Path, age_days: i64) -> Store {
        let store = Store::open(dir, &Default::default()).expect("open");
        let then = super::super::now_unix_ms() - age_days * DAY_MS;
        for segment in 0..2u64 {
            let events: Vec<AuditEvent> = (0..512)
                .map(|n| asked(segment * 512 + n, if n % 2 == 0 { "P-1" } else { "P-2" }))
                .collect();
            store
                .fixture_append_audit_at(&events, then + segment as i64)
                .expect("append");
            store.fixture_close_audit_segment().expect("close");
        }
        let today: Vec<AuditEvent> = (0..100).map(|n| asked(2_000 + n, "P-1")).collect();
        store
            .fixture_append_audit_at(&today, super::super::now_unix_ms())
            .expect("append");
        store
    }

    fn header() -> ArchiveHeader {
        ArchiveHeader {
            node: "spiffe://surrey.patchwork.uk/node/surrey".into(),
            sealed_unix_ms: 1,
            rule: "retention.audit_years: 6 years".into(),
            checkpoint: "a signed note".into(),
            checkpoint_before: String::new(),
        }
    }

    #[test]
    fn archived_entries_leave_the_log_for_a_file_that_proves_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_history(&dir.path().join("store"), 400);
        let then = store
            .audit_entry(1)
            .expect("read")
            .expect("entry")
            .at_unix_ms;
        // Nothing is due at a cutoff before the history.
        assert_eq!(store.audit_archive_plan(then - DAY_MS).expect("plan"), None);
        let len_root = store.audit_root(1_124).expect("root");
        let folder = dir.path().join("archive");
        let audited = |record: &crate::audit::ArchiveRecord| {
            let event = crate::audit::AuditEvent::AuditArchived {
                trigger: "test".into(),
                rule: "retention.audit_years: 1 years".into(),
                first_seq: record.first_seq,
                last_seq: record.last_seq,
                file: record.file.clone(),
                sha256: record.sha256.clone(),
            };
            store
                .fixture_append_audit_at(&[event], super::super::now_unix_ms())
                .expect("audit");
        };

        // The first segment only: its last entry is older than the cutoff,
        // the second's is not.
        let plan = store
            .audit_archive_plan(then + 1)
            .expect("plan")
            .expect("due");
        assert_eq!(
            (plan.first_seq, plan.last_seq, plan.held_back.clone()),
            (1, 512, None)
        );
        let record = store
            .seal_audit_archive(&plan, &folder, &header())
            .expect("seal");
        // Sealing changes nothing in the log; sealing again keeps the file
        // (its SHA-256 may be in the log already).
        assert_eq!(store.audit_entry(1).expect("read").map(|e| e.seq), Some(1));
        let again = store
            .seal_audit_archive(&plan, &folder, &header())
            .expect("seal");
        assert_eq!(again, record);
        let path = folder.join(&record.file);
        let archive = read_audit_archive(&path).expect("archive reads");
        assert_eq!((archive.first_seq, archive.last_seq), (1, 512));
        assert_eq!(archive.root, store.audit_root(512).expect("root"));
        assert_eq!(archive.root_before, None);
        assert_eq!(archive.header, header());
        assert_eq!(hex::encode(archive.sha256), record.sha256);
        assert_eq!(archive.entries.len(), 512);
        assert_eq!(archive.entries[5].event, asked(5, "P-2"));

        // Pruned without the log saying so: `audit verify` says they were
        // removed. Audited, they verify.
        store.prune_audit_archived(record.clone()).expect("prune");
        let verified = store.verify_audit().expect("verify");
        assert!(!verified.intact);
        assert!(
            verified.detail.contains("no AuditArchived entry"),
            "{}",
            verified.detail
        );
        audited(&record);
        let verified = store.verify_audit().expect("verify");
        assert!(verified.intact, "{}", verified.detail);

        // Then the second: the file carries the hashes before it, which
        // give the root at its start.
        let cutoff = super::super::now_unix_ms() - 365 * DAY_MS;
        let plan = store
            .audit_archive_plan(cutoff)
            .expect("plan")
            .expect("due");
        assert_eq!((plan.first_seq, plan.last_seq), (513, 1_024));
        let second = store
            .seal_audit_archive(&plan, &folder, &header())
            .expect("seal");
        let archive = read_audit_archive(&folder.join(&second.file)).expect("archive reads");
        assert_eq!(archive.root, store.audit_root(1_024).expect("root"));
        assert_eq!(
            archive.root_before,
            Some(store.audit_root(512).expect("root"))
        );
        audited(&second);
        store.prune_audit_archived(second.clone()).expect("prune");
        assert_eq!(store.audit_archived(), (1_024, vec![record, second]));
        assert!(matches!(
            store.audit_entry(3),
            Err(crate::StoreError::Archived {
                seq: 3,
                archived: 1_024
            })
        ));
        // The tree is the same tree; reports skip what went.
        assert_eq!(store.audit_root(1_124).expect("root"), len_root);
        assert_eq!(store.audit_for_person("P-1").expect("report").len(), 100);
        let verified = store.verify_audit().expect("verify");
        assert!(verified.intact, "{}", verified.detail);
        assert_eq!(
            (verified.entries, verified.archived_entries),
            (1_126, 1_024)
        );
        assert!(
            verified.detail.contains("entries 1 to 1024 were archived"),
            "{}",
            verified.detail
        );
        assert_eq!(store.audit_archive_plan(cutoff).expect("plan"), None);

        // A changed byte anywhere in the file is caught.
        let bytes = std::fs::read(&path).expect("read");
        for at in [10, 200, bytes.len() / 2, bytes.len() - 1] {
            let mut changed = bytes.clone();
            changed[at] ^= 0x20;
            let copy = dir.path().join("changed.pwar");
            std::fs::write(&copy, &changed).expect("write");
            let refused = read_audit_archive(&copy).expect_err("refused");
            assert!(refused.to_string().contains("SHA-256"), "{refused}");
        }

        // A backup carries the tree over the archived entries; its restore
        // continues it, verified.
        let backup = dir.path().join("store.backup");
        let mut out = std::fs::File::create(&backup).expect("create");
        store
            .write_backup(&mut out, "spiffe://surrey")
            .expect("backup");
        drop(store);
        let restored = dir.path().join("restored");
        let report =
            Store::restore_backup(&backup, &restored, &Default::default(), false).expect("restore");
        assert!(report.audit.intact, "{}", report.audit.detail);
        assert_eq!(
            (report.audit.entries, report.audit.archived_entries),
            (1_126, 1_024)
        );
        let store = Store::open(&restored, &Default::default()).expect("open");
        assert_eq!(store.audit_root(1_124).expect("root"), len_root);
        assert_eq!(store.audit_for_person("P-1").expect("report").len(), 100);
        assert!(store.verify_audit().expect("verify").intact);
    }

    #[test]
    fn a_witness_that_has_not_cosigned_past_them_holds_entries_back() {
        use crate::witness::WitnessRecord;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_with_history(&dir.path().join("store"), 400);
        let cutoff = super::super::now_unix_ms() - 365 * DAY_MS;
        use patchwork_federation::checkpoint::SigningKey;
        let pkcs8 = SigningKey::generate().expect("key");
        let key = SigningKey::from_pkcs8("surrey.patchwork.uk/audit", &pkcs8).expect("key");
        let checkpoint = patchwork_federation::checkpoint::Checkpoint {
            origin: "surrey.patchwork.uk/audit".into(),
            size: 700,
            root: store.audit_root(700).expect("root"),
            time_unix: super::super::now_unix_ms() / 1000 - 3_600,
        };
        store
            .put_witness_record(
                WitnessRecord::Cosigned,
                "spiffe://brighton",
                &key.sign(&checkpoint),
            )
            .expect("record");
        let plan = store
            .audit_archive_plan(cutoff)
            .expect("plan")
            .expect("due");
        assert_eq!((plan.first_seq, plan.last_seq), (1, 512));
        let why = plan.held_back.expect("held back");
        assert!(
            why.contains("spiffe://brighton") && why.contains("700"),
            "{why}"
        );
    }
}
