//! Small stores for tests, shared by this crate's unit tests and (with the
//! `fixtures` feature, a dev-dependency only) the server's: one council,
//! its practitioners, a person, an involvement. Values are plain and
//! fixed so a test that needs something else says so where it builds it.

use tempfile::TempDir;

use crate::model::{
    Involvement, Organisation, Person, Practitioner, Sector, Sensitivity, calendar_date,
};
use crate::{Store, StoreOptions, WriteMode};

/// A fresh store in a temporary folder, kept as long as the folder.
pub fn empty_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store"), &StoreOptions::default()).expect("open");
    (dir, store)
}

/// Organisation `O1` ("Council", social care) and a social worker of it for
/// each id, named "Practitioner {id}".
pub fn put_council(store: &Store, practitioner_ids: &[&str]) {
    let council = Organisation {
        id: "O1".into(),
        name: "Council".into(),
        sector: Sector::SocialCare,
    };
    store
        .put_organisations(&[council], WriteMode::Create)
        .expect("organisation");
    let practitioners: Vec<Practitioner> = practitioner_ids
        .iter()
        .map(|id| Practitioner {
            id: (*id).into(),
            name: format!("Practitioner {id}"),
            role: "Social worker".into(),
            team: None,
            organisation_id: "O1".into(),
            phone: Some("01234 567890".into()),
            email: None,
        })
        .collect();
    store
        .put_practitioners(&practitioners, WriteMode::Create)
        .expect("practitioners");
}

/// Amelia `family_name`, born 2015-03-14, of postcode RH1 1AA.
pub fn person(id: &str, family_name: &str) -> Person {
    Person {
        id: id.into(),
        given_name: "Amelia".into(),
        family_name: family_name.into(),
        date_of_birth: calendar_date(2015, 3, 14),
        postcode: Some("RH1 1AA".into()),
        address: None,
        national_id: None,
    }
}

/// An active, standard child-protection involvement since 2024-01-01.
pub fn involvement(id: &str, person_id: &str, practitioner_id: &str) -> Involvement {
    let start = calendar_date(2024, 1, 1).expect("date");
    Involvement {
        id: id.into(),
        person_id: person_id.into(),
        practitioner_id: practitioner_id.into(),
        service: "Child protection".into(),
        start_date: start,
        end_date: None,
        sensitivity: Sensitivity::Standard,
        gatekeeper: None,
        last_confirmed: start,
        end_reason: None,
    }
}

/// The store of `dir` from [`empty_store`] opened again (drop the first
/// one before: sled holds a lock on its folder).
pub fn reopen(dir: &TempDir) -> Store {
    Store::open(&dir.path().join("store"), &StoreOptions::default()).expect("reopen")
}
