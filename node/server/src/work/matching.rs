//! Deciding whether this node holds the person a lookup asks about, precise
//! first: disclosing the team around the wrong child is a serious harm, so an
//! uncertain match discloses nothing and says what would resolve it.
//!
//! A candidate matches when a strong identifier agrees (the national id, or
//! given name + family name + date of birth together) and nothing known on
//! both sides contradicts it (another national id of the same scheme, another
//! date of birth, or both given and family name different — one name may
//! change, both at once is more likely a mistyped id). Several matches, or a
//! national id that agrees while the date of birth does not, make the answer
//! ambiguous; so does an index key with more candidates than we read, since
//! the person asked about may be among those not read.

use patchwork_federation::normalise_name;
use patchwork_proto::v1::IdentifierKind;

use patchwork_store::model::{Demographics, Person};
use patchwork_store::{Store, StoreError, person_index_keys};

/// How many candidates one index key may bring in; far more than any real
/// person has namesakes with the same date of birth. A key with more makes
/// the answer ambiguous rather than silently dropping the rest.
const CANDIDATE_LIMIT: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MatchDecision {
    Matched(Box<Person>),
    NoMatch,
    Ambiguous {
        more_identifiers_wanted: Vec<IdentifierKind>,
    },
}

fn same_name(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| {
        let a = normalise_name(a);
        !a.is_empty() && a == normalise_name(b)
    })
}

/// Both names known and, normalised, not the same.
fn different_name(a: Option<&str>, b: &str) -> bool {
    a.is_some_and(|a| {
        let (a, b) = (normalise_name(a), normalise_name(b));
        !a.is_empty() && !b.is_empty() && a != b
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Strong,
    Contradicted,
    Unrelated,
}

fn judge(subject: &Demographics, candidate: &Person) -> Verdict {
    let same_scheme_ids = subject
        .national_id
        .as_ref()
        .zip(candidate.national_id.as_ref())
        .filter(|(a, b)| a.scheme == b.scheme);
    let id_agrees = same_scheme_ids.is_some_and(|(a, b)| a.value == b.value);
    let id_conflicts = same_scheme_ids.is_some_and(|(a, b)| a.value != b.value);
    let dob_conflicts = subject
        .date_of_birth
        .zip(candidate.date_of_birth)
        .is_some_and(|(a, b)| a != b);
    let names_dob_agree = same_name(subject.given_name.as_deref(), &candidate.given_name)
        && same_name(subject.family_name.as_deref(), &candidate.family_name)
        && subject.date_of_birth.is_some()
        && subject.date_of_birth == candidate.date_of_birth;
    let names_conflict = different_name(subject.given_name.as_deref(), &candidate.given_name)
        && different_name(subject.family_name.as_deref(), &candidate.family_name);
    match (
        id_agrees || names_dob_agree,
        id_conflicts || dob_conflicts || names_conflict,
    ) {
        (true, false) => Verdict::Strong,
        (true, true) => Verdict::Contradicted,
        (false, _) => Verdict::Unrelated,
    }
}

/// Finds the one person `subject` describes, if there is exactly one.
pub(crate) fn match_person(
    store: &Store,
    subject: &Demographics,
) -> Result<MatchDecision, StoreError> {
    // Ids first, then each candidate read once: the same person usually
    // turns up under every key.
    let mut candidate_ids: Vec<String> = Vec::new();
    let mut truncated = false;
    for key in person_index_keys(subject) {
        let found = store.person_ids_with_key(&key, CANDIDATE_LIMIT + 1)?;
        truncated |= found.len() > CANDIDATE_LIMIT;
        for id in found.into_iter().take(CANDIDATE_LIMIT) {
            if !candidate_ids.contains(&id) {
                candidate_ids.push(id);
            }
        }
    }
    let mut candidates: Vec<Person> = Vec::with_capacity(candidate_ids.len());
    for id in &candidate_ids {
        candidates.push(store.indexed_person(id)?);
    }
    let mut strong = Vec::new();
    let mut contradicted = false;
    for candidate in candidates {
        match judge(subject, &candidate) {
            Verdict::Strong => strong.push(candidate),
            Verdict::Contradicted => contradicted = true,
            Verdict::Unrelated => {}
        }
    }
    // The postcode narrows several strong candidates only when each has
    // one: a candidate without a postcode might be the person asked about.
    if strong.len() > 1
        && strong.iter().all(|p| p.postcode.is_some())
        && let Some(postcode) = &subject.postcode
    {
        let wanted = patchwork_federation::normalise_postcode(postcode);
        let here: Vec<_> = strong
            .iter()
            .filter(|p| {
                p.postcode
                    .as_deref()
                    .map(patchwork_federation::normalise_postcode)
                    == Some(wanted.clone())
            })
            .cloned()
            .collect();
        if !here.is_empty() {
            strong = here;
        }
    }
    Ok(match (strong.len(), contradicted || truncated) {
        (1, false) => MatchDecision::Matched(Box::new(strong.remove(0))),
        (0, false) => MatchDecision::NoMatch,
        _ => MatchDecision::Ambiguous {
            more_identifiers_wanted: missing_identifiers(subject),
        },
    })
}

fn missing_identifiers(subject: &Demographics) -> Vec<IdentifierKind> {
    let mut wanted = Vec::new();
    if subject.national_id.is_none() {
        wanted.push(IdentifierKind::NationalId);
    }
    if subject.date_of_birth.is_none() {
        wanted.push(IdentifierKind::DateOfBirth);
    }
    if subject.postcode.is_none() {
        wanted.push(IdentifierKind::Postcode);
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchwork_store::model::NationalId;
    use patchwork_store::{StoreOptions, WriteMode};

    fn person(id: &str, given: &str, dob: (i32, u32, u32), nhs: Option<&str>) -> Person {
        Person {
            id: id.into(),
            given_name: given.into(),
            family_name: "Smith-Jones".into(),
            date_of_birth: patchwork_store::model::calendar_date(dob.0, dob.1, dob.2),
            postcode: Some("RH1 1AA".into()),
            address: None,
            national_id: nhs.map(|v| NationalId {
                scheme: "nhs".into(),
                value: v.into(),
            }),
        }
    }

    fn subject(given: &str, dob: (i32, u32, u32), nhs: Option<&str>) -> Demographics {
        Demographics {
            given_name: Some(given.into()),
            family_name: Some("smith jones".into()),
            date_of_birth: patchwork_store::model::calendar_date(dob.0, dob.1, dob.2),
            postcode: None,
            national_id: nhs.map(|v| NationalId {
                scheme: "nhs".into(),
                value: v.into(),
            }),
        }
    }

    #[test]
    fn precise_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        store
            .put_persons(
                &[
                    person("A", "Amelia", (2015, 3, 14), Some("9434765919")),
                    // Twins: same names and date of birth, no national id.
                    person("T1", "Sam", (2018, 6, 1), None),
                    person("T2", "Sam", (2018, 6, 1), None),
                ],
                WriteMode::Create,
            )
            .expect("write");
        let decide = |s: Demographics| match_person(&store, &s).expect("match");
        assert!(
            matches!(decide(subject("AMÉLIA", (2015, 3, 14), None)), MatchDecision::Matched(p) if p.id == "A")
        );
        assert!(
            matches!(
                decide(subject("Zoe", (2000, 1, 1), Some("9434765919"))),
                MatchDecision::Ambiguous { .. }
            ),
            "id agrees, dob contradicts"
        );
        assert!(
            matches!(
                decide(subject("Sam", (2018, 6, 1), None)),
                MatchDecision::Ambiguous { .. }
            ),
            "twins"
        );
        assert_eq!(
            decide(subject("Amelia", (2015, 3, 15), None)),
            MatchDecision::NoMatch
        );
        assert_eq!(
            decide(subject("Amelia", (2015, 3, 14), Some("4010232137"))),
            MatchDecision::Ambiguous {
                more_identifiers_wanted: vec![IdentifierKind::Postcode]
            }
        );
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("open");
        (dir, store)
    }

    #[test]
    fn an_agreeing_national_id_under_two_other_names_is_contradicted() {
        let (_dir, store) = store();
        store
            .put_persons(
                &[person("A", "Amelia", (2015, 3, 14), Some("9434765919"))],
                WriteMode::Create,
            )
            .expect("write");
        let decide = |s: Demographics| match_person(&store, &s).expect("match");
        let mut other_person = subject("Zoe", (2015, 3, 14), Some("9434765919"));
        other_person.family_name = Some("Brown".into());
        assert!(
            matches!(
                decide(other_person.clone()),
                MatchDecision::Ambiguous { .. }
            ),
            "both names differ"
        );
        other_person.date_of_birth = None;
        assert!(
            matches!(decide(other_person), MatchDecision::Ambiguous { .. }),
            "both names differ, no date of birth to go on"
        );
        // One name changed (marriage, adoption, a nickname): still the person.
        let mut renamed = subject("Amelia", (2015, 3, 14), Some("9434765919"));
        renamed.family_name = Some("Brown".into());
        assert!(matches!(decide(renamed), MatchDecision::Matched(p) if p.id == "A"));
        let nickname = subject("Millie", (2015, 3, 14), Some("9434765919"));
        assert!(matches!(decide(nickname), MatchDecision::Matched(p) if p.id == "A"));
        // Only the id given: nothing to contradict it.
        let id_only = Demographics {
            given_name: None,
            family_name: None,
            date_of_birth: None,
            postcode: None,
            national_id: subject("x", (2015, 3, 14), Some("9434765919")).national_id,
        };
        assert!(matches!(decide(id_only), MatchDecision::Matched(p) if p.id == "A"));
    }

    #[test]
    fn the_postcode_narrows_namesakes_only_when_each_has_one() {
        let (_dir, store) = store();
        let mut no_postcode = person("T2", "Sam", (2018, 6, 1), None);
        no_postcode.postcode = None;
        let mut elsewhere = person("T3", "Sam", (2019, 6, 1), None);
        elsewhere.postcode = Some("GU1 1AA".into());
        store
            .put_persons(
                &[
                    person("T1", "Sam", (2018, 6, 1), None),
                    no_postcode,
                    person("U1", "Sam", (2019, 6, 1), None),
                    elsewhere,
                ],
                WriteMode::Create,
            )
            .expect("write");
        let decide = |s: Demographics| match_person(&store, &s).expect("match");
        let mut asked = subject("Sam", (2018, 6, 1), None);
        asked.postcode = Some("rh1 1aa".into());
        assert!(
            matches!(decide(asked), MatchDecision::Ambiguous { .. }),
            "T2 has no postcode: it may be the one"
        );
        let mut asked = subject("Sam", (2019, 6, 1), None);
        asked.postcode = Some("rh1 1aa".into());
        assert!(
            matches!(decide(asked), MatchDecision::Matched(p) if p.id == "U1"),
            "both have postcodes, one agrees"
        );
    }

    #[test]
    fn more_candidates_than_are_read_is_ambiguous_not_no_match() {
        let (_dir, store) = store();
        // 64 namesakes born the same day, and the person asked about sorting
        // after them all.
        let mut persons: Vec<Person> = (0..CANDIDATE_LIMIT)
            .map(|i| {
                person(
                    &format!("P{i:03}"),
                    &format!("Other{i}"),
                    (2010, 1, 1),
                    None,
                )
            })
            .collect();
        persons.push(person("Z999", "Wanted", (2010, 1, 1), None));
        for p in &mut persons {
            p.postcode = None;
        }
        store
            .put_persons(&persons, WriteMode::Create)
            .expect("write");
        assert_eq!(
            match_person(&store, &subject("Wanted", (2010, 1, 1), None)).expect("match"),
            MatchDecision::Ambiguous {
                more_identifiers_wanted: vec![IdentifierKind::NationalId, IdentifierKind::Postcode]
            }
        );
        // At the limit exactly, every candidate is read.
        let (_dir, store) = self::store();
        store
            .put_persons(&persons[1..], WriteMode::Create)
            .expect("write");
        assert!(matches!(
            match_person(&store, &subject("Wanted", (2010, 1, 1), None)).expect("match"),
            MatchDecision::Matched(p) if p.id == "Z999"
        ));
    }
}
