//! Domain records back to wire messages, and the one mapping from domain
//! errors to gRPC statuses.

use patchwork_proto::v1;
use tonic::Status;

use crate::base::validate::{FieldError, path, to_proto_date};
use patchwork_store::StoreError;
use patchwork_store::model::{
    Contact, Involvement, NationalId, Organisation, Person, Practitioner, Sector,
};

impl From<FieldError> for Status {
    fn from(error: FieldError) -> Self {
        Status::invalid_argument(error.to_string())
    }
}

/// The field that holds a record's id, for errors about the record as a
/// whole: `person.id` under a record path, the field itself when `prefix`
/// already names an id field (`person_id`), and `id` for requests that
/// carry only the id.
fn id_field(prefix: &str) -> String {
    if prefix == "id" || prefix.ends_with("_id") || prefix.ends_with(".id") {
        prefix.to_owned()
    } else {
        path(prefix, "id")
    }
}

/// Maps a store error to the status a client sees; `prefix` is the request
/// path of the record (or of the id field when the request names a record
/// only by id), so every message starts with the field it is about
/// (`involvement.person_id: ...`, `person.id: person P1 already exists`).
pub(crate) fn store_status(error: StoreError, prefix: &str) -> Status {
    match error {
        StoreError::AlreadyExists { .. } => {
            Status::already_exists(format!("{}: {error}", id_field(prefix)))
        }
        StoreError::NotFound { .. } => Status::not_found(format!("{}: {error}", id_field(prefix))),
        StoreError::MissingReference { field, kind, id } => Status::invalid_argument(format!(
            "{}: {kind} {id} does not exist on this node",
            path(prefix, field)
        )),
        StoreError::AlreadyEnded { .. } => {
            Status::failed_precondition(format!("{}: {error}", id_field(prefix)))
        }
        StoreError::Invalid { field, message } => {
            Status::invalid_argument(format!("{}: {message}", path(prefix, field)))
        }
        StoreError::Corrupt { .. } => {
            tracing::error!(error = %error, "store record unreadable");
            Status::internal("the node's store is damaged; the operator has been told in the log")
        }
        StoreError::Locked { .. } => Status::unavailable(error.to_string()),
        StoreError::Archived { .. } => Status::failed_precondition(error.to_string()),
        StoreError::IndexEntriesPending(_) => {
            tracing::error!(error = %error, "index entries not written");
            Status::unavailable(
                "the records were written but not all their index entries: the node writes \
                 them when it next starts; until then lookups may miss these persons",
            )
        }
        StoreError::Io(_) | StoreError::File(_) => {
            tracing::error!(error = %error, "store i/o failed");
            Status::unavailable("the node cannot write to its store right now; nothing was changed")
        }
    }
}

/// The status for a write that ran but could not be flushed: it is in the
/// store's memory and may or may not be on disk, so "nothing was changed"
/// would be untrue (node/cli/tests/disk_full.rs found writes refused this way
/// present after a restart). The caller must check before repeating it.
pub(crate) fn unflushed_status(error: StoreError) -> Status {
    tracing::error!(error = %error, "store flush failed");
    Status::unavailable(
        "the node cannot write to its store right now (disk full or failing): this change \
         was not confirmed on disk and may or may not be kept; check before repeating it",
    )
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

pub(crate) fn national_id(value: &NationalId) -> v1::NationalId {
    v1::NationalId {
        scheme: value.scheme.clone(),
        value: value.value.clone(),
    }
}

pub(crate) fn person(value: &Person) -> v1::Person {
    v1::Person {
        id: value.id.clone(),
        given_name: value.given_name.clone(),
        family_name: value.family_name.clone(),
        date_of_birth: value.date_of_birth.map(to_proto_date),
        postcode: text(&value.postcode),
        address: text(&value.address),
        national_id: value.national_id.as_ref().map(national_id),
    }
}

pub(crate) fn practitioner(value: &Practitioner) -> v1::Practitioner {
    v1::Practitioner {
        id: value.id.clone(),
        name: value.name.clone(),
        role: value.role.clone(),
        team: text(&value.team),
        organisation_id: value.organisation_id.clone(),
        phone: text(&value.phone),
        email: text(&value.email),
    }
}

pub(crate) fn sector(value: Sector) -> v1::Sector {
    match value {
        Sector::SocialCare => v1::Sector::SocialCare,
        Sector::Health => v1::Sector::Health,
        Sector::Police => v1::Sector::Police,
        Sector::Education => v1::Sector::Education,
        Sector::Housing => v1::Sector::Housing,
        Sector::Youth => v1::Sector::Youth,
        Sector::Voluntary => v1::Sector::Voluntary,
        Sector::Probation => v1::Sector::Probation,
        Sector::Other => v1::Sector::Other,
    }
}

pub(crate) fn organisation(value: &Organisation) -> v1::Organisation {
    v1::Organisation {
        id: value.id.clone(),
        name: value.name.clone(),
        sector: sector(value.sector) as i32,
    }
}

pub(crate) fn contact(value: &Contact) -> v1::Contact {
    v1::Contact {
        name: value.name.clone(),
        phone: text(&value.phone),
        email: text(&value.email),
    }
}

/// How a practitioner is reached, as lookups and team events show it.
pub(crate) fn practitioner_contact(
    practitioner: Practitioner,
    organisation: Option<&Organisation>,
) -> v1::PractitionerContact {
    v1::PractitionerContact {
        name: practitioner.name,
        role: practitioner.role,
        team: practitioner.team.unwrap_or_default(),
        organisation_name: organisation.map(|o| o.name.clone()).unwrap_or_default(),
        sector: organisation
            .map(|o| sector(o.sector) as i32)
            .unwrap_or_default(),
        phone: practitioner.phone.unwrap_or_default(),
        email: practitioner.email.unwrap_or_default(),
    }
}

pub(crate) fn involvement(value: &Involvement) -> v1::Involvement {
    v1::Involvement {
        id: value.id.clone(),
        person_id: value.person_id.clone(),
        practitioner_id: value.practitioner_id.clone(),
        service: value.service.clone(),
        start_date: Some(to_proto_date(value.start_date)),
        end_date: value.end_date.map(to_proto_date),
        sensitivity: v1::Sensitivity::from(value.sensitivity) as i32,
        gatekeeper: value.gatekeeper.as_ref().map(contact),
        last_confirmed: Some(to_proto_date(value.last_confirmed)),
        end_reason: text(&value.end_reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchwork_store::Kind;

    fn exists(id: &str) -> StoreError {
        StoreError::AlreadyExists {
            kind: Kind::Person,
            id: id.into(),
        }
    }

    fn missing(kind: Kind, id: &str) -> StoreError {
        StoreError::NotFound {
            kind,
            id: id.into(),
        }
    }

    #[test]
    fn record_errors_start_with_the_field_that_holds_the_id() {
        let status = store_status(exists("P1"), "person");
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert_eq!(status.message(), "person.id: person P1 already exists");
        let status = store_status(missing(Kind::Person, "P1"), "person");
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "person.id: person P1 not found");
        assert_eq!(
            store_status(missing(Kind::Involvement, "I1"), "").message(),
            "id: involvement I1 not found"
        );
        assert_eq!(
            store_status(missing(Kind::Person, "P1"), "person_id").message(),
            "person_id: person P1 not found"
        );
        let status = store_status(StoreError::AlreadyEnded { id: "I1".into() }, "");
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "id: involvement I1 has already ended");
    }
}
