//! Erasure: a person, and everything this node holds that names them, goes
//! in one transaction (UK GDPR art. 17; Victoria's IPP 4.2). What goes:
//! the record, its `person_index` and `match_index` entries (the blinded
//! keys peers' questions are matched against), the person's involvements
//! with both of their index entries, links both ways, the attention flag,
//! the team events about them with their recipient entries, peers'
//! subscriptions to them and the "followed until" marker those set.
//!
//! What stays: the audit log, which holds ids and what happened, never a
//! name, date of birth or identifier (`audit::AuditEvent`); the erasure
//! itself is one more entry of it, written by the caller before the erasure.
//!
//! sled frees the bytes of removed records, but they stay in its files until
//! it rewrites the segments they sit in: see ARCHITECTURE.md ("Erasure") for
//! what that means and how an operator purges them (backup and restore).

use std::collections::{HashMap, HashSet};

use sled::Transactional;

use super::events::WATCHED;
use super::{
    COUNT_ACTIVE_INVOLVEMENTS, COUNT_INVOLVEMENTS, COUNT_PERSONS, Kind, Store, StoreError,
    add_count, decode, pair_key, pair_key_bytes, person_index_keys, prefix_key, tx_error,
};
use crate::events::TeamEvent;
use crate::model::Involvement;
use crate::subscriptions::Subscription;

/// What an erasure removed (or, planned, would remove), counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub involvements: u64,
    pub links: u64,
    pub team_events: u64,
    pub subscriptions: u64,
    pub attention_flag: bool,
    /// `person_index` and `match_index` entries.
    pub index_entries: u64,
}

impl Erased {
    /// One line each, for the audit entry and the operator: `["3
    /// involvements", ...]`, only what there was.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec!["the person record".to_owned()];
        for (count, what) in [
            (self.involvements, "involvements"),
            (self.links, "family links"),
            (self.team_events, "team events"),
            (self.subscriptions, "peer subscriptions"),
            (self.index_entries, "index entries"),
        ] {
            if count > 0 {
                lines.push(format!("{count} {what}"));
            }
        }
        if self.attention_flag {
            lines.push("the attention flag".to_owned());
        }
        lines
    }
}

/// The outbox's part in an erasure of some persons, by person.
#[derive(Default)]
struct Outbox {
    events: HashMap<String, Vec<TeamEvent>>,
    subscriptions: HashMap<String, Vec<String>>,
}

/// Everything that names one person, read before the transaction.
struct Holdings {
    involvements: Vec<Involvement>,
    others_linked: Vec<Vec<u8>>,
    /// Team events about the person: seq and recipients.
    events: Vec<TeamEvent>,
    subscription_ids: Vec<String>,
    index_keys: Vec<Vec<u8>>,
    match_keys: Vec<Vec<u8>>,
    attention: bool,
}

impl Holdings {
    fn counts(&self) -> Erased {
        Erased {
            involvements: self.involvements.len() as u64,
            links: self.others_linked.len() as u64,
            team_events: self.events.len() as u64,
            subscriptions: self.subscription_ids.len() as u64,
            attention_flag: self.attention,
            index_entries: (self.index_keys.len() + self.match_keys.len()) as u64,
        }
    }
}

impl Store {
    /// What erasing `person_id` would remove, without removing anything.
    /// `NotFound` if the node does not hold the person.
    pub fn erasure_plan(&self, person_id: &str) -> Result<Erased, StoreError> {
        let outbox = self.outbox_of(&[person_id])?;
        Ok(self.holdings(person_id, &outbox)?.counts())
    }

    /// Erases `person_id` and everything naming them, in one transaction
    /// (see the module's comment); `NotFound` if the node does not hold the
    /// person. Callers write the audit entry first and acknowledge after
    /// [`Store::flush`].
    pub fn erase_person(&self, person_id: &str) -> Result<Erased, StoreError> {
        let mut erased = self.erase_persons(&[person_id.to_owned()], |_| true)?;
        match erased.pop() {
            Some((_, Some(counts))) => Ok(counts),
            _ => Err(StoreError::NotFound {
                kind: Kind::Person,
                id: person_id.into(),
            }),
        }
    }

    /// Erases each of `ids` that is still held and for which `still`
    /// holds, given their involvements as they are now (retention asks
    /// that the person is still inactive): a transaction each, the outbox
    /// read once for all. `None` for a person skipped or no longer held.
    pub fn erase_persons(
        &self,
        ids: &[String],
        still: impl Fn(&[Involvement]) -> bool,
    ) -> Result<Vec<(String, Option<Erased>)>, StoreError> {
        // Person writes and team changes hold these, so nothing adds an
        // involvement, event or index entry between the reading and the
        // transactions.
        let _person_writes = self.person_writes.lock();
        let _team = self.team_lock();
        let _writing = self.writing();
        let wanted: Vec<&str> = ids.iter().map(String::as_str).collect();
        let outbox = self.outbox_of(&wanted)?;
        let subscriptions = self.db.open_tree(crate::subscriptions::SUBSCRIPTIONS)?;
        let mut results = Vec::with_capacity(ids.len());
        for person_id in ids {
            let holdings = match self.holdings(person_id, &outbox) {
                Ok(holdings) => holdings,
                Err(StoreError::NotFound { .. }) => {
                    results.push((person_id.clone(), None));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !still(&holdings.involvements) {
                results.push((person_id.clone(), None));
                continue;
            }
            self.erase_holdings(person_id, &holdings, &subscriptions)?;
            results.push((person_id.clone(), Some(holdings.counts())));
        }
        Ok(results)
    }

    fn erase_holdings(
        &self,
        person_id: &str,
        holdings: &Holdings,
        subscriptions: &sled::Tree,
    ) -> Result<(), StoreError> {
        let active = holdings
            .involvements
            .iter()
            .filter(|i| i.is_active())
            .count();
        (
            &self.persons,
            &self.person_index,
            &self.match_index,
            &self.meta,
            &self.involvements,
            &self.involvements_by_person,
            &self.involvements_by_practitioner,
            &self.attention,
            &self.links,
            &self.events,
            &self.events_by_practitioner,
            subscriptions,
            &self.retention,
        )
            .transaction(
                |(
                    persons,
                    person_index,
                    match_index,
                    meta,
                    involvements,
                    by_person,
                    by_practitioner,
                    attention,
                    links,
                    events,
                    events_by_practitioner,
                    subscriptions,
                    retention,
                )| {
                    if persons.remove(person_id.as_bytes())?.is_none() {
                        return super::abort(StoreError::NotFound {
                            kind: Kind::Person,
                            id: person_id.into(),
                        });
                    }
                    for key in holdings.index_keys.iter() {
                        person_index.remove(key.as_slice())?;
                    }
                    for key in holdings.match_keys.iter() {
                        match_index.remove(key.as_slice())?;
                    }
                    for involvement in &holdings.involvements {
                        involvements.remove(involvement.id.as_bytes())?;
                        by_person.remove(pair_key(person_id, &involvement.id))?;
                        by_practitioner
                            .remove(pair_key(&involvement.practitioner_id, &involvement.id))?;
                    }
                    for other in &holdings.others_linked {
                        let other = String::from_utf8_lossy(other);
                        links.remove(pair_key(person_id, &other))?;
                        links.remove(pair_key(&other, person_id))?;
                    }
                    attention.remove(person_id.as_bytes())?;
                    retention.remove(person_id.as_bytes())?;
                    for event in &holdings.events {
                        events.remove(&crate::events::seq_key(event.seq))?;
                        for recipient in &event.recipients {
                            events_by_practitioner
                                .remove(crate::events::recipient_key(recipient, event.seq))?;
                        }
                    }
                    for id in &holdings.subscription_ids {
                        subscriptions.remove(id.as_bytes())?;
                    }
                    meta.remove(format!("{WATCHED}{person_id}").as_bytes())?;
                    add_count(meta, COUNT_PERSONS, -1)?;
                    add_count(
                        meta,
                        COUNT_INVOLVEMENTS,
                        -(holdings.involvements.len() as i64),
                    )?;
                    add_count(meta, COUNT_ACTIVE_INVOLVEMENTS, -(active as i64))?;
                    Ok(())
                },
            )
            .map_err(tx_error)
    }

    /// Deletes the involvements of `ids` that exist, current or ended, with
    /// both index entries, in one transaction (a `--mirror` import: the case
    /// system no longer holds them). No team event: nobody ended them.
    /// Returns the ids deleted.
    pub fn delete_involvements(&self, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let _team = self.team_lock();
        let _writing = self.writing();
        (
            &self.involvements,
            &self.involvements_by_person,
            &self.involvements_by_practitioner,
            &self.meta,
            &self.retention,
        )
            .transaction(|(records, by_person, by_practitioner, meta, retention)| {
                let mut deleted = Vec::new();
                let mut active = 0i64;
                for id in ids {
                    let Some(bytes) = records.remove(id.as_bytes())? else {
                        continue;
                    };
                    let involvement: Involvement =
                        decode(Kind::Involvement, &bytes).or_else(super::abort)?;
                    by_person.remove(pair_key(&involvement.person_id, id))?;
                    by_practitioner.remove(pair_key(&involvement.practitioner_id, id))?;
                    active += i64::from(involvement.is_active());
                    // As retention's own deletions do.
                    if let Some(end) = involvement.end_date {
                        crate::retention::keep_end_date(retention, &involvement.person_id, end)?;
                    }
                    deleted.push(id.clone());
                }
                add_count(meta, COUNT_INVOLVEMENTS, -(deleted.len() as i64))?;
                add_count(meta, COUNT_ACTIVE_INVOLVEMENTS, -active)?;
                Ok(deleted)
            })
            .map_err(tx_error)
    }

    /// Every id of `kind` (persons or involvements) the node holds, in
    /// order: what a `--mirror` import compares its export with.
    pub fn ids_of(&self, kind: Kind) -> Result<Vec<String>, StoreError> {
        let tree = match kind {
            Kind::Person => &self.persons,
            Kind::Involvement => &self.involvements,
            Kind::Practitioner => &self.practitioners,
            Kind::Organisation => &self.organisations,
            Kind::AuditEntry | Kind::TeamEvent => {
                return Err(StoreError::Invalid {
                    field: "kind",
                    message: format!("{kind} ids are not listed"),
                });
            }
        };
        tree.iter()
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?).into_owned()))
            .collect()
    }

    /// The team events about, and peers' subscriptions to, any of `ids`:
    /// one pass over each (the outbox has no index by person; erasure is
    /// rare and the outbox small next to the records).
    fn outbox_of(&self, ids: &[&str]) -> Result<Outbox, StoreError> {
        let wanted: HashSet<&str> = ids.iter().copied().collect();
        let mut outbox = Outbox::default();
        for entry in self.events.iter() {
            let (_, bytes) = entry?;
            let event: TeamEvent = decode(Kind::TeamEvent, &bytes)?;
            if wanted.contains(event.person_id.as_str()) {
                outbox
                    .events
                    .entry(event.person_id.clone())
                    .or_default()
                    .push(event);
            }
        }
        for entry in self
            .db
            .open_tree(crate::subscriptions::SUBSCRIPTIONS)?
            .iter()
        {
            let (_, bytes) = entry?;
            let subscription: Subscription = decode(Kind::TeamEvent, &bytes)?;
            if wanted.contains(subscription.person_id.as_str()) {
                outbox
                    .subscriptions
                    .entry(subscription.person_id)
                    .or_default()
                    .push(subscription.id);
            }
        }
        Ok(outbox)
    }

    fn holdings(&self, person_id: &str, outbox: &Outbox) -> Result<Holdings, StoreError> {
        let Some(person) = self.person(person_id)? else {
            return Err(StoreError::NotFound {
                kind: Kind::Person,
                id: person_id.into(),
            });
        };
        let index_keys = person_index_keys(&(&person).into())
            .iter()
            .map(|key| pair_key_bytes(key, &person.id))
            .collect();
        let match_keys = Self::match_entries(&self.indexed_sets(), &person)
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let involvements = self.involvements_of_person(person_id)?;
        let link_prefix = prefix_key(person_id.as_bytes());
        let others_linked = self
            .links
            .scan_prefix(&link_prefix)
            .map(|entry| Ok(entry?.0[link_prefix.len()..].to_vec()))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Holdings {
            involvements,
            others_linked,
            events: outbox.events.get(person_id).cloned().unwrap_or_default(),
            subscription_ids: outbox
                .subscriptions
                .get(person_id)
                .cloned()
                .unwrap_or_default(),
            index_keys,
            match_keys,
            attention: self.attention.get(person_id.as_bytes())?.is_some(),
        })
    }

    /// The trees (by name) with a key or value that contains `needle`, and
    /// where: how the tests check that an erasure left nothing. Reads every
    /// entry of every tree.
    pub fn trees_containing(&self, needle: &[u8]) -> Result<Vec<String>, StoreError> {
        let contains = |haystack: &[u8]| {
            !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
        };
        let mut found = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name)?;
            for entry in tree.iter() {
                let (key, value) = entry?;
                if contains(&key) || contains(&value) {
                    found.push(format!(
                        "tree {} key {}",
                        String::from_utf8_lossy(&name),
                        String::from_utf8_lossy(&key).escape_debug()
                    ));
                }
            }
        }
        Ok(found)
    }
}
