//! Checks every field of every request and turns wire messages into domain
//! records. The only way into `model` from outside the store: if a value got
//! past here it is valid, and if it did not, the caller learns which field was
//! wrong and nothing was written.

use patchwork_federation::matchkeys::Digest;
use patchwork_federation::tokens::SubjectTokens;
use patchwork_federation::{
    IdentifierError, is_plausible_postcode, normalise_national_id, validate_scheme,
};
use patchwork_proto::v1;

use patchwork_store::model::{
    Contact, Date, Demographics, Involvement, LawfulBasis, NationalId, Organisation, Person,
    Practitioner, Purpose, Sector, Sensitivity, calendar_date, today, year_month_day,
};

/// A field that failed validation: `field` is its path from the request root
/// (`person.date_of_birth`), or from the row for imports (`date_of_birth`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub(crate) type Validated<T> = Result<T, FieldError>;

/// What validation needs to know about the world: today's date in UTC (for
/// "not in the future") and the node's default identifier scheme.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Today in UTC; see [`Rules::latest_date`] for what "the future" means.
    pub today: Date,
    pub(crate) default_scheme: String,
}

impl Rules {
    pub fn new(default_scheme: &str) -> Self {
        Rules {
            today: today(),
            default_scheme: default_scheme.to_owned(),
        }
    }

    /// The latest date that is not in the future somewhere: UTC today plus
    /// one day. The node knows only UTC, but its callers' "today" is local,
    /// and the earliest clocks run 14 hours ahead of UTC (UTC+14, Kiribati;
    /// Melbourne is UTC+10/+11): without the slack a Melbourne practitioner
    /// could not record today's date until 10 or 11 in the morning.
    pub fn latest_date(&self) -> Date {
        self.today.next_day().unwrap_or(self.today)
    }
}

pub(crate) const MAX_ID: usize = 64;
pub const MAX_NAME: usize = 100;
pub(crate) const MAX_ORGANISATION_NAME: usize = 200;
pub(crate) const MAX_ADDRESS: usize = 300;
pub(crate) const MAX_EMAIL: usize = 254;
pub(crate) const MAX_REASON: usize = 500;
pub(crate) const MIN_REASON: usize = 10;
pub(crate) const MAX_END_REASON: usize = 200;
pub(crate) const EARLIEST_YEAR: i32 = 1900;

/// Joins a field name onto a path prefix.
pub fn path(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The message itself must be present (proto3 message fields are optional on
/// the wire).
pub fn present<'a, T>(value: Option<&'a T>, field: &str) -> Validated<&'a T> {
    value.ok_or_else(|| FieldError::new(field, "is required"))
}

pub fn id(value: &str, field: &str) -> Validated<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(FieldError::new(field, "is required"));
    }
    if value.len() > MAX_ID {
        return Err(FieldError::new(
            field,
            format!("is longer than {MAX_ID} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(FieldError::new(
            field,
            "may only contain A-Z a-z 0-9 . _ : -",
        ));
    }
    Ok(value.to_owned())
}

fn checked_text(value: &str, field: &str, max: usize) -> Validated<Option<String>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("is longer than {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(FieldError::new(field, "contains control characters"));
    }
    Ok(Some(value.to_owned()))
}

pub fn required_text(value: &str, field: &str, max: usize) -> Validated<String> {
    checked_text(value, field, max)?.ok_or_else(|| FieldError::new(field, "is required"))
}

pub(crate) fn optional_text(value: &str, field: &str, max: usize) -> Validated<Option<String>> {
    checked_text(value, field, max)
}

pub fn date(value: &v1::Date, field: &str) -> Validated<Date> {
    let month = u32::try_from(value.month)
        .ok()
        .filter(|m| (1..=12).contains(m));
    let day = u32::try_from(value.day)
        .ok()
        .filter(|d| (1..=31).contains(d));
    if !(EARLIEST_YEAR..=9999).contains(&value.year) {
        return Err(FieldError::new(
            field,
            format!("year must be between {EARLIEST_YEAR} and 9999"),
        ));
    }
    let Some(month) = month else {
        return Err(FieldError::new(field, "month must be between 1 and 12"));
    };
    let Some(day) = day else {
        return Err(FieldError::new(field, "day must be between 1 and 31"));
    };
    calendar_date(value.year, month, day)
        .ok_or_else(|| FieldError::new(field, "is not a calendar date"))
}

pub(crate) fn past_date(value: &v1::Date, field: &str, rules: &Rules) -> Validated<Date> {
    let date = date(value, field)?;
    if date > rules.latest_date() {
        return Err(FieldError::new(field, "is in the future"));
    }
    Ok(date)
}

pub(crate) fn optional_past_date(
    value: Option<&v1::Date>,
    field: &str,
    rules: &Rules,
) -> Validated<Option<Date>> {
    value.map(|d| past_date(d, field, rules)).transpose()
}

pub fn postcode(value: &str, field: &str) -> Validated<Option<String>> {
    let Some(value) = optional_text(value, field, 16)? else {
        return Ok(None);
    };
    if !is_plausible_postcode(&value) {
        return Err(FieldError::new(field, "must be 3-10 letters and digits"));
    }
    Ok(Some(value.to_uppercase()))
}

pub fn phone(value: &str, field: &str) -> Validated<Option<String>> {
    let Some(value) = optional_text(value, field, 20)? else {
        return Ok(None);
    };
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let allowed = value
        .chars()
        .all(|c| c.is_ascii_digit() || " +()-".contains(c));
    if !allowed || value.chars().count() < 6 || digits < 6 {
        return Err(FieldError::new(
            field,
            "must be 6-20 characters of digits, spaces, + ( ) -",
        ));
    }
    Ok(Some(value))
}

pub fn email(value: &str, field: &str) -> Validated<Option<String>> {
    let Some(value) = optional_text(value, field, MAX_EMAIL)? else {
        return Ok(None);
    };
    let plausible = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !value.contains(char::is_whitespace)
        }
        None => false,
    };
    if !plausible {
        return Err(FieldError::new(field, "is not an email address"));
    }
    Ok(Some(value))
}

pub fn national_id(
    value: Option<&v1::NationalId>,
    field: &str,
    rules: &Rules,
) -> Validated<Option<NationalId>> {
    let Some(value) = value else { return Ok(None) };
    if value.scheme.trim().is_empty() && value.value.trim().is_empty() {
        return Ok(None);
    }
    let scheme = if value.scheme.trim().is_empty() {
        rules.default_scheme.clone()
    } else {
        validate_scheme(&value.scheme)
            .map_err(|e| FieldError::new(path(field, "scheme"), e.to_string()))?
    };
    let normalised = normalise_national_id(&scheme, &value.value)
        .map_err(|e| national_id_error(&path(field, "value"), e))?;
    Ok(Some(NationalId {
        scheme,
        value: normalised,
    }))
}

fn national_id_error(field: &str, error: IdentifierError) -> FieldError {
    FieldError::new(field, error.to_string())
}

pub fn sensitivity(value: i32, field: &str) -> Validated<Sensitivity> {
    match v1::Sensitivity::try_from(value) {
        Ok(wire) => Sensitivity::try_from(wire).map_err(|()| FieldError::new(field, "is required")),
        Err(_) => Err(FieldError::new(field, format!("unknown value {value}"))),
    }
}

pub fn sector(value: i32, field: &str) -> Validated<Sector> {
    use v1::Sector as S;
    match S::try_from(value) {
        Ok(S::SocialCare) => Ok(Sector::SocialCare),
        Ok(S::Health) => Ok(Sector::Health),
        Ok(S::Police) => Ok(Sector::Police),
        Ok(S::Education) => Ok(Sector::Education),
        Ok(S::Housing) => Ok(Sector::Housing),
        Ok(S::Youth) => Ok(Sector::Youth),
        Ok(S::Voluntary) => Ok(Sector::Voluntary),
        Ok(S::Probation) => Ok(Sector::Probation),
        Ok(S::Other) => Ok(Sector::Other),
        Ok(S::Unspecified) => Err(FieldError::new(field, "is required")),
        Err(_) => Err(FieldError::new(field, format!("unknown value {value}"))),
    }
}

pub fn lawful_basis(value: i32, field: &str) -> Validated<LawfulBasis> {
    match v1::LawfulBasis::try_from(value) {
        Ok(wire) => LawfulBasis::try_from(wire).map_err(|()| FieldError::new(field, "is required")),
        Err(_) => Err(FieldError::new(field, format!("unknown value {value}"))),
    }
}

/// A person as a council's systems hold them. One of the two names may be
/// unknown (an empty string in the model), when there is enough else to find
/// them by: the other name and a date of birth, or a national identifier.
pub fn person(value: &v1::Person, prefix: &str, rules: &Rules) -> Validated<Person> {
    let given_name = optional_text(&value.given_name, &path(prefix, "given_name"), MAX_NAME)?;
    let family_name = optional_text(&value.family_name, &path(prefix, "family_name"), MAX_NAME)?;
    let person = Person {
        id: id(&value.id, &path(prefix, "id"))?,
        date_of_birth: optional_past_date(
            value.date_of_birth.as_ref(),
            &path(prefix, "date_of_birth"),
            rules,
        )?,
        postcode: postcode(&value.postcode, &path(prefix, "postcode"))?,
        address: optional_text(&value.address, &path(prefix, "address"), MAX_ADDRESS)?,
        national_id: national_id(
            value.national_id.as_ref(),
            &path(prefix, "national_id"),
            rules,
        )?,
        given_name: given_name.clone().unwrap_or_default(),
        family_name: family_name.clone().unwrap_or_default(),
    };
    let findable = person.national_id.is_some() || person.date_of_birth.is_some();
    match (given_name, family_name) {
        (Some(_), Some(_)) => Ok(person),
        (None, None) => Err(FieldError::new(
            path(prefix, "given_name"),
            "is required when family_name is empty too",
        )),
        (None, Some(_)) if !findable => Err(FieldError::new(
            path(prefix, "given_name"),
            "may be empty only with a date_of_birth or a national_id",
        )),
        (Some(_), None) if !findable => Err(FieldError::new(
            path(prefix, "family_name"),
            "may be empty only with a date_of_birth or a national_id",
        )),
        _ => Ok(person),
    }
}

fn phone_or_email(
    phone_value: &str,
    email_value: &str,
    prefix: &str,
) -> Validated<(Option<String>, Option<String>)> {
    let phone = phone(phone_value, &path(prefix, "phone"))?;
    let email = email(email_value, &path(prefix, "email"))?;
    if phone.is_none() && email.is_none() {
        return Err(FieldError::new(
            path(prefix, "phone"),
            "phone or email is required",
        ));
    }
    Ok((phone, email))
}

pub fn practitioner(value: &v1::Practitioner, prefix: &str) -> Validated<Practitioner> {
    let id = id(&value.id, &path(prefix, "id"))?;
    let name = required_text(&value.name, &path(prefix, "name"), MAX_NAME)?;
    let role = required_text(&value.role, &path(prefix, "role"), MAX_NAME)?;
    let team = optional_text(&value.team, &path(prefix, "team"), MAX_NAME)?;
    let organisation_id = self::id(&value.organisation_id, &path(prefix, "organisation_id"))?;
    let (phone, email) = phone_or_email(&value.phone, &value.email, prefix)?;
    Ok(Practitioner {
        id,
        name,
        role,
        team,
        organisation_id,
        phone,
        email,
    })
}

pub fn organisation(value: &v1::Organisation, prefix: &str) -> Validated<Organisation> {
    Ok(Organisation {
        id: id(&value.id, &path(prefix, "id"))?,
        name: required_text(&value.name, &path(prefix, "name"), MAX_ORGANISATION_NAME)?,
        sector: sector(value.sector, &path(prefix, "sector"))?,
    })
}

pub fn contact(value: &v1::Contact, prefix: &str) -> Validated<Contact> {
    let name = required_text(&value.name, &path(prefix, "name"), MAX_NAME)?;
    let (phone, email) = phone_or_email(&value.phone, &value.email, prefix)?;
    Ok(Contact { name, phone, email })
}

/// Where an involvement comes from decides which fields the caller may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvolvementSource {
    /// `RecordInvolvement`: a new, current involvement; the node makes an id if
    /// none is given.
    Api,
    /// An import row: the case-management system's full record, id required,
    /// possibly already ended.
    Import,
}

pub fn involvement(
    value: &v1::Involvement,
    prefix: &str,
    source: InvolvementSource,
    rules: &Rules,
) -> Validated<Involvement> {
    let id = match source {
        InvolvementSource::Api if value.id.trim().is_empty() => uuid::Uuid::new_v4().to_string(),
        _ => id(&value.id, &path(prefix, "id"))?,
    };
    let person_id = self::id(&value.person_id, &path(prefix, "person_id"))?;
    let practitioner_id = self::id(&value.practitioner_id, &path(prefix, "practitioner_id"))?;
    let service = required_text(&value.service, &path(prefix, "service"), MAX_NAME)?;
    let start_field = path(prefix, "start_date");
    let start_date = past_date(
        present(value.start_date.as_ref(), &start_field)?,
        &start_field,
        rules,
    )?;
    let end_field = path(prefix, "end_date");
    let end_date = optional_past_date(value.end_date.as_ref(), &end_field, rules)?;
    if source == InvolvementSource::Api && end_date.is_some() {
        return Err(FieldError::new(
            end_field,
            "must be unset: use EndInvolvement to end one",
        ));
    }
    if let Some(end) = end_date
        && end < start_date
    {
        return Err(FieldError::new(end_field, "is before start_date"));
    }
    if value.last_confirmed.is_some() {
        return Err(FieldError::new(
            path(prefix, "last_confirmed"),
            "is output only",
        ));
    }
    let sensitivity = sensitivity(value.sensitivity, &path(prefix, "sensitivity"))?;
    let gatekeeper_field = path(prefix, "gatekeeper");
    let gatekeeper = match value.gatekeeper.as_ref() {
        Some(g) if *g != v1::Contact::default() => Some(contact(g, &gatekeeper_field)?),
        _ => None,
    };
    if sensitivity == Sensitivity::Restricted && gatekeeper.is_none() {
        return Err(FieldError::new(
            gatekeeper_field,
            "is required for restricted involvements",
        ));
    }
    let end_reason = optional_text(
        &value.end_reason,
        &path(prefix, "end_reason"),
        MAX_END_REASON,
    )?;
    if end_reason.is_some() && end_date.is_none() {
        return Err(FieldError::new(
            path(prefix, "end_reason"),
            "needs end_date",
        ));
    }
    Ok(Involvement {
        id,
        person_id,
        practitioner_id,
        service,
        start_date,
        end_date,
        sensitivity,
        gatekeeper,
        last_confirmed: start_date,
        end_reason,
    })
}

pub fn demographics(
    value: &v1::Demographics,
    prefix: &str,
    rules: &Rules,
) -> Validated<Demographics> {
    Ok(Demographics {
        given_name: optional_text(&value.given_name, &path(prefix, "given_name"), MAX_NAME)?,
        family_name: optional_text(&value.family_name, &path(prefix, "family_name"), MAX_NAME)?,
        date_of_birth: optional_past_date(
            value.date_of_birth.as_ref(),
            &path(prefix, "date_of_birth"),
            rules,
        )?,
        postcode: postcode(&value.postcode, &path(prefix, "postcode"))?,
        national_id: national_id(
            value.national_id.as_ref(),
            &path(prefix, "national_id"),
            rules,
        )?,
    })
}

pub fn purpose(value: Option<&v1::Purpose>, field: &str) -> Validated<Purpose> {
    let value = present(value, field)?;
    let lawful_basis = lawful_basis(value.lawful_basis, &path(field, "lawful_basis"))?;
    let reason_field = path(field, "reason");
    let reason = required_text(&value.reason, &reason_field, MAX_REASON)?;
    if reason.chars().count() < MIN_REASON {
        return Err(FieldError::new(
            reason_field,
            format!("must be at least {MIN_REASON} characters: say why you are looking"),
        ));
    }
    Ok(Purpose {
        lawful_basis,
        reason,
    })
}

/// Why a person is erased (or a retention run forced): kept in the audit
/// log, so it must say something.
pub fn erasure_reason(value: &str, field: &str) -> Validated<String> {
    let reason = required_text(value, field, MAX_REASON)?;
    if reason.chars().count() < MIN_REASON {
        return Err(FieldError::new(
            field,
            format!(
                "must be at least {MIN_REASON} characters: say why, e.g. the request's reference"
            ),
        ));
    }
    Ok(reason)
}

/// What a practitioner asks about, as checked: the same three fields of
/// `Directory.Lookup` and `Directory.Subscribe`.
#[derive(Debug)]
pub(crate) struct AskedAbout {
    pub(crate) subject: Demographics,
    pub(crate) purpose: Purpose,
    pub(crate) requester_id: String,
}

/// A subject strong enough to find one person by (a national identifier,
/// or both names and the date of birth), a purpose and the practitioner
/// asking.
pub(crate) fn asked_about(
    subject: Option<&v1::Demographics>,
    purpose_field: Option<&v1::Purpose>,
    requester: Option<&v1::Requester>,
    rules: &Rules,
) -> Validated<AskedAbout> {
    let subject = demographics(present(subject, "subject")?, "subject", rules)?;
    let strong_enough = subject.national_id.is_some()
        || (subject.given_name.is_some()
            && subject.family_name.is_some()
            && subject.date_of_birth.is_some());
    if !strong_enough {
        return Err(FieldError::new(
            "subject",
            "needs national_id, or given_name, family_name and date_of_birth",
        ));
    }
    let purpose = purpose(purpose_field, "purpose")?;
    let requester = present(requester, "requester")?;
    let requester_id = id(&requester.practitioner_id, "requester.practitioner_id")?;
    Ok(AskedAbout {
        subject,
        purpose,
        requester_id,
    })
}

/// Every date a domain value can hold is representable on the wire.
pub fn to_proto_date(date: Date) -> v1::Date {
    let (year, month, day) = year_month_day(date);
    v1::Date {
        year,
        month: month as i32,
        day: day as i32,
    }
}

/// Parses `YYYY-MM-DD` strictly (CSV and CLI input). Other layouts such as
/// `dd/mm/yyyy` are refused rather than guessed: 03/04 is ambiguous.
pub fn parse_iso_date(text: &str, field: &str) -> Validated<v1::Date> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if !shaped {
        return Err(FieldError::new(field, "must be a date written YYYY-MM-DD"));
    }
    let number = |range: std::ops::Range<usize>| -> i32 {
        text[range]
            .bytes()
            .fold(0, |n, b| n * 10 + i32::from(b - b'0'))
    };
    let proto = v1::Date {
        year: number(0..4),
        month: number(5..7),
        day: number(8..10),
    };
    date(&proto, field)?;
    Ok(proto)
}

/// Most blinded keys a peer's query may carry.
pub(crate) const MAX_MATCH_KEYS: usize = 32;

/// A peer's query id: 1-64 characters of A-Z a-z 0-9 - (a UUID fits).
pub fn request_id(value: &str, field: &str) -> Validated<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be 1-64 characters of A-Z a-z 0-9 -",
        ))
    }
}

/// A peer's query as checked: its purpose, its blinded keys (kinds known,
/// digests 32 bytes, none repeated), each key's field tokens (version 2: on
/// every key or on none) and the identifier scheme it names.
#[derive(Debug)]
pub struct PeerQuery {
    pub basis: LawfulBasis,
    pub reason: String,
    pub keys: Vec<(v1::MatchKeyKind, Digest)>,
    /// One per key for a version-2 query; empty for a version-1 one.
    pub tokens: Vec<SubjectTokens>,
    pub scheme: Option<String>,
}

/// Every field of a peer's `FindInvolvements` (or `Subscribe`'s same
/// fields) but the request id and the key set, which the caller checks
/// first against the agreement.
pub fn peer_query(request: &v1::FindInvolvementsRequest) -> Validated<PeerQuery> {
    if request.match_keys.is_empty() || request.match_keys.len() > MAX_MATCH_KEYS {
        return Err(FieldError::new(
            "match_keys",
            format!("must hold 1-{MAX_MATCH_KEYS} keys"),
        ));
    }
    let mut keys = Vec::with_capacity(request.match_keys.len());
    let mut tokens = Vec::new();
    let with_tokens = request.match_keys[0].tokens.is_some();
    let mut seen = std::collections::BTreeSet::new();
    for (i, key) in request.match_keys.iter().enumerate() {
        match (&key.tokens, with_tokens) {
            (Some(wire), true) => tokens.push(SubjectTokens::try_from(wire).map_err(|e| {
                FieldError::new(format!("match_keys[{i}].tokens.{}", e.field), e.problem)
            })?),
            (None, false) => {}
            _ => {
                return Err(FieldError::new(
                    format!("match_keys[{i}].tokens"),
                    "every key carries tokens, or none does",
                ));
            }
        }
        let kind = match v1::MatchKeyKind::try_from(key.kind) {
            Ok(v1::MatchKeyKind::Unspecified) => {
                return Err(FieldError::new(
                    format!("match_keys[{i}].kind"),
                    "is required",
                ));
            }
            Ok(kind) => kind,
            Err(_) => {
                return Err(FieldError::new(
                    format!("match_keys[{i}].kind"),
                    format!("unknown value {}", key.kind),
                ));
            }
        };
        let digest: Digest = key.digest.as_slice().try_into().map_err(|_| {
            FieldError::new(
                format!("match_keys[{i}].digest"),
                "must be exactly 32 bytes",
            )
        })?;
        if !seen.insert(digest) {
            return Err(FieldError::new(
                format!("match_keys[{i}].digest"),
                "repeats an earlier key",
            ));
        }
        keys.push((kind, digest));
    }
    let purpose = purpose(request.purpose.as_ref(), "purpose")?;
    let requester = present(request.requester.as_ref(), "requester")?;
    required_text(
        &requester.practitioner_id,
        "requester.practitioner_id",
        MAX_ID,
    )?;
    required_text(&requester.name, "requester.name", MAX_NAME)?;
    optional_text(&requester.role, "requester.role", MAX_NAME)?;
    optional_text(
        &requester.organisation,
        "requester.organisation",
        MAX_ORGANISATION_NAME,
    )?;
    let scheme = match request.national_id_scheme.trim() {
        "" => None,
        scheme => Some(
            patchwork_federation::validate_scheme(scheme)
                .map_err(|e| FieldError::new("national_id_scheme", e.to_string()))?,
        ),
    };
    Ok(PeerQuery {
        tokens,
        basis: purpose.lawful_basis,
        reason: purpose.reason,
        keys,
        scheme,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            today: calendar_date(2026, 11, 26).expect("valid date"),
            default_scheme: "nhs".into(),
        }
    }

    fn person_proto() -> v1::Person {
        v1::Person {
            id: "P-1".into(),
            given_name: " Amelia ".into(),
            family_name: "Smith".into(),
            date_of_birth: Some(v1::Date {
                year: 2015,
                month: 3,
                day: 14,
            }),
            postcode: "rh1 1aa".into(),
            address: String::new(),
            national_id: Some(v1::NationalId {
                scheme: String::new(),
                value: "943 476 5919".into(),
            }),
        }
    }

    #[test]
    fn a_valid_person_is_normalised() {
        let person = person(&person_proto(), "person", &rules()).expect("valid");
        assert_eq!(person.given_name, "Amelia");
        assert_eq!(person.postcode.as_deref(), Some("RH1 1AA"));
        assert_eq!(person.address, None);
        let nid = person.national_id.expect("national id");
        assert_eq!(
            (nid.scheme.as_str(), nid.value.as_str()),
            ("nhs", "9434765919")
        );
    }

    #[test]
    fn each_bad_person_field_is_named() {
        type Mutation = fn(&mut v1::Person);
        let cases: &[(&str, Mutation)] = &[
            ("person.id", |p| p.id = String::new()),
            ("person.id", |p| p.id = "a b".into()),
            ("person.id", |p| p.id = "x".repeat(65)),
            // A blank given name is fine now (a date of birth and an NHS number
            // stand in): see one_name_may_be_unknown_with_enough_else_to_find_the_person.
            ("person.given_name", |p| p.given_name = "a".repeat(101)),
            ("person.family_name", |p| p.family_name = "é".repeat(101)),
            ("person.family_name", |p| {
                p.family_name = "Smi\u{0}th".into()
            }),
            ("person.date_of_birth", |p| {
                p.date_of_birth = Some(v1::Date {
                    year: 2030,
                    month: 1,
                    day: 1,
                })
            }),
            ("person.date_of_birth", |p| {
                p.date_of_birth = Some(v1::Date {
                    year: 2015,
                    month: 2,
                    day: 30,
                })
            }),
            ("person.date_of_birth", |p| {
                p.date_of_birth = Some(v1::Date {
                    year: 1850,
                    month: 2,
                    day: 3,
                })
            }),
            ("person.postcode", |p| p.postcode = "!!".into()),
            ("person.address", |p| p.address = "a".repeat(301)),
            ("person.national_id.value", |p| {
                p.national_id = Some(v1::NationalId {
                    scheme: "nhs".into(),
                    value: "9434765918".into(),
                })
            }),
            ("person.national_id.scheme", |p| {
                p.national_id = Some(v1::NationalId {
                    scheme: "N H S".into(),
                    value: "1".into(),
                })
            }),
        ];
        for (field, mutate) in cases {
            let mut proto = person_proto();
            mutate(&mut proto);
            let error = person(&proto, "person", &rules()).expect_err(field);
            assert_eq!(&error.field, field, "{error}");
        }
    }

    #[test]
    fn restricted_involvement_needs_a_gatekeeper() {
        let proto = v1::Involvement {
            person_id: "P-1".into(),
            practitioner_id: "PR-1".into(),
            service: "Sexual health".into(),
            start_date: Some(v1::Date {
                year: 2024,
                month: 1,
                day: 2,
            }),
            sensitivity: v1::Sensitivity::Restricted as i32,
            ..Default::default()
        };
        let error = involvement(&proto, "involvement", InvolvementSource::Api, &rules())
            .expect_err("no gatekeeper");
        assert_eq!(error.field, "involvement.gatekeeper");
    }

    #[test]
    fn unknown_enum_values_are_refused() {
        assert_eq!(
            sensitivity(42, "s").expect_err("unknown").message,
            "unknown value 42"
        );
        assert_eq!(
            sector(0, "s").expect_err("unspecified").message,
            "is required"
        );
        assert!(lawful_basis(-1, "b").is_err());
    }

    #[test]
    fn iso_dates_only() {
        assert_eq!(parse_iso_date("2020-02-29", "d").expect("leap day").day, 29);
        for bad in [
            "29/02/2020",
            "2020-2-29",
            "2021-02-29",
            "",
            "２０２０-01-01",
            "2020-01-01x",
        ] {
            assert!(parse_iso_date(bad, "d").is_err(), "{bad}");
        }
    }

    #[test]
    fn purpose_reason_must_say_something() {
        let short = v1::Purpose {
            lawful_basis: 1,
            reason: "because".into(),
        };
        assert_eq!(
            purpose(Some(&short), "purpose").expect_err("short").field,
            "purpose.reason"
        );
        assert_eq!(
            purpose(None, "purpose").expect_err("missing").field,
            "purpose"
        );
    }

    #[test]
    fn a_date_that_is_already_today_east_of_utc_is_not_in_the_future() {
        // UTC 2026-11-26 23:00 is 2026-11-27 10:00 in Melbourne.
        let d = |day| v1::Date {
            year: 2026,
            month: 11,
            day,
        };
        let rules = rules();
        assert_eq!(
            past_date(&d(26), "d", &rules).ok(),
            calendar_date(2026, 11, 26)
        );
        assert!(past_date(&d(27), "d", &rules).is_ok(), "today at UTC+14");
        assert_eq!(
            past_date(&d(28), "d", &rules).expect_err("future everywhere"),
            FieldError::new("d", "is in the future")
        );
    }

    #[test]
    fn one_name_may_be_unknown_with_enough_else_to_find_the_person() {
        let rules = rules();
        let without = |given: &str, family: &str, dob: bool, id: bool| v1::Person {
            given_name: given.into(),
            family_name: family.into(),
            date_of_birth: person_proto().date_of_birth.filter(|_| dob),
            national_id: person_proto().national_id.filter(|_| id),
            ..person_proto()
        };
        for (person, refused) in [
            (without("", "Smith", true, false), None),
            (without("Amelia", "", false, true), None),
            (without("", "Smith", false, false), Some("p.given_name")),
            (without("Amelia", " ", false, false), Some("p.family_name")),
            (without("", "", true, true), Some("p.given_name")),
        ] {
            match (person_checked(&person, &rules), refused) {
                (Ok(checked), None) => assert!(
                    checked.given_name.is_empty() != checked.family_name.is_empty(),
                    "{checked:?}"
                ),
                (Err(error), Some(field)) => assert_eq!(error.field, field, "{error:?}"),
                (outcome, wanted) => panic!("{person:?}: {outcome:?}, wanted {wanted:?}"),
            }
        }
    }

    fn person_checked(value: &v1::Person, rules: &Rules) -> Validated<Person> {
        person(value, "p", rules)
    }

    #[test]
    fn a_peer_puts_tokens_on_every_key_or_on_none() {
        let set = patchwork_federation::KeySet::new("t", &[1; 32]).expect("set");
        let subject = patchwork_federation::Subject {
            given_name: Some("Amelia".into()),
            family_name: Some("Smith".into()),
            date_of_birth: Some((2015, 3, 14)),
            postcode: Some("RH1 1AA".into()),
            national_id: None,
        };
        let mut request = v1::FindInvolvementsRequest {
            request_id: "r-1".into(),
            key_set: "t".into(),
            match_keys: patchwork_federation::tokens::query_match_keys(&set, &subject),
            purpose: Some(v1::Purpose {
                lawful_basis: v1::LawfulBasis::ChildSafeguarding as i32,
                reason: "s.47 enquiry".into(),
            }),
            requester: Some(v1::Requester {
                practitioner_id: "PR-1".into(),
                name: "Sam".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let checked = peer_query(&request).expect("version 2");
        assert_eq!(checked.tokens.len(), checked.keys.len());
        request.match_keys[2].tokens = None;
        let error = peer_query(&request).expect_err("mixed");
        assert_eq!(error.field, "match_keys[2].tokens");
        for key in &mut request.match_keys {
            key.tokens = None;
        }
        assert!(peer_query(&request).expect("version 1").tokens.is_empty());
    }
}
