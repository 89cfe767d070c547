//! Cross-border subscriptions, the subscriber's side: `Directory.Subscribe`
//! asks peers (`Federation.Subscribe`, blinded keys, purpose, requester)
//! and keeps one local subscription per peer that matched; a poller task
//! asks each peer every `[federation] poll_interval_ms` for what happened
//! after the subscription's durable cursor and writes each notification
//! into the subscribing practitioner's outbox (so it arrives on their
//! `Watch` stream and webhooks), audited as `NotificationReceived`. Polling
//! rather than being pushed to needs no inbound connection, reuses the one
//! channel per peer, and catches up after this node was down. Expired
//! subscriptions are dropped by the poller.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use patchwork_federation::keycheck::KeyCheck;
use patchwork_federation::tokens::query_match_keys;
use patchwork_proto::v1;
use prost::Message;
use tokio::task::JoinHandle;
use tonic::Status;

use crate::base::convert::store_status;
use crate::base::pool::blocking;
use crate::work::lookup::{audit, audit_all, subject_of};
use crate::work::peers::{Question, match_outcome, outcome_word, settled};
use crate::work::state::NodeState;
use patchwork_store::audit::AuditEvent;
use patchwork_store::model::{Demographics, Purpose};
use patchwork_store::subscriptions::{Received, RemoteDetail, RemoteSubscription, now};
use patchwork_store::{TeamEvent, TeamEventKind};

/// A validated `Directory.Subscribe`.
pub(crate) struct SubscribeQuestion {
    pub subject: Demographics,
    pub purpose: Purpose,
    pub(crate) requester_id: String,
    /// Empty: every agreed peer.
    pub peers: Vec<String>,
    pub ttl_days: u32,
}

/// The wire form of an outbox event written from a peer's notification.
pub(crate) fn remote_to_proto(
    event: &TeamEvent,
    kind: v1::team_event::Kind,
    detail: RemoteDetail,
) -> v1::TeamEvent {
    let involvement = if detail.involvement.is_empty() {
        None
    } else {
        v1::DisclosedInvolvement::decode(detail.involvement.as_slice()).ok()
    };
    let by = involvement
        .and_then(|i| i.contact)
        .map(|contact| match contact {
            v1::disclosed_involvement::Contact::Practitioner(p) => p,
            v1::disclosed_involvement::Contact::Gatekeeper(g) => v1::PractitionerContact {
                name: g.name,
                phone: g.phone,
                email: g.email,
                ..Default::default()
            },
        });
    v1::TeamEvent {
        cursor: event.seq.to_string(),
        person_reference: detail.subscription_id,
        kind: kind as i32,
        by,
        reason: event.reason.clone(),
        at_unix_seconds: event.at_unix_seconds,
        from_node: detail.peer,
    }
}

fn event_kind(kind: i32) -> Option<TeamEventKind> {
    match v1::notification::Kind::try_from(kind).ok()? {
        v1::notification::Kind::InvolvementStarted => Some(TeamEventKind::InvolvementStarted),
        v1::notification::Kind::InvolvementEnded => Some(TeamEventKind::InvolvementEnded),
        v1::notification::Kind::AttentionRaised => Some(TeamEventKind::AttentionRaised),
        v1::notification::Kind::AttentionCleared => Some(TeamEventKind::AttentionCleared),
        v1::notification::Kind::Unspecified => None,
    }
}

/// Asks each chosen peer to subscribe; keeps a local subscription for each
/// that matched.
pub(crate) async fn subscribe(
    state: &NodeState,
    question: SubscribeQuestion,
) -> Result<v1::DirectorySubscribeResponse, Status> {
    crate::work::erasure::reason_naming(&[&question.subject], &question.purpose.reason)?;
    let store = state.store.clone();
    let requester_id = question.requester_id.clone();
    let requester = blocking(move || {
        let Some(practitioner) = store
            .practitioner(&requester_id)
            .map_err(|e| store_status(e, ""))?
        else {
            return Ok(None);
        };
        let organisation = store
            .organisation(&practitioner.organisation_id)
            .map_err(|e| store_status(e, ""))?;
        Ok(Some(v1::Requester {
            practitioner_id: practitioner.id,
            name: practitioner.name,
            role: practitioner.role,
            organisation: organisation.map(|o| o.name).unwrap_or_default(),
        }))
    })
    .await?
    .ok_or_else(|| {
        Status::invalid_argument(format!(
            "requester.practitioner_id: practitioner {} does not exist on this node",
            question.requester_id
        ))
    })?;
    let basis = v1::LawfulBasis::from(question.purpose.lawful_basis);
    let federation = state.federation.current();
    let all = federation.registry.all();
    for (i, wanted) in question.peers.iter().enumerate() {
        if !all.iter().any(|p| p.identity.to_string() == *wanted) {
            return Err(Status::invalid_argument(format!(
                "peer_node_ids[{i}]: {wanted} is not a peer of this node"
            )));
        }
    }
    let subject = subject_of(&question.subject);
    // Every chosen peer asked at once; a peer without its key set loaded is
    // answered here, in its place.
    let mut answers = Vec::new();
    // Whether each answer's peer was asked (only those are audited).
    let mut asked = Vec::new();
    let mut questions = Vec::new();
    for peer in all.iter().filter(|p| {
        p.agreement.allows(basis)
            && (question.peers.is_empty() || question.peers.contains(&p.identity.to_string()))
    }) {
        let mut answer = v1::PeerSubscription {
            node_id: peer.identity.to_string(),
            ..Default::default()
        };
        let set_name = &peer.agreement.key_set;
        let Some(set) = federation.key_set(set_name) else {
            answer.outcome = v1::NodeOutcome::Error as i32;
            answer.detail = format!("key set {set_name} is not loaded");
            answers.push(answer);
            asked.push(false);
            continue;
        };
        questions.push(Question {
            peer: peer.clone(),
            request: v1::SubscribeRequest {
                request_id: uuid::Uuid::new_v4().to_string(),
                key_set: set_name.clone(),
                match_keys: query_match_keys(set, &subject),
                national_id_scheme: question
                    .subject
                    .national_id
                    .as_ref()
                    .map(|n| n.scheme.clone())
                    .unwrap_or_default(),
                purpose: Some(v1::Purpose {
                    lawful_basis: basis as i32,
                    reason: question.purpose.reason.clone(),
                }),
                requester: Some(requester.clone()),
                ttl_days: question.ttl_days,
            },
            key_check: Some(KeyCheck {
                key_set: set_name.clone(),
                ours: set.fingerprint(),
                known: federation.peer_fingerprints.clone(),
            }),
        });
        answers.push(answer);
        asked.push(true);
    }
    let deadline = federation.default_deadline;
    let mut replies = federation
        .ask(
            &state.metrics,
            questions,
            deadline,
            |mut client, request| async move { client.subscribe(request).await },
        )
        .await
        .into_iter();
    for (answer, _) in answers.iter_mut().zip(&asked).filter(|(_, asked)| **asked) {
        let Some(reply) = replies.next() else {
            break;
        };
        match settled(reply.outcome, deadline) {
            Ok(found) if found.status == v1::MatchStatus::Matched as i32 => {
                let local = RemoteSubscription {
                    id: uuid::Uuid::new_v4().to_string(),
                    practitioner_id: question.requester_id.clone(),
                    peer: answer.node_id.clone(),
                    remote_id: found.subscription_id,
                    expires_at_unix_seconds: found.expires_at_unix_seconds,
                    cursor: 0,
                };
                answer.outcome = v1::NodeOutcome::Matched as i32;
                answer.subscription_id = local.id.clone();
                answer.expires_at_unix_seconds = local.expires_at_unix_seconds;
                let store = state.store.clone();
                blocking(move || {
                    store
                        .put_remote_subscription(&local)
                        .map_err(|e| store_status(e, ""))
                })
                .await?;
            }
            Ok(found) => {
                answer.outcome = match match_outcome(found.status) {
                    Ok(outcome) => outcome as i32,
                    Err(why) => {
                        answer.detail = why;
                        v1::NodeOutcome::Error as i32
                    }
                };
            }
            Err((outcome, detail)) => {
                answer.outcome = outcome as i32;
                answer.detail = detail;
            }
        }
    }
    for (answer, _) in answers.iter().zip(&asked).filter(|(_, asked)| **asked) {
        audit(
            state,
            AuditEvent::SubscriptionMade {
                subscription_id: answer.subscription_id.clone(),
                peer: answer.node_id.clone(),
                requester: question.requester_id.clone(),
                lawful_basis: question.purpose.lawful_basis,
                reason: question.purpose.reason.clone(),
                outcome: outcome_word(
                    v1::NodeOutcome::try_from(answer.outcome).unwrap_or(v1::NodeOutcome::Error),
                )
                .into(),
            },
        )
        .await?;
    }
    Ok(v1::DirectorySubscribeResponse { peers: answers })
}

/// Cancels a local subscription, at the peer too (best effort: it expires
/// there anyway).
pub(crate) async fn unsubscribe(state: &NodeState, id: &str) -> Result<(), Status> {
    let store = state.store.clone();
    let wanted = id.to_owned();
    let subscription = blocking(move || {
        store
            .remote_subscription(&wanted)
            .map_err(|e| store_status(e, ""))
    })
    .await?
    .ok_or_else(|| Status::not_found(format!("subscription_id: subscription {id} not found")))?;
    let local = subscription.id.clone();
    state
        .write("", move |store| {
            Ok(store.remove_remote_subscription(&local)?)
        })
        .await?;
    let federation = state.federation.current();
    if let Some(peer) = peer_of(&federation, &subscription.peer) {
        let request = v1::UnsubscribeRequest {
            subscription_id: subscription.remote_id,
        };
        let reply = federation
            .ask_one(
                &state.metrics,
                peer,
                request,
                |mut client, request| async move { client.unsubscribe(request).await },
            )
            .await;
        if let Err((outcome, detail)) = reply {
            tracing::warn!(peer = %subscription.peer, outcome = outcome.as_str_name(), detail = %detail, "unsubscribe at peer failed");
        }
    }
    Ok(())
}

fn peer_of(
    federation: &crate::work::peers::Federation,
    node_id: &str,
) -> Option<std::sync::Arc<patchwork_federation::agreement::Peer>> {
    federation
        .registry
        .all()
        .iter()
        .find(|p| p.identity.to_string() == node_id)
        .cloned()
}

/// Starts the poller: every `interval`, each peer with live subscriptions
/// is asked for what happened after their cursor.
pub(crate) fn spawn_poller(state: NodeState, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(error) = poll_once(&state).await {
                tracing::warn!(error = %error, "subscription poll failed");
            }
        }
    })
}

/// One round: drops expired subscriptions, then polls each peer.
pub(crate) async fn poll_once(state: &NodeState) -> Result<(), Status> {
    let store = state.store.clone();
    let all = blocking(move || {
        store
            .remote_subscriptions()
            .map_err(|e| store_status(e, ""))
    })
    .await?;
    let now = now();
    let mut by_peer: BTreeMap<String, Vec<RemoteSubscription>> = BTreeMap::new();
    for subscription in all {
        if subscription.expires_at_unix_seconds <= now {
            let store = state.store.clone();
            let id = subscription.id.clone();
            blocking(move || {
                store
                    .remove_remote_subscription(&id)
                    .map_err(|e| store_status(e, ""))
            })
            .await?;
            tracing::info!(subscription = %subscription.id, "subscription expired");
            continue;
        }
        by_peer
            .entry(subscription.peer.clone())
            .or_default()
            .push(subscription);
    }
    // Every peer at once: a slow or dead one delays none of the others.
    futures::future::join_all(by_peer.into_iter().map(|(node_id, subscriptions)| async move {
        if let Err(status) = poll_peer(state, &node_id, subscriptions).await {
            tracing::warn!(peer = %node_id, code = ?status.code(), error = status.message(), "poll of peer failed");
        }
    }))
    .await;
    Ok(())
}

async fn poll_peer(
    state: &NodeState,
    node_id: &str,
    subscriptions: Vec<RemoteSubscription>,
) -> Result<(), Status> {
    let federation = state.federation.current();
    let peer = peer_of(&federation, node_id)
        .ok_or_else(|| Status::failed_precondition("no longer a peer of this node"))?;
    let by_remote: HashMap<String, RemoteSubscription> = subscriptions
        .into_iter()
        .map(|s| (s.remote_id.clone(), s))
        .collect();
    // Each subscription's cursor as this poll moves it on: a notification at
    // or before it was received already.
    let mut cursors: HashMap<String, u64> = by_remote
        .values()
        .map(|s| (s.remote_id.clone(), s.cursor))
        .collect();
    let mut after = by_remote.values().map(|s| s.cursor).min().unwrap_or(0);
    // A peer that keeps saying "there is more" is asked again at the next
    // tick, not in a loop it controls.
    for _ in 0..MAX_POLL_ROUNDS {
        let request = v1::PollRequest {
            subscription_ids: by_remote.keys().cloned().collect(),
            after_cursor: after.to_string(),
        };
        let reply = federation
            .ask_one(
                &state.metrics,
                peer.clone(),
                request,
                |mut client, request| async move { client.poll_notifications(request).await },
            )
            .await
            .map_err(|(outcome, detail)| {
                Status::unavailable(format!("{}: {detail}", outcome.as_str_name()))
            })?;
        let next: u64 = reply
            .next_cursor
            .parse()
            .map_err(|_| Status::internal("the peer sent a bad next_cursor"))?;
        // This reply's new notifications: audited first, all in one durable
        // append, then written to the outbox together, then flushed. Once in
        // the outbox, any other write's flush can make an entry visible to
        // Watch and webhooks, so the audit must come first; a crash in
        // between audits them twice when they are polled again, never not at
        // all.
        let mut fresh: Vec<(String, Received)> = Vec::new();
        let mut audits = Vec::new();
        for notification in reply.notifications {
            let Some(local) = by_remote.get(&notification.subscription_id) else {
                continue;
            };
            let (Ok(remote_cursor), Some(kind)) = (
                notification.cursor.parse::<u64>(),
                event_kind(notification.kind),
            ) else {
                continue;
            };
            let cursor = cursors
                .entry(notification.subscription_id.clone())
                .or_default();
            if remote_cursor <= *cursor {
                continue;
            }
            *cursor = remote_cursor;
            audits.push(AuditEvent::NotificationReceived {
                peer: node_id.to_owned(),
                subscription_id: local.id.clone(),
                practitioner_id: local.practitioner_id.clone(),
                remote_cursor,
                event_cursor: 0,
            });
            fresh.push((
                local.id.clone(),
                Received {
                    remote_cursor,
                    kind,
                    at_unix_seconds: notification.at_unix_seconds,
                    reason: notification
                        .involvement
                        .as_ref()
                        .map(|i| i.service.clone())
                        .unwrap_or_default(),
                    involvement: notification
                        .involvement
                        .map(|i| i.encode_to_vec())
                        .unwrap_or_default(),
                },
            ));
        }
        if !fresh.is_empty() {
            audit_all(state, audits).await?;
            // Watch and webhooks see only flushed events: `write` flushes.
            state
                .write("", move |store| {
                    for (local_id, received) in &fresh {
                        store.receive_notification(local_id, received)?;
                    }
                    Ok(())
                })
                .await?;
        }
        let store = state.store.clone();
        let ids: Vec<String> = by_remote.values().map(|s| s.id.clone()).collect();
        blocking(move || {
            for id in ids {
                store
                    .advance_remote_cursor(&id, next)
                    .map_err(|e| store_status(e, ""))?;
            }
            Ok(())
        })
        .await?;
        if next <= after {
            return Ok(());
        }
        after = next;
    }
    tracing::info!(peer = %node_id, rounds = MAX_POLL_ROUNDS, "poll of peer goes on at the next tick");
    Ok(())
}

/// Most polls of one peer in one tick (each reads up to 512 of its events).
const MAX_POLL_ROUNDS: usize = 32;
