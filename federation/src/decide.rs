//! The answering node's match decision: given which of a query's blinded keys hit which
//! of its persons, is there exactly one person it may disclose the team around?
//!
//! Precision comes first. Disclosing the team around the wrong child is the worst outcome,
//! so anything short of one clearly best candidate is [`Decision::Ambiguous`], which
//! discloses nothing and tells the asker which identifiers would help.
//!
//! # Rules
//!
//! # Whose kinds
//!
//! A hit counts under the kind the answering node *stored* for the entry it hit, never
//! under the kind the query claims: a peer holding the secret could otherwise send the
//! digest of a weak key (phonetic family name and date of birth) labelled as a national
//! id and be answered as if it knew the identifier. The four stored kinds' pre-images
//! carry distinct tags (`nid`, `nd`, `pfd`, `pnp`; see [`matchkeys`](crate::matchkeys)),
//! so a digest of one kind never equals a digest of another. The query's label may only
//! *weaken* a hit: the query-only kinds `SWAPPED_NAMES_DOB` and `NAMES_DOB_TRANSPOSED`
//! are how an asker derived an `nd` digest, and a transposed date is weaker evidence than
//! the date as recorded ([`effective_kind`]). The kinds a query "carried" are likewise
//! its keys' effective kinds, so a label cannot hide a key either.
//!
//! Each candidate's hits (the effective kinds of the query keys that hit that
//! candidate's index keys) give it a strength:
//!
//! - **certain**: a `NATIONAL_ID` hit corroborated by any other hit, or a
//!   `NATIONAL_ID` hit when the query carried nothing but a national id;
//! - **strong**: a `NAMES_DOB` or `SWAPPED_NAMES_DOB` hit together with a
//!   `PHONETIC_NAMES_POSTCODE` hit, or alone when the query carried no
//!   `PHONETIC_NAMES_POSTCODE` key (no postcode to compare);
//! - **probable**: `PHONETIC_NAMES_POSTCODE` with `PHONETIC_FAMILY_DOB` (exact given
//!   name, sound-alike family name, same date of birth and postcode) or with
//!   `NAMES_DOB_TRANSPOSED`;
//! - **weak**: any other hit. That includes names and date of birth whose postcode
//!   disagrees, and a lone national id hit when nothing else of the query hit (a
//!   mistyped or borrowed identifier).
//!
//! Why names and date of birth need the postcode: a query fans out to every agreed peer,
//! most of which do not hold the person, and somewhere among millions of records another
//! child shares a common name and birthday. The first evaluation (since replaced by
//! `patchwork-linkage-eval`) measured it: a namesake elsewhere was disclosed 35% of the time when name and date of birth alone
//! sufficed (whenever national ids did not contradict), and never with this rule. The
//! price is a moved family without a national id on both sides: ambiguous, asked for
//! the id. When the query has no postcode at all, name and date of birth still decide,
//! as they must for a practitioner who knows no address; that case keeps the namesake
//! risk (measured: 38% of such namesakes) and is the reason the asking node should send
//! the postcode whenever it has one.
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
//! `patchwork-linkage-eval` measures these rules (its `KeysOnly` answerer) beside
//! version 2, and `federation/eval/tests/recall.rs` pins their precision; change them
//! only with its table in hand.

use std::collections::BTreeSet;

use patchwork_proto::v1::{IdentifierKind, MatchKeyKind};

/// One of the answering node's persons that at least one query key hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<Id> {
    /// The answering node's own id for the person.
    pub id: Id,
    /// The effective kinds ([`effective_kind`]) of the query keys that hit this
    /// person's index keys.
    pub matched: BTreeSet<MatchKeyKind>,
    /// Whether this person has a national id *in a scheme the asking side uses too*
    /// (for a key set shared within one jurisdiction, the node's default scheme). A
    /// national id of a scheme the asker cannot hold must not count: it would make every
    /// candidate of a cross-border query look contradicted.
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

/// The kind a query key's hit counts as: the kind the answering node stored for the
/// entry it hit (`stored`), unless the query's label (`claimed`) is one that an `nd`
/// digest may honestly carry and weighs no more than the stored kind. A label never
/// strengthens a hit; an impossible label (a `pfd` digest called a national id) is
/// ignored. A stored kind this node does not know counts as nothing.
pub fn effective_kind(claimed: MatchKeyKind, stored: MatchKeyKind) -> MatchKeyKind {
    use MatchKeyKind as K;
    match (stored, claimed) {
        (K::NamesDob, K::SwappedNamesDob | K::NamesDobTransposed) => claimed,
        (
            K::NationalId
            | K::NamesDob
            | K::PhoneticFamilyDob
            | K::PhoneticNamesPostcode
            | K::PostcodeDob,
            _,
        ) => stored,
        // Only the kinds above are ever stored.
        _ => K::Unspecified,
    }
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
/// docs for the rules). `candidates` are the persons any query key hit, in any order;
/// `query_kinds` are the effective kinds of the query's keys (the claimed kind of a key
/// that hit nothing).
pub fn decide<Id: Clone>(
    query_kinds: &BTreeSet<MatchKeyKind>,
    candidates: &[Candidate<Id>],
) -> Decision<Id> {
    let query_has_nid = query_kinds.contains(&MatchKeyKind::NationalId);

    let assessed: Vec<(&Candidate<Id>, Strength, bool)> = candidates
        .iter()
        .map(|c| {
            let contradicted = query_has_nid
                && c.has_national_id
                && !c.matched.contains(&MatchKeyKind::NationalId);
            (c, strength(query_kinds, &c.matched), contradicted)
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

fn strength(query_kinds: &BTreeSet<MatchKeyKind>, matched: &BTreeSet<MatchKeyKind>) -> Strength {
    use MatchKeyKind as K;
    let has = |k: K| matched.contains(&k);
    let only_nid = query_kinds.len() == 1 && query_kinds.contains(&K::NationalId);
    if has(K::NationalId) && (only_nid || matched.len() > 1) {
        Strength::Certain
    } else if (has(K::NamesDob) || has(K::SwappedNamesDob))
        && (has(K::PhoneticNamesPostcode) || !query_kinds.contains(&K::PhoneticNamesPostcode))
    {
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

#[cfg(test)]
mod tests {
    use super::*;
    use MatchKeyKind as K;

    fn kinds(list: &[K]) -> BTreeSet<K> {
        list.iter().copied().collect()
    }

    fn cand(id: u32, matched: &[K], has_national_id: bool) -> Candidate<u32> {
        Candidate {
            id,
            matched: kinds(matched),
            has_national_id,
        }
    }

    const FULL: &[K] = &[
        K::NationalId,
        K::NamesDob,
        K::PhoneticFamilyDob,
        K::PhoneticNamesPostcode,
        K::SwappedNamesDob,
        K::NamesDobTransposed,
    ];
    const NO_NID: &[K] = &[
        K::NamesDob,
        K::PhoneticFamilyDob,
        K::PhoneticNamesPostcode,
        K::SwappedNamesDob,
        K::NamesDobTransposed,
    ];

    fn wanted(list: &[IdentifierKind]) -> Decision<u32> {
        Decision::Ambiguous {
            more_identifiers_wanted: list.to_vec(),
        }
    }

    #[test]
    fn nothing_hit_is_no_match() {
        assert_eq!(decide::<u32>(&kinds(FULL), &[]), Decision::NoMatch);
        // A candidate with no hits at all is not evidence.
        assert_eq!(
            decide(&kinds(FULL), &[cand(1, &[], true)]),
            Decision::NoMatch
        );
    }

    #[test]
    fn national_id_with_corroboration_matches() {
        let q = kinds(FULL);
        let c = [
            cand(1, &[K::NationalId, K::PhoneticNamesPostcode], true),
            // A namesake without an id does not compete with a corroborated id.
            cand(2, &[K::NamesDob, K::PhoneticFamilyDob], false),
        ];
        assert_eq!(decide(&q, &c), Decision::Matched(1));
        // A query of nothing but the id matches on the id.
        let only = kinds(&[K::NationalId]);
        assert_eq!(
            decide(&only, &[cand(7, &[K::NationalId], true)]),
            Decision::Matched(7)
        );
    }

    #[test]
    fn national_id_alone_or_twice_is_ambiguous() {
        let q = kinds(FULL);
        // The id hit one record, the names another: a borrowed or mistyped id.
        let c = [
            cand(1, &[K::NationalId], true),
            cand(2, &[K::NamesDob, K::PhoneticNamesPostcode], false),
        ];
        assert_eq!(decide(&q, &c), wanted(&[]));
        // Duplicate records holding the same id.
        let c = [
            cand(1, &[K::NationalId, K::NamesDob], true),
            cand(2, &[K::NationalId, K::NamesDob], true),
        ];
        assert_eq!(decide(&q, &c), wanted(&[]));
    }

    #[test]
    fn names_dob_and_postcode_match() {
        let q = kinds(NO_NID);
        let c = [cand(
            3,
            &[K::NamesDob, K::PhoneticFamilyDob, K::PhoneticNamesPostcode],
            true,
        )];
        assert_eq!(decide(&q, &c), Decision::Matched(3));
        let c = [cand(
            3,
            &[K::SwappedNamesDob, K::PhoneticNamesPostcode],
            false,
        )];
        assert_eq!(decide(&q, &c), Decision::Matched(3));
    }

    #[test]
    fn names_dob_with_a_disagreeing_postcode_is_ambiguous() {
        let q = kinds(NO_NID);
        let c = [cand(3, &[K::NamesDob, K::PhoneticFamilyDob], true)];
        assert_eq!(decide(&q, &c), wanted(&[IdentifierKind::NationalId]));
        // Without a postcode in the query there is nothing to disagree.
        let q = kinds(&[K::NamesDob, K::PhoneticFamilyDob, K::SwappedNamesDob]);
        assert_eq!(decide(&q, &c), Decision::Matched(3));
    }

    #[test]
    fn a_contradicted_candidate_is_never_matched() {
        let q = kinds(FULL);
        let c = [cand(
            4,
            &[K::NamesDob, K::PhoneticFamilyDob, K::PhoneticNamesPostcode],
            true,
        )];
        assert_eq!(decide(&q, &c), wanted(&[]));
        // It also blocks a weaker match elsewhere.
        let c = [
            cand(4, &[K::NamesDob, K::PhoneticNamesPostcode], true),
            cand(5, &[K::PhoneticFamilyDob, K::PhoneticNamesPostcode], false),
        ];
        assert_eq!(decide(&q, &c), wanted(&[]));
        // Only weak hits on contradicted candidates: they are other people.
        let c = [cand(4, &[K::PhoneticFamilyDob], true)];
        assert_eq!(decide(&q, &c), Decision::NoMatch);
    }

    #[test]
    fn probable_matches_only_alone() {
        let q = kinds(NO_NID);
        let c = [cand(
            6,
            &[K::PhoneticFamilyDob, K::PhoneticNamesPostcode],
            true,
        )];
        assert_eq!(decide(&q, &c), Decision::Matched(6));
        let c = [cand(
            6,
            &[K::NamesDobTransposed, K::PhoneticNamesPostcode],
            true,
        )];
        assert_eq!(decide(&q, &c), Decision::Matched(6));
        let c = [
            cand(6, &[K::PhoneticFamilyDob, K::PhoneticNamesPostcode], true),
            cand(8, &[K::PhoneticFamilyDob, K::PhoneticNamesPostcode], true),
        ];
        assert_eq!(decide(&q, &c), wanted(&[IdentifierKind::NationalId]));
        // A strong candidate beside a probable one: doubt, not a match.
        let c = [
            cand(6, &[K::NamesDob, K::PhoneticNamesPostcode], false),
            cand(8, &[K::PhoneticFamilyDob, K::PhoneticNamesPostcode], false),
        ];
        assert_eq!(decide(&q, &c), wanted(&[IdentifierKind::NationalId]));
    }

    #[test]
    fn two_strong_candidates_are_ambiguous() {
        let q = kinds(NO_NID);
        let c = [
            cand(1, &[K::NamesDob, K::PhoneticNamesPostcode], false),
            cand(2, &[K::NamesDob, K::PhoneticNamesPostcode], false),
        ];
        assert_eq!(decide(&q, &c), wanted(&[IdentifierKind::NationalId]));
    }

    #[test]
    fn a_label_never_strengthens_a_hit() {
        // The review's attack: a phonetic-family + date-of-birth digest labelled as a
        // national id counts as what was stored.
        assert_eq!(
            effective_kind(K::NationalId, K::PhoneticFamilyDob),
            K::PhoneticFamilyDob
        );
        assert_eq!(
            effective_kind(K::NamesDob, K::PhoneticFamilyDob),
            K::PhoneticFamilyDob
        );
        assert_eq!(effective_kind(K::NationalId, K::NamesDob), K::NamesDob);
        assert_eq!(
            effective_kind(K::NamesDob, K::PhoneticNamesPostcode),
            K::PhoneticNamesPostcode
        );
        // Honest labels of an `nd` digest keep their (equal or weaker) meaning.
        assert_eq!(
            effective_kind(K::SwappedNamesDob, K::NamesDob),
            K::SwappedNamesDob
        );
        assert_eq!(
            effective_kind(K::NamesDobTransposed, K::NamesDob),
            K::NamesDobTransposed
        );
        // ... but only on an `nd` digest.
        assert_eq!(
            effective_kind(K::NamesDobTransposed, K::NationalId),
            K::NationalId
        );
        assert_eq!(
            effective_kind(K::SwappedNamesDob, K::PhoneticFamilyDob),
            K::PhoneticFamilyDob
        );
        // A kind no node stores is worth nothing.
        assert_eq!(
            effective_kind(K::NationalId, K::SwappedNamesDob),
            K::Unspecified
        );
        assert_eq!(
            effective_kind(K::NationalId, K::Unspecified),
            K::Unspecified
        );
        // So a relabelled weak key alone decides nothing.
        let q = kinds(&[K::PhoneticFamilyDob]);
        let c = [cand(
            1,
            &[effective_kind(K::NationalId, K::PhoneticFamilyDob)],
            true,
        )];
        assert_eq!(
            decide(&q, &c),
            wanted(&[IdentifierKind::Postcode, IdentifierKind::NationalId])
        );
    }

    #[test]
    fn weak_hits_ask_for_what_the_query_lacked() {
        // Names and postcode only: no date of birth, no id.
        let q = kinds(&[K::PhoneticNamesPostcode]);
        let c = [cand(1, &[K::PhoneticNamesPostcode], false)];
        assert_eq!(
            decide(&q, &c),
            wanted(&[IdentifierKind::DateOfBirth, IdentifierKind::NationalId])
        );
        // Names and date of birth only.
        let q = kinds(&[K::NamesDob, K::PhoneticFamilyDob]);
        let c = [cand(1, &[K::PhoneticFamilyDob], false)];
        assert_eq!(
            decide(&q, &c),
            wanted(&[IdentifierKind::Postcode, IdentifierKind::NationalId])
        );
    }
}
