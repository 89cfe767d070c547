//! Keeping the picture fresh: practitioners confirm their involvements are
//! still current, and the node lists those nobody has confirmed for a while.
//!
//! The unconfirmed list is a scan, not an index: of one practitioner's
//! involvements (`involvements_by_practitioner`) when a practitioner is
//! given, else of every involvement. A council's few million involvements
//! scan in seconds, and the list is a periodic chore, not a lookup; an index
//! by `last_confirmed` would have to move on every confirmation.

use super::{
    Kind, Store, StoreError, abort, child_of, decode, prefix_key, tx_decode, tx_encode, tx_error,
};
use crate::model::Date;
use crate::model::Involvement;

/// Why a confirmation was refused (the involvement is left as it was).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmRefusal {
    /// Someone other than the involvement's own practitioner tried.
    NotTheirs,
    Ended,
}

impl Store {
    /// Sets `last_confirmed` of involvement `id` to `today`, if it is current
    /// and `practitioner_id` is its practitioner.
    pub fn confirm_involvement(
        &self,
        id: &str,
        practitioner_id: &str,
        today: Date,
    ) -> Result<Result<Involvement, ConfirmRefusal>, StoreError> {
        let _writing = self.writing();
        self.involvements
            .transaction(|records| {
                let Some(mut involvement): Option<Involvement> =
                    tx_decode(Kind::Involvement, records.get(id.as_bytes())?)?
                else {
                    return abort(StoreError::NotFound {
                        kind: Kind::Involvement,
                        id: id.into(),
                    });
                };
                if involvement.practitioner_id != practitioner_id {
                    return Ok(Err(ConfirmRefusal::NotTheirs));
                }
                if !involvement.is_active() {
                    return Ok(Err(ConfirmRefusal::Ended));
                }
                involvement.last_confirmed = involvement.last_confirmed.max(today);
                records.insert(id.as_bytes(), tx_encode(Kind::Involvement, &involvement)?)?;
                Ok(Ok(involvement))
            })
            .map_err(tx_error)
    }

    /// Current involvements last confirmed on or before `confirmed_by`
    /// (of one practitioner, or everyone's), oldest confirmation first, at
    /// most `limit`; true if there were more.
    pub fn unconfirmed_involvements(
        &self,
        practitioner_id: Option<&str>,
        confirmed_by: Date,
        limit: usize,
    ) -> Result<(Vec<Involvement>, bool), StoreError> {
        let mut found = Vec::new();
        let mut consider = |involvement: Involvement| {
            if involvement.is_active() && involvement.last_confirmed <= confirmed_by {
                found.push(involvement);
            }
        };
        match practitioner_id {
            Some(practitioner_id) => {
                let prefix = prefix_key(practitioner_id.as_bytes());
                for entry in self.involvements_by_practitioner.scan_prefix(&prefix) {
                    let (key, _) = entry?;
                    match self.involvement(&child_of(&key, prefix.len()))? {
                        Some(i) if i.practitioner_id == practitioner_id => consider(i),
                        // Moved to another practitioner since the scan began.
                        Some(_) => {}
                        None => {
                            return Err(StoreError::Corrupt {
                                kind: Kind::Involvement,
                                detail: "index entry without a record".into(),
                            });
                        }
                    }
                }
            }
            None => {
                for entry in self.involvements.iter() {
                    let (_, bytes) = entry?;
                    consider(decode(Kind::Involvement, &bytes)?);
                }
            }
        }
        found.sort_by(|a, b| (a.last_confirmed, &a.id).cmp(&(b.last_confirmed, &b.id)));
        let truncated = found.len() > limit;
        found.truncate(limit);
        Ok((found, truncated))
    }
}
