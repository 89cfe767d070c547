//! `Federation.Subscribe`, `PollNotifications` and `Unsubscribe`: the
//! answering side of cross-border subscriptions. The subscriber's node
//! polls with a cursor into this node's one event sequence (the team-event
//! outbox), so no connection is ever opened towards it and a subscriber that
//! was down catches up. Subscribe goes through FindInvolvements' own checks
//! (identity → agreement → rate → request → replay → purpose → enumeration
//! pause → match) and its PeerAsked audit entry; only a MATCHED answer makes
//! a subscription. A peer may poll 60 times a minute; one poll answers at
//! most 1,024 notifications, audited in one durable append before the reply.
//! Each notification is disclosed under the agreement exactly like a lookup
//! (a restricted service only as its gatekeeper; a withheld one not at all)
//! and audited as `NotificationSent` before the reply.

use patchwork_federation::agreement::{Disclosure, Peer};
use patchwork_federation::hostile::TalliedRefusal;
use patchwork_proto::v1;
use tonic::{Request, Response, Status};

use super::FederationService;
use crate::base::convert;
use crate::base::pool::blocking;
use crate::base::validate::FieldError;
use patchwork_store::audit::AuditEvent;
use patchwork_store::model::{Involvement, LawfulBasis};
use patchwork_store::subscriptions::{Subscription, now};
use patchwork_store::{Store, StoreError, TeamEvent, TeamEventKind};

/// The longest a subscription may run.
pub(crate) const MAX_TTL_DAYS: u32 = 90;
/// Most subscriptions one poll may name.
const MAX_POLL_IDS: usize = 256;
/// Most events one poll reads through.
const POLL_BATCH: usize = 512;
/// Most notifications one poll answers (each is audited before the reply).
const MAX_POLL_NOTIFICATIONS: usize = 1_024;

fn ttl_seconds(ttl_days: u32) -> Result<i64, Status> {
    match ttl_days {
        0 => Ok(i64::from(MAX_TTL_DAYS) * 86_400),
        1..=MAX_TTL_DAYS => Ok(i64::from(ttl_days) * 86_400),
        _ => Err(FieldError::new("ttl_days", format!("must be 0-{MAX_TTL_DAYS}")).into()),
    }
}

fn cursor(text: &str) -> Result<u64, Status> {
    text.parse::<u64>()
        .map_err(|_| FieldError::new("after_cursor", "must be decimal digits").into())
}

fn notification_kind(kind: TeamEventKind) -> v1::notification::Kind {
    match kind {
        TeamEventKind::InvolvementStarted => v1::notification::Kind::InvolvementStarted,
        TeamEventKind::InvolvementEnded => v1::notification::Kind::InvolvementEnded,
        TeamEventKind::AttentionRaised => v1::notification::Kind::AttentionRaised,
        TeamEventKind::AttentionCleared => v1::notification::Kind::AttentionCleared,
    }
}

/// The involvement an event is about: the actor's with the person, the
/// current one for a start, the latest ended one for an end.
fn event_involvement(store: &Store, event: &TeamEvent) -> Result<Option<Involvement>, StoreError> {
    let mut theirs: Vec<Involvement> = store
        .involvements_of_person(&event.person_id)?
        .into_iter()
        .filter(|i| i.practitioner_id == event.actor_id)
        .collect();
    let started = event.kind == TeamEventKind::InvolvementStarted;
    theirs.sort_by_key(|i| (i.is_active() == started, i.end_date, i.start_date));
    Ok(theirs.pop())
}

/// What one notification discloses, and the involvement ids, for the audit.
type Disclosed = (Option<v1::DisclosedInvolvement>, Vec<String>);

/// What one event tells `peer` under `basis`: `None` if it is withheld.
fn disclose_event(
    store: &Store,
    peer: &Peer,
    basis: LawfulBasis,
    event: &TeamEvent,
) -> Result<Option<Disclosed>, StoreError> {
    match event.kind {
        TeamEventKind::AttentionRaised | TeamEventKind::AttentionCleared => {
            Ok(Some((None, Vec::new())))
        }
        TeamEventKind::InvolvementStarted | TeamEventKind::InvolvementEnded => {
            let Some(involvement) = event_involvement(store, event)? else {
                return Ok(None);
            };
            let sensitivity = v1::Sensitivity::from(involvement.sensitivity);
            if peer
                .agreement
                .disclosure(sensitivity, v1::LawfulBasis::from(basis))
                == Disclosure::Withheld
            {
                return Ok(None);
            }
            let disclosed = crate::work::disclosure::disclose_one(store, &involvement)?;
            Ok(Some((Some(disclosed), vec![involvement.id])))
        }
    }
}

/// The calling peer's own subscription, or the precise refusal.
fn owned(store: &Store, id: &str, peer: &str, field: &str) -> Result<Subscription, Status> {
    let subscription = store
        .subscription(id)
        .map_err(|e| convert::store_status(e, ""))?
        .ok_or_else(|| Status::not_found(format!("{field}: subscription {id} not found")))?;
    if subscription.peer != peer {
        return Err(Status::permission_denied(format!(
            "{field}: subscription {id} is not {peer}'s"
        )));
    }
    Ok(subscription)
}

pub(super) async fn subscribe(
    service: &FederationService,
    request: Request<v1::SubscribeRequest>,
) -> Result<Response<v1::SubscribeResponse>, Status> {
    let identity = service.state.access.identify(&request)?;
    let subscribe = request.into_inner();
    let ttl = ttl_seconds(subscribe.ttl_days)?;
    let find = v1::FindInvolvementsRequest {
        request_id: subscribe.request_id.clone(),
        key_set: subscribe.key_set.clone(),
        match_keys: subscribe.match_keys.clone(),
        purpose: subscribe.purpose.clone(),
        requester: subscribe.requester.clone(),
        national_id_scheme: subscribe.national_id_scheme.clone(),
        include_family: false,
    };
    // Every check, the match and the PeerAsked audit entry, as a lookup;
    // the subscription is to the person that answer disclosed.
    let answered = service.answer_query(&identity, find).await?;
    let Some(person_id) = answered.disclosed_person else {
        return Ok(Response::new(v1::SubscribeResponse {
            status: answered.response.status,
            ..Default::default()
        }));
    };
    let requester = subscribe.requester.unwrap_or_default();
    let peer_name = identity.to_string();
    let (basis, reason) = (answered.basis, answered.reason);
    let subscription = service
        .state
        .write("", move |store| {
            let from_seq = store.last_event_seq()?;
            let subscription = Subscription {
                id: uuid::Uuid::new_v4().to_string(),
                peer: peer_name,
                person_id,
                requester_practitioner_id: requester.practitioner_id,
                requester_name: requester.name,
                lawful_basis: basis,
                reason,
                from_seq,
                expires_at_unix_seconds: now() + ttl,
                cancelled: false,
            };
            store.put_subscription(&subscription)?;
            Ok(subscription)
        })
        .await?;
    tracing::info!(peer = %identity, subscription = %subscription.id, "peer subscribed");
    Ok(Response::new(v1::SubscribeResponse {
        subscription_id: subscription.id,
        status: v1::MatchStatus::Matched as i32,
        expires_at_unix_seconds: subscription.expires_at_unix_seconds,
        involvements: answered.response.involvements,
    }))
}

pub(super) async fn poll(
    service: &FederationService,
    request: Request<v1::PollRequest>,
) -> Result<Response<v1::PollResponse>, Status> {
    let identity = service.state.access.identify(&request)?;
    let peer = service.agreed_peer(&identity)?;
    if !peer.poll_limiter.try_acquire() {
        let status = Status::resource_exhausted(format!(
            "{identity} may poll {} times a minute",
            crate::work::peers::POLLS_PER_MINUTE
        ));
        return Err(service.refuse_counted(&identity, TalliedRefusal::RateLimited, status));
    }
    let request = request.into_inner();
    if request.subscription_ids.is_empty() || request.subscription_ids.len() > MAX_POLL_IDS {
        return Err(FieldError::new(
            "subscription_ids",
            format!("must hold 1-{MAX_POLL_IDS} ids"),
        )
        .into());
    }
    let after = cursor(&request.after_cursor)?;
    let up_to = service.state.store.durable_events().borrow().durable;
    let store = service.state.store.clone();
    let peer_name = identity.to_string();
    let (notifications, audits, next) = blocking(move || {
        let mut subscriptions = Vec::new();
        for (i, id) in request.subscription_ids.iter().enumerate() {
            let field = format!("subscription_ids[{i}]");
            subscriptions.push(owned(&store, id, &peer_name, &field)?);
        }
        let now = now();
        subscriptions.retain(|s| s.is_live(now));
        let events = store
            .events_after(after, up_to, POLL_BATCH)
            .map_err(|e| convert::store_status(e, ""))?;
        let mut next = if events.len() < POLL_BATCH {
            up_to.max(after)
        } else {
            events.last().map_or(up_to, |e| e.seq)
        };
        let mut notifications = Vec::new();
        let mut audits = Vec::new();
        for event in &events {
            if notifications.len() >= MAX_POLL_NOTIFICATIONS {
                // The rest next time: one poll writes a bounded audit batch.
                next = event.seq.saturating_sub(1).max(after);
                break;
            }
            for subscription in &subscriptions {
                if subscription.person_id != event.person_id || event.seq <= subscription.from_seq {
                    continue;
                }
                let Some((involvement, ids)) =
                    disclose_event(&store, &peer, subscription.lawful_basis, event)
                        .map_err(|e| convert::store_status(e, ""))?
                else {
                    continue;
                };
                audits.push(AuditEvent::NotificationSent {
                    peer: peer_name.clone(),
                    subscription_id: subscription.id.clone(),
                    person_id: subscription.person_id.clone(),
                    event_cursor: event.seq,
                    disclosed_involvement_ids: ids,
                });
                notifications.push(v1::Notification {
                    subscription_id: subscription.id.clone(),
                    cursor: event.seq.to_string(),
                    kind: notification_kind(event.kind) as i32,
                    involvement,
                    at_unix_seconds: event.at_unix_seconds,
                });
            }
        }
        Ok((notifications, audits, next))
    })
    .await?;
    // One durable append for the whole reply, before it leaves.
    crate::work::lookup::audit_all(&service.state, audits).await?;
    if !notifications.is_empty() {
        tracing::info!(peer = %identity, sent = notifications.len(), "subscription notifications sent");
    }
    Ok(Response::new(v1::PollResponse {
        notifications,
        next_cursor: next.to_string(),
    }))
}

pub(super) async fn unsubscribe(
    service: &FederationService,
    request: Request<v1::UnsubscribeRequest>,
) -> Result<Response<v1::UnsubscribeResponse>, Status> {
    let identity = service.state.access.identify(&request)?;
    if service
        .state
        .federation
        .current()
        .registry
        .get(&identity)
        .is_none()
    {
        return Err(Status::permission_denied(format!(
            "{identity} has no agreement with this node"
        )));
    }
    let id = request.into_inner().subscription_id;
    let peer_name = identity.to_string();
    service
        .state
        .write("", move |store| {
            owned(store, &id, &peer_name, "subscription_id")?;
            Ok(store.cancel_subscription(&id)?)
        })
        .await?;
    Ok(Response::new(v1::UnsubscribeResponse {}))
}
