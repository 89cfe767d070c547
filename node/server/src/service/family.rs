//! The `Directory` handlers for keeping the picture fresh (confirming
//! involvements, listing unconfirmed ones) and for the family view (links
//! between persons). `directory.rs` authorises and delegates here.

use patchwork_proto::v1;
use tonic::Status;

use crate::base::convert::{self, store_status};
use crate::base::pool::blocking;
use crate::base::validate::{self, FieldError};
use crate::work::state::NodeState;
use patchwork_store::freshness::ConfirmRefusal;
use patchwork_store::model::Relationship;
use patchwork_store::model::{Date, today};

const MAX_UNCONFIRMED_LIMIT: u32 = 1000;
const DEFAULT_UNCONFIRMED_LIMIT: u32 = 100;

pub(super) fn relationship_from_proto(value: i32, field: &str) -> Result<Relationship, FieldError> {
    match v1::Relationship::try_from(value) {
        Ok(v1::Relationship::Household) => Ok(Relationship::Household),
        Ok(v1::Relationship::Parent) => Ok(Relationship::Parent),
        Ok(v1::Relationship::Child) => Ok(Relationship::Child),
        Ok(v1::Relationship::Sibling) => Ok(Relationship::Sibling),
        Ok(v1::Relationship::Other) => Ok(Relationship::Other),
        Ok(v1::Relationship::Unspecified) => Err(FieldError::new(field, "is required")),
        Err(_) => Err(FieldError::new(field, format!("unknown value {value}"))),
    }
}

pub(super) fn relationship_to_proto(value: Relationship) -> v1::Relationship {
    match value {
        Relationship::Household => v1::Relationship::Household,
        Relationship::Parent => v1::Relationship::Parent,
        Relationship::Child => v1::Relationship::Child,
        Relationship::Sibling => v1::Relationship::Sibling,
        Relationship::Other => v1::Relationship::Other,
    }
}

pub(super) async fn confirm_involvement(
    state: &NodeState,
    req: v1::ConfirmInvolvementRequest,
) -> Result<v1::Involvement, Status> {
    let id = validate::id(&req.id, "id")?;
    let practitioner_id = validate::id(&req.practitioner_id, "practitioner_id")?;
    let today = today();
    let (key, who) = (id.clone(), practitioner_id.clone());
    let outcome = state
        .write("", move |s| Ok(s.confirm_involvement(&key, &who, today)?))
        .await?;
    match outcome {
        Ok(confirmed) => {
            tracing::info!(involvement = %confirmed.id, "involvement confirmed");
            Ok(convert::involvement(&confirmed))
        }
        Err(ConfirmRefusal::NotTheirs) => Err(Status::failed_precondition(format!(
            "practitioner_id: only the involvement's own practitioner may confirm involvement {id}, not {practitioner_id}"
        ))),
        Err(ConfirmRefusal::Ended) => Err(Status::failed_precondition(format!(
            "id: involvement {id} has ended; an ended involvement cannot be confirmed"
        ))),
    }
}

pub(super) async fn list_unconfirmed(
    state: &NodeState,
    req: v1::ListUnconfirmedInvolvementsRequest,
) -> Result<v1::ListUnconfirmedInvolvementsResponse, Status> {
    let practitioner_id = match req.practitioner_id.trim() {
        "" => None,
        id => Some(validate::id(id, "practitioner_id")?),
    };
    let days = match req.older_than_days {
        0 => state.confirm_after_days,
        n if n <= 3650 => n,
        _ => return Err(FieldError::new("older_than_days", "must be 0-3650").into()),
    };
    let limit = match req.limit {
        0 => DEFAULT_UNCONFIRMED_LIMIT,
        n if n <= MAX_UNCONFIRMED_LIMIT => n,
        _ => {
            return Err(FieldError::new(
                "limit",
                format!("must be at most {MAX_UNCONFIRMED_LIMIT}"),
            )
            .into());
        }
    } as usize;
    // Confirmed `days` or more days ago.
    let confirmed_by = today()
        .checked_sub(time::Duration::days(i64::from(days)))
        .unwrap_or(Date::MIN);
    let store = state.store.clone();
    let (involvements, truncated) = blocking(move || {
        if let Some(id) = &practitioner_id
            && store
                .practitioner(id)
                .map_err(|e| store_status(e, ""))?
                .is_none()
        {
            return Err(Status::not_found(format!(
                "practitioner_id: practitioner {id} not found"
            )));
        }
        store
            .unconfirmed_involvements(practitioner_id.as_deref(), confirmed_by, limit)
            .map_err(|e| store_status(e, ""))
    })
    .await?;
    Ok(v1::ListUnconfirmedInvolvementsResponse {
        involvements: involvements.iter().map(convert::involvement).collect(),
        truncated,
    })
}

pub(super) async fn link_persons(
    state: &NodeState,
    req: v1::LinkPersonsRequest,
) -> Result<v1::PersonLink, Status> {
    let person_id = validate::id(&req.person_id, "person_id")?;
    let other_id = validate::id(&req.other_person_id, "other_person_id")?;
    let relationship = relationship_from_proto(req.relationship, "relationship")?;
    let (a, b) = (person_id.clone(), other_id.clone());
    state
        .write("", move |s| Ok(s.link_persons(&a, &b, relationship)?))
        .await?;
    tracing::info!(person = %person_id, other = %other_id, "persons linked");
    Ok(v1::PersonLink {
        person_id,
        other_person_id: other_id,
        relationship: relationship_to_proto(relationship) as i32,
    })
}

pub(super) async fn unlink_persons(
    state: &NodeState,
    req: v1::UnlinkPersonsRequest,
) -> Result<v1::UnlinkPersonsResponse, Status> {
    let person_id = validate::id(&req.person_id, "person_id")?;
    let other_id = validate::id(&req.other_person_id, "other_person_id")?;
    let (a, b) = (person_id.clone(), other_id.clone());
    let removed = state
        .write("", move |s| Ok(s.unlink_persons(&a, &b)?))
        .await?;
    if !removed {
        return Err(Status::not_found(format!(
            "other_person_id: person {person_id} is not linked to {other_id}"
        )));
    }
    tracing::info!(person = %person_id, other = %other_id, "persons unlinked");
    Ok(v1::UnlinkPersonsResponse {})
}

pub(super) async fn list_links(
    state: &NodeState,
    req: v1::ListLinksRequest,
) -> Result<v1::ListLinksResponse, Status> {
    let person_id = validate::id(&req.person_id, "person_id")?;
    let store = state.store.clone();
    let key = person_id.clone();
    let links = blocking(move || {
        if store
            .person(&key)
            .map_err(|e| store_status(e, ""))?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "person_id: person {key} not found"
            )));
        }
        store.links_of(&key).map_err(|e| store_status(e, ""))
    })
    .await?;
    Ok(v1::ListLinksResponse {
        links: links
            .into_iter()
            .map(|(other, relationship)| v1::PersonLink {
                person_id: person_id.clone(),
                other_person_id: other,
                relationship: relationship_to_proto(relationship) as i32,
            })
            .collect(),
    })
}
