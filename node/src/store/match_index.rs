//! The blinded match-key index peers' queries are answered from: for every
//! configured key set, every person's index keys (see
//! `patchwork_federation::matchkeys`) → the person. Entries are written in the
//! same transaction as the person (`Store::put_persons`); a key set that is
//! new or whose secret changed is (re)built when the store opens.

use std::collections::{BTreeMap, BTreeSet};

use patchwork_federation::decide::{Candidate, effective_kind};
use patchwork_federation::matchkeys::{Digest, KeySet, Subject, index_keys};
use patchwork_proto::v1::MatchKeyKind;
use sha2_free::fingerprint;

use super::{Kind, Store, StoreError, decode};
use crate::model::Person;

/// Where the store records which key sets (by fingerprint) it has indexed.
const INDEXED_SETS: &[u8] = b"match_index/sets";
/// Persons written per transaction while (re)building an index.
const REBUILD_BATCH: usize = 1000;

/// `set \0 digest`, the prefix of every entry for one digest.
fn digest_prefix(set: &str, digest: &Digest) -> Vec<u8> {
    let mut key = Vec::with_capacity(set.len() + 1 + digest.len());
    key.extend_from_slice(set.as_bytes());
    key.push(0);
    key.extend_from_slice(digest);
    key
}

fn kind_byte(kind: MatchKeyKind) -> u8 {
    u8::try_from(kind as i32).unwrap_or(0)
}

/// The matchable parts of a person.
pub(crate) fn subject_of(person: &Person) -> Subject {
    use chrono::Datelike;
    Subject {
        given_name: Some(person.given_name.clone()),
        family_name: Some(person.family_name.clone()),
        date_of_birth: person.date_of_birth.map(|d| (d.year(), d.month(), d.day())),
        postcode: person.postcode.clone(),
        national_id: person
            .national_id
            .as_ref()
            .map(|n| (n.scheme.clone(), n.value.clone())),
    }
}

mod sha2_free {
    //! A key set's fingerprint, so the store can tell when a secret changed
    //! without storing the secret.
    use patchwork_federation::matchkeys::{KeySet, Subject, index_keys};

    /// The digest a fixed, made-up subject gets under the set: equal for
    /// equal secrets, and reveals nothing about the secret.
    pub(super) fn fingerprint(set: &KeySet) -> Vec<u8> {
        let probe = Subject {
            given_name: Some("fingerprint".into()),
            family_name: Some("probe".into()),
            date_of_birth: Some((2000, 1, 1)),
            postcode: Some("ZZ1 1ZZ".into()),
            national_id: Some(("probe".into(), "PROBE".into())),
        };
        index_keys(set, &probe)
            .into_iter()
            .flat_map(|(_, digest)| digest)
            .collect()
    }
}

impl Store {
    /// The match-index entries (key, kind byte) of one person under every set.
    pub(super) fn match_entries(&self, person: &Person) -> Vec<(Vec<u8>, u8)> {
        let subject = subject_of(person);
        let mut entries = Vec::new();
        for set in self.key_sets.iter() {
            for (kind, digest) in index_keys(set, &subject) {
                let mut key = digest_prefix(set.name(), &digest);
                key.extend_from_slice(person.id.as_bytes());
                entries.push((key, kind_byte(kind)));
            }
        }
        entries
    }

    /// This store, maintaining the match index under `key_sets` from now on:
    /// the index of every set that is new or changed since the store last
    /// indexed it is (re)built first, and entries of sets no longer configured
    /// are dropped. Only the serving node calls this; tools that open a
    /// stopped node's store leave the index alone.
    pub fn with_key_sets(mut self, key_sets: Vec<KeySet>) -> Result<Self, StoreError> {
        self.key_sets = std::sync::Arc::new(key_sets);
        let wanted: BTreeMap<String, Vec<u8>> = self
            .key_sets
            .iter()
            .map(|set| (set.name().to_owned(), fingerprint(set)))
            .collect();
        let indexed: BTreeMap<String, Vec<u8>> = match self.meta.get(INDEXED_SETS)? {
            Some(bytes) => decode(Kind::Person, &bytes)?,
            None => BTreeMap::new(),
        };
        if wanted == indexed {
            return Ok(self);
        }
        for name in indexed
            .keys()
            .filter(|name| wanted.get(*name) != indexed.get(*name))
        {
            let mut prefix = name.as_bytes().to_vec();
            prefix.push(0);
            for entry in self.match_index.scan_prefix(&prefix) {
                let (key, _) = entry?;
                self.match_index.remove(key)?;
            }
        }
        let stale: BTreeSet<&String> = wanted
            .keys()
            .filter(|name| indexed.get(*name) != wanted.get(*name))
            .collect();
        if !stale.is_empty() {
            tracing::info!(sets = ?stale, "building the match-key index");
            let sets: Vec<&KeySet> = self
                .key_sets
                .iter()
                .filter(|s| stale.contains(&s.name().to_owned()))
                .collect();
            let mut batch = sled::Batch::default();
            let mut pending = 0;
            for entry in self.persons.iter() {
                let (_, bytes) = entry?;
                let person: Person = decode(Kind::Person, &bytes)?;
                let subject = subject_of(&person);
                for set in &sets {
                    for (kind, digest) in index_keys(set, &subject) {
                        let mut key = digest_prefix(set.name(), &digest);
                        key.extend_from_slice(person.id.as_bytes());
                        batch.insert(key, vec![kind_byte(kind)]);
                    }
                }
                pending += 1;
                if pending == REBUILD_BATCH {
                    self.match_index.apply_batch(std::mem::take(&mut batch))?;
                    pending = 0;
                }
            }
            self.match_index.apply_batch(batch)?;
        }
        // Recorded last: a crash mid-build rebuilds again at the next start.
        self.db.flush()?;
        self.meta
            .insert(INDEXED_SETS, super::encode(Kind::Person, &wanted)?)?;
        self.db.flush()?;
        Ok(self)
    }

    /// The persons the query's keys hit under `set`, with the effective kind
    /// of each hit (the kind stored for the entry, which the query's label
    /// may only weaken: `decide::effective_kind`), and whether each holds an
    /// identifier of `scheme` (the scheme of the query's national id, if it
    /// has one). More than `limit` persons behind any key, or in all, returns
    /// more than `limit` candidates: the caller must then not decide on the
    /// list.
    pub fn match_candidates(
        &self,
        set: &str,
        query: &[(MatchKeyKind, Digest)],
        limit: usize,
        scheme: Option<&str>,
    ) -> Result<MatchHits, StoreError> {
        let mut hits: BTreeMap<String, BTreeSet<MatchKeyKind>> = BTreeMap::new();
        let mut query_kinds = BTreeSet::new();
        for (claimed, digest) in query {
            let prefix = digest_prefix(set, digest);
            let mut kind = *claimed;
            for entry in self.match_index.scan_prefix(&prefix).take(limit + 1) {
                let (key, stored) = entry?;
                let stored = stored
                    .first()
                    .and_then(|byte| MatchKeyKind::try_from(i32::from(*byte)).ok())
                    .unwrap_or(MatchKeyKind::Unspecified);
                kind = effective_kind(*claimed, stored);
                let person_id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                hits.entry(person_id).or_default().insert(kind);
            }
            query_kinds.insert(kind);
            if hits.len() > limit {
                break;
            }
        }
        let mut candidates = Vec::with_capacity(hits.len());
        for (id, matched) in hits {
            let has_national_id = self.person(&id)?.is_some_and(|p| {
                p.national_id
                    .is_some_and(|n| scheme.is_some_and(|s| n.scheme == s))
            });
            candidates.push(Candidate {
                id,
                matched,
                has_national_id,
            });
        }
        Ok(MatchHits {
            query_kinds,
            candidates,
        })
    }
}

/// What a peer's query found in the match index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchHits {
    /// The effective kind of each of the query's keys: the stored kind (as
    /// the query may only weaken it) of a key that hit, the claimed kind of
    /// one that hit nothing.
    pub query_kinds: BTreeSet<MatchKeyKind>,
    /// The persons hit; more than the limit means "too many to decide".
    pub candidates: Vec<Candidate<String>>,
}
