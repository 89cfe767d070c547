//! The node's domain records: what the store holds, already validated.
//!
//! These types are only ever built by `validate` (from the API or an import)
//! or decoded from the store, so every value in them is known to be valid:
//! text trimmed and within limits, optional fields `None` rather than empty,
//! national identifiers normalised.

use serde::{Deserialize, Serialize};
pub use time::Date;

/// The date `year-month-day` on the calendar, if there is one.
pub fn calendar_date(year: i32, month: u32, day: u32) -> Option<Date> {
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()
}

/// A date's year, month (1-12) and day (1-31), as numbers.
pub fn year_month_day(date: Date) -> (i32, u32, u32) {
    (
        date.year(),
        u32::from(u8::from(date.month())),
        u32::from(date.day()),
    )
}

/// Today in UTC.
pub fn today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

/// `2015-03-14` (the year in at least four digits, signed beyond 0-9999):
/// how a date is written in reports and in the store.
pub(crate) fn iso_date(date: Date) -> String {
    let (year, month, day) = (date.year(), u8::from(date.month()), date.day());
    if (0..=9999).contains(&year) {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{year:+05}-{month:02}-{day:02}")
    }
}

/// Reads what [`iso_date`] writes.
pub fn parse_iso_date(text: &str) -> Option<Date> {
    let (sign, digits) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => (1, text),
    };
    let mut parts = digits.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(year) && all_digits(month) && all_digits(day)) || year.len() < 4 {
        return None;
    }
    calendar_date(
        sign * year.parse::<i32>().ok()?,
        month.parse().ok()?,
        day.parse().ok()?,
    )
}

/// Dates as the store has always encoded them: the ISO text (`2015-03-14`),
/// which is what chrono's serde wrote before the model moved to `time`.
/// Records on disk, backups and the audit chain's hashes depend on it.
mod stored_date {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Date, iso_date, parse_iso_date};

    pub(super) fn serialize<S: Serializer>(date: &Date, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&iso_date(*date))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Date, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        parse_iso_date(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a date: {text:?}")))
    }

    pub(super) mod option {
        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        use super::super::Date;

        #[derive(Serialize, Deserialize)]
        struct Stored(#[serde(with = "super")] Date);

        pub(in super::super) fn serialize<S: Serializer>(
            date: &Option<Date>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            date.map(Stored).serialize(serializer)
        }

        pub(in super::super) fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Date>, D::Error> {
            Ok(Option::<Stored>::deserialize(deserializer)?.map(|Stored(date)| date))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub id: String,
    pub given_name: String,
    pub family_name: String,
    #[serde(with = "stored_date::option")]
    pub date_of_birth: Option<Date>,
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
    #[serde(with = "stored_date")]
    pub start_date: Date,
    #[serde(with = "stored_date::option")]
    pub end_date: Option<Date>,
    pub sensitivity: Sensitivity,
    pub gatekeeper: Option<Contact>,
    #[serde(with = "stored_date")]
    pub last_confirmed: Date,
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
    pub date_of_birth: Option<Date>,
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
    pub(crate) fn inverse(self) -> Relationship {
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
        let date = |y, m, d| calendar_date(y, m, d).expect("date");
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
        let decoded: Involvement =
            postcard::from_bytes(&hex::decode(involvement).expect("hex")).expect("decode");
        assert_eq!(decoded.last_confirmed, date(824, 2, 29));
        assert_eq!(parse_iso_date("2015-3-14"), calendar_date(2015, 3, 14));
        assert_eq!(iso_date(date(-50, 1, 1)), "-0050-01-01");
        for bad in [
            "",
            "2015",
            "15-03-14",
            "2015-02-30",
            "2015-03-14x",
            "2015--03-14",
        ] {
            assert_eq!(parse_iso_date(bad), None, "{bad}");
        }
    }
}
