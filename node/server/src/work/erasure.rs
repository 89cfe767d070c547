//! Erasing a person (`Directory.ErasePerson`, `patchwork erase person`):
//! the reason is checked not to carry the person's own details (the audit
//! keeps it after the person is gone), the request is written to the audit
//! log durably, then the store erases (`patchwork_store::erasure`) and
//! flushes.

use patchwork_federation::normalise_name;
use patchwork_store::model::{Demographics, year_month_day};
use patchwork_store::{AuditEvent, StoreError};
use tonic::Status;

use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::base::validate::FieldError;
use crate::work::state::NodeState;

/// What an erasure did: the lines of what went, and its audit entry.
#[derive(Debug)]
pub(crate) struct Erasure {
    pub removed: Vec<String>,
    pub audit_seq: u64,
}

/// Erases `person_id` for `caller` (a SPIFFE id), `reason` validated for
/// length already.
pub(crate) async fn erase_person(
    state: &NodeState,
    caller: &str,
    person_id: String,
    reason: String,
) -> Result<Erasure, Status> {
    let store = state.store.clone();
    let id = person_id.clone();
    let (person, plan) = blocking(move || {
        let person = store
            .person(&id)
            .and_then(|p| {
                p.ok_or(StoreError::NotFound {
                    kind: patchwork_store::Kind::Person,
                    id: id.clone(),
                })
            })
            .map_err(|e| store_status(e, "person_id"))?;
        let plan = store
            .erasure_plan(&id)
            .map_err(|e| store_status(e, "person_id"))?;
        Ok((person, plan))
    })
    .await?;
    if let Some(what) = personal_detail_in(&reason, &Demographics::from(&person)) {
        return Err(FieldError::new(
            "reason",
            format!(
                "contains the person's {what}: the audit log keeps the reason after the \
                 person is erased, so name the request instead (e.g. its reference)"
            ),
        )
        .into());
    }
    let event = AuditEvent::PersonErased {
        person_id: person_id.clone(),
        caller: caller.to_owned(),
        reason,
        removed: plan.lines(),
    };
    let entry = match state.store.append_audits_durably(vec![event]).await {
        Ok(mut entries) => entries.pop(),
        Err(e) => return Err(state.write_failed(e, "").await),
    };
    let audit_seq = entry.map_or(0, |e| e.seq);
    let erased = state
        .write("person_id", move |store| {
            store.erase_person(&person_id).map_err(Into::into)
        })
        .await?;
    Ok(Erasure {
        removed: erased.lines(),
        audit_seq,
    })
}

/// The refusal of a practitioner's `purpose.reason` that names the person
/// asked about: the audit log keeps a reason for years, past the erasure
/// of the person's records, so it must say why without saying who.
pub(crate) fn reason_naming(about: &[&Demographics], reason: &str) -> Result<(), Status> {
    match about.iter().find_map(|d| personal_detail_in(reason, d)) {
        Some(detail) => Err(Status::invalid_argument(format!(
            "purpose.reason: contains the person's {detail}; the audit log keeps the reason \
             for years, after the person's records may be erased: say why without saying who"
        ))),
        None => Ok(()),
    }
}

/// Which of the person's details `text` contains, if any: a name of three
/// letters or more as a word (or its possessive), the date of birth in a usual spelling, the
/// national identifier. Normalised as matching normalises, so case, accents
/// and punctuation do not hide them.
pub(crate) fn personal_detail_in(text: &str, person: &Demographics) -> Option<&'static str> {
    let words: Vec<String> = normalise_name(text).split(' ').map(str::to_owned).collect();
    let names = [&person.given_name, &person.family_name];
    let named = names.iter().copied().flatten().any(|name| {
        normalise_name(name)
            .split(' ')
            .filter(|part| part.len() >= 3)
            // "Amelia's" normalises to "amelias".
            .any(|part| {
                words
                    .iter()
                    .any(|w| w == part || w.strip_suffix('s') == Some(part))
            })
    });
    if named {
        return Some("name");
    }
    let compact: String = text.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let compact = compact.to_ascii_lowercase();
    if let Some(date) = person.date_of_birth {
        let (y, m, d) = year_month_day(date);
        let spellings = [
            format!("{y:04}{m:02}{d:02}"),
            format!("{d:02}{m:02}{y:04}"),
            format!("{m:02}{d:02}{y:04}"),
        ];
        if spellings.iter().any(|s| compact.contains(s.as_str())) {
            return Some("date of birth");
        }
    }
    if let Some(national_id) = &person.national_id {
        let value: String = national_id
            .value
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        if value.len() >= 5 && compact.contains(value.as_str()) {
            return Some("identifier");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchwork_store::model::{NationalId, Person, calendar_date};

    fn person() -> Person {
        Person {
            id: "P1".into(),
            given_name: "Aaliyah".into(),
            family_name: "O'Connor-Smith".into(),
            date_of_birth: calendar_date(2014, 3, 9),
            postcode: None,
            address: None,
            national_id: Some(NationalId {
                scheme: "nhs".into(),
                value: "9434765919".into(),
            }),
        }
    }

    #[test]
    fn a_reason_naming_the_person_is_caught_however_it_is_spelt() {
        let p = person();
        for (reason, what) in [
            ("erasure asked by AALIYAH's mother", Some("name")),
            ("request from Ms oconnor smith", Some("name")),
            ("asked by Ms Smithson", None), // a longer word is not the name
            ("request from Ms O'Connor", Some("name")),
            ("born 09/03/2014, DPO-17", Some("date of birth")),
            ("born 2014-03-09", Some("date of birth")),
            ("nhs 943 476 5919 closed", Some("identifier")),
            ("erasure request DPO-2026-114 (UK GDPR art. 17)", None),
        ] {
            assert_eq!(
                personal_detail_in(reason, &Demographics::from(&p)),
                what,
                "{reason}"
            );
        }
    }
}
