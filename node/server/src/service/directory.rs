//! `patchwork.v1.Directory`: the council's own systems and practitioners
//! writing and reading its records, and looking people up.

use patchwork_proto::v1::{self, directory_server::Directory};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, instrument};

use crate::base::config::Role;
use crate::base::convert::{self, store_status};
use crate::base::pool::blocking;
use crate::base::validate::{self, FieldError, InvolvementSource, present};
use crate::work::state::NodeState;
use patchwork_store::{WriteMode, person_index_keys};

/// The most persons one search returns.
const MAX_SEARCH_LIMIT: u32 = 100;
const DEFAULT_SEARCH_LIMIT: u32 = 20;

#[derive(Debug, Clone)]
pub(crate) struct DirectoryService {
    state: NodeState,
}

impl DirectoryService {
    pub(crate) fn new(state: NodeState) -> Self {
        DirectoryService { state }
    }

    /// One store write through [`NodeState::write`].
    async fn write<T, F>(&self, prefix: &'static str, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&patchwork_store::Store) -> Result<T, patchwork_store::StoreError>
            + Send
            + 'static,
    {
        self.state
            .write(prefix, move |store| work(store).map_err(Into::into))
            .await
    }

    /// A records-role call answered by a handler of `service::family`:
    /// the caller is authorised before the handler sees the request.
    async fn as_records<'a, Q, R, Fut>(
        &'a self,
        request: Request<Q>,
        handler: impl FnOnce(&'a NodeState, Q) -> Fut,
    ) -> DirectoryResult<R>
    where
        Fut: Future<Output = Result<R, Status>>,
    {
        self.state.access.authorise(&request, Role::Records)?;
        Ok(Response::new(
            handler(&self.state, request.into_inner()).await?,
        ))
    }

    /// Create and Update of a person: the same checks, one write mode apart.
    async fn put_person(
        &self,
        person: Option<v1::Person>,
        mode: WriteMode,
    ) -> DirectoryResult<v1::Person> {
        let person = validate::person(
            present(person.as_ref(), "person")?,
            "person",
            &self.state.rules(),
        )?;
        let reply = convert::person(&person);
        self.write("person", move |s| s.put_persons(&[person], mode))
            .await?;
        Ok(Response::new(reply))
    }

    /// Create and Update of a practitioner: the same checks, one write mode apart.
    async fn put_practitioner(
        &self,
        practitioner: Option<v1::Practitioner>,
        mode: WriteMode,
    ) -> DirectoryResult<v1::Practitioner> {
        let practitioner = validate::practitioner(
            present(practitioner.as_ref(), "practitioner")?,
            "practitioner",
        )?;
        let reply = convert::practitioner(&practitioner);
        self.write("practitioner", move |s| {
            s.put_practitioners(&[practitioner], mode)
        })
        .await?;
        Ok(Response::new(reply))
    }

    /// Create and Update of a organisation: the same checks, one write mode apart.
    async fn put_organisation(
        &self,
        organisation: Option<v1::Organisation>,
        mode: WriteMode,
    ) -> DirectoryResult<v1::Organisation> {
        let organisation = validate::organisation(
            present(organisation.as_ref(), "organisation")?,
            "organisation",
        )?;
        let reply = convert::organisation(&organisation);
        self.write("organisation", move |s| {
            s.put_organisations(&[organisation], mode)
        })
        .await?;
        Ok(Response::new(reply))
    }

    async fn read<T, F>(&self, work: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&patchwork_store::Store) -> Result<T, patchwork_store::StoreError>
            + Send
            + 'static,
    {
        let store = self.state.store.clone();
        blocking(move || work(&store).map_err(|e| store_status(e, ""))).await
    }
}

/// `field` names the request field that held the id, like every other error.
fn not_found(field: &str, kind: &str, id: &str) -> Status {
    Status::not_found(format!("{field}: {kind} {id} not found"))
}

type DirectoryResult<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Directory for DirectoryService {
    #[instrument(skip_all)]
    async fn create_person(
        &self,
        request: Request<v1::CreatePersonRequest>,
    ) -> DirectoryResult<v1::Person> {
        self.state.access.authorise(&request, Role::Records)?;
        self.put_person(request.into_inner().person, WriteMode::Create)
            .await
    }

    #[instrument(skip_all)]
    async fn update_person(
        &self,
        request: Request<v1::UpdatePersonRequest>,
    ) -> DirectoryResult<v1::Person> {
        self.state.access.authorise(&request, Role::Records)?;
        self.put_person(request.into_inner().person, WriteMode::Update)
            .await
    }

    #[instrument(skip_all)]
    async fn get_person(
        &self,
        request: Request<v1::GetPersonRequest>,
    ) -> DirectoryResult<v1::Person> {
        self.state.access.authorise(&request, Role::Records)?;
        let id = validate::id(&request.get_ref().id, "id")?;
        let lookup_id = id.clone();
        let person = self
            .read(move |s| s.person(&lookup_id))
            .await?
            .ok_or_else(|| not_found("id", "person", &id))?;
        Ok(Response::new(convert::person(&person)))
    }

    #[instrument(skip_all)]
    async fn search_persons(
        &self,
        request: Request<v1::SearchPersonsRequest>,
    ) -> DirectoryResult<v1::SearchPersonsResponse> {
        self.state.access.authorise(&request, Role::Records)?;
        let req = request.into_inner();
        let demographics = validate::demographics(
            present(req.demographics.as_ref(), "demographics")?,
            "demographics",
            &self.state.rules(),
        )?;
        let limit = match req.limit {
            0 => DEFAULT_SEARCH_LIMIT,
            n if n <= MAX_SEARCH_LIMIT => n,
            _ => {
                return Err(FieldError::new(
                    "limit",
                    format!("must be at most {MAX_SEARCH_LIMIT}"),
                )
                .into());
            }
        } as usize;
        let keys = person_index_keys(&demographics);
        if keys.is_empty() {
            return Err(FieldError::new(
                "demographics",
                "needs national_id, or family_name with date_of_birth or postcode",
            )
            .into());
        }
        let (persons, truncated) = self
            .read(move |s| {
                let mut found: Vec<patchwork_store::model::Person> = Vec::new();
                for key in keys {
                    for person in s.persons_with_key(&key, limit * 4 + 1)? {
                        if agrees(&demographics, &person)
                            && !found.iter().any(|p| p.id == person.id)
                        {
                            found.push(person);
                        }
                    }
                }
                let truncated = found.len() > limit;
                found.truncate(limit);
                Ok((found, truncated))
            })
            .await?;
        Ok(Response::new(v1::SearchPersonsResponse {
            persons: persons.iter().map(convert::person).collect(),
            truncated,
        }))
    }

    #[instrument(skip_all)]
    async fn create_practitioner(
        &self,
        request: Request<v1::CreatePractitionerRequest>,
    ) -> DirectoryResult<v1::Practitioner> {
        self.state.access.authorise(&request, Role::Records)?;
        self.put_practitioner(request.into_inner().practitioner, WriteMode::Create)
            .await
    }

    #[instrument(skip_all)]
    async fn update_practitioner(
        &self,
        request: Request<v1::UpdatePractitionerRequest>,
    ) -> DirectoryResult<v1::Practitioner> {
        self.state.access.authorise(&request, Role::Records)?;
        self.put_practitioner(request.into_inner().practitioner, WriteMode::Update)
            .await
    }

    #[instrument(skip_all)]
    async fn get_practitioner(
        &self,
        request: Request<v1::GetPractitionerRequest>,
    ) -> DirectoryResult<v1::Practitioner> {
        self.state.access.authorise(&request, Role::Records)?;
        let id = validate::id(&request.get_ref().id, "id")?;
        let lookup_id = id.clone();
        let found = self.read(move |s| s.practitioner(&lookup_id)).await?;
        let practitioner = found.ok_or_else(|| not_found("id", "practitioner", &id))?;
        Ok(Response::new(convert::practitioner(&practitioner)))
    }

    #[instrument(skip_all)]
    async fn create_organisation(
        &self,
        request: Request<v1::CreateOrganisationRequest>,
    ) -> DirectoryResult<v1::Organisation> {
        self.state.access.authorise(&request, Role::Records)?;
        self.put_organisation(request.into_inner().organisation, WriteMode::Create)
            .await
    }

    #[instrument(skip_all)]
    async fn update_organisation(
        &self,
        request: Request<v1::UpdateOrganisationRequest>,
    ) -> DirectoryResult<v1::Organisation> {
        self.state.access.authorise(&request, Role::Records)?;
        self.put_organisation(request.into_inner().organisation, WriteMode::Update)
            .await
    }

    #[instrument(skip_all)]
    async fn get_organisation(
        &self,
        request: Request<v1::GetOrganisationRequest>,
    ) -> DirectoryResult<v1::Organisation> {
        self.state.access.authorise(&request, Role::Records)?;
        let id = validate::id(&request.get_ref().id, "id")?;
        let lookup_id = id.clone();
        let found = self.read(move |s| s.organisation(&lookup_id)).await?;
        let organisation = found.ok_or_else(|| not_found("id", "organisation", &id))?;
        Ok(Response::new(convert::organisation(&organisation)))
    }

    #[instrument(skip_all)]
    async fn record_involvement(
        &self,
        request: Request<v1::RecordInvolvementRequest>,
    ) -> DirectoryResult<v1::Involvement> {
        self.state.access.authorise(&request, Role::Records)?;
        let req = request.into_inner();
        let involvement = validate::involvement(
            present(req.involvement.as_ref(), "involvement")?,
            "involvement",
            InvolvementSource::Api,
            &self.state.rules(),
        )?;
        let reply = convert::involvement(&involvement);
        self.write("involvement", move |s| {
            s.put_involvements(&[involvement], WriteMode::Create)
        })
        .await?;
        info!(involvement = %reply.id, "involvement recorded");
        Ok(Response::new(reply))
    }

    #[instrument(skip_all)]
    async fn end_involvement(
        &self,
        request: Request<v1::EndInvolvementRequest>,
    ) -> DirectoryResult<v1::Involvement> {
        self.state.access.authorise(&request, Role::Records)?;
        let req = request.into_inner();
        let rules = self.state.rules();
        let id = validate::id(&req.id, "id")?;
        let end_date = validate::past_date(
            present(req.end_date.as_ref(), "end_date")?,
            "end_date",
            &rules,
        )?;
        let reason = validate::optional_text(&req.reason, "reason", validate::MAX_END_REASON)?;
        let ended = self
            .write("", move |s| s.end_involvement(&id, end_date, reason))
            .await?;
        info!(involvement = %ended.id, "involvement ended");
        Ok(Response::new(convert::involvement(&ended)))
    }

    #[instrument(skip_all)]
    async fn list_involvements(
        &self,
        request: Request<v1::ListInvolvementsRequest>,
    ) -> DirectoryResult<v1::ListInvolvementsResponse> {
        self.state.access.authorise(&request, Role::Records)?;
        let req = request.into_inner();
        let person_id = validate::id(&req.person_id, "person_id")?;
        let include_ended = req.include_ended;
        let lookup_id = person_id.clone();
        let involvements = self
            .read(move |s| {
                if s.person(&lookup_id)?.is_none() {
                    return Ok(None);
                }
                s.involvements_of_person(&lookup_id).map(Some)
            })
            .await?
            .ok_or_else(|| not_found("person_id", "person", &person_id))?;
        Ok(Response::new(v1::ListInvolvementsResponse {
            involvements: involvements
                .iter()
                .filter(|i| include_ended || i.is_active())
                .map(convert::involvement)
                .collect(),
        }))
    }

    #[instrument(skip_all, fields(lookup_id))]
    async fn lookup(
        &self,
        request: Request<v1::LookupRequest>,
    ) -> DirectoryResult<v1::LookupResponse> {
        let caller = self.state.access.authorise(&request, Role::Lookup)?;
        let req = request.into_inner();
        let validate::AskedAbout {
            subject,
            purpose,
            requester_id,
        } = validate::asked_about(
            req.subject.as_ref(),
            req.purpose.as_ref(),
            req.requester.as_ref(),
            &self.state.rules(),
        )?;
        if req.peer_deadline_ms != 0 && !(100..=30_000).contains(&req.peer_deadline_ms) {
            return Err(FieldError::new("peer_deadline_ms", "must be 0 or 100-30000").into());
        }
        let question = crate::work::lookup::LookupQuestion {
            caller,
            subject,
            purpose,
            requester_id,
            local_only: req.local_only,
            peer_deadline_ms: req.peer_deadline_ms,
            include_family: req.include_family,
        };
        let response = crate::work::lookup::lookup(&self.state, question).await?;
        Ok(Response::new(response))
    }

    #[instrument(skip_all)]
    async fn raise_attention(
        &self,
        request: Request<v1::RaiseAttentionRequest>,
    ) -> DirectoryResult<v1::RaiseAttentionResponse> {
        self.state.access.authorise(&request, Role::Records)?;
        let req = request.into_inner();
        let (person, by, reason) = (&req.person_id, &req.practitioner_id, &req.reason);
        super::team::set_attention(&self.state, person, by, reason, true).await?;
        Ok(Response::new(v1::RaiseAttentionResponse {}))
    }

    #[instrument(skip_all)]
    async fn clear_attention(
        &self,
        request: Request<v1::ClearAttentionRequest>,
    ) -> DirectoryResult<v1::ClearAttentionResponse> {
        self.state.access.authorise(&request, Role::Records)?;
        let req = request.into_inner();
        let (person, by, reason) = (&req.person_id, &req.practitioner_id, &req.reason);
        super::team::set_attention(&self.state, person, by, reason, false).await?;
        Ok(Response::new(v1::ClearAttentionResponse {}))
    }

    #[instrument(skip_all)]
    async fn confirm_involvement(
        &self,
        request: Request<v1::ConfirmInvolvementRequest>,
    ) -> DirectoryResult<v1::Involvement> {
        self.as_records(request, super::family::confirm_involvement)
            .await
    }

    #[instrument(skip_all)]
    async fn list_unconfirmed_involvements(
        &self,
        request: Request<v1::ListUnconfirmedInvolvementsRequest>,
    ) -> DirectoryResult<v1::ListUnconfirmedInvolvementsResponse> {
        self.as_records(request, super::family::list_unconfirmed)
            .await
    }

    #[instrument(skip_all)]
    async fn link_persons(
        &self,
        request: Request<v1::LinkPersonsRequest>,
    ) -> DirectoryResult<v1::PersonLink> {
        self.as_records(request, super::family::link_persons).await
    }

    #[instrument(skip_all)]
    async fn unlink_persons(
        &self,
        request: Request<v1::UnlinkPersonsRequest>,
    ) -> DirectoryResult<v1::UnlinkPersonsResponse> {
        self.as_records(request, super::family::unlink_persons)
            .await
    }

    #[instrument(skip_all)]
    async fn list_links(
        &self,
        request: Request<v1::ListLinksRequest>,
    ) -> DirectoryResult<v1::ListLinksResponse> {
        self.as_records(request, super::family::list_links).await
    }

    /// Admin role: erasure is the data-protection officer's decision,
    /// carried out by the node's operators, never a records integration's.
    #[instrument(skip_all)]
    async fn erase_person(
        &self,
        request: Request<v1::ErasePersonRequest>,
    ) -> DirectoryResult<v1::ErasePersonResponse> {
        let caller = self.state.access.authorise(&request, Role::Admin)?;
        let req = request.into_inner();
        let person_id = validate::id(&req.person_id, "person_id")?;
        let reason = validate::erasure_reason(&req.reason, "reason")?;
        let erasure = crate::work::erasure::erase_person(
            &self.state,
            &caller.identity.to_string(),
            person_id,
            reason,
        )
        .await?;
        info!(audit_seq = erasure.audit_seq, "person erased");
        Ok(Response::new(v1::ErasePersonResponse {
            removed: erasure.removed,
            audit_seq: erasure.audit_seq,
        }))
    }

    type WatchStream = ReceiverStream<Result<v1::TeamEvent, Status>>;

    /// Who may watch whom: `AccessPolicy::authorise_watch` (the `watch`
    /// role). Opening a watch is audited.
    #[instrument(skip_all)]
    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> DirectoryResult<Self::WatchStream> {
        let practitioner_id =
            crate::base::validate::id(&request.get_ref().practitioner_id, "practitioner_id")?;
        let caller = self
            .state
            .access
            .authorise_watch(&request, &practitioner_id)?;
        let stream = super::team::watch(
            &self.state,
            &caller,
            practitioner_id,
            &request.get_ref().after_cursor,
        )
        .await?;
        Ok(Response::new(stream))
    }

    #[instrument(skip_all)]
    async fn subscribe(
        &self,
        request: Request<v1::DirectorySubscribeRequest>,
    ) -> DirectoryResult<v1::DirectorySubscribeResponse> {
        self.state.access.authorise(&request, Role::Lookup)?;
        let req = request.into_inner();
        let validate::AskedAbout {
            subject,
            purpose,
            requester_id,
        } = validate::asked_about(
            req.subject.as_ref(),
            req.purpose.as_ref(),
            req.requester.as_ref(),
            &self.state.rules(),
        )?;
        if req.ttl_days > 90 {
            return Err(FieldError::new("ttl_days", "must be 0-90").into());
        }
        let question = crate::work::subscriptions::SubscribeQuestion {
            subject,
            purpose,
            requester_id,
            peers: req.peer_node_ids,
            ttl_days: req.ttl_days,
        };
        let response = crate::work::subscriptions::subscribe(&self.state, question).await?;
        Ok(Response::new(response))
    }

    #[instrument(skip_all)]
    async fn unsubscribe(
        &self,
        request: Request<v1::DirectoryUnsubscribeRequest>,
    ) -> DirectoryResult<v1::DirectoryUnsubscribeResponse> {
        self.state.access.authorise(&request, Role::Lookup)?;
        let id = validate::id(&request.into_inner().subscription_id, "subscription_id")?;
        crate::work::subscriptions::unsubscribe(&self.state, &id).await?;
        Ok(Response::new(v1::DirectoryUnsubscribeResponse {}))
    }
}

/// Every field the search gave agrees with the person (after normalisation).
fn agrees(
    wanted: &patchwork_store::model::Demographics,
    person: &patchwork_store::model::Person,
) -> bool {
    use patchwork_federation::{normalise_name, normalise_postcode};
    let name_ok = |want: &Option<String>, have: &str| {
        want.as_deref()
            .is_none_or(|w| normalise_name(w) == normalise_name(have))
    };
    name_ok(&wanted.given_name, &person.given_name)
        && name_ok(&wanted.family_name, &person.family_name)
        && wanted
            .date_of_birth
            .is_none_or(|d| person.date_of_birth == Some(d))
        && wanted.postcode.as_deref().is_none_or(|p| {
            person.postcode.as_deref().map(normalise_postcode) == Some(normalise_postcode(p))
        })
        && wanted
            .national_id
            .as_ref()
            .is_none_or(|n| person.national_id.as_ref() == Some(n))
}
