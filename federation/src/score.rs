//! The answering node's decision in version 2 of matching: every person a blocking
//! key found is compared with the query field by field (agree, one typing slip apart,
//! similar, disagree, missing), the comparison is weighed with Fellegi–Sunter weights,
//! and a person is matched only when their weight clears a threshold, beats everyone
//! else the query found by a margin, and no precision guard holds.
//!
//! # Weights
//!
//! A field's weight for a level is log2(m / u): m, the chance of that level when the
//! two records are the same person, u, when they are two people. The defaults
//! ([`Weights::default`]) come from the error rates of this project's corruption model
//! (`patchwork-linkage-eval`: each field wrong in a few percent of records, and how)
//! and from how often two different people agree by chance in a population of a
//! million (a given name about 1 in 60, a family name about 1 in 150, a date of birth
//! about 1 in 20,000, a unit postcode about 1 in 25,000, a four-digit suburb 1 in 700).
//! A missing field weighs 0. A national identifier that disagrees weighs -10 in a
//! scheme with a check digit (a slip is caught at entry, so a well-formed identifier
//! that differs is another's or a wrong one) and -6 in one without (a slip gives
//! another well-formed identifier, which the deletion tokens then usually recognise
//! as one slip apart, weighing +9): about log2 of how often the corruption model
//! replaces an identifier, made a little harsher. A four-digit suburb postcode is
//! never "a slip apart" from another: one in twenty pairs of suburbs are. A name
//! misread by a scanner (`rn` for `m`: [`crate::tokens::ocr_folded`]) is alike,
//! as a name of the same sound is.
//!
//! # Guards
//!
//! Weights describe the average population; some people are not average. A query
//! about someone the node does not hold must not disclose a look-alike it does hold,
//! and `patchwork-linkage-eval` measures the look-alikes that weights alone let
//! through. So, whatever the weight:
//!
//! - **Without an agreeing national identifier**, a candidate needs its given name to
//!   agree, on both sides (not merely one slip apart: twins are called Leo and Leon;
//!   and a twin held without a given name is anyone's twin), a date of birth that
//!   does not disagree (agrees, is a digit or a day-month swap away, or is missing),
//!   and a postcode that does not disagree (a namesake elsewhere with the same
//!   birthday). Except that an identifier one slip from the held one, in a scheme
//!   without a check digit, vouches for one other difference (a twin's or a
//!   namesake's own number is another number, not a slip of this one): everything
//!   else agrees but one field, the given name at least alike in sound, the birth
//!   date within five years. The residual risk, written down: twins
//!   given consecutive numbers and look-alike names, one of them held.
//! - **With an agreeing national identifier**, at most one of given name, family name
//!   and date of birth may disagree unless the given name agrees; a given name that
//!   disagrees needs both the others alike (names: agree, a slip apart or similar;
//!   the birth date: agree or day and month swapped); a given name neither agreeing
//!   nor a slip away (missing included) needs a birth date that agrees, is swapped or
//!   a digit away; and the birth date may not be more than five years away. An
//!   identifier with more against it was most likely recorded against the wrong
//!   person: a sibling's (another given name, the same family), or a parent's of the
//!   same name (another generation), mixed up at a desk. Both names disagreeing
//!   stay guarded even when the birth date and the address agree: spouses who
//!   arrived together often carry the same placeholder birth date.
//!
//! A guarded candidate is never matched, but still counts as a rival: if it weighs
//! near the best, the answer is ambiguous. An identifier caught by the second guard
//! is explained away: the candidate weighs as if it had none. When its birth date
//! contradicts the query and it lives at the query's address with its family
//! name, the number is a household member's, and every other candidate at that
//! address whose number disagrees weighs as if the query had none too (unless an
//! unguarded candidate agrees on the number).
//!
//! # Decision
//!
//! The best unguarded candidate is matched when its weight is at least
//! [`Weights::threshold`] and at least [`Weights::margin`] above every other
//! candidate's, unless the identifier is all it has over a rival: when the best agrees
//! on the identifier and another unguarded candidate with the same birth date has
//! names, birth date and postcode that alone weigh more than the best's and reach the
//! threshold,
//! the identifier and the demographics point at different people. Otherwise the answer is ambiguous if any candidate reaches
//! [`Weights::threshold`] minus [`Weights::margin`] (someone like the person asked
//! about is here), and no match below that.

use patchwork_proto::v1::IdentifierKind;

use crate::decide::Decision;
use crate::tokens::{
    DateTokens, IdentifierTokens, NameTokens, PostcodeTokens, SubjectTokens, one_slip_apart,
};

/// How two values of a field compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// One side (or both) lacks the field.
    Missing,
    Disagree,
    /// Dates of birth only: wrong, but the year within five either way (the same
    /// generation). Still a disagreement for the guards.
    Near,
    /// Alike but more than a slip apart: the same sound (names), the same district
    /// (postcodes), day and month swapped (dates).
    Similar,
    /// One typing slip apart.
    Slip,
    Agree,
}

/// A candidate compared with the query, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub given_name: Level,
    pub family_name: Level,
    pub date_of_birth: Level,
    pub postcode: Level,
    pub national_id: Level,
    /// Both postcodes name a street, not a suburb (they have a district).
    pub unit_postcode: bool,
    /// The held identifier's scheme has a check digit.
    pub id_check_digit: bool,
}

fn name_level(query: Option<&NameTokens>, held: Option<&NameTokens>) -> Level {
    let (Some(q), Some(h)) = (query, held) else {
        return Level::Missing;
    };
    let slip = one_slip_apart(q.exact, &q.deletions, h.exact, &h.deletions);
    let same = q.exact == h.exact || (q.full != 0 && q.full == h.full);
    if same || (slip && (q.transliterated || h.transliterated)) {
        // Transliteration standards differ by a letter (Mariia, Maria; Oleh, Oleg).
        Level::Agree
    } else if slip || q.words.contains(&h.exact) || h.words.contains(&q.exact) {
        // One slip apart, or one record adds a middle name or a second family name.
        Level::Slip
    } else if (q.phonetic != 0 && q.phonetic == h.phonetic)
        || (q.reading != 0 && q.reading == h.reading)
    {
        // The same sound, or one is the other misread by a scanner (`m` read as
        // `rn`; but Marion and Manon read alike too).
        Level::Similar
    } else {
        Level::Disagree
    }
}

fn date_level(query: Option<&DateTokens>, held: Option<&DateTokens>) -> Level {
    let (Some(q), Some(h)) = (query, held) else {
        return Level::Missing;
    };
    if q.exact == h.exact {
        Level::Agree
    } else if q.year == h.year && q.month_day == h.day_month {
        Level::Similar
    } else if q.deletions.iter().zip(&h.deletions).any(|(a, b)| a == b) {
        // Same length (eight digits), so only a substituted digit counts.
        Level::Slip
    } else if q.year == h.year || q.years_near.contains(&h.year) || h.years_near.contains(&q.year) {
        Level::Near
    } else {
        Level::Disagree
    }
}

fn postcode_level(query: Option<&PostcodeTokens>, held: Option<&PostcodeTokens>) -> Level {
    let (Some(q), Some(h)) = (query, held) else {
        return Level::Missing;
    };
    // A one-character slip in a street's postcode is a slip; two four-digit
    // suburbs a digit apart are two suburbs (one in twenty pairs are).
    let unit = q.district != 0 && h.district != 0;
    if q.exact == h.exact {
        Level::Agree
    } else if unit && one_slip_apart(q.exact, &q.deletions, h.exact, &h.deletions) {
        Level::Slip
    } else if q.district != 0 && q.district == h.district {
        Level::Similar
    } else {
        Level::Disagree
    }
}

fn id_level(query: Option<&IdentifierTokens>, held: Option<&IdentifierTokens>) -> Level {
    let (Some(q), Some(h)) = (query, held) else {
        return Level::Missing;
    };
    if q.exact == h.exact {
        Level::Agree
    } else if !h.deletions.is_empty()
        && one_slip_apart(q.exact, &q.deletions, h.exact, &h.deletions)
    {
        Level::Slip
    } else {
        Level::Disagree
    }
}

/// Compares a query's tokens with a held person's tokens made under the same key.
/// Names are compared as recorded and crosswise; the crosswise reading counts when
/// both names then agree at least to a slip and better than as recorded (one record
/// swapped given and family name).
pub fn compare(query: &SubjectTokens, held: &SubjectTokens) -> Comparison {
    let straight = (
        name_level(query.given_name.as_ref(), held.given_name.as_ref()),
        name_level(query.family_name.as_ref(), held.family_name.as_ref()),
    );
    let crossed = (
        name_level(query.given_name.as_ref(), held.family_name.as_ref()),
        name_level(query.family_name.as_ref(), held.given_name.as_ref()),
    );
    let rank = |(a, b): (Level, Level)| a as u8 + b as u8;
    let (given_name, family_name) =
        if crossed.0 >= Level::Slip && crossed.1 >= Level::Slip && rank(crossed) > rank(straight) {
            crossed
        } else {
            straight
        };
    Comparison {
        given_name,
        family_name,
        date_of_birth: date_level(query.date_of_birth.as_ref(), held.date_of_birth.as_ref()),
        postcode: postcode_level(query.postcode.as_ref(), held.postcode.as_ref()),
        national_id: id_level(query.national_id.as_ref(), held.national_id.as_ref()),
        unit_postcode: query
            .postcode
            .as_ref()
            .zip(held.postcode.as_ref())
            .is_some_and(|(q, h)| q.district != 0 && h.district != 0),
        id_check_digit: held
            .national_id
            .as_ref()
            .is_some_and(|h| h.deletions.is_empty()),
    }
}

/// One field's weights by level (log2 likelihood ratios; missing is 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldWeights {
    pub agree: f64,
    pub slip: f64,
    pub similar: f64,
    /// Dates of birth only (other fields never compare as near).
    pub near: f64,
    pub disagree: f64,
}

impl FieldWeights {
    fn of(&self, level: Level) -> f64 {
        match level {
            Level::Missing => 0.0,
            Level::Disagree => self.disagree,
            Level::Near => self.near,
            Level::Similar => self.similar,
            Level::Slip => self.slip,
            Level::Agree => self.agree,
        }
    }
}

/// The weights, threshold and margin of the decision (see the module's docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub given_name: FieldWeights,
    pub family_name: FieldWeights,
    pub date_of_birth: FieldWeights,
    /// A postcode that names a street (`RH1 1AA`).
    pub unit_postcode: FieldWeights,
    /// A postcode that names a suburb (`3056`).
    pub suburb_postcode: FieldWeights,
    pub national_id: FieldWeights,
    /// What a disagreeing identifier weighs in a scheme with a check digit.
    pub id_disagree_checked: f64,
    pub threshold: f64,
    pub margin: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            given_name: FieldWeights {
                agree: 5.5,
                slip: 3.0,
                similar: 1.0,
                near: -4.0,
                disagree: -4.0,
            },
            family_name: FieldWeights {
                agree: 7.0,
                slip: 4.5,
                similar: 2.5,
                near: -4.0,
                disagree: -4.0,
            },
            date_of_birth: FieldWeights {
                agree: 14.0,
                slip: 6.0,
                similar: 8.0,
                near: -3.0,
                disagree: -9.0,
            },
            unit_postcode: FieldWeights {
                agree: 13.0,
                slip: 6.0,
                similar: 3.0,
                near: -3.0,
                disagree: -3.0,
            },
            suburb_postcode: FieldWeights {
                agree: 8.0,
                slip: 2.0,
                similar: 2.0,
                near: -3.0,
                disagree: -3.0,
            },
            national_id: FieldWeights {
                agree: 20.0,
                slip: 9.0,
                similar: 9.0,
                near: -6.0,
                disagree: -6.0,
            },
            id_disagree_checked: -10.0,
            threshold: 21.0,
            margin: 5.0,
        }
    }
}

impl Weights {
    /// The comparison's total weight.
    pub fn weigh(&self, c: &Comparison) -> f64 {
        let postcode = if c.unit_postcode {
            &self.unit_postcode
        } else {
            &self.suburb_postcode
        };
        let id = if c.national_id == Level::Disagree && c.id_check_digit {
            self.id_disagree_checked
        } else {
            self.national_id.of(c.national_id)
        };
        self.given_name.of(c.given_name)
            + self.family_name.of(c.family_name)
            + self.date_of_birth.of(c.date_of_birth)
            + postcode.of(c.postcode)
            + id
    }
}

/// Why a candidate may not be matched whatever it weighs (see the module's docs), or
/// `None`.
pub fn guard(c: &Comparison) -> Option<&'static str> {
    if c.national_id == Level::Agree {
        let fields = [c.given_name, c.family_name, c.date_of_birth];
        // A birth date a digit away may be years away (1993, 1998): not alike
        // enough to vouch for an identifier against a disagreeing given name.
        let alike = [c.given_name, c.family_name]
            .iter()
            .filter(|l| **l >= Level::Similar)
            .count()
            + usize::from(matches!(c.date_of_birth, Level::Agree | Level::Similar));
        let unlike = fields
            .iter()
            .filter(|l| matches!(l, Level::Disagree | Level::Near))
            .count();
        if c.date_of_birth == Level::Disagree {
            return Some("the identifier agrees but the birth date is a generation away");
        }
        if !matches!(c.given_name, Level::Agree | Level::Slip)
            && !matches!(c.date_of_birth, Level::Agree | Level::Similar | Level::Slip)
        {
            return Some(
                "the identifier agrees but neither the given name nor the birth date backs it",
            );
        }
        let given_unlike = c.given_name == Level::Disagree;
        if (unlike >= 2 && c.given_name != Level::Agree) || (given_unlike && alike < 2) {
            return Some("the identifier agrees but the names and birth date point elsewhere");
        }
        return None;
    }
    if c.national_id == Level::Slip && slip_vouches(c) {
        return None;
    }
    if c.given_name != Level::Agree {
        return Some("without the identifier, the given name must agree");
    }
    if matches!(c.date_of_birth, Level::Disagree | Level::Near) {
        return Some("without the identifier, the date of birth must not disagree");
    }
    if c.postcode == Level::Disagree {
        return Some("without the identifier, the postcode must not disagree");
    }
    None
}

/// Whether an identifier one slip from the held one (a scheme without a check
/// digit: a look-alike's own number is random, so a slip apart is this person's
/// mistyped) vouches for the rest: everything else agrees but one field, which is
/// the given name a slip away or alike in sound, the birth date within five years
/// (not a parent's), or the postcode or family name.
fn slip_vouches(c: &Comparison) -> bool {
    let others = [c.given_name, c.family_name, c.date_of_birth, c.postcode];
    let off = others.iter().filter(|l| **l != Level::Agree).count();
    off <= 1
        && c.given_name >= Level::Similar
        && matches!(
            c.date_of_birth,
            Level::Agree | Level::Similar | Level::Slip | Level::Near
        )
}

/// A candidate as scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored<Id> {
    pub id: Id,
    pub comparison: Comparison,
    /// The comparison's weight; for an identifier recorded against the wrong person
    /// (the second guard), the weight without it.
    pub weight: f64,
    /// The weight of everything but the identifier.
    pub demographics: f64,
    pub guard: Option<&'static str>,
}

/// Scores one candidate.
pub fn score<Id>(id: Id, comparison: Comparison, weights: &Weights) -> Scored<Id> {
    let demographics = weights.weigh(&Comparison {
        national_id: Level::Missing,
        ..comparison
    });
    let guard = guard(&comparison);
    let weight = if guard.is_some() && comparison.national_id == Level::Agree {
        demographics
    } else {
        weights.weigh(&comparison)
    };
    Scored {
        id,
        comparison,
        weight,
        demographics,
        guard,
    }
}

/// Which of the query's fields would help settle an ambiguous answer: the national
/// identifier, date of birth and postcode it lacks, in enum order.
pub fn wanted(query: &SubjectTokens) -> Vec<IdentifierKind> {
    let mut out = Vec::new();
    if query.national_id.is_none() {
        out.push(IdentifierKind::NationalId);
    }
    if query.date_of_birth.is_none() {
        out.push(IdentifierKind::DateOfBirth);
    }
    if query.postcode.is_none() {
        out.push(IdentifierKind::Postcode);
    }
    out
}

/// Decides over every candidate the query's keys found, each scored once (see the
/// module's docs).
pub fn decide_scored<Id: Clone>(
    candidates: &[Scored<Id>],
    weights: &Weights,
    query: &SubjectTokens,
) -> Decision<Id> {
    // An identifier that agrees with a candidate the guards explained away
    // because its birth date contradicts the query's (a sibling's or a parent's
    // number on this record) says nothing against the others at that address:
    // they weigh as if the query had none. Not when the holder was guarded only
    // for lack of backing: a child's number with the father's given name and no
    // birth date is as likely the child's record with a wrong name.
    // The holder must be of the household the query names (family name and
    // postcode agree), no unguarded candidate may agree on the number (which
    // would back it), and only candidates at that address are relieved.
    let borrowed = candidates.iter().any(|s| {
        let c = &s.comparison;
        s.guard.is_some()
            && c.national_id == Level::Agree
            && matches!(c.date_of_birth, Level::Disagree | Level::Near)
            && c.family_name == Level::Agree
            && c.postcode == Level::Agree
    }) && !candidates
        .iter()
        .any(|s| s.guard.is_none() && s.comparison.national_id == Level::Agree);
    let weight = |s: &Scored<Id>| {
        if borrowed
            && s.comparison.national_id == Level::Disagree
            && s.comparison.postcode == Level::Agree
        {
            s.demographics
        } else {
            s.weight
        }
    };
    let mut order: Vec<&Scored<Id>> = candidates.iter().collect();
    order.sort_by(|a, b| weight(b).total_cmp(&weight(a)));
    let Some(best) = order.first() else {
        return Decision::NoMatch;
    };
    let best_weight = weight(best);
    let runner_up = order.get(1).map_or(f64::NEG_INFINITY, |s| weight(s));
    // The identifier points at one person and the names and birth date at another.
    let split = best.comparison.national_id == Level::Agree
        && order[1..].iter().any(|other| {
            other.guard.is_none()
                && other.comparison.date_of_birth == Level::Agree
                && other.demographics >= weights.threshold
                && other.demographics > best.demographics
        });
    if best.guard.is_none()
        && !split
        && best_weight >= weights.threshold
        && best_weight - runner_up >= weights.margin
    {
        return Decision::Matched(best.id.clone());
    }
    if best_weight >= weights.threshold - weights.margin {
        Decision::Ambiguous {
            more_identifiers_wanted: wanted(query),
        }
    } else {
        Decision::NoMatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matchkeys::Subject;
    use crate::tokens::{ocr_folded, subject_tokens};

    fn oliver() -> Subject {
        Subject {
            given_name: Some("Oliver".into()),
            family_name: Some("Kowalski".into()),
            date_of_birth: Some((2016, 2, 10)),
            postcode: Some("BN3 3CC".into()),
            national_id: Some(("crn".into(), "7654321".into())),
        }
    }

    fn compared(query: &Subject, held: &Subject) -> Comparison {
        let key = [3_u8; 32];
        compare(&subject_tokens(&key, query), &subject_tokens(&key, held))
    }

    #[test]
    fn one_field_wrong_with_the_identifier_matches_and_a_twin_without_it_does_not() {
        let weights = Weights::default();
        let held = oliver();
        let moved = Subject {
            postcode: Some("BN9 9ZZ".into()),
            ..oliver()
        };
        let scored = score("B-3", compared(&moved, &held), &weights);
        assert_eq!(scored.guard, None);
        assert!(scored.weight >= weights.threshold, "{scored:?}");

        // The twin Brighton does not hold, asked about without an identifier.
        let twin = Subject {
            given_name: Some("Olivia".into()),
            national_id: None,
            ..oliver()
        };
        let scored = score("B-3", compared(&twin, &held), &weights);
        assert!(scored.guard.is_some(), "{scored:?}");
        let decision = decide_scored(&[scored], &weights, &SubjectTokens::default());
        assert_ne!(decision, Decision::Matched("B-3"));
    }

    #[test]
    fn a_crafted_query_cannot_make_a_guessed_name_agree() {
        // A peer holding the secret stuffs its deletions, words and scanner
        // reading with the tokens of a name it guesses: that makes the given name a slip away at best,
        // and without the identifier a slip is not enough.
        let key = [3_u8; 32];
        let held = subject_tokens(&key, &oliver());
        let mut crafted = subject_tokens(
            &key,
            &Subject {
                given_name: Some("Olivia".into()),
                national_id: None,
                ..oliver()
            },
        );
        if let (Some(asked), Some(guessed)) = (crafted.given_name.as_mut(), &held.given_name) {
            asked.deletions = vec![guessed.exact; 24];
            asked.words = vec![guessed.exact; 4];
            asked.reading = guessed.reading;
        }
        let comparison = compare(&crafted, &held);
        assert_eq!(comparison.given_name, Level::Slip);
        assert!(guard(&comparison).is_some());
    }

    #[test]
    fn an_identifier_recorded_against_a_sibling_or_a_parent_is_explained_away() {
        let weights = Weights::default();
        let sibling = Subject {
            given_name: Some("Zofia".into()),
            date_of_birth: Some((2013, 5, 1)),
            national_id: Some(("crn".into(), "1111111".into())),
            ..oliver()
        };
        // Oliver's record, carrying his sister's number, without a birth date.
        let asked = Subject {
            date_of_birth: None,
            national_id: sibling.national_id.clone(),
            ..oliver()
        };
        let on_sibling = score("sister", compared(&asked, &sibling), &weights);
        assert!(on_sibling.guard.is_some(), "{on_sibling:?}");
        assert!(on_sibling.weight < weights.threshold, "{on_sibling:?}");

        // Without a given name, and a sibling born three years away: the
        // identifier has nothing behind it.
        let sister = Subject {
            given_name: Some("Ava".into()),
            date_of_birth: Some((2013, 7, 1)),
            ..sibling.clone()
        };
        let asked = Subject {
            given_name: None,
            national_id: sister.national_id.clone(),
            ..oliver()
        };
        let on_sister = score("sister", compared(&asked, &sister), &weights);
        assert_eq!(
            on_sister.guard,
            Some("the identifier agrees but neither the given name nor the birth date backs it")
        );

        // A parent of the same name, a generation older, with the number.
        let parent = Subject {
            date_of_birth: Some((1985, 2, 10)),
            national_id: Some(("crn".into(), "2222222".into())),
            ..oliver()
        };
        let asked = Subject {
            date_of_birth: Some((2015, 6, 1)),
            national_id: parent.national_id.clone(),
            ..oliver()
        };
        let on_parent = score("parent", compared(&asked, &parent), &weights);
        assert_eq!(
            on_parent.guard,
            Some("the identifier agrees but the birth date is a generation away")
        );
    }

    #[test]
    fn a_scanned_name_misread_compares_as_alike_and_cannot_back_a_sisters_number() {
        let weights = Weights::default();
        // An `m` read as `rn`, a `d` as `cl`: not one typing slip, one reading.
        let held = Subject {
            given_name: Some("Emma".into()),
            family_name: Some("Goddard".into()),
            ..oliver()
        };
        let scanned = Subject {
            given_name: Some("Ernma".into()),
            family_name: Some("Gocldard".into()),
            ..oliver()
        };
        let c = compared(&scanned, &held);
        assert_eq!(
            (c.given_name, c.family_name),
            (Level::Similar, Level::Similar)
        );
        assert_eq!(ocr_folded("Ernma"), ocr_folded("Emma"));
        assert_eq!(score("B-3", c, &weights).guard, None);
        // Marion and Manon read alike. Marion's number on her sister's record,
        // her birth date three years off: the number has nothing behind it.
        let marion = Subject {
            given_name: Some("Marion".into()),
            date_of_birth: Some((2013, 2, 10)),
            ..held.clone()
        };
        let manon = Subject {
            given_name: Some("Manon".into()),
            date_of_birth: Some((2016, 6, 1)),
            ..marion.clone()
        };
        let on_marion = score("marion", compared(&manon, &marion), &weights);
        assert_eq!(on_marion.comparison.given_name, Level::Similar);
        assert!(on_marion.guard.is_some(), "{on_marion:?}");
    }

    #[test]
    fn an_identifier_one_slip_away_vouches_for_one_other_difference_but_not_for_a_missing_name() {
        let weights = Weights::default();
        let held = oliver();
        // A 7-digit number without a check digit, one digit mistyped, and a
        // given name mistyped too: a twin's own number would be another number.
        let asked = Subject {
            given_name: Some("Olivr".into()),
            national_id: Some(("crn".into(), "7654329".into())),
            ..oliver()
        };
        let scored = score("B-3", compared(&asked, &held), &weights);
        assert_eq!(scored.comparison.national_id, Level::Slip);
        assert_eq!(scored.guard, None, "{scored:?}");
        assert!(scored.weight >= weights.threshold, "{scored:?}");
        // Moved as well: two differences besides the number.
        let moved_too = Subject {
            postcode: Some("BN9 9ZZ".into()),
            ..asked.clone()
        };
        assert!(
            score("B-3", compared(&moved_too, &held), &weights)
                .guard
                .is_some()
        );
        // Without a given name the number a slip away could be a twin's.
        let nameless = Subject {
            given_name: None,
            ..asked
        };
        assert!(
            score("B-3", compared(&nameless, &held), &weights)
                .guard
                .is_some()
        );
    }

    #[test]
    fn both_names_different_stay_guarded_even_with_the_number_birth_date_and_address() {
        // One spouse's number on the other's record, both given the same
        // placeholder birth date on arrival, at one address.
        let weights = Weights::default();
        let held = Subject {
            date_of_birth: Some((1990, 1, 1)),
            ..oliver()
        };
        let spouse = Subject {
            given_name: Some("Mariam".into()),
            family_name: Some("Haddad".into()),
            ..held.clone()
        };
        let scored = score("B-3", compared(&spouse, &held), &weights);
        assert!(scored.guard.is_some(), "{scored:?}");
    }

    #[test]
    fn a_mothers_number_on_her_daughters_record_says_nothing_against_the_daughter() {
        let weights = Weights::default();
        let daughter = Subject {
            given_name: Some("Zofia".into()),
            family_name: Some("Nowak".into()),
            date_of_birth: Some((2013, 5, 1)),
            postcode: Some("3056".into()),
            national_id: Some(("crn".into(), "7654321".into())),
        };
        let mother = Subject {
            given_name: Some("Anna".into()),
            date_of_birth: Some((1985, 2, 3)),
            national_id: Some(("crn".into(), "1234567".into())),
            ..daughter.clone()
        };
        // The daughter's record, a digit of her birth date mistyped, with her
        // mother's number.
        let asked = Subject {
            date_of_birth: Some((2013, 5, 7)),
            national_id: mother.national_id.clone(),
            ..daughter.clone()
        };
        let key = [3_u8; 32];
        let query = subject_tokens(&key, &asked);
        let on_daughter = score("daughter", compared(&asked, &daughter), &weights);
        let on_mother = score("mother", compared(&asked, &mother), &weights);
        assert!(on_mother.guard.is_some(), "{on_mother:?}");
        // Alone, the disagreeing number keeps the daughter below the threshold.
        assert!(matches!(
            decide_scored(std::slice::from_ref(&on_daughter), &weights, &query),
            Decision::Ambiguous { .. }
        ));
        // With the mother held, the number is hers: it counts for nobody else.
        assert_eq!(
            decide_scored(&[on_mother, on_daughter], &weights, &query),
            Decision::Matched("daughter")
        );

        // A son's number with his father's given name and no birth date: the
        // son's record with a wrong name, or the father's with a wrong number.
        // Nothing tells which: the father is not disclosed.
        let son = Subject {
            given_name: Some("Marco".into()),
            family_name: Some("Rossi".into()),
            date_of_birth: Some((2012, 11, 11)),
            postcode: Some("SM12 9AT".into()),
            national_id: Some(("nhs".into(), "7530651765".into())),
        };
        let father = Subject {
            given_name: Some("Matteo".into()),
            date_of_birth: Some((1991, 9, 3)),
            national_id: Some(("nhs".into(), "4921548803".into())),
            ..son.clone()
        };
        let asked = Subject {
            given_name: father.given_name.clone(),
            date_of_birth: None,
            ..son.clone()
        };
        let query = subject_tokens(&key, &asked);
        let on_son = score("son", compared(&asked, &son), &weights);
        let on_father = score("father", compared(&asked, &father), &weights);
        assert!(on_son.guard.is_some(), "{on_son:?}");
        assert_ne!(
            decide_scored(&[on_son, on_father], &weights, &query),
            Decision::Matched("father")
        );

        // Someone this node does not hold, asked about with her own number and
        // no postcode: the node's record of her mother wrongly carries that
        // number, and it holds her namesake born the same day elsewhere. The
        // mother is not shown to share an address with the query, so the
        // number still counts against the namesake.
        let mother_with_her_number = Subject {
            given_name: Some("Anna".into()),
            date_of_birth: Some((1985, 2, 3)),
            national_id: Some(("crn".into(), "7777777".into())),
            ..daughter.clone()
        };
        let namesake = Subject {
            postcode: Some("3999".into()),
            national_id: Some(("crn".into(), "5555555".into())),
            ..daughter.clone()
        };
        let asked = Subject {
            postcode: None,
            national_id: Some(("crn".into(), "7777777".into())),
            ..daughter.clone()
        };
        let query = subject_tokens(&key, &asked);
        let on_mother = score(
            "mother",
            compared(&asked, &mother_with_her_number),
            &weights,
        );
        let on_namesake = score("namesake", compared(&asked, &namesake), &weights);
        assert!(on_mother.guard.is_some(), "{on_mother:?}");
        assert_ne!(
            decide_scored(&[on_mother, on_namesake], &weights, &query),
            Decision::Matched("namesake")
        );
    }

    #[test]
    fn a_close_runner_up_makes_the_answer_ambiguous() {
        let weights = Weights::default();
        let strong = |id| Scored {
            id,
            comparison: compared(&oliver(), &oliver()),
            weight: 40.0,
            demographics: 20.0,
            guard: None,
        };
        let close = Scored {
            weight: 36.0,
            ..strong("B")
        };
        let query = SubjectTokens::default();
        assert_eq!(
            decide_scored(&[strong("A")], &weights, &query),
            Decision::Matched("A")
        );
        assert!(matches!(
            decide_scored(&[strong("A"), close], &weights, &query),
            Decision::Ambiguous { .. }
        ));
        assert_eq!(
            decide_scored::<&str>(&[], &weights, &query),
            Decision::NoMatch
        );
    }
}
