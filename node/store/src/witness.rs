//! What this node keeps of audit-log checkpoints, its own and its peers',
//! for witnessing (see `patchwork_federation::checkpoint`), in the
//! `witness` tree:
//! - `pin \0 <peer identity>` → the peer's verifier key, pinned the first
//!   time the peer showed it (a changed key is refused, never re-pinned);
//! - `seen \0 <peer identity>` → the latest checkpoint of the peer's log
//!   this node verified (consistent with the one before) and cosigned;
//! - `cosigned \0 <witness identity>` → the latest checkpoint of this node's
//!   own log that witness cosigned: what `audit verify` holds the log to;
//! - `alarm \0 <peer identity> \0 <unix ms>` → what a witness round found
//!   wrong with a peer's log, and the checkpoint and proof it was shown.
//!
//! Values are the notes and keys as text, exactly as received: checking
//! them again later never depends on re-encoding.

use crate::{Store, StoreError, prefix_key};

/// The kinds of record in the `witness` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitnessRecord {
    /// A peer's verifier key.
    Pin,
    /// The latest checkpoint of a peer's log verified here.
    Seen,
    /// The latest checkpoint of this node's log a witness cosigned.
    Cosigned,
}

impl WitnessRecord {
    fn prefix(self) -> &'static [u8] {
        match self {
            WitnessRecord::Pin => b"pin",
            WitnessRecord::Seen => b"seen",
            WitnessRecord::Cosigned => b"cosigned",
        }
    }

    fn key(self, peer: &str) -> Vec<u8> {
        let mut key = prefix_key(self.prefix());
        key.extend_from_slice(peer.as_bytes());
        key
    }
}

/// One alarm a witness round raised about a peer's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessAlarm {
    pub peer: String,
    pub at_unix_ms: i64,
    /// What was found, then the evidence (checkpoints, proof).
    pub detail: String,
}

const ALARM: &[u8] = b"alarm";
/// Alarms kept a peer: the latest.
pub const MAX_ALARMS_PER_PEER: usize = 32;
/// An alarm's text (finding and evidence) is cut to this.
pub const MAX_ALARM_BYTES: usize = 64 * 1024;

fn text(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
        kind: crate::Kind::AuditEntry,
        detail: "a witness record is not text".into(),
    })
}

impl Store {
    /// The record of `kind` for `peer`.
    pub fn witness_record(
        &self,
        kind: WitnessRecord,
        peer: &str,
    ) -> Result<Option<String>, StoreError> {
        self.witness
            .get(kind.key(peer))?
            .map(|v| text(&v))
            .transpose()
    }

    /// Sets the record of `kind` for `peer` (durable at the next flush).
    pub fn put_witness_record(
        &self,
        kind: WitnessRecord,
        peer: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        self.witness.insert(kind.key(peer), value.as_bytes())?;
        Ok(())
    }

    /// Every record of `kind`: (peer, value).
    pub fn witness_records(
        &self,
        kind: WitnessRecord,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = prefix_key(kind.prefix());
        self.witness
            .scan_prefix(&prefix)
            .map(|item| {
                let (key, value) = item?;
                Ok((text(&key[prefix.len()..])?, text(&value)?))
            })
            .collect()
    }

    /// Pins `key` for `peer` unless one is pinned: `Ok(None)` if `key` is
    /// (now) the pinned one, `Ok(Some(pinned))` if another is. One
    /// compare-and-swap, so two callers can never pin two keys.
    pub fn pin_witness_key(&self, peer: &str, key: &str) -> Result<Option<String>, StoreError> {
        let record = WitnessRecord::Pin.key(peer);
        match self
            .witness
            .compare_and_swap(&record, None as Option<&[u8]>, Some(key.as_bytes()))?
        {
            Ok(()) => Ok(None),
            Err(current) => {
                let pinned = current.current.map(|v| text(&v)).transpose()?;
                Ok(pinned.filter(|pinned| pinned != key))
            }
        }
    }

    /// Keeps what a witness round found wrong with `peer`'s log: at most
    /// [`MAX_ALARMS_PER_PEER`] a peer (the oldest go), each cut to
    /// [`MAX_ALARM_BYTES`], so a peer failing every round cannot fill the
    /// disk.
    pub fn add_witness_alarm(&self, peer: &str, detail: &str) -> Result<(), StoreError> {
        let mut prefix = prefix_key(ALARM);
        prefix.extend_from_slice(&prefix_key(peer.as_bytes()));
        let mut key = prefix.clone();
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        key.extend_from_slice(&i64::try_from(now_ms).unwrap_or(i64::MAX).to_be_bytes());
        let mut cut = MAX_ALARM_BYTES.min(detail.len());
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        self.witness.insert(key, &detail.as_bytes()[..cut])?;
        let kept: Vec<_> = self
            .witness
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()?;
        for old in kept
            .iter()
            .take(kept.len().saturating_sub(MAX_ALARMS_PER_PEER))
        {
            self.witness.remove(old)?;
        }
        Ok(())
    }

    /// Every alarm kept, oldest first for each peer.
    pub fn witness_alarms(&self) -> Result<Vec<WitnessAlarm>, StoreError> {
        let prefix = prefix_key(ALARM);
        let mut alarms = Vec::new();
        for item in self.witness.scan_prefix(&prefix) {
            let (key, value) = item?;
            let rest = &key[prefix.len()..];
            let Some(split) = rest.iter().position(|&b| b == 0) else {
                continue;
            };
            let at = <[u8; 8]>::try_from(&rest[split + 1..])
                .map(i64::from_be_bytes)
                .unwrap_or(0);
            alarms.push(WitnessAlarm {
                peer: text(&rest[..split])?,
                at_unix_ms: at,
                detail: text(&value)?,
            });
        }
        Ok(alarms)
    }
}
