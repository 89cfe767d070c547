//! The node's side of federation: match-key secrets read from their files,
//! the peers and agreements from the config, one long-lived channel per
//! peer (rebuilt when the node's own certificate or trust bundle changes, so a
//! rotated certificate is what peers see on the next connection), and
//! [`Federation::ask`], the one way the node calls its peers.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchwork_certs::SpiffeId;
use patchwork_federation::agreement::{Agreement, Peer, PeerRegistry, RateLimiter};
use patchwork_federation::breaker::Admission;
use patchwork_federation::fanout::{PeerCall, PeerClient, PeerOutcome, PeerReply, ask_peers};
use patchwork_federation::keycheck::KeyCheck;
use patchwork_federation::matchkeys::KeySet;
use patchwork_federation::transport::{PeerChannels, TlsErrors};
use patchwork_proto::v1;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::base::config::FederationSection;
use crate::base::error::{NodeError, read_private_key};
use crate::transport::metrics::Metrics;
use crate::transport::tls::TlsState;

/// One question for one peer: what [`Federation::ask`] sends it.
#[derive(Debug)]
pub struct Question<Q> {
    pub peer: Arc<Peer>,
    pub request: Q,
    /// Compare key-set fingerprints before asking (queries and
    /// subscriptions, which carry match keys); `None` asks at once.
    pub key_check: Option<KeyCheck>,
}

/// A peer's outcome in the API's words: its answer, or the outcome and
/// detail that say why there is none. `deadline` is the one the call had.
pub(crate) fn settled<R>(
    outcome: PeerOutcome<R>,
    deadline: Duration,
) -> Result<R, (v1::NodeOutcome, String)> {
    match outcome {
        PeerOutcome::Answered(answer) => Ok(answer),
        PeerOutcome::Refused(why) => Err((v1::NodeOutcome::Refused, why)),
        PeerOutcome::TimedOut => Err((
            v1::NodeOutcome::TimedOut,
            format!("no answer within {} ms", deadline.as_millis()),
        )),
        PeerOutcome::Unreachable(why) => Err((v1::NodeOutcome::Unreachable, why)),
        PeerOutcome::Failed(why) | PeerOutcome::KeyMismatch(why) => {
            Err((v1::NodeOutcome::Error, why))
        }
    }
}

/// A peer's outcome as audit entries, metrics and logs name it
/// (`no_match`); an unspecified one is an error.
pub(crate) fn outcome_word(outcome: v1::NodeOutcome) -> &'static str {
    match outcome {
        v1::NodeOutcome::Matched => "matched",
        v1::NodeOutcome::NoMatch => "no_match",
        v1::NodeOutcome::Ambiguous => "ambiguous",
        v1::NodeOutcome::TimedOut => "timed_out",
        v1::NodeOutcome::Unreachable => "unreachable",
        v1::NodeOutcome::Refused => "refused",
        v1::NodeOutcome::NotAsked => "not_asked",
        v1::NodeOutcome::Error | v1::NodeOutcome::Unspecified => "error",
    }
}

/// A peer's match status (a query's or a subscription's) as the outcome
/// the API reports; an unknown one is an error, named.
pub(crate) fn match_outcome(status: i32) -> Result<v1::NodeOutcome, String> {
    match v1::MatchStatus::try_from(status) {
        Ok(v1::MatchStatus::Matched) => Ok(v1::NodeOutcome::Matched),
        Ok(v1::MatchStatus::NoMatch) => Ok(v1::NodeOutcome::NoMatch),
        Ok(v1::MatchStatus::Ambiguous) => Ok(v1::NodeOutcome::Ambiguous),
        _ => Err(format!("the peer answered with an unknown status {status}")),
    }
}

/// Polls a peer may make a minute (its node polls every few seconds).
pub(crate) const POLLS_PER_MINUTE: u32 = 60;

/// How long connecting to a peer may take (within a lookup's deadline).
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn key_error(key: String, message: impl Into<String>) -> NodeError {
    NodeError::Federation {
        key,
        message: message.into(),
    }
}

/// Reads every key set's secret: hex, at least 32 bytes, a file only this
/// node's user can read.
pub(crate) fn load_key_sets(section: &FederationSection) -> Result<Vec<KeySet>, NodeError> {
    let mut sets = Vec::with_capacity(section.key_sets.len());
    for (i, entry) in section.key_sets.iter().enumerate() {
        let key = format!("federation.key_sets[{i}].secret_file");
        let secret = read_secret_hex(&entry.secret_file)
            .map_err(|message| key_error(key.clone(), message))?;
        sets.push(KeySet::new(&entry.name, &secret).map_err(|e| key_error(key, e.to_string()))?);
    }
    Ok(sets)
}

/// The fingerprints of `sets`, sorted by name: what `config check`, `trust
/// status` and `NodeInfo` show.
pub fn fingerprints<'a>(sets: impl IntoIterator<Item = &'a KeySet>) -> Vec<v1::KeySetFingerprint> {
    let mut out: Vec<_> = sets
        .into_iter()
        .map(|set| v1::KeySetFingerprint {
            key_set: set.name().to_owned(),
            fingerprint: set.fingerprint(),
        })
        .collect();
    out.sort_by(|a, b| a.key_set.cmp(&b.key_set));
    out
}

fn read_secret_hex(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read_private_key("federation.key_sets", path).map_err(|e| match e {
        NodeError::KeyMaterial { message, .. } => message,
        other => other.to_string(),
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| "is not hex text".to_owned())?
        .trim();
    if text.len() < 64 || text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{} must hold at least 64 hex digits (32 random bytes)",
            path.display()
        ));
    }
    hex::decode(text).map_err(|e| e.to_string())
}

/// Peers, their agreements and channels, and the key sets: one consistent
/// set, replaced whole by a reload (see [`FederationHandle`]).
#[derive(Debug)]
pub struct Federation {
    pub registry: PeerRegistry,
    key_sets: HashMap<String, KeySet>,
    pub(crate) default_deadline: Duration,
    /// Peer calls in flight across all lookups.
    pub slots: Arc<Semaphore>,
    /// Each peer's circuit breaker (lookups skip a peer that keeps failing).
    pub breakers: Arc<patchwork_federation::breaker::Breakers>,
    /// When peers' queries to this node look like enumeration.
    pub enumeration: patchwork_federation::hostile::EnumerationPolicy,
    tls: Arc<TlsState>,
    channels: PeerChannels,
    /// Peers' key-set fingerprints, compared before each lookup.
    pub(crate) peer_fingerprints: Arc<patchwork_federation::keycheck::PeerFingerprints>,
    /// The config section it was made from, to tell what a reload changes.
    section: FederationSection,
}

fn peers_of(section: &FederationSection) -> Vec<Peer> {
    section
        .peers
        .iter()
        .filter_map(|entry| {
            let identity: SpiffeId = entry.identity.parse().ok()?;
            Some(Peer {
                identity,
                name: entry.name.trim().to_owned(),
                address: entry.address.clone(),
                agreement: Agreement {
                    purposes: entry.purposes.iter().map(|p| (*p).into()).collect(),
                    sensitivities: entry.sensitivities.iter().map(|s| (*s).into()).collect(),
                    rate_limit_per_minute: entry.rate_limit_per_minute,
                    key_set: entry.key_set.clone(),
                },
                limiter: Arc::new(RateLimiter::new(entry.rate_limit_per_minute)),
                poll_limiter: Arc::new(RateLimiter::new(POLLS_PER_MINUTE)),
            })
        })
        .collect()
}

impl Federation {
    /// The one way this node calls its peers — lookups' queries,
    /// subscriptions, unsubscriptions and polls alike: a peer whose circuit
    /// breaker is open is not called (unreachable, "circuit open ..."), nor
    /// one without a channel; the others are asked in parallel through
    /// [`ask_peers`] on the shared call slots, each within `deadline`. Every
    /// call's latency goes to the metrics and its outcome to the peer's
    /// breaker. Replies come in the order of `questions`.
    pub async fn ask<Q, R, F, Fut>(
        &self,
        metrics: &Metrics,
        questions: Vec<Question<Q>>,
        deadline: Duration,
        rpc: F,
    ) -> Vec<PeerReply<R>>
    where
        Q: Send + 'static,
        R: Send + 'static,
        F: Fn(PeerClient, tonic::Request<Q>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send,
    {
        let mut replies: Vec<Option<PeerReply<R>>> = Vec::with_capacity(questions.len());
        let mut calls = Vec::with_capacity(questions.len());
        let mut asked = Vec::with_capacity(questions.len());
        for question in questions {
            let unready = |peer: Arc<Peer>, why: String| PeerReply {
                peer,
                outcome: PeerOutcome::Unreachable(why),
                latency: Duration::ZERO,
            };
            if let Admission::Skip { remaining } =
                self.breakers.admit(&question.peer.identity, Instant::now())
            {
                replies.push(Some(unready(
                    question.peer,
                    Admission::skip_detail(remaining),
                )));
                continue;
            }
            match self.channel_and_tls_errors(&question.peer) {
                Ok((channel, tls_errors)) => {
                    asked.push(replies.len());
                    replies.push(None);
                    calls.push(PeerCall {
                        peer: question.peer,
                        channel,
                        tls_errors,
                        request: question.request,
                        key_check: question.key_check,
                    });
                }
                Err(why) => replies.push(Some(unready(question.peer, why))),
            }
        }
        let answered = ask_peers(calls, deadline, self.slots.clone(), rpc).await;
        for (at, reply) in asked.into_iter().zip(answered) {
            metrics.peer_latency(&reply.peer.identity, reply.latency);
            self.breakers.record(
                &reply.peer.identity,
                reply.outcome.peer_alive(),
                Instant::now(),
            );
            replies[at] = Some(reply);
        }
        replies.into_iter().flatten().collect()
    }

    /// One call to one peer without a key check (unsubscriptions and
    /// polls), within the federation's default deadline, through
    /// [`Federation::ask`]: its answer, or the outcome and detail that say
    /// why there is none.
    pub(crate) async fn ask_one<Q, R, F, Fut>(
        &self,
        metrics: &Metrics,
        peer: Arc<Peer>,
        request: Q,
        rpc: F,
    ) -> Result<R, (v1::NodeOutcome, String)>
    where
        Q: Send + 'static,
        R: Send + 'static,
        F: Fn(PeerClient, tonic::Request<Q>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send,
    {
        let question = Question {
            peer,
            request,
            key_check: None,
        };
        let deadline = self.default_deadline;
        let outcome = self
            .ask(metrics, vec![question], deadline, rpc)
            .await
            .into_iter()
            .next()
            .map_or(PeerOutcome::Failed("no reply".into()), |reply| {
                reply.outcome
            });
        settled(outcome, deadline)
    }

    /// `section` has been validated: identities parse, key sets exist.
    pub fn new(section: &FederationSection, key_sets: Vec<KeySet>, tls: Arc<TlsState>) -> Self {
        Federation {
            registry: PeerRegistry::new(peers_of(section)),
            key_sets: key_sets
                .into_iter()
                .map(|set| (set.name().to_owned(), set))
                .collect(),
            default_deadline: Duration::from_millis(u64::from(section.default_deadline_ms)),
            slots: Arc::new(Semaphore::new(section.max_concurrent_calls)),
            breakers: Arc::new(patchwork_federation::breaker::Breakers::new(
                patchwork_federation::breaker::DEFAULT_THRESHOLD,
                Duration::from_millis(u64::from(section.breaker_cool_down_ms)),
            )),
            enumeration: section.enumeration.policy(),
            tls,
            channels: PeerChannels::default(),
            peer_fingerprints: Arc::default(),
            section: section.clone(),
        }
    }

    /// The federation `section` and `key_sets` describe, taking over what
    /// this one learned that still holds: each unchanged peer's rate bucket
    /// (a reload does not refill a peer's allowance) and channel (rebuilt
    /// on its next use anyway when the TLS material changed, as a reload's
    /// does), the circuit breakers and the call slots (unless their
    /// settings changed), and peers' fingerprints (unless a key set
    /// changed).
    pub(crate) fn succeeded_by(
        &self,
        section: &FederationSection,
        key_sets: Vec<KeySet>,
    ) -> Federation {
        let mut next = Federation::new(section, key_sets, self.tls.clone());
        let peers = peers_of(section)
            .into_iter()
            .map(|mut peer| {
                if let Some(old) = self.registry.get(&peer.identity) {
                    peer.poll_limiter = old.poll_limiter.clone();
                    if old.agreement.rate_limit_per_minute == peer.agreement.rate_limit_per_minute {
                        peer.limiter = old.limiter.clone();
                    }
                }
                peer
            })
            .collect();
        next.registry = PeerRegistry::new(peers);
        if section.breaker_cool_down_ms == self.section.breaker_cool_down_ms {
            next.breakers = self.breakers.clone();
        }
        if section.max_concurrent_calls == self.section.max_concurrent_calls {
            next.slots = self.slots.clone();
        }
        if next.fingerprints() == self.fingerprints() {
            next.peer_fingerprints = self.peer_fingerprints.clone();
        }
        next.channels = self.channels.kept(|identity| {
            let address =
                |registry: &PeerRegistry| registry.get(identity).map(|peer| peer.address.clone());
            address(&next.registry).is_some() && address(&next.registry) == address(&self.registry)
        });
        next
    }

    /// What changed from this federation to `next`, one line each, in words
    /// an operator and a data-protection officer read (never a secret: key
    /// sets by fingerprint).
    pub(crate) fn changes_to(&self, next: &Federation) -> Vec<String> {
        let mut changes = Vec::new();
        let ours: HashMap<&SpiffeId, &Arc<Peer>> = self
            .registry
            .all()
            .iter()
            .map(|p| (&p.identity, p))
            .collect();
        for peer in next.registry.all() {
            match ours.get(&peer.identity) {
                None => changes.push(format!(
                    "peer {} ({}) added: {}",
                    peer.identity,
                    peer.name,
                    describe_agreement(peer)
                )),
                Some(old) => {
                    if old.agreement != peer.agreement {
                        changes.push(format!(
                            "agreement with {} changed: {} (was {})",
                            peer.identity,
                            describe_agreement(peer),
                            describe_agreement(old)
                        ));
                    }
                    if old.address != peer.address {
                        changes.push(format!(
                            "peer {} moved: {} (was {})",
                            peer.identity, peer.address, old.address
                        ));
                    }
                    if old.name != peer.name {
                        changes.push(format!(
                            "peer {} renamed: {} (was {})",
                            peer.identity, peer.name, old.name
                        ));
                    }
                }
            }
        }
        for peer in self.registry.all() {
            if next.registry.get(&peer.identity).is_none() {
                changes.push(format!(
                    "peer {} ({}) removed: this node neither asks nor answers it",
                    peer.identity, peer.name
                ));
            }
        }
        let before: HashMap<String, String> = self
            .fingerprints()
            .into_iter()
            .map(|f| (f.key_set, f.fingerprint))
            .collect();
        for now in next.fingerprints() {
            match before.get(&now.key_set) {
                None => changes.push(format!(
                    "key set {} added (fingerprint {})",
                    now.key_set, now.fingerprint
                )),
                Some(was) if *was != now.fingerprint => changes.push(format!(
                    "key set {} has a new secret (fingerprint {}, was {was})",
                    now.key_set, now.fingerprint
                )),
                Some(_) => {}
            }
        }
        for name in before.keys() {
            if next.key_set(name).is_none() {
                changes.push(format!("key set {name} removed"));
            }
        }
        let (a, b) = (&self.section, &next.section);
        let knob = |changes: &mut Vec<String>, key: &str, was: String, now: String| {
            if was != now {
                changes.push(format!("federation.{key} is {now} (was {was})"));
            }
        };
        knob(
            &mut changes,
            "default_deadline_ms",
            a.default_deadline_ms.to_string(),
            b.default_deadline_ms.to_string(),
        );
        knob(
            &mut changes,
            "max_concurrent_calls",
            a.max_concurrent_calls.to_string(),
            b.max_concurrent_calls.to_string(),
        );
        knob(
            &mut changes,
            "breaker_cool_down_ms",
            a.breaker_cool_down_ms.to_string(),
            b.breaker_cool_down_ms.to_string(),
        );
        if a.enumeration != b.enumeration {
            changes.push(format!(
                "federation.enumeration changed: {}",
                b.enumeration.describe()
            ));
        }
        changes
    }

    pub fn key_set(&self, name: &str) -> Option<&KeySet> {
        self.key_sets.get(name)
    }

    /// Every key set's fingerprint (never the secret), by name.
    pub fn fingerprints(&self) -> Vec<v1::KeySetFingerprint> {
        fingerprints(self.key_sets.values())
    }

    /// The long-lived channel to `peer`, made on first use and again after
    /// the node's TLS material changed.
    pub fn channel(&self, peer: &Peer) -> Result<Channel, String> {
        self.channel_and_tls_errors(peer)
            .map(|(channel, _)| channel)
    }

    /// `channel`, with where its connections note TLS errors (a lookup names a
    /// peer's handshake refusal from them).
    pub(crate) fn channel_and_tls_errors(
        &self,
        peer: &Peer,
    ) -> Result<(Channel, TlsErrors), String> {
        let client_config = || {
            let material = self.tls.current();
            patchwork_certs::client_config(
                &material.own,
                &material.trust,
                peer.identity.clone(),
                material.min_version,
            )
            .map(Arc::new)
            .map_err(|e| e.to_string())
        };
        self.channels.get(
            &peer.identity,
            &peer.address,
            self.tls.generation(),
            client_config,
            PEER_CONNECT_TIMEOUT,
        )
    }
}

/// A wire enum's value as node.toml writes it:
/// `LAWFUL_BASIS_CHILD_SAFEGUARDING` (prefix `LAWFUL_BASIS_`) →
/// `child-safeguarding`.
pub(crate) fn config_word(wire_name: &str, prefix: &str) -> String {
    wire_name
        .trim_start_matches(prefix)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// An agreement in the config's words: purposes, sensitivities, rate and
/// key set.
fn describe_agreement(peer: &Peer) -> String {
    let agreement = &peer.agreement;
    let purposes: Vec<String> = agreement
        .purposes
        .iter()
        .map(|p| config_word(p.as_str_name(), "LAWFUL_BASIS_"))
        .collect();
    let sensitivities: Vec<String> = agreement
        .sensitivities
        .iter()
        .map(|s| config_word(s.as_str_name(), "SENSITIVITY_"))
        .collect();
    format!(
        "purposes {}; sensitivities {}; {} queries a minute; key set {}",
        purposes.join(", "),
        sensitivities.join(", "),
        agreement.rate_limit_per_minute,
        agreement.key_set
    )
}

/// The federation in force, swapped whole by a reload. A lookup takes one
/// [`FederationHandle::current`] and uses it throughout, so it never mixes
/// an old agreement with a new key set.
#[derive(Debug)]
pub(crate) struct FederationHandle {
    current: arc_swap::ArcSwap<Federation>,
    /// Peers' recent queries: outlives reloads (a reload must not wipe the
    /// record of a sweep in progress); takes each new federation's rules.
    enumeration_watch: Arc<patchwork_federation::hostile::EnumerationWatch>,
}

impl FederationHandle {
    pub(crate) fn new(federation: Federation) -> Self {
        FederationHandle {
            enumeration_watch: Arc::new(patchwork_federation::hostile::EnumerationWatch::new(
                federation.enumeration.clone(),
            )),
            current: arc_swap::ArcSwap::from_pointee(federation),
        }
    }

    pub(crate) fn current(&self) -> Arc<Federation> {
        self.current.load_full()
    }

    pub(crate) fn enumeration_watch(&self) -> &patchwork_federation::hostile::EnumerationWatch {
        &self.enumeration_watch
    }

    /// Puts `federation` in force for every call that starts from now on.
    pub(crate) fn install(&self, federation: Federation) {
        self.enumeration_watch
            .set_policy(federation.enumeration.clone());
        self.current.store(Arc::new(federation));
    }
}
