//! The blinded match-key index peers' queries are answered from: for every
//! configured key set, every person's index keys (see
//! `patchwork_federation::matchkeys`) → the person. Entries are written in the
//! same transaction as the person (`Store::put_persons`).
//!
//! Each set's entries sit under a *tag*: the set's name for an index built
//! before tags existed, `name.N` for later builds. A set that is new, or
//! whose secret changed, is built under a fresh tag while the old one goes on
//! answering; then the set switches to the new tag in one step and the old
//! tag's entries are dropped ([`Store::rekey`]). So a live reload never
//! answers from a half-built index, writes never pause for it, and a crash
//! at any point leaves a record (`unfinished`) of which tags to clear at the
//! next start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use patchwork_federation::decide::{Candidate, effective_kind};
use patchwork_federation::matchkeys::{Digest, KeySet, Subject, index_keys_v2};
use patchwork_federation::score::{Scored, Weights, compare, score};
use patchwork_federation::tokens::{SubjectTokens, subject_tokens};
use patchwork_proto::v1::MatchKeyKind;
use serde::{Deserialize, Serialize};
use sha2_free::fingerprint;
use sled::Transactional;

use super::{Kind, Store, StoreError, decode, tx_decode, tx_error};
use crate::model::Person;

/// Where the store recorded, before tags, which key sets (by fingerprint) it
/// had indexed, each under its own name. Read once to migrate.
const INDEXED_SETS_V1: &[u8] = b"match_index/sets";
/// Where it records them now: an [`IndexRecord`].
const INDEX_RECORD: &[u8] = b"match_index/record";
/// Persons indexed per transaction while building: small, since each
/// transaction holds sled's process-wide lock while it computes their HMACs.
const BUILD_BATCH: usize = 256;
/// A progress line in the log about every this many persons of a build.
const PROGRESS_EVERY: u64 = 100_000;

/// One key set the index is kept for. Writes maintain every entry of the
/// list; queries are answered from the `serving` one of each name. A set
/// being (re)built appears twice while it builds: serving under its old tag
/// (if it had one), building under the new.
#[derive(Clone)]
pub(super) struct IndexedSet {
    tag: String,
    set: KeySet,
    serving: bool,
}

/// What the store has indexed, durable in `meta`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexRecord {
    /// Each set's tag in force and the fingerprint of the secret it was
    /// built with.
    sets: BTreeMap<String, (String, Vec<u8>)>,
    /// Tags whose entries are garbage: a build that may not have finished,
    /// or a retired tag that may not be fully dropped. Cleared at the next
    /// rekey (so at the latest at the next start).
    unfinished: BTreeSet<String>,
    /// The next `N` for a `name.N` tag.
    next_generation: u64,
}

/// What [`Store::rekey`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// Sets whose index was built (new, or a changed secret), with how many
    /// persons and how long it took.
    pub built: Vec<(String, u64, Duration)>,
    /// Sets no longer configured, whose entries were dropped.
    pub dropped: Vec<String>,
}

/// `tag \0 digest`, the prefix of every entry for one digest.
fn digest_prefix(tag: &str, digest: &Digest) -> Vec<u8> {
    let mut key = Vec::with_capacity(tag.len() + 1 + digest.len());
    key.extend_from_slice(tag.as_bytes());
    key.push(0);
    key.extend_from_slice(digest);
    key
}

fn kind_byte(kind: MatchKeyKind) -> u8 {
    u8::try_from(kind as i32).unwrap_or(0)
}

/// The entries (key, kind byte) of one person under one indexed set.
fn entries_of(indexed: &IndexedSet, subject: &Subject, person_id: &str) -> Vec<(Vec<u8>, u8)> {
    index_keys_v2(&indexed.set, subject)
        .into_iter()
        .map(|(kind, digest)| {
            let mut key = digest_prefix(&indexed.tag, &digest);
            key.extend_from_slice(person_id.as_bytes());
            (key, kind_byte(kind))
        })
        .collect()
}
/// The matchable parts of a person.
pub fn subject_of(person: &Person) -> Subject {
    Subject {
        given_name: Some(person.given_name.clone()),
        family_name: Some(person.family_name.clone()),
        date_of_birth: person.date_of_birth.map(crate::model::year_month_day),
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
    use patchwork_federation::matchkeys::{KeySet, Subject, index_keys_v2};

    /// The digests a fixed, made-up subject gets under the set: equal for
    /// equal secrets and equal key versions, and reveals nothing about the
    /// secret. A new version of the keys changes it, so an index of older
    /// keys is rebuilt at the next start like one of an older secret.
    pub(super) fn fingerprint(set: &KeySet) -> Vec<u8> {
        let probe = Subject {
            given_name: Some("fingerprint".into()),
            family_name: Some("probe".into()),
            date_of_birth: Some((2000, 1, 1)),
            postcode: Some("ZZ1 1ZZ".into()),
            national_id: Some(("probe".into(), "PROBE".into())),
        };
        index_keys_v2(set, &probe)
            .into_iter()
            .flat_map(|(_, digest)| digest)
            .collect()
    }
}

impl Store {
    /// The key sets writes maintain now. A writer loads them once, after it
    /// holds the write gate, and uses them for the old and the new version
    /// of a person alike (see [`Store::rekey`]'s barrier).
    pub(super) fn indexed_sets(&self) -> std::sync::Arc<Vec<IndexedSet>> {
        self.key_sets.load_full()
    }

    /// The match-index entries (key, kind byte) of one person under `sets`.
    pub(super) fn match_entries(sets: &[IndexedSet], person: &Person) -> Vec<(Vec<u8>, u8)> {
        let subject = subject_of(person);
        sets.iter()
            .flat_map(|indexed| entries_of(indexed, &subject, &person.id))
            .collect()
    }

    /// This store, maintaining the match index under `key_sets` from now on
    /// (see [`Store::rekey`]), with the entries of any cut-off import batch
    /// written ([`Store::finish_index_entries`]). Only the serving node calls this; tools that
    /// open a stopped node's store leave the index alone.
    pub fn with_key_sets(self, key_sets: Vec<KeySet>) -> Result<Self, StoreError> {
        self.rekey(key_sets)?;
        self.drop_retired()?;
        let finished = self.finish_index_entries()?;
        if finished > 0 {
            tracing::warn!(
                persons = finished,
                "wrote the index entries of an import batch cut off before them"
            );
        }
        Ok(self)
    }

    /// Makes the index match `wanted`, while the node serves: a set that is
    /// new or whose secret changed is built under a fresh tag (writes keep
    /// it up to date from the moment it is announced; the old tag goes on
    /// answering queries until the build is done), then switched to in one
    /// step; the old tags and those of sets no longer wanted are retired
    /// (recorded, their entries left to [`Store::drop_retired`]). Blocks for
    /// the build (run it on the blocking pool). One rekey at a time.
    pub fn rekey(&self, wanted: Vec<KeySet>) -> Result<RekeyReport, StoreError> {
        let _one_at_a_time = self.rekey_lock.lock();
        let mut record = self.index_record()?;
        // A rekey that failed part-way left its half-built sets in the list:
        // writes stop maintaining them before their entries go.
        let current = self.key_sets.load_full();
        let serving: Vec<IndexedSet> = current.iter().filter(|s| s.serving).cloned().collect();
        if serving.len() != current.len() {
            self.key_sets.store(std::sync::Arc::new(serving.clone()));
            self.wait_for_writers();
        }
        // Whatever an interrupted rekey left behind goes first.
        for tag in std::mem::take(&mut record.unfinished) {
            self.drop_tag(&tag)?;
        }
        let mut report = RekeyReport::default();
        let mut keep = Vec::new();
        let mut build = Vec::new();
        let mut retire = Vec::new();
        for set in &wanted {
            let name = set.name().to_owned();
            let print = fingerprint(set);
            match record.sets.get(&name) {
                Some((tag, recorded)) if *recorded == print => keep.push(IndexedSet {
                    tag: tag.clone(),
                    set: set.clone(),
                    serving: true,
                }),
                found => {
                    if let Some((tag, _)) = found {
                        retire.push(tag.clone());
                    }
                    record.next_generation += 1;
                    build.push((
                        IndexedSet {
                            tag: format!("{name}.{}", record.next_generation),
                            set: set.clone(),
                            serving: false,
                        },
                        print,
                    ));
                }
            }
        }
        let wanted_names: BTreeSet<&str> = wanted.iter().map(KeySet::name).collect();
        for (name, (tag, _)) in &record.sets {
            if !wanted_names.contains(name.as_str()) {
                retire.push(tag.clone());
                report.dropped.push(name.clone());
            }
        }
        if build.is_empty() && retire.is_empty() {
            self.write_index_record(&record)?;
            self.key_sets.store(std::sync::Arc::new(keep));
            return Ok(report);
        }

        // Announced before a single entry is written, so a crash mid-build
        // leaves a record of what to clear.
        record
            .unfinished
            .extend(build.iter().map(|(b, _)| b.tag.clone()));
        self.write_index_record(&record)?;
        // From here on every write maintains the new tags too; the sets in
        // force go on serving (and being maintained) meanwhile.
        let mut during = serving;
        during.extend(build.iter().map(|(b, _)| b.clone()));
        self.key_sets.store(std::sync::Arc::new(during));
        self.wait_for_writers();
        for (building, _) in &build {
            let started = Instant::now();
            tracing::info!(
                key_set = building.set.name(),
                tag = building.tag.as_str(),
                "building the match index (a new key set, a changed secret or a new version of the keys)"
            );
            let persons = self.build_tag(building)?;
            tracing::info!(
                key_set = building.set.name(),
                persons,
                seconds = started.elapsed().as_secs_f64(),
                "match index built"
            );
            report
                .built
                .push((building.set.name().to_owned(), persons, started.elapsed()));
        }

        // The switch: the record first, so a crash now starts on the new tags.
        for (built, print) in &build {
            record.unfinished.remove(&built.tag);
            record.sets.insert(
                built.set.name().to_owned(),
                (built.tag.clone(), print.clone()),
            );
        }
        for name in &report.dropped {
            record.sets.remove(name);
        }
        record.unfinished.extend(retire.iter().cloned());
        self.write_index_record(&record)?;
        keep.extend(build.into_iter().map(|(mut b, _)| {
            b.serving = true;
            b
        }));
        self.key_sets.store(std::sync::Arc::new(keep));
        // No write that could still touch a retired tag is left running;
        // its entries are dropped by `drop_retired`, or at the next rekey.
        self.wait_for_writers();
        Ok(report)
    }

    /// Drops the entries of the tags a rekey retired (an old secret's, a
    /// removed set's): as long again as the build, so a live reload leaves
    /// it to a background task. Returns how many entries went.
    pub fn drop_retired(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = self.rekey_lock.lock();
        let mut record = self.index_record()?;
        let in_use: BTreeSet<String> = self
            .key_sets
            .load()
            .iter()
            .map(|indexed| indexed.tag.clone())
            .collect();
        let retired: Vec<String> = record
            .unfinished
            .iter()
            .filter(|tag| !in_use.contains(*tag))
            .cloned()
            .collect();
        let mut dropped = 0;
        for tag in retired {
            dropped += self.drop_tag(&tag)?;
            record.unfinished.remove(&tag);
            self.write_index_record(&record)?;
        }
        Ok(dropped)
    }

    /// Waits until every write that started before now has finished: each
    /// holds the write gate shared while it runs, and loaded the key sets
    /// after taking it.
    fn wait_for_writers(&self) {
        drop(self.write_gate.write());
    }

    /// Indexes every person under `building`; returns how many. Each batch
    /// reads its persons inside the transaction that writes their entries,
    /// so a write to a person between the walk and the batch cannot leave an
    /// entry of its old version behind.
    fn build_tag(&self, building: &IndexedSet) -> Result<u64, StoreError> {
        let mut indexed = 0;
        let mut ids: Vec<sled::IVec> = Vec::with_capacity(BUILD_BATCH);
        let mut persons = self.persons.iter().keys();
        loop {
            ids.clear();
            for id in persons.by_ref().take(BUILD_BATCH) {
                ids.push(id?);
            }
            if ids.is_empty() {
                return Ok(indexed);
            }
            let _writing = self.writing();
            if indexed > 0 && indexed % PROGRESS_EVERY < BUILD_BATCH as u64 {
                tracing::info!(
                    key_set = building.set.name(),
                    persons = indexed,
                    "building the match index"
                );
            }
            indexed += (&self.persons, &self.match_index)
                .transaction(|(records, index)| {
                    let mut count = 0;
                    for id in &ids {
                        let Some(person): Option<Person> =
                            tx_decode(Kind::Person, records.get(id)?)?
                        else {
                            continue;
                        };
                        for (key, kind) in entries_of(building, &subject_of(&person), &person.id) {
                            index.insert(key, vec![kind])?;
                        }
                        count += 1;
                    }
                    Ok(count)
                })
                .map_err(tx_error)?;
        }
    }

    /// Removes every entry under `tag`; returns how many.
    fn drop_tag(&self, tag: &str) -> Result<u64, StoreError> {
        let mut prefix = tag.as_bytes().to_vec();
        prefix.push(0);
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        let mut dropped = 0;
        for key in self.match_index.scan_prefix(&prefix).keys() {
            batch.remove(key?);
            pending += 1;
            dropped += 1;
            if pending == BUILD_BATCH * 16 {
                self.match_index.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.match_index.apply_batch(batch)?;
        Ok(dropped)
    }

    fn index_record(&self) -> Result<IndexRecord, StoreError> {
        if let Some(bytes) = self.meta.get(INDEX_RECORD)? {
            return decode(Kind::Person, &bytes);
        }
        // Before tags, each set's entries sat under its own name.
        let v1: BTreeMap<String, Vec<u8>> = match self.meta.get(INDEXED_SETS_V1)? {
            Some(bytes) => decode(Kind::Person, &bytes)?,
            None => BTreeMap::new(),
        };
        Ok(IndexRecord {
            sets: v1
                .into_iter()
                .map(|(name, print)| (name.clone(), (name, print)))
                .collect(),
            ..IndexRecord::default()
        })
    }

    /// Writes the record durably: every step of a rekey is ordered after it.
    fn write_index_record(&self, record: &IndexRecord) -> Result<(), StoreError> {
        self.db.flush()?;
        self.meta
            .insert(INDEX_RECORD, super::encode(Kind::Person, record)?)?;
        self.meta.remove(INDEXED_SETS_V1)?;
        self.db.flush()?;
        Ok(())
    }

    /// The persons the query's keys hit under `set`, with the effective kind
    /// of each hit (the kind stored for the entry, which the query's label
    /// may only weaken: `decide::effective_kind`), and whether each holds an
    /// identifier of `scheme` (the scheme of the query's national id, if it
    /// has one). More than `limit` persons behind any key, or in all, returns
    /// more than `limit` candidates: the caller must then not decide on the
    /// list. A set this store keeps no index for hits nobody.
    pub fn match_candidates(
        &self,
        set: &str,
        query: &[(MatchKeyKind, Digest)],
        limit: usize,
        scheme: Option<&str>,
    ) -> Result<MatchHits, StoreError> {
        let sets = self.key_sets.load();
        let tag = sets
            .iter()
            .find(|indexed| indexed.serving && indexed.set.name() == set)
            .map(|indexed| indexed.tag.as_str());
        let mut hits: BTreeMap<String, BTreeSet<MatchKeyKind>> = BTreeMap::new();
        let mut query_kinds = BTreeSet::new();
        for (claimed, digest) in query {
            let mut kind = *claimed;
            if let Some(tag) = tag {
                let prefix = digest_prefix(tag, digest);
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

impl Store {
    /// Version 2 of answering a peer: every person the query's keys find
    /// under `set`, each scored against the tokens of the first key that found
    /// them (`patchwork_federation::score`). A key behind which more than
    /// `limit` persons stand is passed over (it tells nobody apart); at most
    /// `4 × limit` persons are scored. `tokens` has one entry per key.
    pub fn scored_candidates(
        &self,
        set: &str,
        query: &[(MatchKeyKind, Digest)],
        tokens: &[SubjectTokens],
        limit: usize,
        weights: &Weights,
    ) -> Result<Vec<Scored<String>>, StoreError> {
        let sets = self.key_sets.load();
        let Some(tag) = sets
            .iter()
            .find(|indexed| indexed.serving && indexed.set.name() == set)
            .map(|indexed| indexed.tag.clone())
        else {
            return Ok(Vec::new());
        };
        let mut found: Vec<(String, usize)> = Vec::new();
        for (at, (_, digest)) in query.iter().enumerate() {
            let prefix = digest_prefix(&tag, digest);
            let mut behind = Vec::new();
            for entry in self.match_index.scan_prefix(&prefix).keys().take(limit + 1) {
                let key = entry?;
                behind.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            }
            if behind.len() > limit {
                continue;
            }
            for person in behind {
                if found.len() < 4 * limit && !found.iter().any(|(id, _)| *id == person) {
                    found.push((person, at));
                }
            }
        }
        let mut scored = Vec::with_capacity(found.len());
        for (id, at) in found {
            let Some(person) = self.person(&id)? else {
                continue;
            };
            let (Some((_, digest)), Some(asked)) = (query.get(at), tokens.get(at)) else {
                continue;
            };
            let held = subject_tokens(digest, &subject_of(&person));
            scored.push(score(id, compare(asked, &held), weights));
        }
        Ok(scored)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StoreOptions, WriteMode};

    use crate::fixtures::person;

    fn set(name: &str, byte: u8) -> KeySet {
        KeySet::new(name, &[byte; 32]).expect("key set")
    }

    /// Every entry in the index, by tag.
    fn entries(store: &Store) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
        let mut out: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for key in store.match_index.iter().keys() {
            let key = key.expect("key").to_vec();
            let end = key.iter().position(|b| *b == 0).expect("tag");
            let tag = String::from_utf8(key[..end].to_vec()).expect("utf-8");
            out.entry(tag).or_default().insert(key);
        }
        out
    }

    /// What the index must hold: every person's entries under each serving
    /// tag, and nothing else.
    fn expected(store: &Store) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
        let sets = store.indexed_sets();
        let mut out: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for value in store.persons.iter().values() {
            let person: Person = decode(Kind::Person, &value.expect("person")).expect("decode");
            for indexed in sets.iter() {
                assert!(indexed.serving, "a rekey left a set building");
                let keys = entries_of(indexed, &subject_of(&person), &person.id);
                out.entry(indexed.tag.clone())
                    .or_default()
                    .extend(keys.into_iter().map(|(key, _)| key));
            }
        }
        out
    }

    fn hits(store: &Store, set: &KeySet, family: &str) -> usize {
        let query: Vec<_> =
            patchwork_federation::matchkeys::index_keys(set, &subject_of(&person("Q", family)));
        store
            .match_candidates(set.name(), &query, 10_000, None)
            .expect("candidates")
            .candidates
            .len()
    }

    #[test]
    fn a_changed_secret_is_rebuilt_under_a_new_tag_while_writes_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        let old = set("england", 1);
        store.rekey(vec![old.clone()]).expect("first index");
        let persons: Vec<Person> = (0..3_000)
            .map(|i| person(&format!("P{i}"), "Smith"))
            .collect();
        for chunk in persons.chunks(500) {
            store
                .put_persons(chunk, WriteMode::Create)
                .expect("persons");
        }
        assert_eq!(hits(&store, &old, "Smith"), 3_000);

        // As a rekey that failed part-way leaves it: a half-built tag in
        // the list, which writes still maintain, and in the record.
        let mut record = store.index_record().expect("record");
        record.unfinished.insert("england.9".into());
        store.write_index_record(&record).expect("record");
        let mut failed: Vec<IndexedSet> = store.indexed_sets().iter().cloned().collect();
        failed.push(IndexedSet {
            tag: "england.9".into(),
            set: set("england", 9),
            serving: false,
        });
        store.key_sets.store(std::sync::Arc::new(failed));

        // Rename every person while the new secret's index builds: each
        // write races the build's walk.
        let new = set("england", 2);
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in (0..3_000).rev() {
                    store
                        .put_persons(&[person(&format!("P{i}"), "Jones")], WriteMode::Update)
                        .expect("rename");
                }
            })
        };
        let report = store
            .rekey(vec![new.clone(), set("wales", 3)])
            .expect("rekey");
        writer.join().expect("writer");
        assert!(
            entries(&store).contains_key("england.1"),
            "retired, not dropped yet"
        );
        assert_eq!(
            hits(&store, &old, "Jones"),
            0,
            "a retired tag answers nobody"
        );
        assert!(store.drop_retired().expect("drop") > 0);
        assert_eq!(report.built.len(), 2);
        assert_eq!(report.built[0].0, "england");
        assert!(report.dropped.is_empty());

        // Exactly every person's current entries under the new tags: no
        // entry of an old name, and nothing left under the old tag.
        assert_eq!(entries(&store), expected(&store));
        assert!(!entries(&store).contains_key("england.1"));
        assert_eq!(hits(&store, &new, "Jones"), 3_000);
        assert_eq!(hits(&store, &new, "Smith"), 0);
        assert_eq!(hits(&store, &old, "Jones"), 0, "the old secret hits nobody");

        // Dropping a set drops its entries; an unchanged one is not rebuilt.
        let report = store.rekey(vec![new.clone()]).expect("drop wales");
        assert!(report.built.is_empty());
        assert_eq!(report.dropped, ["wales"]);
        store.drop_retired().expect("drop");
        assert_eq!(entries(&store), expected(&store));
        assert_eq!(entries(&store).len(), 1);
    }

    #[test]
    fn a_v1_index_is_kept_and_an_interrupted_build_is_cleared_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let england = set("england", 1);
        let reopen = || {
            Store::open(dir.path(), &StoreOptions::default())
                .expect("reopen")
                .with_key_sets(vec![england.clone()])
                .expect("key sets")
        };
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
            store.rekey(vec![england.clone()]).expect("index");
            store
                .put_persons(&[person("P1", "Smith")], WriteMode::Create)
                .expect("person");
            // As a store from before tags: the record under the old key,
            // entries under the set's own name.
            let tag = store.index_record().expect("record").sets["england"]
                .0
                .clone();
            assert_eq!(tag, "england.1");
            let mut v1 = BTreeMap::new();
            v1.insert("england".to_owned(), fingerprint(&england));
            store.meta.remove(INDEX_RECORD).expect("remove");
            store
                .meta
                .insert(
                    INDEXED_SETS_V1,
                    super::super::encode(Kind::Person, &v1).expect("encode"),
                )
                .expect("v1");
            let moved: Vec<_> = store
                .match_index
                .iter()
                .map(|entry| entry.expect("entry"))
                .collect();
            for (key, kind) in moved {
                let mut renamed = b"england".to_vec();
                renamed.extend_from_slice(&key[tag.len()..]);
                store.match_index.remove(key).expect("remove");
                store.match_index.insert(renamed, kind).expect("insert");
            }
            store.db.flush().expect("flush");
        }
        {
            let store = reopen();
            let tags: Vec<String> = entries(&store).into_keys().collect();
            assert_eq!(tags, ["england"], "a v1 index is kept under its name");
            assert_eq!(entries(&store), expected(&store));
            assert_eq!(hits(&store, &england, "Smith"), 1);
            assert!(store.meta.get(INDEXED_SETS_V1).expect("meta").is_none());
            // A crash in the middle of building "wales.7".
            let mut record = store.index_record().expect("record");
            record.unfinished.insert("wales.7".into());
            store.write_index_record(&record).expect("record");
            store
                .match_index
                .insert(b"wales.7\0garbage", vec![1])
                .expect("garbage");
            store.db.flush().expect("flush");
        }
        let store = reopen();
        let tags: Vec<String> = entries(&store).into_keys().collect();
        assert_eq!(tags, ["england"], "the unfinished build's entries are gone");
        assert_eq!(entries(&store), expected(&store));
        assert!(store.index_record().expect("record").unfinished.is_empty());
    }
}
