//! Asking peers: each call on the peer's long-lived channel, all at once,
//! bounded by a shared limit on calls in flight, and cut off at the
//! deadline — a dead or slow peer never delays an answer beyond it. Every
//! peer's outcome is reported, whatever it was, classified the same way for
//! every RPC (a lookup's query, a subscription, a poll): the one path by
//! which a node calls its peers (`ask_peers`, generic over the call).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchwork_proto::v1::federation_client::FederationClient;
use tokio::sync::Semaphore;
use tonic::Code;
use tonic::transport::Channel;

use crate::agreement::Peer;
use crate::transport::TlsErrors;

/// How one peer answered a call whose reply is `R`.
#[derive(Debug, Clone)]
pub enum PeerOutcome<R> {
    Answered(R),
    /// It said no (purpose not agreed, rate limit, not a peer ...): why.
    Refused(String),
    TimedOut,
    /// No connection could be made: why.
    Unreachable(String),
    /// Anything else that went wrong.
    Failed(String),
    /// It holds another secret for the agreed key set (by fingerprint), so
    /// it was not asked: why, in words.
    KeyMismatch(String),
}

impl<R> PeerOutcome<R> {
    /// Whether the peer was there to say something (an answer, a refusal,
    /// a key mismatch it told us of): what a circuit breaker counts as alive.
    pub fn peer_alive(&self) -> bool {
        matches!(
            self,
            PeerOutcome::Answered(_) | PeerOutcome::Refused(_) | PeerOutcome::KeyMismatch(_)
        )
    }
}

#[derive(Debug, Clone)]
pub struct PeerReply<R> {
    pub peer: Arc<Peer>,
    pub outcome: PeerOutcome<R>,
    pub latency: Duration,
}

/// One question to one peer.
#[derive(Debug)]
pub struct PeerCall<Q> {
    pub peer: Arc<Peer>,
    pub channel: Channel,
    /// Where the channel's connections note TLS errors (see `transport::TlsErrors`).
    pub tls_errors: TlsErrors,
    pub request: Q,
    /// Compare key-set fingerprints first (`None`: ask without comparing).
    pub key_check: Option<crate::keycheck::KeyCheck>,
}

/// The client a call is made with: answers decoded up to
/// [`crate::hostile::MAX_ANSWER_BYTES`].
pub type PeerClient = FederationClient<Channel>;

/// Whether a call failed because its connection did (reset, cut off
/// mid-answer) rather than because the peer said something.
fn connection_broke(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() || error.is::<std::io::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// The TLS error under a failed call, if the call failed at the handshake: rustls's
/// error sits in an `io::Error` somewhere down the status's chain (an `io::Error` hides its
/// inner error from `source()`, so it is opened with `get_ref`).
fn tls_error(status: &tonic::Status) -> Option<&rustls::Error> {
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    pending.extend(std::error::Error::source(status));
    while let Some(error) = pending.pop() {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
        pending.extend(error.source());
    }
    None
}

/// A handshake that failed says who said no: the peer refusing this node's certificate
/// (an alert it sent, e.g. `CertificateRevoked` when its CRL lists us) is a refusal, not
/// silence; this node refusing the peer's certificate leaves the peer unreachable to it.
fn classify_handshake<R>(error: &rustls::Error) -> PeerOutcome<R> {
    match error {
        rustls::Error::AlertReceived(alert) => PeerOutcome::Refused(format!(
            "the peer refused this node at the tls handshake: {alert:?}"
        )),
        other => PeerOutcome::Unreachable(format!(
            "this node refused the peer at the tls handshake: {other}"
        )),
    }
}

/// How long a call that found its connection closed waits for the
/// connection's TLS error before it is called unreachable.
const TLS_ALERT_GRACE: Duration = Duration::from_millis(25);

/// `started`: when this call began, so only a TLS error of its own connection counts.
fn classify<R>(status: &tonic::Status, tls_errors: &TlsErrors, started: Instant) -> PeerOutcome<R> {
    if let Some(error) = tls_error(status) {
        return classify_handshake(error);
    }
    // A connection cut under the call (hyper says only "connection closed"): its TLS
    // error, when it had one, says why.
    if matches!(
        status.code(),
        Code::Cancelled | Code::Unknown | Code::Unavailable
    ) && let Some(error) = tls_errors.since(started)
    {
        return classify_handshake(&error);
    }
    let message = status.message().to_owned();
    if status.code() == Code::Unknown && connection_broke(status) {
        return PeerOutcome::Unreachable(format!(
            "the connection broke during the call: {message}"
        ));
    }
    match status.code() {
        Code::DeadlineExceeded | Code::Cancelled => PeerOutcome::TimedOut,
        Code::Unavailable => PeerOutcome::Unreachable(message),
        Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::InvalidArgument => PeerOutcome::Refused(format!("{:?}: {message}", status.code())),
        Code::Unimplemented => {
            PeerOutcome::Failed("the peer does not answer patchwork.v1 federation queries".into())
        }
        code => PeerOutcome::Failed(format!("{code:?}: {message}")),
    }
}

/// Asks every peer in `calls` in parallel, each with `rpc` (e.g.
/// `|mut client, request| async move { client.subscribe(request).await }`);
/// returns their replies in the same order, each within `deadline` of the
/// start.
pub async fn ask_peers<Q, R, F, Fut>(
    calls: Vec<PeerCall<Q>>,
    deadline: Duration,
    slots: Arc<Semaphore>,
    rpc: F,
) -> Vec<PeerReply<R>>
where
    Q: Send + 'static,
    R: Send + 'static,
    F: Fn(PeerClient, tonic::Request<Q>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|call| {
            let slots = slots.clone();
            let peer = call.peer.clone();
            let tls_errors = call.tls_errors.clone();
            let rpc = rpc.clone();
            let task = tokio::spawn(async move {
                let call_started = Instant::now();
                let asked = async {
                    let _slot = slots.acquire_owned().await;
                    if let Some(check) = &call.key_check
                        && let Some(why) = check
                            .mismatch(&call.peer.identity, call.channel.clone(), deadline)
                            .await
                    {
                        return PeerOutcome::KeyMismatch(why);
                    }
                    let mut request = tonic::Request::new(call.request);
                    // Tell the peer too, so it stops working when we stop waiting.
                    request.set_timeout(deadline);
                    let client = FederationClient::new(call.channel)
                        .max_decoding_message_size(crate::hostile::MAX_ANSWER_BYTES);
                    match rpc(client, request).await {
                        Ok(reply) => PeerOutcome::Answered(reply.into_inner()),
                        Err(status) => {
                            let outcome = classify(&status, &tls_errors, call_started);
                            let broke = status.code() == Code::Unknown && connection_broke(&status);
                            if !(broke && matches!(outcome, PeerOutcome::Unreachable(_))) {
                                return outcome;
                            }
                            // The call can see the connection close (our write
                            // met the peer's closed socket) a moment before the
                            // connection's task reads the peer's TLS alert.
                            tokio::time::sleep(TLS_ALERT_GRACE).await;
                            classify(&status, &tls_errors, call_started)
                        }
                    }
                };
                let outcome = tokio::time::timeout(deadline, asked)
                    .await
                    .unwrap_or(PeerOutcome::TimedOut);
                (outcome, started.elapsed())
            });
            (peer, task)
        })
        .collect();
    let mut replies = Vec::with_capacity(tasks.len());
    for (peer, task) in tasks {
        let (outcome, latency) = task.await.unwrap_or_else(|_| {
            (
                PeerOutcome::Failed("the peer call stopped unexpectedly".into()),
                started.elapsed(),
            )
        });
        if let PeerOutcome::Unreachable(why)
        | PeerOutcome::Failed(why)
        | PeerOutcome::KeyMismatch(why) = &outcome
        {
            tracing::warn!(peer = %peer.identity, reason = %why, "peer call failed");
        }
        replies.push(PeerReply {
            peer,
            outcome,
            latency,
        });
    }
    replies
}
