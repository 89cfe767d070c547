//! `patchwork.v1.Federation`: what peer nodes ask. In order: the caller's
//! identity from its certificate → its agreement (none: refused) → the
//! peer's rate → the request checked field by field → not a replay → the
//! purpose agreed? → not paused for enumeration → match on blinded keys,
//! precise first → disclose what the agreement and each involvement's
//! sensitivity allow → audit, durably → reply. A hit and a miss take the same
//! path: the same lookups, the same audit write and flush.
//!
//! Every refusal is audited, but never at a caller's pace: a caller without
//! an agreement or over its rate is counted and audited as one summary per
//! caller, reason and minute (it can repeat those as fast as it likes); an
//! agreed peer's other refusals come within its rate and are audited one by
//! one, with what it wrote cut short.

use std::sync::Arc;
use std::time::Instant;

use patchwork_certs::SpiffeId;
use patchwork_federation::agreement::{Disclosure, Peer};
use patchwork_federation::decide::{Decision, decide};
use patchwork_federation::hostile::{
    Answered, Pattern, RefusalCount, RefusalTally, ReplayGuard, TalliedRefusal,
};
use patchwork_federation::matchkeys::Digest;
use patchwork_federation::score::{Weights, decide_scored};
use patchwork_federation::tokens::SubjectTokens;
use patchwork_proto::v1::{self, federation_server::Federation};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::base::convert;
use crate::base::validate::{self, PeerQuery};
use crate::work::disclosure::DisclosedIds;
use crate::work::state::{NodeState, read};
use patchwork_store::audit::AuditEvent;
use patchwork_store::model::LawfulBasis;
use patchwork_store::{Store, StoreError};

/// Cross-border subscriptions: Subscribe, PollNotifications, Unsubscribe.
mod subscribe;

/// Most keys one query may carry.
/// Most candidates one digest may bring in before the answer is "ambiguous".
const CANDIDATE_LIMIT: usize = 16;

#[derive(Debug, Clone)]
pub(crate) struct FederationService {
    state: NodeState,
    /// Request ids answered recently, per peer: a replay is refused.
    replays: Arc<ReplayGuard>,
}

impl FederationService {
    /// A peer's query, answered: identity → agreement → rate → checks →
    /// replay → purpose → enumeration pause → match → disclose → audit. The
    /// one path for `FindInvolvements` and `Subscribe` (which subscribes to
    /// the person this matched, if it disclosed them).
    pub(super) async fn answer_query(
        &self,
        identity: &SpiffeId,
        request: v1::FindInvolvementsRequest,
    ) -> Result<AnsweredQuery, Status> {
        let identity = identity.clone();
        let peer = self.agreed_peer(&identity)?;
        // The rate first: every query costs a token before anything is
        // written, so a peer over its rate never makes the node write.
        if !peer.limiter.try_acquire() {
            let status = Status::resource_exhausted(format!(
                "{identity} may ask {} queries a minute",
                peer.agreement.rate_limit_per_minute
            ));
            return Err(self.refuse_counted(&identity, TalliedRefusal::RateLimited, status));
        }
        let checked = match check_request(&request, &peer) {
            Ok(checked) => checked,
            Err(status) => {
                return Err(self
                    .refuse(identity.to_string(), &request, None, status)
                    .await);
            }
        };
        if !self
            .replays
            .first_time(&identity, &request.request_id, Instant::now())
        {
            // A second answer would be a second disclosure nobody asked for.
            let status = Status::already_exists("request id already answered");
            return Err(self
                .refuse(identity.to_string(), &request, Some(checked.basis), status)
                .await);
        }
        if !peer.agreement.allows(v1::LawfulBasis::from(checked.basis)) {
            let status = Status::permission_denied(format!(
                "purpose {:?} is not in this node's agreement with {identity}",
                checked.basis
            ));
            return Err(self
                .refuse(identity.to_string(), &request, Some(checked.basis), status)
                .await);
        }
        if let Some(signal) = self
            .state
            .federation
            .enumeration_watch()
            .paused(&identity, Instant::now())
        {
            tracing::debug!(peer = %identity, %signal, "paused peer's query refused");
            let status =
                Status::resource_exhausted("query pattern looks like enumeration; queries paused");
            // Counted like the rate: a paused peer may go on asking at it.
            return Err(self.refuse_counted(&identity, TalliedRefusal::Paused, status));
        }

        let set = peer.agreement.key_set.clone();
        let answer_peer = peer.clone();
        let basis = checked.basis;
        let keys = checked.keys;
        let keys_sent = keys.clone();
        let tokens = checked.tokens;
        let scheme = checked.scheme;
        let include_family = request.include_family;
        let stated = checked.reason.clone();
        let answer = move |store: &Store| -> Result<_, Status> {
            let (decision, candidates) = if tokens.is_empty() {
                match_query_with_candidates(store, &set, &keys, scheme.as_deref())?
            } else {
                match_scored(store, &set, &keys, &tokens)?
            };
            // Doubt about persons none of whom has anything this peer may
            // see is no business of the peer's: it hears "no match", as for
            // someone unknown (audited `ambiguous_withheld`).
            if matches!(decision, Decision::Ambiguous { .. }) {
                let mut any = false;
                for id in &candidates {
                    if anything_disclosable(store, id, &answer_peer, basis)
                        .map_err(|e| convert::store_status(e, ""))?
                    {
                        any = true;
                        break;
                    }
                }
                if !any {
                    return Ok((
                        v1::MatchStatus::Ambiguous,
                        None,
                        Vec::new(),
                        Default::default(),
                        Vec::new(),
                        true,
                        false,
                    ));
                }
            }
            Ok(match decision {
                Decision::Matched(person_id) => {
                    let (disclosed, ids) =
                        disclose(store, &person_id, &answer_peer, basis, include_family)
                            .map_err(|e| convert::store_status(e, ""))?;
                    let named = reason_names(
                        store,
                        &stated,
                        std::iter::once(person_id.as_str())
                            .chain(ids.family.iter().map(|m| m.person_id.as_str())),
                    )
                    .map_err(|e| convert::store_status(e, ""))?;
                    (
                        v1::MatchStatus::Matched,
                        Some(person_id),
                        disclosed,
                        ids,
                        Vec::new(),
                        false,
                        named,
                    )
                }
                Decision::NoMatch => (
                    v1::MatchStatus::NoMatch,
                    None,
                    Vec::new(),
                    Default::default(),
                    Vec::new(),
                    false,
                    false,
                ),
                Decision::Ambiguous {
                    more_identifiers_wanted,
                } => (
                    v1::MatchStatus::Ambiguous,
                    None,
                    Vec::new(),
                    Default::default(),
                    more_identifiers_wanted
                        .into_iter()
                        .map(|k| k as i32)
                        .collect(),
                    false,
                    false,
                ),
            })
        };
        let (found, person_id, disclosed, ids, more, doubt_withheld, reason_named) =
            read(&self.state, answer).await?;
        // "Matched, nothing disclosed" would tell the peer this node holds the
        // person (only ended involvements, or only ones its agreement does not
        // cover): it hears exactly what it would for someone unknown. The
        // audit keeps the truth, so the person's subject-access report still
        // shows who asked.
        let withheld = found == v1::MatchStatus::Matched && disclosed.is_empty();
        let status = if withheld || doubt_withheld {
            v1::MatchStatus::NoMatch
        } else {
            found
        };
        let audit_outcome = if withheld {
            "matched_withheld"
        } else if doubt_withheld {
            "ambiguous_withheld"
        } else {
            outcome_name(status)
        };
        let requester = request.requester.clone().unwrap_or_default();
        let family_disclosed = person_id.as_deref().and_then(|person| {
            AuditEvent::family_disclosed(
                &request.request_id,
                Some(identity.to_string()),
                person,
                ids.family,
            )
        });
        let asked = AuditEvent::PeerAsked {
            request_id: request.request_id.clone(),
            peer: identity.to_string(),
            requester_practitioner_id: requester.practitioner_id,
            requester_name: requester.name,
            requester_role: requester.role,
            requester_organisation: requester.organisation,
            lawful_basis: Some(checked.basis),
            // The log keeps no names: a reason that names whom it matched
            // is not kept (the answer does not depend on it, so it tells the
            // peer nothing).
            reason: if reason_named {
                REASON_NOT_KEPT.to_owned()
            } else {
                checked.reason.clone()
            },
            outcome: audit_outcome.into(),
            refusal: None,
            person_id: person_id.clone(),
            disclosed_involvement_ids: ids.involvement_ids,
        };
        // The family entry straight after the question it belongs to.
        crate::work::lookup::audit_all(
            &self.state,
            std::iter::once(asked).chain(family_disclosed).collect(),
        )
        .await?;
        tracing::info!(
            outcome = audit_outcome,
            disclosed = disclosed.len(),
            "peer query answered"
        );
        let digests: Vec<Digest> = keys_sent.iter().map(|(_, digest)| *digest).collect();
        let answered = Answered {
            digests: &digests,
            disclosed_person: (status == v1::MatchStatus::Matched)
                .then_some(person_id.as_deref())
                .flatten(),
            ambiguous: status == v1::MatchStatus::Ambiguous,
        };
        if let Pattern::AlertRaised(signal) =
            self.state
                .federation
                .enumeration_watch()
                .record(&identity, answered, Instant::now())
        {
            self.state.metrics.enumeration_alert(&identity);
            tracing::warn!(
                peer = %identity,
                %signal,
                "peer queries look like enumeration: its queries are paused"
            );
        }
        Ok(AnsweredQuery {
            response: v1::FindInvolvementsResponse {
                status: status as i32,
                involvements: disclosed,
                more_identifiers_wanted: more,
            },
            disclosed_person: (status == v1::MatchStatus::Matched)
                .then_some(person_id)
                .flatten(),
            basis: checked.basis,
            reason: checked.reason,
        })
    }

    /// The caller's agreement, or `PERMISSION_DENIED` counted (never
    /// written one by one: a caller without one may ask at any pace).
    pub(super) fn agreed_peer(&self, identity: &SpiffeId) -> Result<Arc<Peer>, Status> {
        match self.state.federation.current().registry.get(identity) {
            Some(peer) => Ok(peer.clone()),
            None => {
                let status = Status::permission_denied(format!(
                    "{identity} has no agreement with this node"
                ));
                Err(self.refuse_counted(identity, TalliedRefusal::NoAgreement, status))
            }
        }
    }

    pub(crate) fn new(state: NodeState) -> Self {
        FederationService {
            replays: Arc::new(ReplayGuard::default()),
            state,
        }
    }
}

/// What the audit keeps instead of a peer's reason that named the person.
const REASON_NOT_KEPT: &str =
    "(not kept: the peer's reason named the person, and the audit log keeps no names)";

/// Whether `reason` names any of `persons` (their names, date of birth or
/// identifier, as erasure checks its reasons).
fn reason_names<'a>(
    store: &Store,
    reason: &str,
    persons: impl Iterator<Item = &'a str>,
) -> Result<bool, patchwork_store::StoreError> {
    for id in persons {
        if let Some(person) = store.person(id)?
            && crate::work::erasure::personal_detail_in(
                reason,
                &patchwork_store::model::Demographics::from(&person),
            )
            .is_some()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What [`FederationService::answer_query`] answered, and about whom.
pub(super) struct AnsweredQuery {
    pub response: v1::FindInvolvementsResponse,
    /// The person the peer was told about (`MATCHED` with something
    /// disclosed); `None` for every other answer, withheld ones included.
    pub disclosed_person: Option<String>,
    /// The query's purpose, as checked.
    pub basis: LawfulBasis,
    pub reason: String,
}

/// The agreement's checks of a query whose fields are valid: its key set
/// must be the one agreed with the peer (a refusal, not a bad field).
fn check_request(request: &v1::FindInvolvementsRequest, peer: &Peer) -> Result<PeerQuery, Status> {
    validate::request_id(&request.request_id, "request_id")?;
    if request.key_set != peer.agreement.key_set {
        return Err(Status::failed_precondition(format!(
            "key_set: this node answers {} under key set {}",
            peer.identity, peer.agreement.key_set
        )));
    }
    Ok(validate::peer_query(request)?)
}

/// The answering node's decision on a checked query: which of its persons,
/// if any, the query's keys identify (kinds as the index stored them, see
/// `decide::effective_kind`), with the persons any key hit (at most
/// `CANDIDATE_LIMIT + 1`).
fn match_query_with_candidates(
    store: &Store,
    set: &str,
    keys: &[(v1::MatchKeyKind, Digest)],
    scheme: Option<&str>,
) -> Result<(Decision<String>, Vec<String>), Status> {
    let hits = store
        .match_candidates(set, keys, CANDIDATE_LIMIT, scheme)
        .map_err(|e| convert::store_status(e, ""))?;
    let decision = if hits.candidates.len() > CANDIDATE_LIMIT {
        Decision::Ambiguous {
            more_identifiers_wanted: Vec::new(),
        }
    } else {
        decide(&hits.query_kinds, &hits.candidates)
    };
    Ok((
        decision,
        hits.candidates.into_iter().map(|c| c.id).collect(),
    ))
}

/// Version 2 of the decision: the persons the keys find, scored field by
/// field on the query's tokens (`patchwork_federation::score`), with every
/// person scored.
fn match_scored(
    store: &Store,
    set: &str,
    keys: &[(v1::MatchKeyKind, Digest)],
    tokens: &[SubjectTokens],
) -> Result<(Decision<String>, Vec<String>), Status> {
    let weights = Weights::default();
    let scored = store
        .scored_candidates(set, keys, tokens, CANDIDATE_LIMIT, &weights)
        .map_err(|e| convert::store_status(e, ""))?;
    let decision = decide_scored(&scored, &weights, &tokens[0]);
    Ok((decision, scored.into_iter().map(|s| s.id).collect()))
}

/// Whether anything of `person_id`'s current team may go to `peer` for
/// `basis`: if not, even "ambiguous" about them would tell the peer more
/// than its agreement grants (that this node holds them).
fn anything_disclosable(
    store: &Store,
    person_id: &str,
    peer: &Peer,
    basis: LawfulBasis,
) -> Result<bool, StoreError> {
    Ok(store.involvements_of_person(person_id)?.iter().any(|i| {
        i.is_active()
            && peer.agreement.disclosure(
                v1::Sensitivity::from(i.sensitivity),
                v1::LawfulBasis::from(basis),
            ) != Disclosure::Withheld
    }))
}

/// What of `person_id`'s involvements goes to `peer`: the agreement says
/// whether anything goes (`Disclosure`), `disclosure` what (a restricted
/// involvement only ever as its gatekeeper).
fn disclose(
    store: &Store,
    person_id: &str,
    peer: &Peer,
    basis: LawfulBasis,
    include_family: bool,
) -> Result<(Vec<v1::DisclosedInvolvement>, DisclosedIds), StoreError> {
    crate::work::disclosure::disclose(store, person_id, include_family, |involvement| {
        peer.agreement.disclosure(
            v1::Sensitivity::from(involvement.sensitivity),
            v1::LawfulBasis::from(basis),
        ) != Disclosure::Withheld
    })
}

fn outcome_name(status: v1::MatchStatus) -> &'static str {
    match status {
        v1::MatchStatus::Matched => "matched",
        v1::MatchStatus::NoMatch => "no_match",
        v1::MatchStatus::Ambiguous => "ambiguous",
        v1::MatchStatus::Unspecified => "unspecified",
    }
}

impl FederationService {
    /// Refuses an agreed peer's query that came within its rate: audited
    /// one by one (the rate bounds how many), with what the peer wrote cut
    /// to [`REFUSED_TEXT_CHARS`] a field, and not flushed on its own: it
    /// discloses nothing, so it becomes durable with the next group write.
    async fn refuse(
        &self,
        peer: String,
        request: &v1::FindInvolvementsRequest,
        basis: Option<LawfulBasis>,
        status: Status,
    ) -> Status {
        let requester = request.requester.clone().unwrap_or_default();
        let event = AuditEvent::PeerAsked {
            request_id: truncate(&request.request_id),
            peer,
            requester_practitioner_id: truncate(&requester.practitioner_id),
            requester_name: truncate(&requester.name),
            requester_role: truncate(&requester.role),
            requester_organisation: truncate(&requester.organisation),
            lawful_basis: basis,
            reason: request
                .purpose
                .as_ref()
                .map(|p| truncate(&p.reason))
                .unwrap_or_default(),
            outcome: "refused".into(),
            refusal: Some(truncate(&format!(
                "{:?}: {}",
                status.code(),
                status.message()
            ))),
            person_id: None,
            disclosed_involvement_ids: Vec::new(),
        };
        tracing::info!(code = ?status.code(), "peer query refused");
        match self.state.store.append_audits(vec![event]).await {
            Ok(_) => status,
            Err(e) => {
                tracing::error!(error = %e, "audit write failed");
                self.state.health.store_failed("audit append", &e).await;
                status
            }
        }
    }

    /// Refuses a query the caller could repeat as fast as it likes (no
    /// agreement, over its rate): counted, never written per request
    /// (`RefusalTally`, audited as one summary per caller, reason and minute).
    pub(super) fn refuse_counted(
        &self,
        caller: &SpiffeId,
        reason: TalliedRefusal,
        status: Status,
    ) -> Status {
        self.state
            .refusals
            .record(caller, reason, patchwork_store::subscriptions::now());
        match reason {
            TalliedRefusal::NoAgreement => self.state.metrics.unagreed_refused(),
            TalliedRefusal::RateLimited => self.state.metrics.rate_limited(caller),
            TalliedRefusal::Paused => {}
        }
        status
    }
}

/// How much of each field a peer wrote a refused query's audit entry keeps.
const REFUSED_TEXT_CHARS: usize = 100;

/// At most [`REFUSED_TEXT_CHARS`] characters: refused requests are audited
/// as sent, bounded.
fn truncate(text: &str) -> String {
    text.chars().take(REFUSED_TEXT_CHARS).collect()
}

/// How often counted refusals are written to the audit log.
const REFUSAL_SUMMARY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes the counted refusals as audit entries (one per caller and reason)
/// and logs each summary once; at shutdown, and from the periodic task.
pub(crate) fn write_refusal_summaries(
    store: &Store,
    tally: &RefusalTally,
) -> Result<usize, StoreError> {
    let counts = tally.drain();
    for (i, count) in counts.iter().enumerate() {
        if let Err(e) = store.append_audit(summary(count)) {
            tally.restore(counts[i..].to_vec());
            return Err(e);
        }
        tracing::warn!(
            caller = %count.caller,
            reason = count.reason.as_str(),
            count = count.count,
            "peer queries refused"
        );
    }
    Ok(counts.len())
}

fn summary(count: &RefusalCount) -> AuditEvent {
    AuditEvent::PeerRefusals {
        caller: count.caller.clone(),
        reason: count.reason.as_str().into(),
        count: count.count,
        first_unix_seconds: count.first_unix_seconds,
        last_unix_seconds: count.last_unix_seconds,
    }
}

/// Counts drained from the tally and not yet in the log: dropped unwritten
/// (a failed append, or the task aborted at shutdown mid-write), they go
/// back to the tally, so the final summary still has them.
struct Pending<'a> {
    tally: &'a RefusalTally,
    counts: Vec<RefusalCount>,
}

impl Pending<'_> {
    /// The counts, now in the log.
    fn written(mut self) -> Vec<RefusalCount> {
        std::mem::take(&mut self.counts)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.tally.restore(std::mem::take(&mut self.counts));
    }
}

/// Writes the counted refusals every [`REFUSAL_SUMMARY_INTERVAL`] (the
/// caller aborts it at shutdown and writes the rest itself).
pub(crate) fn spawn_refusal_summaries(state: NodeState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(REFUSAL_SUMMARY_INTERVAL);
        every.tick().await;
        loop {
            every.tick().await;
            let pending = Pending {
                tally: &state.refusals,
                counts: state.refusals.drain(),
            };
            if pending.counts.is_empty() {
                continue;
            }
            let events = pending.counts.iter().map(summary).collect();
            match state.store.append_audits(events).await {
                Ok(_) => {
                    for count in pending.written() {
                        tracing::warn!(
                            caller = %count.caller,
                            reason = count.reason.as_str(),
                            count = count.count,
                            "peer queries refused"
                        );
                    }
                }
                Err(e) => {
                    // `pending` puts the counts back for the next try.
                    tracing::error!(error = %e, "audit write of refusal summaries failed");
                    state.health.store_failed("audit append", &e).await;
                }
            }
        }
    })
}

#[tonic::async_trait]
impl Federation for FederationService {
    #[instrument(skip_all, fields(peer))]
    async fn find_involvements(
        &self,
        request: Request<v1::FindInvolvementsRequest>,
    ) -> Result<Response<v1::FindInvolvementsResponse>, Status> {
        let identity = self.state.access.identify(&request)?;
        tracing::Span::current().record("peer", tracing::field::display(&identity));
        let answered = self.answer_query(&identity, request.into_inner()).await?;
        Ok(Response::new(answered.response))
    }

    #[instrument(skip_all)]
    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<v1::SubscribeResponse>, Status> {
        subscribe::subscribe(self, request).await
    }

    #[instrument(skip_all)]
    async fn poll_notifications(
        &self,
        request: Request<v1::PollRequest>,
    ) -> Result<Response<v1::PollResponse>, Status> {
        subscribe::poll(self, request).await
    }

    #[instrument(skip_all)]
    async fn unsubscribe(
        &self,
        request: Request<v1::UnsubscribeRequest>,
    ) -> Result<Response<v1::UnsubscribeResponse>, Status> {
        subscribe::unsubscribe(self, request).await
    }

    async fn get_checkpoint(
        &self,
        request: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::GetCheckpointResponse>, Status> {
        let identity = self.state.access.identify(&request)?;
        self.agreed_peer(&identity)?;
        let old_size = request.into_inner().old_size;
        crate::work::witness::checkpoint(&self.state, old_size)
            .await
            .map(Response::new)
    }

    async fn add_cosignature(
        &self,
        request: Request<v1::AddCosignatureRequest>,
    ) -> Result<Response<v1::AddCosignatureResponse>, Status> {
        let identity = self.state.access.identify(&request)?;
        self.agreed_peer(&identity)?;
        crate::work::witness::add_cosignature(
            &self.state,
            &identity.to_string(),
            request.into_inner(),
        )
        .await?;
        Ok(Response::new(v1::AddCosignatureResponse {}))
    }

    async fn node_info(
        &self,
        request: Request<v1::NodeInfoRequest>,
    ) -> Result<Response<v1::NodeInfoResponse>, Status> {
        let identity = self.state.access.identify(&request)?;
        let federation = self.state.federation.current();
        let Some(peer) = federation.registry.get(&identity) else {
            return Err(Status::permission_denied(format!(
                "{identity} has no agreement with this node"
            )));
        };
        Ok(Response::new(v1::NodeInfoResponse {
            node_id: self.state.node_identity.to_string(),
            display_name: self.state.display_name.clone(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: patchwork_proto::API_VERSION.to_owned(),
            key_sets: vec![peer.agreement.key_set.clone()],
            // Only the agreed set's: a peer learns nothing of other groups'.
            key_set_fingerprints: federation
                .key_set(&peer.agreement.key_set)
                .map(|set| crate::work::peers::fingerprints([set]))
                .unwrap_or_default(),
        }))
    }
}
