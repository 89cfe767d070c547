//! The answering node's match decision: given which of a query's blinded keys hit which
//! of its persons, is there exactly one person it may disclose the team around?
//!
//! Precision comes first. Disclosing the team around the wrong child is the worst outcome,
//! so anything short of one clearly best candidate is [`Decision::Ambiguous`], which
//! discloses nothing and tells the asker which identifiers would help.
//!
//! # Rules
//!
//! Each candidate's hits (the *query's* kinds whose digest hit that candidate's index
//! keys) give it a strength:
//!
//! - **certain**: a `NATIONAL_ID` hit corroborated by any other hit, or a
//!   `NATIONAL_ID` hit when the query carried nothing but a national id;
//! - **strong**: a `NAMES_DOB` or `SWAPPED_NAMES_DOB` hit;
//! - **probable**: `PHONETIC_FAMILY_DOB` with `PHONETIC_NAMES_POSTCODE`, or
//!   `NAMES_DOB_TRANSPOSED` with `PHONETIC_NAMES_POSTCODE`;
//! - **weak**: any other hit (including a lone national id hit when the names and date
//!   of birth of the query hit nothing: a mistyped or borrowed identifier).
//!
//! A candidate is **contradicted** when the query carried a national id, the candidate
//! has one, and it did not hit: the two are different people whatever else agrees. A
//! contradicted candidate is never matched; if its other hits make it probable or better
//! it still counts as a rival, because "someone else with these details exists" is a
//! reason for doubt.
//!
//! The decision, in order:
//!
//! 1. Exactly one candidate is certain and no other candidate hit the national id →
//!    `Matched`. Two or more national-id hits → `Ambiguous` (duplicate records).
//! 2. A national-id hit that is not certain → `Ambiguous`: the identifier and the
//!    demographics point at different records.
//! 3. Exactly one uncontradicted strong candidate and no other candidate (contradicted
//!    or not) probable or better → `Matched`.
//! 4. No strong candidate, exactly one uncontradicted probable candidate, and no
//!    contradicted candidate probable or better → `Matched`.
//! 5. Any other uncontradicted hit, or a contradicted rival → `Ambiguous`, with the
//!    identifiers the query lacked (national id; date of birth; postcode).
//! 6. Otherwise (nothing hit, or only weak hits on contradicted candidates) → `NoMatch`.
//!
//! `federation/tests/match_quality.rs` measures these rules on a synthetic population and
//! pins their precision and recall; change them only with that test's table in hand.

use std::collections::BTreeSet;

use patchwork_proto::v1::{IdentifierKind, MatchKeyKind};

/// One of the answering node's persons that at least one query key hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<Id> {
    /// The answering node's own id for the person.
    pub id: Id,
    /// The query's kinds whose digest hit this person's index keys.
    pub matched: BTreeSet<MatchKeyKind>,
    /// Whether this person has a national id indexed (of any scheme the key set covers).
    pub has_national_id: bool,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<Id> {
    /// Exactly one person matched strongly: its team may be disclosed.
    Matched(Id),
    /// Nobody matched.
    NoMatch,
    /// Several people, or only weak evidence: disclose nothing.
    Ambiguous {
        /// What the query lacked that would help, in enum order.
        more_identifiers_wanted: Vec<IdentifierKind>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    None,
    Weak,
    Probable,
    Strong,
    Certain,
}

/// Decides which person, if any, a query with kinds `query_kinds` matched (see the module
/// docs for the rules). `candidates` are the persons any query key hit, in any order.
pub fn decide<Id: Clone>(
    query_kinds: &BTreeSet<MatchKeyKind>,
    candidates: &[Candidate<Id>],
) -> Decision<Id> {
    let query_has_nid = query_kinds.contains(&MatchKeyKind::NationalId);
    let only_nid = query_has_nid && query_kinds.len() == 1;

    let assessed: Vec<(&Candidate<Id>, Strength, bool)> = candidates
        .iter()
        .map(|c| {
            let contradicted = query_has_nid
                && c.has_national_id
                && !c.matched.contains(&MatchKeyKind::NationalId);
            (c, strength(&c.matched, only_nid), contradicted)
        })
        .filter(|(_, s, _)| *s > Strength::None)
        .collect();

    // 1 and 2: the national id decides when it hit at all.
    let nid_hits: Vec<_> = assessed
        .iter()
        .filter(|(c, _, _)| c.matched.contains(&MatchKeyKind::NationalId))
        .collect();
    if let [(only, Strength::Certain, _)] = nid_hits.as_slice() {
        return Decision::Matched(only.id.clone());
    }
    if !nid_hits.is_empty() {
        return ambiguous(query_kinds);
    }

    // 3 and 4: the best uncontradicted candidate must stand alone.
    let best_clean = assessed
        .iter()
        .filter(|(_, _, contradicted)| !contradicted)
        .map(|(_, s, _)| *s)
        .max();
    if let Some(best @ (Strength::Strong | Strength::Probable)) = best_clean {
        let mut at_best = assessed
            .iter()
            .filter(|(_, s, contradicted)| *s == best && !contradicted);
        let rivals = assessed
            .iter()
            .filter(|(_, s, contradicted)| *s >= Strength::Probable && (*s < best || *contradicted))
            .count();
        if let (Some((chosen, _, _)), None) = (at_best.next(), at_best.next())
            && rivals == 0
        {
            return Decision::Matched(chosen.id.clone());
        }
        return ambiguous(query_kinds);
    }

    // 5 and 6.
    let doubt = assessed
        .iter()
        .any(|(_, s, contradicted)| !contradicted || *s >= Strength::Probable);
    if doubt {
        ambiguous(query_kinds)
    } else {
        Decision::NoMatch
    }
}

fn strength(matched: &BTreeSet<MatchKeyKind>, only_nid: bool) -> Strength {
    use MatchKeyKind as K;
    let has = |k: K| matched.contains(&k);
    if has(K::NationalId) && (only_nid || matched.len() > 1) {
        Strength::Certain
    } else if (has(K::NamesDob) || has(K::SwappedNamesDob)) && (std::env::var("DC_STRICT").is_err() || has(K::PhoneticNamesPostcode)) {
        Strength::Strong
    } else if has(K::PhoneticNamesPostcode)
        && (has(K::PhoneticFamilyDob) || has(K::NamesDobTransposed))
    {
        Strength::Probable
    } else if matched.iter().any(|k| *k != K::Unspecified) {
        Strength::Weak
    } else {
        Strength::None
    }
}

fn ambiguous<Id>(query_kinds: &BTreeSet<MatchKeyKind>) -> Decision<Id> {
    use MatchKeyKind as K;
    let mut wanted = Vec::new();
    if !query_kinds.contains(&K::NationalId) {
        wanted.push(IdentifierKind::NationalId);
    }
    let dob_kinds = [
        K::NamesDob,
        K::PhoneticFamilyDob,
        K::SwappedNamesDob,
        K::NamesDobTransposed,
    ];
    if !dob_kinds.iter().any(|k| query_kinds.contains(k)) {
        wanted.push(IdentifierKind::DateOfBirth);
    }
    if !query_kinds.contains(&K::PhoneticNamesPostcode) {
        wanted.push(IdentifierKind::Postcode);
    }
    wanted.sort();
    Decision::Ambiguous {
        more_identifiers_wanted: wanted,
    }
}
