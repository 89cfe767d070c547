//! The last successful import of each kind, kept in `meta`
//! (`import/last/<kind>`) so `stats` and the metrics can show it across
//! restarts, and a nightly import that failed (or never ran) can be
//! alerted on.

use serde::{Deserialize, Serialize};

use super::{Kind, Store, StoreError, decode, encode};

const LAST_IMPORT: &str = "import/last/";

/// The record kinds an import can hold, in the order `stats` lists them.
pub const IMPORT_KINDS: [Kind; 4] = [
    Kind::Organisation,
    Kind::Practitioner,
    Kind::Person,
    Kind::Involvement,
];

/// What the last applied import of a kind did, and when it finished.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastImport {
    pub at_unix_seconds: i64,
    pub rows: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    /// Rows skipped as bad (only with `skip_bad_rows`).
    pub bad_rows: u64,
}

fn key(kind: Kind) -> String {
    format!("{LAST_IMPORT}{kind}")
}

impl Store {
    /// Records an applied import of `kind`; durable with the next flush,
    /// which the import waits for before it answers.
    pub fn record_import(&self, kind: Kind, last: &LastImport) -> Result<(), StoreError> {
        let _writing = self.writing();
        self.meta.insert(key(kind), encode(kind, last)?)?;
        Ok(())
    }

    /// The last applied import of each kind that ever had one.
    pub fn last_imports(&self) -> Result<Vec<(Kind, LastImport)>, StoreError> {
        let mut found = Vec::new();
        for kind in IMPORT_KINDS {
            if let Some(bytes) = self.meta.get(key(kind))? {
                found.push((kind, decode(kind, &bytes)?));
            }
        }
        Ok(found)
    }
}
