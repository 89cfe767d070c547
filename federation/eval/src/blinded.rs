//! The answering node of blinded matching, in memory: the keys each held person is
//! indexed under, and the federation's decision over the keys a query hits.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use patchwork_federation::{
    Candidate, Decision, Digest, KeySet, Subject, decide, index_keys, index_keys_v2, query_keys,
    query_keys_v2,
};
use patchwork_proto::v1::MatchKeyKind;

use crate::evaluate::{Answerer, Footprint, Outcome};

/// Version 1 of the federation's matching: all-or-nothing keys and `decide`.
pub struct KeysOnly {
    set: KeySet,
    by_digest: HashMap<Digest, Vec<usize>>,
    has_national_id: HashMap<usize, bool>,
    entries: usize,
}

impl KeysOnly {
    pub fn new(set: KeySet) -> KeysOnly {
        KeysOnly {
            set,
            by_digest: HashMap::new(),
            has_national_id: HashMap::new(),
            entries: 0,
        }
    }
}

impl Answerer for KeysOnly {
    fn hold(&mut self, id: usize, record: &Subject) {
        for (_, digest) in index_keys(&self.set, record) {
            self.by_digest.entry(digest).or_default().push(id);
            self.entries += 1;
        }
        let has_id = record.national_id.as_ref().is_some_and(|(scheme, value)| {
            patchwork_federation::normalise_national_id(scheme, value).is_ok()
        });
        self.has_national_id.insert(id, has_id);
    }

    fn answer(&self, query: &Subject) -> Outcome {
        let keys = query_keys(&self.set, query);
        let kinds: BTreeSet<MatchKeyKind> = keys.iter().map(|(k, _)| *k).collect();
        let mut hits: BTreeMap<usize, BTreeSet<MatchKeyKind>> = BTreeMap::new();
        for (kind, digest) in &keys {
            for person in self.by_digest.get(digest).into_iter().flatten() {
                hits.entry(*person).or_default().insert(*kind);
            }
        }
        let candidates: Vec<Candidate<usize>> = hits
            .into_iter()
            .map(|(id, matched)| Candidate {
                id,
                matched,
                has_national_id: self.has_national_id.get(&id).copied().unwrap_or(false),
            })
            .collect();
        match decide(&kinds, &candidates) {
            Decision::Matched(id) => Outcome::Matched(id),
            Decision::NoMatch => Outcome::NoMatch,
            Decision::Ambiguous { .. } => Outcome::Ambiguous,
        }
    }

    fn footprint(&self) -> Footprint {
        // A stored entry: a tag byte, the digest, the person's id (about ten bytes).
        Footprint {
            entries: self.entries,
            bytes: self.entries * (1 + 32 + 10),
        }
    }

    fn query_bytes(&self, query: &Subject) -> usize {
        // Each key on the wire: its kind and 32 bytes.
        query_keys(&self.set, query).len() * (2 + 32 + 2)
    }
}

/// Version 2: blocking keys find candidates, each is scored field by field on the
/// tokens under the key that found it, and `decide_scored` decides.
pub struct Scoring {
    set: KeySet,
    weights: patchwork_federation::Weights,
    by_digest: HashMap<Digest, Vec<usize>>,
    records: HashMap<usize, Subject>,
    entries: usize,
}

impl Scoring {
    pub fn new(set: KeySet, weights: patchwork_federation::Weights) -> Scoring {
        Scoring {
            set,
            weights,
            by_digest: HashMap::new(),
            records: HashMap::new(),
            entries: 0,
        }
    }

    /// Every candidate the query's keys found, scored: what `answer` decides on.
    pub fn scored(&self, query: &Subject) -> Vec<patchwork_federation::Scored<usize>> {
        use patchwork_federation::{compare, score, subject_tokens};
        let mut seen: HashMap<usize, ()> = HashMap::new();
        let mut out = Vec::new();
        for (_, digest) in query_keys_v2(&self.set, query) {
            for &person in self.by_digest.get(&digest).into_iter().flatten() {
                if seen.insert(person, ()).is_some() {
                    continue;
                }
                let query_tokens = subject_tokens(&digest, query);
                let held_tokens = subject_tokens(&digest, &self.records[&person]);
                out.push(score(
                    person,
                    compare(&query_tokens, &held_tokens),
                    &self.weights,
                ));
            }
        }
        out
    }
}

impl Answerer for Scoring {
    fn hold(&mut self, id: usize, record: &Subject) {
        for (_, digest) in index_keys_v2(&self.set, record) {
            self.by_digest.entry(digest).or_default().push(id);
            self.entries += 1;
        }
        self.records.insert(id, record.clone());
    }

    fn answer(&self, query: &Subject) -> Outcome {
        let scored = self.scored(query);
        let tokens = query_keys_v2(&self.set, query)
            .first()
            .map(|(_, digest)| patchwork_federation::subject_tokens(digest, query))
            .unwrap_or_default();
        match patchwork_federation::decide_scored(&scored, &self.weights, &tokens) {
            Decision::Matched(id) => Outcome::Matched(id),
            Decision::NoMatch => Outcome::NoMatch,
            Decision::Ambiguous { .. } => Outcome::Ambiguous,
        }
    }

    fn footprint(&self) -> Footprint {
        Footprint {
            entries: self.entries,
            bytes: self.entries * (1 + 32 + 10),
        }
    }

    fn query_bytes(&self, query: &Subject) -> usize {
        use prost::Message;
        query_keys_v2(&self.set, query)
            .iter()
            .map(|(_, digest)| {
                let tokens = patchwork_federation::subject_tokens(digest, query);
                2 + 34 + patchwork_proto::v1::SubjectTokens::from(&tokens).encoded_len() + 2
            })
            .sum()
    }
}
