//! `Directory.Lookup` on the asking node: "who else is working with this
//! person?" answered from this node's records and, in parallel, by every peer
//! whose agreement covers the purpose. Peers get blinded match keys only,
//! never the raw demographics. Each peer call has the lookup's deadline; the
//! answer lists every node's outcome, a peer whose agreement does not cover
//! the purpose as `NOT_ASKED` (nothing sent to it). The lookup is audited before any
//! question leaves the node and again, durably, before the answer goes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchwork_federation::agreement::Peer;
use patchwork_federation::fanout::{PeerOutcome, PeerReply};
use patchwork_federation::keycheck::KeyCheck;
use patchwork_federation::matchkeys::Subject;
use patchwork_federation::tokens::query_match_keys;
use patchwork_proto::v1;
use tonic::Status;

use crate::transport::access::Caller;
use crate::work::disclosure::{DisclosedIds, disclose};
use crate::work::matching::{MatchDecision, match_person};
use crate::work::peers::{Question, config_word, match_outcome, outcome_word, settled};
use crate::work::state::{NodeState, read};
use patchwork_store::audit::{AuditEvent, FamilyMemberDisclosed, PeerOutcome as AuditedPeer};
use patchwork_store::model::{Demographics, Purpose, year_month_day};

/// The matchable parts of a lookup's subject.
pub(crate) fn subject_of(demographics: &Demographics) -> Subject {
    Subject {
        given_name: demographics.given_name.clone(),
        family_name: demographics.family_name.clone(),
        date_of_birth: demographics.date_of_birth.map(year_month_day),
        postcode: demographics.postcode.clone(),
        national_id: demographics
            .national_id
            .as_ref()
            .map(|n| (n.scheme.clone(), n.value.clone())),
    }
}

/// A validated lookup.
pub(crate) struct LookupQuestion {
    pub caller: Caller,
    pub subject: Demographics,
    pub purpose: Purpose,
    pub(crate) requester_id: String,
    pub local_only: bool,
    /// 0: the node's default.
    pub peer_deadline_ms: u32,
    /// Also the team around the matched person's linked family members.
    pub include_family: bool,
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

fn peer_answer(
    reply: PeerReply<v1::FindInvolvementsResponse>,
    deadline: Duration,
) -> v1::NodeAnswer {
    let mut answer = v1::NodeAnswer {
        node_id: reply.peer.identity.to_string(),
        node_name: reply.peer.name.clone(),
        latency_ms: millis(reply.latency),
        ..Default::default()
    };
    let outcome = match settled(reply.outcome, deadline) {
        Ok(found) => match match_outcome(found.status) {
            Ok(outcome) => {
                answer.involvements = found.involvements;
                answer.more_identifiers_wanted = found.more_identifiers_wanted;
                outcome
            }
            Err(why) => {
                answer.detail = why;
                v1::NodeOutcome::Error
            }
        },
        Err((outcome, why)) => {
            answer.detail = why;
            outcome
        }
    };
    answer.outcome = outcome as i32;
    answer
}

/// Audits `event` durably; nothing is disclosed if that fails (and health
/// reports NOT_SERVING until a write succeeds again).
pub(crate) async fn audit(state: &NodeState, event: AuditEvent) -> Result<(), Status> {
    audit_all(state, vec![event]).await
}

/// Audits `events`, consecutively and durably, as one group-written append.
pub(crate) async fn audit_all(state: &NodeState, events: Vec<AuditEvent>) -> Result<(), Status> {
    match state.store.append_audits_durably(events).await {
        Ok(_) => {
            state.health.store_ok().await;
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "audit write failed: nothing disclosed");
            state.health.store_failed("audit append", &e).await;
            Err(Status::unavailable(
                "this node cannot write its audit log, so it discloses nothing",
            ))
        }
    }
}

/// This node's own part of a lookup: the requester as peers will be told,
/// the match decision, and what it discloses with the disclosed ids.
struct LocalPart {
    requester: v1::Requester,
    decision: MatchDecision,
    disclosed: Vec<v1::DisclosedInvolvement>,
    disclosed_ids: Vec<String>,
    /// Who in the family something was disclosed about (a family lookup).
    family: Vec<FamilyMemberDisclosed>,
}

/// Reads the requester and matches locally. `None`: the requester is not a
/// practitioner here (nothing matched).
fn local_part(
    store: &patchwork_store::Store,
    requester_id: &str,
    subject: &Demographics,
    include_family: bool,
) -> Result<Option<LocalPart>, Status> {
    let status = |e| crate::base::convert::store_status(e, "");
    let Some(practitioner) = store.practitioner(requester_id).map_err(status)? else {
        return Ok(None);
    };
    let organisation = store
        .organisation(&practitioner.organisation_id)
        .map_err(status)?;
    let requester = v1::Requester {
        practitioner_id: practitioner.id,
        name: practitioner.name,
        role: practitioner.role,
        organisation: organisation.map(|o| o.name).unwrap_or_default(),
    };
    let decision = match_person(store, subject).map_err(status)?;
    let (disclosed, ids) = match &decision {
        // This node's own practitioners see every current involvement.
        MatchDecision::Matched(person) => {
            disclose(store, &person.id, include_family, |_| true).map_err(status)?
        }
        _ => (Vec::new(), DisclosedIds::default()),
    };
    Ok(Some(LocalPart {
        requester,
        decision,
        disclosed,
        disclosed_ids: ids.involvement_ids,
        family: ids.family,
    }))
}

/// Answers one lookup.
pub(crate) async fn lookup(
    state: &NodeState,
    question: LookupQuestion,
) -> Result<v1::LookupResponse, Status> {
    let started = Instant::now();
    let lookup_id = uuid::Uuid::new_v4().to_string();
    tracing::Span::current().record("lookup_id", lookup_id.as_str());
    // One federation for the whole lookup, whatever a reload does meanwhile.
    let federation = state.federation.current();

    // Who is asking (as peers will be told: the asking node vouches for it),
    // and this node's own answer, which nobody sees before it is audited.
    let requester_id = question.requester_id.clone();
    let subject = question.subject.clone();
    let include_family = question.include_family;
    let local = read(state, move |store| {
        local_part(store, &requester_id, &subject, include_family)
    })
    .await?;
    let local = local.ok_or_else(|| {
        Status::invalid_argument(format!(
            "requester.practitioner_id: practitioner {} does not exist on this node",
            question.requester_id
        ))
    })?;
    let requester = local.requester.clone();
    // Checked against what was asked and whom it matched here, before
    // anything is written.
    let matched = match &local.decision {
        MatchDecision::Matched(person) => Some(Demographics::from(&**person)),
        _ => None,
    };
    crate::work::erasure::reason_naming(
        &std::iter::once(&question.subject)
            .chain(matched.as_ref())
            .collect::<Vec<_>>(),
        &question.purpose.reason,
    )?;

    let basis = v1::LawfulBasis::from(question.purpose.lawful_basis);
    // Peers whose agreement does not cover the purpose are not asked, and
    // the answer says so rather than leaving their council out silently.
    let (peers, not_asked): (Vec<Arc<Peer>>, Vec<Arc<Peer>>) = if question.local_only {
        (Vec::new(), Vec::new())
    } else {
        federation
            .registry
            .all()
            .iter()
            .cloned()
            .partition(|p| p.agreement.allows(basis))
    };
    let start_event = AuditEvent::LookupStarted {
        lookup_id: lookup_id.clone(),
        caller: question.caller.identity.to_string(),
        requester: question.requester_id.clone(),
        lawful_basis: question.purpose.lawful_basis,
        reason: question.purpose.reason.clone(),
        peers_asked: peers.iter().map(|p| p.identity.to_string()).collect(),
    };
    // In the log before any question leaves the node; durable with the
    // answer, before anything is disclosed to the practitioner (one flush a
    // lookup, not two). A crash in between loses this node's record of a
    // question nobody saw the answer to; each peer that answered it holds
    // its own durable record of what it disclosed, and why.
    let mut to_audit = Vec::with_capacity(2);
    if peers.is_empty() {
        to_audit.push(start_event);
    } else if let Err(e) = state.store.append_audits(vec![start_event]).await {
        tracing::error!(error = %e, "audit write failed: nothing asked, nothing disclosed");
        state.health.store_failed("audit append", &e).await;
        return Err(Status::unavailable(
            "this node cannot write its audit log, so it discloses nothing",
        ));
    }

    // Blinded keys, made once per key set.
    let subject = subject_of(&question.subject);
    let mut keys_by_set: HashMap<String, Vec<v1::MatchKey>> = HashMap::new();
    let mut questions = Vec::with_capacity(peers.len());
    let mut unready = Vec::new();
    for peer in &peers {
        let set_name = &peer.agreement.key_set;
        let Some(set) = federation.key_set(set_name) else {
            unready.push(PeerReply {
                peer: peer.clone(),
                outcome: PeerOutcome::Failed(format!("key set {set_name} is not loaded")),
                latency: Duration::ZERO,
            });
            continue;
        };
        let keys = keys_by_set
            .entry(set_name.clone())
            .or_insert_with(|| query_match_keys(set, &subject))
            .clone();
        questions.push(Question {
            peer: peer.clone(),
            request: v1::FindInvolvementsRequest {
                request_id: lookup_id.clone(),
                key_set: set_name.clone(),
                match_keys: keys,
                purpose: Some(v1::Purpose {
                    lawful_basis: basis as i32,
                    reason: question.purpose.reason.clone(),
                }),
                requester: Some(requester.clone()),
                national_id_scheme: question
                    .subject
                    .national_id
                    .as_ref()
                    .map(|n| n.scheme.clone())
                    .unwrap_or_default(),
                include_family: question.include_family,
            },
            key_check: Some(KeyCheck {
                key_set: set_name.clone(),
                ours: set.fingerprint(),
                known: federation.peer_fingerprints.clone(),
            }),
        });
    }
    let deadline = match question.peer_deadline_ms {
        0 => federation.default_deadline,
        ms => Duration::from_millis(u64::from(ms)),
    };

    let mut replies = federation
        .ask(
            &state.metrics,
            questions,
            deadline,
            |mut client, request| async move { client.find_involvements(request).await },
        )
        .await;
    let LocalPart {
        decision,
        disclosed,
        disclosed_ids,
        family,
        ..
    } = local;
    replies.extend(unready);

    let (local_outcome, more_identifiers_wanted, local_person_id) = match decision {
        MatchDecision::Matched(person) => (v1::NodeOutcome::Matched, Vec::new(), Some(person.id)),
        MatchDecision::NoMatch => (v1::NodeOutcome::NoMatch, Vec::new(), None),
        MatchDecision::Ambiguous {
            more_identifiers_wanted,
        } => (
            v1::NodeOutcome::Ambiguous,
            more_identifiers_wanted
                .into_iter()
                .map(|k| k as i32)
                .collect(),
            None,
        ),
    };
    let mut answers = vec![v1::NodeAnswer {
        node_id: state.node_identity.to_string(),
        node_name: state.display_name.clone(),
        outcome: local_outcome as i32,
        detail: String::new(),
        involvements: disclosed,
        more_identifiers_wanted,
        latency_ms: millis(started.elapsed()),
    }];
    // Peers in the order the config lists them.
    replies.sort_by_key(|reply| peers.iter().position(|p| Arc::ptr_eq(p, &reply.peer)));
    answers.extend(replies.into_iter().map(|reply| {
        let peer = reply.peer.identity.clone();
        let answer = peer_answer(reply, deadline);
        let outcome = v1::NodeOutcome::try_from(answer.outcome).unwrap_or(v1::NodeOutcome::Error);
        state.metrics.peer_outcome(&peer, outcome_word(outcome));
        answer
    }));
    answers.extend(not_asked.iter().map(|peer| v1::NodeAnswer {
        node_id: peer.identity.to_string(),
        node_name: peer.name.clone(),
        outcome: v1::NodeOutcome::NotAsked as i32,
        detail: format!(
            "the purpose {} is outside this node's agreement with it",
            config_word(basis.as_str_name(), "LAWFUL_BASIS_")
        ),
        ..Default::default()
    }));

    let family_disclosed = local_person_id
        .as_deref()
        .and_then(|person| AuditEvent::family_disclosed(&lookup_id, None, person, family));
    to_audit.push(AuditEvent::LookupAnswered {
        lookup_id: lookup_id.clone(),
        local_outcome: outcome_word(local_outcome).into(),
        local_person_id,
        disclosed_involvement_ids: disclosed_ids,
        peers: answers[1..]
            .iter()
            .map(|a| AuditedPeer {
                node_id: a.node_id.clone(),
                outcome: outcome_word(
                    v1::NodeOutcome::try_from(a.outcome).unwrap_or(v1::NodeOutcome::Error),
                )
                .into(),
                detail: a.detail.clone(),
                disclosed: u32::try_from(a.involvements.len()).unwrap_or(u32::MAX),
            })
            .collect(),
    });
    // Straight after the answer it belongs to (the report reads it there).
    to_audit.extend(family_disclosed);
    audit_all(state, to_audit).await?;
    // Ids, counts and the purpose's basis only: never names or identifiers.
    tracing::info!(
        caller = %question.caller.identity,
        requester = %question.requester_id,
        lawful_basis = ?question.purpose.lawful_basis,
        local = outcome_word(local_outcome),
        peers = answers.len() - 1,
        disclosed = answers.iter().map(|a| a.involvements.len()).sum::<usize>(),
        latency_ms = millis(started.elapsed()),
        "lookup answered"
    );
    Ok(v1::LookupResponse { lookup_id, answers })
}
