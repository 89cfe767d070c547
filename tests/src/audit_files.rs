//! The audit log's files as someone with the disk sees them, for tests that
//! tamper with a stopped node's log. Format (`patchwork-store`'s
//! `audit::log`): `PWAUDSEG`, the first entry's index (8 bytes), then per
//! entry its length (u32 BE), CRC-32 (u32 BE) and body.

use std::path::{Path, PathBuf};

/// The first (in these tests, only) segment of the store in `store_dir`.
pub fn segment_path(store_dir: &Path) -> PathBuf {
    store_dir
        .join("audit-log")
        .join(format!("seg-{:020}.log", 0))
}

/// A segment's records: each one's offset in the file and its body.
pub fn records(segment: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut at = 16;
    let mut out = Vec::new();
    while at + 8 <= segment.len() {
        let len = u32::from_be_bytes(segment[at..at + 4].try_into().expect("4 bytes")) as usize;
        out.push((at, segment[at + 8..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    out
}

/// Rewrites the segment of the (closed) store in `store_dir` from its
/// entries' bodies after `change`, each record with a valid checksum, so
/// only the tree can tell.
pub fn rewrite_segment(store_dir: &Path, change: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let path = segment_path(store_dir);
    let bytes = std::fs::read(&path).expect("read segment");
    let mut bodies: Vec<Vec<u8>> = records(&bytes).into_iter().map(|(_, b)| b).collect();
    change(&mut bodies);
    let mut out = bytes[..16].to_vec();
    for body in &bodies {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        out.extend_from_slice(body);
    }
    std::fs::write(&path, out).expect("write segment");
}

/// Makes an audit archive whose bytes were changed at `at` (inside one
/// entry's body) look intact again to everything but the tree: that
/// record's CRC-32 and the file's SHA-256 recomputed, as a forger with the
/// file (but not the node's key) could.
pub fn reseal_archive(bytes: &mut [u8], at: usize) {
    let word = |b: &[u8], from: usize| u32::from_be_bytes(b[from..from + 4].try_into().expect("4"));
    let prefix_hashes = usize::from(bytes[25]);
    let header_at = 26 + 32 * prefix_hashes;
    let mut record = header_at + 4 + word(bytes, header_at) as usize;
    let content_len = bytes.len() - 32;
    while record < content_len {
        let len = word(bytes, record) as usize;
        let body = record + 8..record + 8 + len;
        if body.contains(&at) {
            let crc = crc32fast::hash(&bytes[body]);
            bytes[record + 4..record + 8].copy_from_slice(&crc.to_be_bytes());
            break;
        }
        record += 8 + len;
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes[..content_len]);
    bytes[content_len..].copy_from_slice(digest.as_ref());
}

/// An audit archive with its first `drop` entries cut off, made to look
/// whole: the hashes of the dropped entries' perfect subtrees put where the
/// file keeps the hashes before its start, so its entries still give the
/// root its last checkpoint signed; the SHA-256 recomputed. What an insider
/// who wants entries gone from an archive would try.
pub fn forge_archive_start(bytes: &[u8], drop: u64) -> Vec<u8> {
    let word = |from: usize| u64::from_be_bytes(bytes[from..from + 8].try_into().expect("8"));
    assert_eq!(
        word(9),
        0,
        "forges an archive that starts at the first entry"
    );
    let prefix_hashes = usize::from(bytes[25]);
    let header_at = 26 + 32 * prefix_hashes;
    let header_len =
        u32::from_be_bytes(bytes[header_at..header_at + 4].try_into().expect("4")) as usize;
    let records_at = header_at + 4 + header_len;
    let content_len = bytes.len() - 32;
    let mut leaves = Vec::new();
    let mut at = records_at;
    let mut kept_from = records_at;
    while at < content_len {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        if (leaves.len() as u64) < drop {
            leaves.push(tlog_tiles::record_hash(&bytes[at + 8..at + 8 + len]));
            kept_from = at + 8 + len;
        }
        at += 8 + len;
    }
    fn perfect(leaves: &[tlog_tiles::Hash]) -> tlog_tiles::Hash {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let (left, right) = leaves.split_at(leaves.len() / 2);
        tlog_tiles::node_hash(perfect(left), perfect(right))
    }
    let mut pieces = Vec::new();
    let mut start = 0usize;
    for level in (0..64u32).rev() {
        if drop & (1 << level) != 0 {
            let size = 1usize << level;
            pieces.push(perfect(&leaves[start..start + size]));
            start += size;
        }
    }
    let mut out = bytes[..9].to_vec();
    out.extend_from_slice(&drop.to_be_bytes());
    out.extend_from_slice(&bytes[17..25]);
    out.push(pieces.len() as u8);
    for piece in &pieces {
        out.extend_from_slice(&piece.0);
    }
    out.extend_from_slice(&bytes[header_at..records_at]);
    out.extend_from_slice(&bytes[kept_from..content_len]);
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    out
}
