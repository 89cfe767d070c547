//! The node's domain records: what the store holds, already validated.
//!
//! These types are only ever built by `validate` (from the API or an import)
//! or decoded from the store, so every value in them is known to be valid:
//! text trimmed and within limits, optional fields `None` rather than empty,
//! national identifiers normalised.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: String,
    pub given_name: String,
    pub family_name: String,
    pub date_of_birth: Option<NaiveDate>,
    pub postcode: Option<String>,
    pub address: Option<String>,
    pub national_id: Option<NationalId>,
}

/// A national identifier, normalised for its scheme (see
/// `patchwork_federation::normalise_national_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NationalId {
    pub scheme: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Practitioner {
    pub id: String,
    pub name: String,
    pub role: String,
    pub team: Option<String>,
    pub organisation_id: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    pub id: String,
    pub name: String,
    pub sector: Sector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sector {
    SocialCare,
    Health,
    Police,
    Education,
    Housing,
    Youth,
    Voluntary,
    Probation,
    Other,
}

/// How much of an involvement others may see (common.proto's
/// `Sensitivity`). One enum for the store (postcard, by variant index:
/// never reorder), the config (`restricted`, `always-findable`) and the
/// wire (`From`/`TryFrom` in `convert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sensitivity {
    Standard,
    Restricted,
    AlwaysFindable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Involvement {
    pub id: String,
    pub person_id: String,
    pub practitioner_id: String,
    pub service: String,
    pub start_date: NaiveDate,
    pub end_date: Option<NaiveDate>,
    pub sensitivity: Sensitivity,
    pub gatekeeper: Option<Contact>,
    pub last_confirmed: NaiveDate,
    pub end_reason: Option<String>,
}

impl Involvement {
    pub fn is_active(&self) -> bool {
        self.end_date.is_none()
    }
}

/// The lawful basis of a lookup (common.proto's `LawfulBasis`). One enum
/// for the store (postcard, by variant index: never reorder), the config
/// and the CLI (`child-safeguarding`), reports (`as_str`:
/// `child_safeguarding`) and the wire (`From`/`TryFrom` in `convert`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "snake_case")]
pub enum LawfulBasis {
    ChildSafeguarding,
    AdultSafeguarding,
    VitalInterests,
    DirectCare,
    PublicTask,
    CrimePrevention,
    Consent,
}

impl LawfulBasis {
    /// The basis as subject-access reports and audit listings name it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    pub lawful_basis: LawfulBasis,
    pub reason: String,
}

/// What a search or lookup knows about the person it looks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Demographics {
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub postcode: Option<String>,
    pub national_id: Option<NationalId>,
}

impl From<&Person> for Demographics {
    fn from(person: &Person) -> Self {
        Demographics {
            given_name: Some(person.given_name.clone()),
            family_name: Some(person.family_name.clone()),
            date_of_birth: person.date_of_birth,
            postcode: person.postcode.clone(),
            national_id: person.national_id.clone(),
        }
    }
}

/// What one person is to another in the family view (see `LinkPersons`):
/// stored for both directions, `Parent` one way being `Child` the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relationship {
    Household,
    /// The other person is this person's parent.
    Parent,
    /// The other person is this person's child.
    Child,
    Sibling,
    Other,
}

impl Relationship {
    /// The same link seen from the other person.
    pub fn inverse(self) -> Relationship {
        match self {
            Relationship::Parent => Relationship::Child,
            Relationship::Child => Relationship::Parent,
            other => other,
        }
    }

    /// The label a family lookup shows instead of the member's name.
    pub fn label(self) -> &'static str {
        match self {
            Relationship::Household => "household",
            Relationship::Parent => "parent",
            Relationship::Child => "child",
            Relationship::Sibling => "sibling",
            Relationship::Other => "other",
        }
    }
}

// The one mapping between the domain enums and the wire's (prost) enums.

impl From<Sensitivity> for patchwork_proto::v1::Sensitivity {
    fn from(value: Sensitivity) -> Self {
        match value {
            Sensitivity::Standard => patchwork_proto::v1::Sensitivity::Standard,
            Sensitivity::Restricted => patchwork_proto::v1::Sensitivity::Restricted,
            Sensitivity::AlwaysFindable => patchwork_proto::v1::Sensitivity::AlwaysFindable,
        }
    }
}

impl TryFrom<patchwork_proto::v1::Sensitivity> for Sensitivity {
    /// `UNSPECIFIED` has no domain value.
    type Error = ();
    fn try_from(value: patchwork_proto::v1::Sensitivity) -> Result<Self, ()> {
        match value {
            patchwork_proto::v1::Sensitivity::Standard => Ok(Sensitivity::Standard),
            patchwork_proto::v1::Sensitivity::Restricted => Ok(Sensitivity::Restricted),
            patchwork_proto::v1::Sensitivity::AlwaysFindable => Ok(Sensitivity::AlwaysFindable),
            patchwork_proto::v1::Sensitivity::Unspecified => Err(()),
        }
    }
}

impl From<LawfulBasis> for patchwork_proto::v1::LawfulBasis {
    fn from(value: LawfulBasis) -> Self {
        match value {
            LawfulBasis::ChildSafeguarding => patchwork_proto::v1::LawfulBasis::ChildSafeguarding,
            LawfulBasis::AdultSafeguarding => patchwork_proto::v1::LawfulBasis::AdultSafeguarding,
            LawfulBasis::VitalInterests => patchwork_proto::v1::LawfulBasis::VitalInterests,
            LawfulBasis::DirectCare => patchwork_proto::v1::LawfulBasis::DirectCare,
            LawfulBasis::PublicTask => patchwork_proto::v1::LawfulBasis::PublicTask,
            LawfulBasis::CrimePrevention => patchwork_proto::v1::LawfulBasis::CrimePrevention,
            LawfulBasis::Consent => patchwork_proto::v1::LawfulBasis::Consent,
        }
    }
}

impl TryFrom<patchwork_proto::v1::LawfulBasis> for LawfulBasis {
    /// `UNSPECIFIED` has no domain value.
    type Error = ();
    fn try_from(value: patchwork_proto::v1::LawfulBasis) -> Result<Self, ()> {
        match value {
            patchwork_proto::v1::LawfulBasis::ChildSafeguarding => {
                Ok(LawfulBasis::ChildSafeguarding)
            }
            patchwork_proto::v1::LawfulBasis::AdultSafeguarding => {
                Ok(LawfulBasis::AdultSafeguarding)
            }
            patchwork_proto::v1::LawfulBasis::VitalInterests => Ok(LawfulBasis::VitalInterests),
            patchwork_proto::v1::LawfulBasis::DirectCare => Ok(LawfulBasis::DirectCare),
            patchwork_proto::v1::LawfulBasis::PublicTask => Ok(LawfulBasis::PublicTask),
            patchwork_proto::v1::LawfulBasis::CrimePrevention => Ok(LawfulBasis::CrimePrevention),
            patchwork_proto::v1::LawfulBasis::Consent => Ok(LawfulBasis::Consent),
            patchwork_proto::v1::LawfulBasis::Unspecified => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records already on disk (and hashed into the audit chain, and in
    /// backups) hold dates as postcard encodes them: these bytes must never
    /// change, whatever date library the model uses.
    #[test]
    fn dates_keep_their_stored_encoding() {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("date");
        let person = Person {
            id: "P1".into(),
            given_name: "Amelia".into(),
            family_name: "Smith".into(),
            date_of_birth: Some(date(2015, 3, 14)),
            postcode: None,
            address: None,
            national_id: None,
        };
        let involvement = Involvement {
            id: "I1".into(),
            person_id: "P1".into(),
            practitioner_id: "A".into(),
            service: "Child protection".into(),
            start_date: date(2024, 1, 1),
            end_date: Some(date(2024, 12, 31)),
            sensitivity: Sensitivity::Standard,
            gatekeeper: None,
            last_confirmed: date(824, 2, 29),
            end_reason: None,
        };
        let person = hex::encode(postcard::to_stdvec(&person).expect("encode"));
        let involvement = hex::encode(postcard::to_stdvec(&involvement).expect("encode"));
        assert_eq!(
            person,
            "02503106416d656c696105536d697468010a323031352d30332d3134000000"
        );
        assert_eq!(
            involvement,
            "0249310250310141104368696c642070726f74656374696f6e0a323032342d30312d3031010a323032342d31322d333100000a303832342d30322d323900"
        );
    }
}
