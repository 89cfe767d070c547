//! The node's counters and histograms, in a `prometheus-client` registry of
//! its own (one per node, so several nodes in one process, as in the tests
//! and the benchmark, never mix counts), and the tower layer that counts
//! every gRPC call. `scrape` adds the gauges computed when scraped and
//! serves the whole as OpenMetrics text.
//!
//! Label values are bounded by the API and the config, never by callers:
//! gRPC methods are the ones the node's descriptor sets name (anything else
//! is "other"), peers are the configured ones (anyone else is "other").
//! Metrics carry ids, counts and outcomes only: never names, dates of birth,
//! identifiers, match keys or secrets. Every metric is listed, with its
//! labels, under "Metrics" in ARCHITECTURE.md.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use patchwork_certs::SpiffeId;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use prost::Message as _;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// gRPC status codes by number, as the gRPC spec names them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CODE_CANCELLED: usize = 1;
const CODE_UNKNOWN: usize = 2;

/// A peer's outcome in one lookup, as `Directory.Lookup` reports it.
pub(crate) const PEER_OUTCOMES: [&str; 7] = [
    "matched",
    "no_match",
    "ambiguous",
    "timed_out",
    "unreachable",
    "refused",
    "error",
];

/// Why a connection got no TLS session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum HandshakeRefusal {
    /// The handshake failed: unknown CA, revoked or expired certificate,
    /// no client certificate, wrong protocol ...
    Refused,
    /// It did not finish within `tls.handshake_timeout_ms`.
    TimedOut,
    /// Every handshake slot the connection could take was taken.
    NoSlot,
    /// Its source address already had `tls.max_handshakes_per_source`
    /// handshakes in progress.
    PerSourceLimit,
    /// No whole ClientHello within `tls.client_hello_timeout_ms`.
    Idle,
}

impl HandshakeRefusal {
    const ALL: [HandshakeRefusal; 5] = [
        HandshakeRefusal::Refused,
        HandshakeRefusal::TimedOut,
        HandshakeRefusal::NoSlot,
        HandshakeRefusal::PerSourceLimit,
        HandshakeRefusal::Idle,
    ];
}

/// The label value of anything outside the known set.
pub(crate) const OTHER: &str = "other";

/// A label value from outside the code (a method's, a peer's or a
/// certificate's name), shared by every series that carries it: cloning it
/// for a lookup in a family costs no allocation. prometheus-client writes
/// label values as they are (client_rust issue #151), so this escapes the
/// three characters the text format reserves; a CA named `Surrey "test"`
/// must not break the whole scrape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Name(Arc<str>);

impl Name {
    pub(crate) fn new(value: &str) -> Self {
        Name(Arc::from(value))
    }
}

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    service: Name,
    method: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    service: Name,
    method: Name,
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerLabels {
    peer: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PeerOutcomeLabels {
    peer: Name,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RecordLabels {
    /// `person` or `involvement`.
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabels {
    /// The refusal's snake_case name (`timed_out`).
    reason: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(latency_histogram)
}

/// The node's counters and histograms; one per node, shared.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Known methods, then "other" last.
    methods: Vec<MethodLabels>,
    method_index: HashMap<String, usize>,
    /// Every peer configured since start (a reload adds, never removes: a
    /// removed peer's counts stay readable); anyone else counts as "other".
    peers: parking_lot::RwLock<HashMap<SpiffeId, Name>>,
    /// The label of anyone else.
    other_peer: Name,
    grpc_requests: Family<CallLabels, Counter>,
    grpc_latency: Histograms<MethodLabels>,
    peer_lookups: Family<PeerOutcomeLabels, Counter>,
    peer_latency: Histograms<PeerLabels>,
    peer_rate_limited: Family<PeerLabels, Counter>,
    peer_enumeration_alerts: Family<PeerLabels, Counter>,
    /// Witness rounds that found a peer's audit log rewritten, cut short or
    /// forked (or its key changed), by peer.
    witness_alarms: Family<PeerLabels, Counter>,
    /// Witness rounds that verified and cosigned a peer's checkpoint.
    witness_cosigned: Family<PeerLabels, Counter>,
    /// Federation queries from identities with no agreement.
    unagreed_refused: Counter,
    /// Records the retention schedule deleted, by kind.
    retention_deleted: Family<RecordLabels, Counter>,
    /// Retention runs that deleted nothing because they would have deleted
    /// more than `retention.max_share`.
    retention_refused: Counter,
    /// Audit entries sealed into archive files and removed from the log.
    audit_archived: Counter,
    handshakes_refused: Family<RefusalLabels, Counter>,
    /// Completed TLS handshakes: with connection reuse this stays flat
    /// under load (the benchmark counts handshakes per lookup with it).
    handshakes_accepted: Counter,
}

/// Every `/package.Service/Method` path in the encoded descriptor sets.
fn method_paths(descriptor_sets: &[&[u8]]) -> Vec<(String, String)> {
    let mut paths = Vec::new();
    for encoded in descriptor_sets {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
            continue;
        };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for service in file.service {
                let service_name = match (package.as_str(), service.name()) {
                    ("", name) => name.to_owned(),
                    (package, name) => format!("{package}.{name}"),
                };
                for method in service.method {
                    paths.push((service_name.clone(), method.name().to_owned()));
                }
            }
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

impl Metrics {
    /// Series for every method of the Patchwork API, health and reflection,
    /// and for each of `peers`.
    pub fn new(peers: impl IntoIterator<Item = SpiffeId>) -> Self {
        let paths = method_paths(&[
            patchwork_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ]);
        let mut methods = Vec::with_capacity(paths.len() + 1);
        let mut method_index = HashMap::with_capacity(paths.len());
        for (service, method) in paths
            .into_iter()
            .chain([(OTHER.to_owned(), OTHER.to_owned())])
        {
            if service != OTHER {
                method_index.insert(format!("/{service}/{method}"), methods.len());
            }
            methods.push(MethodLabels {
                service: Name::new(&service),
                method: Name::new(&method),
            });
        }
        let mut metrics = Metrics {
            registry: Registry::default(),
            methods,
            method_index,
            peers: parking_lot::RwLock::default(),
            other_peer: Name::new(OTHER),
            grpc_requests: Family::default(),
            grpc_latency: histograms(),
            peer_lookups: Family::default(),
            peer_latency: histograms(),
            peer_rate_limited: Family::default(),
            peer_enumeration_alerts: Family::default(),
            witness_alarms: Family::default(),
            witness_cosigned: Family::default(),
            unagreed_refused: Counter::default(),
            retention_deleted: Family::default(),
            retention_refused: Counter::default(),
            audit_archived: Counter::default(),
            handshakes_refused: Family::default(),
            handshakes_accepted: Counter::default(),
        };
        metrics.register();
        for kind in ["person", "involvement"] {
            let _ = metrics
                .retention_deleted
                .get_or_create(&RecordLabels { kind });
        }
        for reason in HandshakeRefusal::ALL {
            // Created at zero: every reason shows before its first count.
            let _ = metrics.handshakes_refused.get_or_create(&RefusalLabels {
                reason: reason.into(),
            });
        }
        metrics.add_peers(peers);
        metrics
    }

    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "patchwork_grpc_requests",
            "gRPC calls finished, by service, method and status code",
            self.grpc_requests.clone(),
        );
        registry.register(
            "patchwork_grpc_request_duration_seconds",
            "gRPC call latency from request to status (whole stream for streaming calls)",
            self.grpc_latency.clone(),
        );
        registry.register(
            "patchwork_peer_lookups",
            "peers' outcomes in this node's lookups, by configured peer identity and outcome",
            self.peer_lookups.clone(),
        );
        registry.register(
            "patchwork_peer_call_duration_seconds",
            "latency of this node's calls to each peer (calls not made are not observed)",
            self.peer_latency.clone(),
        );
        registry.register(
            "patchwork_peer_rate_limited",
            "peers' queries refused by their agreement's rate limit, by peer",
            self.peer_rate_limited.clone(),
        );
        registry.register(
            "patchwork_peer_enumeration_alerts",
            "times a peer's queries began to look like enumeration (mostly misses), by peer",
            self.peer_enumeration_alerts.clone(),
        );
        registry.register(
            "patchwork_witness_alarms",
            "witness rounds that found a peer's audit log rewritten, cut short or forked, or its checkpoint key changed, by peer (alert on any increase)",
            self.witness_alarms.clone(),
        );
        registry.register(
            "patchwork_witness_cosigned",
            "checkpoints of a peer's audit log this node verified and cosigned, by peer",
            self.witness_cosigned.clone(),
        );
        registry.register(
            "patchwork_retention_deleted",
            "records the retention schedule deleted, by kind (person, involvement)",
            self.retention_deleted.clone(),
        );
        registry.register(
            "patchwork_retention_refused",
            "retention runs that deleted nothing because they would have deleted more than retention.max_share (alert on any increase)",
            self.retention_refused.clone(),
        );
        registry.register(
            "patchwork_audit_archived_entries",
            "audit entries retention.audit_years sealed into archive files and removed from the log",
            self.audit_archived.clone(),
        );
        registry.register(
            "patchwork_unagreed_queries_refused",
            "federation queries refused because the caller's identity has no agreement",
            self.unagreed_refused.clone(),
        );
        registry.register(
            "patchwork_tls_handshakes_refused",
            "connections that got no TLS session, by reason (refused, timed_out, no_slot, per_source_limit, idle)",
            self.handshakes_refused.clone(),
        );
        registry.register(
            "patchwork_tls_handshakes_accepted",
            "connections that completed a TLS handshake",
            self.handshakes_accepted.clone(),
        );
    }

    /// Series for `peers` not configured before (a reload that adds peers),
    /// zeros included: a configured peer's series exist before its first
    /// call, so an alert on them needs no absent() guard.
    pub(crate) fn add_peers(&self, peers: impl IntoIterator<Item = SpiffeId>) {
        let mut known = self.peers.write();
        for peer in peers {
            if known.contains_key(&peer) {
                continue;
            }
            let name = Name::new(&peer.to_string());
            known.insert(peer, name.clone());
            for outcome in PEER_OUTCOMES {
                let _ = self.peer_lookups.get_or_create(&PeerOutcomeLabels {
                    peer: name.clone(),
                    outcome,
                });
            }
            let labels = PeerLabels { peer: name };
            let _ = self.peer_latency.get_or_create(&labels);
            let _ = self.peer_rate_limited.get_or_create(&labels);
            let _ = self.peer_enumeration_alerts.get_or_create(&labels);
            let _ = self.witness_alarms.get_or_create(&labels);
            let _ = self.witness_cosigned.get_or_create(&labels);
        }
    }

    /// The registry holding every counter and histogram, for `scrape`.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    fn method(&self, path: &str) -> usize {
        self.method_index
            .get(path)
            .copied()
            .unwrap_or(self.methods.len() - 1)
    }

    /// A peer's label: its configured identity's, shared (no allocation on
    /// the lookup path), or "other".
    fn peer(&self, identity: &SpiffeId) -> PeerLabels {
        let peer = match self.peers.read().get(identity) {
            Some(name) => name.clone(),
            None => self.other_peer.clone(),
        };
        PeerLabels { peer }
    }

    /// One finished gRPC call: `code` is the gRPC status number.
    fn request_finished(&self, method: usize, code: usize, elapsed: Duration) {
        let labels = &self.methods[method];
        self.grpc_requests
            .get_or_create(&CallLabels {
                service: labels.service.clone(),
                method: labels.method.clone(),
                code: CODES[code.min(CODES.len() - 1)],
            })
            .inc();
        self.grpc_latency
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// A peer's outcome in one lookup (one of [`PEER_OUTCOMES`]; anything
    /// else counts as "error").
    pub(crate) fn peer_outcome(&self, peer: &SpiffeId, outcome: &str) {
        let outcome = PEER_OUTCOMES
            .iter()
            .find(|known| **known == outcome)
            .unwrap_or(&PEER_OUTCOMES[PEER_OUTCOMES.len() - 1]);
        self.peer_lookups
            .get_or_create(&PeerOutcomeLabels {
                peer: self.peer(peer).peer,
                outcome,
            })
            .inc();
    }

    /// How long a call to a peer took (calls that were made only).
    pub(crate) fn peer_latency(&self, peer: &SpiffeId, elapsed: Duration) {
        self.peer_latency
            .get_or_create(&self.peer(peer))
            .observe(elapsed.as_secs_f64());
    }

    /// A peer's query refused by its agreement's rate limit.
    pub fn rate_limited(&self, peer: &SpiffeId) {
        self.peer_rate_limited.get_or_create(&self.peer(peer)).inc();
    }

    /// A federation query from an identity with no agreement (not labelled
    /// by identity: callers, not the config, would choose the label).
    /// The retention schedule deleted `count` records of `kind`.
    pub(crate) fn retention_deleted(&self, kind: &'static str, count: usize) {
        self.retention_deleted
            .get_or_create(&RecordLabels { kind })
            .inc_by(count as u64);
    }

    /// Audit entries archived and pruned.
    pub(crate) fn audit_archived(&self, entries: u64) {
        self.audit_archived.inc_by(entries);
    }

    /// A retention run refused to delete more than its share.
    pub(crate) fn retention_refused(&self) {
        self.retention_refused.inc();
    }

    pub(crate) fn unagreed_refused(&self) {
        self.unagreed_refused.inc();
    }

    /// A peer whose queries began to look like enumeration (alerted once
    /// each time it crosses the threshold).
    pub(crate) fn enumeration_alert(&self, peer: &SpiffeId) {
        self.peer_enumeration_alerts
            .get_or_create(&self.peer(peer))
            .inc();
    }

    /// A witness round found `peer`'s audit log wrong.
    pub(crate) fn witness_alarm(&self, peer: &SpiffeId) {
        self.witness_alarms.get_or_create(&self.peer(peer)).inc();
    }

    /// A witness round verified and cosigned `peer`'s checkpoint.
    pub(crate) fn witness_cosigned(&self, peer: &SpiffeId) {
        self.witness_cosigned.get_or_create(&self.peer(peer)).inc();
    }

    /// A connection that got no TLS session.
    pub(crate) fn handshake_refused(&self, reason: HandshakeRefusal) {
        self.handshakes_refused
            .get_or_create(&RefusalLabels {
                reason: reason.into(),
            })
            .inc();
    }

    /// A connection that got a TLS session.
    pub(crate) fn handshake_accepted(&self) {
        self.handshakes_accepted.inc();
    }

    /// TLS handshakes completed since start.
    pub fn handshakes_accepted(&self) -> u64 {
        self.handshakes_accepted.get()
    }
}

// ------------------------------------------------------------ gRPC layer

/// A tower layer around every gRPC service: counts each call by method and
/// status code and observes its latency. Unary errors come back
/// "trailers-only" (grpc-status in the response headers); everything else
/// carries grpc-status in the trailers, which the wrapped body watches for.
#[derive(Debug, Clone)]
pub(crate) struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// A call not yet finished; records itself once.
#[derive(Debug)]
struct InFlight {
    metrics: Arc<Metrics>,
    method: usize,
    started: Instant,
}

impl InFlight {
    fn finish(self, code: usize) {
        self.metrics
            .request_finished(self.method, code, self.started.elapsed());
    }
}

/// The status number in `grpc-status`, if the map has one.
fn grpc_status(headers: &http::HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|code| *code < CODES.len())
            .unwrap_or(CODE_UNKNOWN),
    )
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = http::Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let in_flight = InFlight {
            method: self.metrics.method(request.uri().path()),
            metrics: self.metrics.clone(),
            started: Instant::now(),
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    let pending = match grpc_status(response.headers()) {
                        Some(code) => {
                            in_flight.finish(code);
                            None
                        }
                        None => Some(in_flight),
                    };
                    Ok(response.map(|inner| ObservedBody { inner, pending }))
                }
                Err(error) => {
                    in_flight.finish(CODE_UNKNOWN);
                    Err(error)
                }
            }
        })
    }
}

/// A response body that records its call when the trailers pass (or when
/// it is dropped unfinished: the client went away).
#[derive(Debug)]
pub(crate) struct ObservedBody<B> {
    inner: B,
    pending: Option<InFlight>,
}

impl<B> ObservedBody<B> {
    fn finish(&mut self, code: usize) {
        if let Some(in_flight) = self.pending.take() {
            in_flight.finish(code);
        }
    }
}

impl<B: Body + Unpin> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.finish(grpc_status(trailers).unwrap_or(CODE_UNKNOWN));
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => this.finish(CODE_UNKNOWN),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.finish(CODE_CANCELLED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_come_from_the_descriptor_sets_and_others_are_other() {
        let metrics = Metrics::new([]);
        let lookup = metrics.method("/patchwork.v1.Directory/Lookup");
        assert_eq!(
            &*metrics.methods[lookup].service.0,
            "patchwork.v1.Directory"
        );
        assert_eq!(&*metrics.methods[lookup].method.0, "Lookup");
        let check = metrics.method("/grpc.health.v1.Health/Check");
        assert_eq!(&*metrics.methods[check].method.0, "Check");
        let reflect = metrics.method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
        assert_eq!(
            &*metrics.methods[reflect].service.0,
            "grpc.reflection.v1.ServerReflection"
        );
        let other = metrics.method("/evil.Service/Whatever");
        assert_eq!(&*metrics.methods[other].service.0, OTHER);
        assert_eq!(other, metrics.methods.len() - 1);
    }

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let peer: SpiffeId = "spiffe://t.patchwork/node/brighton".parse().expect("id");
        let stranger: SpiffeId = "spiffe://t.patchwork/node/nobody".parse().expect("id");
        let metrics = Metrics::new([peer.clone()]);
        let lookup = metrics.method("/patchwork.v1.Directory/Lookup");
        metrics.request_finished(lookup, 0, Duration::from_millis(3));
        metrics.request_finished(lookup, 3, Duration::from_millis(30));
        metrics.peer_outcome(&peer, "matched");
        metrics.peer_outcome(&peer, "something new");
        metrics.peer_latency(&peer, Duration::from_millis(7));
        metrics.rate_limited(&stranger);
        metrics.handshake_refused(HandshakeRefusal::TimedOut);
        metrics.handshake_accepted();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, metrics.registry()).expect("encode");
        for line in [
            "patchwork_grpc_requests_total{service=\"patchwork.v1.Directory\",method=\"Lookup\",code=\"OK\"} 1",
            "patchwork_grpc_requests_total{service=\"patchwork.v1.Directory\",method=\"Lookup\",code=\"INVALID_ARGUMENT\"} 1",
            "patchwork_grpc_request_duration_seconds_bucket{le=\"0.005\",service=\"patchwork.v1.Directory\",method=\"Lookup\"} 1",
            "patchwork_grpc_request_duration_seconds_bucket{le=\"+Inf\",service=\"patchwork.v1.Directory\",method=\"Lookup\"} 2",
            "patchwork_grpc_request_duration_seconds_count{service=\"patchwork.v1.Directory\",method=\"Lookup\"} 2",
            "patchwork_grpc_request_duration_seconds_sum{service=\"patchwork.v1.Directory\",method=\"Lookup\"} 0.033",
            "patchwork_peer_lookups_total{peer=\"spiffe://t.patchwork/node/brighton\",outcome=\"matched\"} 1",
            "patchwork_peer_lookups_total{peer=\"spiffe://t.patchwork/node/brighton\",outcome=\"error\"} 1",
            "patchwork_peer_lookups_total{peer=\"spiffe://t.patchwork/node/brighton\",outcome=\"timed_out\"} 0",
            "patchwork_peer_call_duration_seconds_count{peer=\"spiffe://t.patchwork/node/brighton\"} 1",
            "patchwork_peer_rate_limited_total{peer=\"other\"} 1",
            "patchwork_tls_handshakes_refused_total{reason=\"timed_out\"} 1",
            "patchwork_tls_handshakes_refused_total{reason=\"refused\"} 0",
            "patchwork_tls_handshakes_accepted_total 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line} in:\n{out}");
        }
        assert!(
            !out.contains("method=\"GetStats\""),
            "methods never called are left out"
        );
        assert!(
            out.contains("# TYPE patchwork_grpc_requests counter"),
            "{out}"
        );
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("patchwork_"), "{line}");
        }
    }

    #[test]
    fn grpc_status_reads_the_header_and_calls_nonsense_unknown() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(grpc_status(&headers), Some(3));
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_status(&headers), Some(CODE_UNKNOWN));
    }
}
