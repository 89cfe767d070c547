//! The answering node of blinded matching, in memory: the keys each held person is
//! indexed under, and the federation's decision over what a query's keys find. The
//! asking side makes the wire query (`Answerer::ask`); the answering side sees only
//! that (`Answerer::answer`), as a node does, so the evaluation times the answering
//! side alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use patchwork_federation::tokens::{SubjectTokens, query_match_keys};
use patchwork_federation::{
    Candidate, Decision, Digest, KeySet, Subject, Weights, compare, decide, decide_scored,
    index_keys, index_keys_v2, query_keys, score, subject_tokens,
};
use patchwork_proto::v1;

use crate::evaluate::{Answerer, Footprint, Outcome};

/// The most persons one key may bring in (as a node's `CANDIDATE_LIMIT`).
const CANDIDATE_LIMIT: usize = 16;

/// A stored index entry: the digest, a kind byte, a person's id of about ten bytes.
const ENTRY_BYTES: usize = 32 + 1 + 10;

fn outcome(decision: Decision<usize>) -> Outcome {
    match decision {
        Decision::Matched(id) => Outcome::Matched(id),
        Decision::NoMatch => Outcome::NoMatch,
        Decision::Ambiguous { .. } => Outcome::Ambiguous,
    }
}

fn digest_of(key: &v1::MatchKey) -> Option<Digest> {
    key.digest.as_slice().try_into().ok()
}

/// Version 1 of the federation's matching: all-or-nothing keys and `decide`.
pub struct KeysOnly {
    set: KeySet,
    by_digest: HashMap<Digest, Vec<(usize, v1::MatchKeyKind)>>,
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
        for (kind, digest) in index_keys(&self.set, record) {
            self.by_digest.entry(digest).or_default().push((id, kind));
            self.entries += 1;
        }
        let has_id = record.national_id.as_ref().is_some_and(|(scheme, value)| {
            patchwork_federation::normalise_national_id(scheme, value).is_ok()
        });
        self.has_national_id.insert(id, has_id);
    }

    fn ask(&self, query: &Subject) -> Vec<v1::MatchKey> {
        query_keys(&self.set, query)
            .into_iter()
            .map(|(kind, digest)| v1::MatchKey {
                kind: kind as i32,
                digest: digest.to_vec(),
                tokens: None,
            })
            .collect()
    }

    fn answer(&self, wire: &[v1::MatchKey]) -> Outcome {
        let mut kinds = BTreeSet::new();
        let mut hits: BTreeMap<usize, BTreeSet<v1::MatchKeyKind>> = BTreeMap::new();
        for key in wire {
            let claimed = v1::MatchKeyKind::try_from(key.kind).unwrap_or_default();
            let mut kind = claimed;
            for (person, stored) in digest_of(key)
                .and_then(|d| self.by_digest.get(&d))
                .into_iter()
                .flatten()
            {
                kind = patchwork_federation::decide::effective_kind(claimed, *stored);
                hits.entry(*person).or_default().insert(kind);
            }
            kinds.insert(kind);
        }
        let candidates: Vec<Candidate<usize>> = hits
            .into_iter()
            .map(|(id, matched)| Candidate {
                id,
                matched,
                has_national_id: self.has_national_id.get(&id).copied().unwrap_or(false),
            })
            .collect();
        outcome(decide(&kinds, &candidates))
    }

    fn footprint(&self) -> Footprint {
        Footprint {
            entries: self.entries,
            bytes: self.entries * ENTRY_BYTES,
        }
    }
}

/// Version 2: blocking keys find candidates, each is scored field by field on the
/// tokens under the key that found it, and `decide_scored` decides.
pub struct Scoring {
    set: KeySet,
    weights: Weights,
    by_digest: HashMap<Digest, Vec<usize>>,
    records: HashMap<usize, Subject>,
    entries: usize,
}

impl Scoring {
    pub fn new(set: KeySet, weights: Weights) -> Scoring {
        Scoring {
            set,
            weights,
            by_digest: HashMap::new(),
            records: HashMap::new(),
            entries: 0,
        }
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

    fn ask(&self, query: &Subject) -> Vec<v1::MatchKey> {
        query_match_keys(&self.set, query)
    }

    /// What a node's `Store::scored_candidates` and `decide_scored` do, on a
    /// hash map instead of sled.
    fn answer(&self, wire: &[v1::MatchKey]) -> Outcome {
        let (scored, first) = self.scored(wire);
        outcome(decide_scored(&scored, &self.weights, &first))
    }

    fn footprint(&self) -> Footprint {
        Footprint {
            entries: self.entries,
            bytes: self.entries * ENTRY_BYTES,
        }
    }
}

impl Scoring {
    /// Every candidate `wire`'s keys find, scored, and the first key's tokens:
    /// what [`Answerer::answer`] decides on (public for a diagnosis).
    pub fn scored(
        &self,
        wire: &[v1::MatchKey],
    ) -> (Vec<patchwork_federation::Scored<usize>>, SubjectTokens) {
        let mut found: Vec<(usize, usize)> = Vec::new();
        for (at, key) in wire.iter().enumerate() {
            let behind = digest_of(key)
                .and_then(|d| self.by_digest.get(&d))
                .map_or(&[][..], Vec::as_slice);
            if behind.len() > CANDIDATE_LIMIT {
                continue;
            }
            for &person in behind {
                if found.len() < 4 * CANDIDATE_LIMIT && !found.iter().any(|(p, _)| *p == person) {
                    found.push((person, at));
                }
            }
        }
        let tokens = |at: usize| -> Option<SubjectTokens> {
            SubjectTokens::try_from(wire.get(at)?.tokens.as_ref()?).ok()
        };
        let mut scored = Vec::with_capacity(found.len());
        for (person, at) in found {
            let (Some(asked), Some(digest)) = (tokens(at), wire.get(at).and_then(digest_of)) else {
                continue;
            };
            let held = subject_tokens(&digest, &self.records[&person]);
            scored.push(score(person, compare(&asked, &held), &self.weights));
        }
        (scored, tokens(0).unwrap_or_default())
    }
}
