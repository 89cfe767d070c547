//! The audit log as versions before the Merkle log kept it: a hash chain in
//! sled's `audit` tree (`seq` → a format byte 1, `seq`, `at_unix_ms`,
//! `prev_hash`, `hash`, the event's postcard bytes; `hash = SHA-256(tag ||
//! prev_hash || seq || at_unix_ms || event)`) with its head in `meta`.
//! Read once, at the first start of a newer binary, to move the entries
//! into the segment log; the chain is verified as they go, and what the walk
//! found is written into the new log as its own entry.

use sled::Tree;

use crate::StoreError;

/// Separated the chain's hashes from every other SHA-256 use.
const DOMAIN_TAG: &[u8] = b"patchwork audit entry v1\0";
const ENTRY_FORMAT_V1: u8 = 1;
/// format + seq + at + prev_hash + hash.
const HEADER_LEN: usize = 1 + 8 + 8 + 32 + 32;
/// In `meta`: the last seq and its hash.
pub(super) const HEAD_KEY: &[u8] = b"audit/head";

fn entry_hash(prev_hash: &[u8; 32], seq: u64, at_unix_ms: i64, event: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(DOMAIN_TAG);
    context.update(prev_hash);
    context.update(&seq.to_be_bytes());
    context.update(&at_unix_ms.to_be_bytes());
    context.update(event);
    let mut hash = [0; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// One entry of the old chain, as it goes into the new log.
pub(super) struct OldEntry {
    pub(super) seq: u64,
    pub(super) at_unix_ms: i64,
    pub(super) event: Vec<u8>,
}

/// What the walk of the old chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChainWalk {
    pub(super) entries: u64,
    pub(super) intact: bool,
    pub(super) detail: String,
}

fn word(bytes: &[u8], at: usize) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&bytes[at..at + 8]);
    out
}

fn hash_at(bytes: &[u8], at: usize) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(&bytes[at..at + 32]);
    out
}

/// Walks the old chain from entry 1, handing each entry to `carry` in
/// order (all of them, even past a break: the new log keeps everything the
/// old one held, and the walk's finding says where it broke).
pub(super) fn walk(
    audit: &Tree,
    head: Option<&[u8]>,
    mut carry: impl FnMut(OldEntry) -> Result<(), StoreError>,
) -> Result<ChainWalk, StoreError> {
    let mut prev_hash = [0u8; 32];
    let mut expected = 1u64;
    let mut first_break: Option<String> = None;
    let mut entries = 0u64;
    for item in audit.iter() {
        let (key, value) = item?;
        entries += 1;
        let seq = <[u8; 8]>::try_from(key.as_ref())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let readable = value.first() == Some(&ENTRY_FORMAT_V1) && value.len() >= HEADER_LEN;
        let broke = |why: String, first_break: &mut Option<String>| {
            if first_break.is_none() {
                *first_break = Some(why);
            }
        };
        if seq != expected {
            broke(
                format!("entry {expected} is missing (the next one is {seq})"),
                &mut first_break,
            );
        }
        if !readable {
            broke(format!("entry {seq} is unreadable"), &mut first_break);
            expected = seq + 1;
            // Carried as it is (it will not decode, and verification names
            // it): the new log keeps everything the old one held, in order.
            carry(OldEntry {
                seq,
                at_unix_ms: 0,
                event: value.to_vec(),
            })?;
            continue;
        }
        let stored_seq = u64::from_be_bytes(word(&value, 1));
        let at_unix_ms = i64::from_be_bytes(word(&value, 9));
        let stored_prev = hash_at(&value, 17);
        let stored_hash = hash_at(&value, 49);
        let event = value[HEADER_LEN..].to_vec();
        if stored_seq != seq
            || entry_hash(&stored_prev, stored_seq, at_unix_ms, &event) != stored_hash
        {
            broke(format!("entry {seq} was altered"), &mut first_break);
        } else if stored_prev != prev_hash {
            broke(
                format!("entry {seq} does not follow the entry before it"),
                &mut first_break,
            );
        }
        prev_hash = stored_hash;
        expected = seq + 1;
        carry(OldEntry {
            seq,
            at_unix_ms,
            event,
        })?;
    }
    match head {
        Some(head) if head.len() == 40 => {
            let head_seq = u64::from_be_bytes(word(head, 0));
            if (head_seq != expected - 1 || hash_at(head, 8) != prev_hash) && first_break.is_none()
            {
                first_break = Some(format!(
                    "the chain's head names entry {head_seq}, which the chain does not end with"
                ));
            }
        }
        Some(_) => {
            first_break.get_or_insert_with(|| "the chain's head is unreadable".into());
        }
        None if entries > 0 => {
            first_break.get_or_insert_with(|| "the chain has no head".into());
        }
        None => {}
    }
    Ok(match first_break {
        None => ChainWalk {
            entries,
            intact: true,
            detail: format!("all {entries} entries of the hash chain verified"),
        },
        Some(why) => ChainWalk {
            entries,
            intact: false,
            detail: format!("the hash chain did not verify: {why}"),
        },
    })
}

/// An old-format entry (for tests that build an old store).
#[cfg(test)]
pub(super) fn encode(
    seq: u64,
    at_unix_ms: i64,
    prev_hash: &[u8; 32],
    event: &[u8],
) -> (Vec<u8>, [u8; 32]) {
    let hash = entry_hash(prev_hash, seq, at_unix_ms, event);
    let mut bytes = Vec::with_capacity(HEADER_LEN + event.len());
    bytes.push(ENTRY_FORMAT_V1);
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes.extend_from_slice(&at_unix_ms.to_be_bytes());
    bytes.extend_from_slice(prev_hash);
    bytes.extend_from_slice(&hash);
    bytes.extend_from_slice(event);
    (bytes, hash)
}
