//! Operator metrics in the Prometheus text format (served by `scrape`, with
//! the gauges computed when scraped). Counters and
//! histograms are hand-rolled atomics, allocated up front for every label
//! value they can have: gRPC methods are the ones the node serves (anything
//! else is "other"), peers are the configured ones. So label cardinality is
//! bounded by the API and the config, never by callers. Gauges of the store
//! and of certificate expiry are computed when scraped.
//!
//! Metrics carry ids, counts and outcomes only: never names, dates of birth,
//! identifiers, match keys or secrets. Every metric is listed, with its
//! labels, under "Metrics" in ARCHITECTURE.md.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use patchwork_certs::SpiffeId;
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
pub const PEER_OUTCOMES: [&str; 7] = [
    "matched",
    "no_match",
    "ambiguous",
    "timed_out",
    "unreachable",
    "refused",
    "error",
];

/// Why a connection got no TLS session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
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

const HANDSHAKE_REFUSALS: [&str; 5] = [
    "refused",
    "timed_out",
    "no_slot",
    "per_source_limit",
    "idle",
];

/// The label value of anything outside the known set.
pub(crate) const OTHER: &str = "other";

/// Cumulative-on-render latency histogram.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// `name_bucket`, `name_sum` and `name_count` lines; `labels` is
    /// `key="value",` pairs (possibly empty) to put before `le`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let labels = labels.trim_end_matches(',');
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

fn counters<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

/// One gRPC method the node serves.
#[derive(Debug)]
struct MethodSeries {
    service: String,
    method: String,
    by_code: [AtomicU64; CODES.len()],
    latency: Histogram,
}

/// One configured peer.
#[derive(Debug)]
struct PeerSeries {
    identity: String,
    outcomes: [AtomicU64; PEER_OUTCOMES.len()],
    latency: Histogram,
    rate_limited: AtomicU64,
    enumeration_alerts: AtomicU64,
}

impl PeerSeries {
    fn new(identity: String) -> Self {
        PeerSeries {
            identity,
            outcomes: counters(),
            latency: Histogram::default(),
            rate_limited: AtomicU64::new(0),
            enumeration_alerts: AtomicU64::new(0),
        }
    }
}

/// The configured peers' series, by identity.
#[derive(Debug, Default)]
struct PeerTable {
    series: Vec<Arc<PeerSeries>>,
    index: HashMap<SpiffeId, usize>,
}

/// The node's counters and histograms; one per node, shared.
#[derive(Debug)]
pub struct Metrics {
    /// Known methods, then "other" last.
    methods: Vec<MethodSeries>,
    method_index: HashMap<String, usize>,
    /// Every peer configured since start (a reload adds, never removes:
    /// a removed peer's counts stay readable).
    peers: parking_lot::RwLock<PeerTable>,
    /// Calls to or from identities never configured.
    other_peer: Arc<PeerSeries>,
    handshakes_refused: [AtomicU64; HANDSHAKE_REFUSALS.len()],
    /// Completed TLS handshakes: with connection reuse this stays flat
    /// under load (the benchmark counts handshakes per lookup with it).
    handshakes_accepted: AtomicU64,
    /// Federation queries from identities with no agreement.
    unagreed_refused: AtomicU64,
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
            methods.push(MethodSeries {
                service,
                method,
                by_code: counters(),
                latency: Histogram::default(),
            });
        }
        let metrics = Metrics {
            methods,
            method_index,
            peers: parking_lot::RwLock::default(),
            other_peer: Arc::new(PeerSeries::new(OTHER.to_owned())),
            handshakes_refused: counters(),
            handshakes_accepted: AtomicU64::new(0),
            unagreed_refused: AtomicU64::new(0),
        };
        metrics.add_peers(peers);
        metrics
    }

    /// Series for `peers` not configured before (a reload that adds peers).
    pub fn add_peers(&self, peers: impl IntoIterator<Item = SpiffeId>) {
        let mut table = self.peers.write();
        for peer in peers {
            if !table.index.contains_key(&peer) {
                let at = table.series.len();
                table.index.insert(peer.clone(), at);
                table
                    .series
                    .push(Arc::new(PeerSeries::new(peer.to_string())));
            }
        }
    }

    fn method(&self, path: &str) -> usize {
        self.method_index
            .get(path)
            .copied()
            .unwrap_or(self.methods.len() - 1)
    }

    fn peer(&self, identity: &SpiffeId) -> Arc<PeerSeries> {
        let table = self.peers.read();
        match table.index.get(identity) {
            Some(&i) => table.series[i].clone(),
            None => self.other_peer.clone(),
        }
    }

    /// One finished gRPC call: `code` is the gRPC status number.
    fn request_finished(&self, method: usize, code: usize, elapsed: Duration) {
        let series = &self.methods[method];
        series.by_code[code.min(CODES.len() - 1)].fetch_add(1, Ordering::Relaxed);
        series.latency.observe(elapsed);
    }

    /// A peer's outcome in one lookup (one of [`PEER_OUTCOMES`]; anything
    /// else counts as "error").
    pub fn peer_outcome(&self, peer: &SpiffeId, outcome: &str) {
        let i = PEER_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(PEER_OUTCOMES.len() - 1);
        self.peer(peer).outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// How long a call to a peer took (calls that were made only).
    pub fn peer_latency(&self, peer: &SpiffeId, elapsed: Duration) {
        self.peer(peer).latency.observe(elapsed);
    }

    /// A peer's query refused by its agreement's rate limit.
    pub fn rate_limited(&self, peer: &SpiffeId) {
        self.peer(peer).rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A federation query from an identity with no agreement (not labelled
    /// by identity: callers, not the config, would choose the label).
    pub fn unagreed_refused(&self) {
        self.unagreed_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A peer whose queries began to look like enumeration (alerted once
    /// each time it crosses the threshold).
    pub fn enumeration_alert(&self, peer: &SpiffeId) {
        self.peer(peer)
            .enumeration_alerts
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A connection that got no TLS session.
    pub fn handshake_refused(&self, why: HandshakeRefusal) {
        let i = match why {
            HandshakeRefusal::Refused => 0,
            HandshakeRefusal::TimedOut => 1,
            HandshakeRefusal::NoSlot => 2,
            HandshakeRefusal::PerSourceLimit => 3,
            HandshakeRefusal::Idle => 4,
        };
        self.handshakes_refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// A connection that got a TLS session.
    pub fn handshake_accepted(&self) {
        self.handshakes_accepted.fetch_add(1, Ordering::Relaxed);
    }

    /// TLS handshakes completed since start.
    pub fn handshakes_accepted(&self) -> u64 {
        self.handshakes_accepted.load(Ordering::Relaxed)
    }

    /// The counters and histograms in the text format.
    pub(crate) fn render_counters(&self, out: &mut String) {
        header(
            out,
            "patchwork_grpc_requests_total",
            "counter",
            "gRPC calls finished, by service, method and status code",
        );
        for series in &self.methods {
            for (code, count) in series.by_code.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let _ = writeln!(
                        out,
                        "patchwork_grpc_requests_total{{service=\"{}\",method=\"{}\",code=\"{}\"}} {count}",
                        series.service, series.method, CODES[code]
                    );
                }
            }
        }
        header(
            out,
            "patchwork_grpc_request_duration_seconds",
            "histogram",
            "gRPC call latency from request to status (whole stream for streaming calls)",
        );
        for series in &self.methods {
            if series.latency.count() > 0 {
                series.latency.render(
                    out,
                    "patchwork_grpc_request_duration_seconds",
                    &format!(
                        "service=\"{}\",method=\"{}\",",
                        series.service, series.method
                    ),
                );
            }
        }
        // Peers: every configured one, zeros included (bounded by config).
        let mut peers: Vec<Arc<PeerSeries>> = self.peers.read().series.clone();
        let other = &self.other_peer;
        if other.outcomes.iter().any(|c| c.load(Ordering::Relaxed) > 0)
            || other.latency.count() > 0
            || other.rate_limited.load(Ordering::Relaxed) > 0
            || other.enumeration_alerts.load(Ordering::Relaxed) > 0
        {
            peers.push(other.clone());
        }
        header(
            out,
            "patchwork_peer_lookups_total",
            "counter",
            "peers' outcomes in this node's lookups, by configured peer identity and outcome",
        );
        for peer in &peers {
            for (i, outcome) in PEER_OUTCOMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "patchwork_peer_lookups_total{{peer=\"{}\",outcome=\"{outcome}\"}} {}",
                    escape(&peer.identity),
                    peer.outcomes[i].load(Ordering::Relaxed)
                );
            }
        }
        header(
            out,
            "patchwork_peer_call_duration_seconds",
            "histogram",
            "latency of this node's calls to each peer (calls not made are not observed)",
        );
        for peer in &peers {
            peer.latency.render(
                out,
                "patchwork_peer_call_duration_seconds",
                &format!("peer=\"{}\",", escape(&peer.identity)),
            );
        }
        header(
            out,
            "patchwork_peer_rate_limited_total",
            "counter",
            "peers' queries refused by their agreement's rate limit, by peer",
        );
        for peer in &peers {
            let _ = writeln!(
                out,
                "patchwork_peer_rate_limited_total{{peer=\"{}\"}} {}",
                escape(&peer.identity),
                peer.rate_limited.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "patchwork_peer_enumeration_alerts_total",
            "counter",
            "times a peer's queries began to look like enumeration (mostly misses), by peer",
        );
        for peer in &peers {
            let _ = writeln!(
                out,
                "patchwork_peer_enumeration_alerts_total{{peer=\"{}\"}} {}",
                escape(&peer.identity),
                peer.enumeration_alerts.load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "patchwork_unagreed_queries_refused_total",
            "counter",
            "federation queries refused because the caller's identity has no agreement",
        );
        let _ = writeln!(
            out,
            "patchwork_unagreed_queries_refused_total {}",
            self.unagreed_refused.load(Ordering::Relaxed)
        );
        header(
            out,
            "patchwork_tls_handshakes_refused_total",
            "counter",
            "connections that got no TLS session, by reason (refused, timed_out, no_slot)",
        );
        for (i, reason) in HANDSHAKE_REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "patchwork_tls_handshakes_refused_total{{reason=\"{reason}\"}} {}",
                self.handshakes_refused[i].load(Ordering::Relaxed)
            );
        }
        header(
            out,
            "patchwork_tls_handshakes_accepted_total",
            "counter",
            "connections that completed a TLS handshake",
        );
        let _ = writeln!(
            out,
            "patchwork_tls_handshakes_accepted_total {}",
            self.handshakes_accepted()
        );
    }
}

pub(crate) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

// ------------------------------------------------------------ gRPC layer

/// A tower layer around every gRPC service: counts each call by method and
/// status code and observes its latency. Unary errors come back
/// "trailers-only" (grpc-status in the response headers); everything else
/// carries grpc-status in the trailers, which the wrapped body watches for.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
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
pub struct MetricsService<S> {
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
pub struct ObservedBody<B> {
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
        assert_eq!(metrics.methods[lookup].service, "patchwork.v1.Directory");
        assert_eq!(metrics.methods[lookup].method, "Lookup");
        let check = metrics.method("/grpc.health.v1.Health/Check");
        assert_eq!(metrics.methods[check].method, "Check");
        let reflect = metrics.method("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
        assert_eq!(
            metrics.methods[reflect].service,
            "grpc.reflection.v1.ServerReflection"
        );
        let other = metrics.method("/evil.Service/Whatever");
        assert_eq!(metrics.methods[other].service, OTHER);
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
        metrics.render_counters(&mut out);
        for line in [
            "patchwork_grpc_requests_total{service=\"patchwork.v1.Directory\",method=\"Lookup\",code=\"OK\"} 1",
            "patchwork_grpc_requests_total{service=\"patchwork.v1.Directory\",method=\"Lookup\",code=\"INVALID_ARGUMENT\"} 1",
            "patchwork_grpc_request_duration_seconds_bucket{service=\"patchwork.v1.Directory\",method=\"Lookup\",le=\"0.005\"} 1",
            "patchwork_grpc_request_duration_seconds_bucket{service=\"patchwork.v1.Directory\",method=\"Lookup\",le=\"+Inf\"} 2",
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
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("patchwork_"), "{line}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
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
