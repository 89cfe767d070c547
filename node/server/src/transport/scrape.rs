//! What a scrape reads besides the counters, and where it is served: the
//! gauges computed when scraped (serving, certificate and CRL expiry, the
//! TLS generation and refused reloads, the store's size, records, audit
//! length and last imports) and the HTTP endpoint `GET /metrics` on
//! `[metrics] listen`, which answers the node's counters (`metrics`) and
//! these gauges as one OpenMetrics text. Above `metrics`, `tls` and
//! `health`, which it reads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::transport::health::Health;
use crate::transport::metrics::{Metrics, Name, OTHER};
use crate::transport::tls::TlsState;
use patchwork_store::Store;

/// The media type of what `GET /metrics` answers.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An expiry's kind and name from its description (see `tls::Expiry`).
fn expiry_labels(what: &str) -> (&'static str, &str) {
    if let Some(name) = what.strip_prefix("own certificate ") {
        ("certificate", name)
    } else if let Some(name) = what.strip_prefix("trusted CA ") {
        ("ca", name)
    } else if let Some(name) = what.strip_prefix("CRL ") {
        ("crl", name)
    } else {
        (OTHER, what)
    }
}

/// What a scrape reads besides the counters.
#[derive(Debug, Clone)]
pub(crate) struct ScrapeSources {
    pub metrics: Arc<Metrics>,
    pub tls: Arc<TlsState>,
    pub health: Health,
    /// Set once the store is open.
    pub store: Arc<OnceLock<Store>>,
}

/// The store's gauges, read on the blocking pool.
struct StoreGauges {
    bytes: u64,
    counts: patchwork_store::Counts,
    audit_entries: u64,
    last_imports: Vec<(
        patchwork_store::Kind,
        patchwork_store::last_import::LastImport,
    )>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ExpiryLabels {
    kind: &'static str,
    name: Name,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ImportRowLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// A gauge family filled once, for one scrape.
fn gauges<L>(values: impl IntoIterator<Item = (L, i64)>) -> Family<L, Gauge>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    for (labels, value) in values {
        family.get_or_create(&labels).set(value);
    }
    family
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl ScrapeSources {
    /// The counters and this moment's gauges, as OpenMetrics text.
    pub(crate) async fn render(&self) -> String {
        let mut gauges = Registry::default();
        self.register_node(&mut gauges);
        self.register_tls(&mut gauges);
        if let Some(store) = self.store_gauges().await {
            register_store(&mut gauges, store);
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String fails only if a label value's encoding does,
        // which ours (plain strings) never do.
        let encoded = encode_registry(&mut out, self.metrics.registry())
            .and_then(|()| encode_registry(&mut out, &gauges))
            .and_then(|()| encode_eof(&mut out));
        if let Err(error) = encoded {
            tracing::warn!(error = %error, "metrics: cannot encode");
        }
        out
    }

    fn register_node(&self, registry: &mut Registry) {
        registry.register(
            "patchwork_build",
            "the node's software version and API version",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("api", patchwork_proto::API_VERSION),
            ]),
        );
        registry.register(
            "patchwork_serving",
            "1 while grpc.health.v1 reports SERVING; 0 while starting, draining or while the store fails",
            ConstGauge::new(i64::from(self.health.is_serving())),
        );
    }

    fn register_tls(&self, registry: &mut Registry) {
        let material = self.tls.current();
        let now = OffsetDateTime::now_utc();
        registry.register(
            "patchwork_tls_expiry_days",
            "whole days until the node's certificate, a trusted CA or a CRL (its nextUpdate) expires; negative once expired",
            gauges(material.expiries.iter().map(|expiry| {
                let (kind, name) = expiry_labels(&expiry.what);
                let labels = ExpiryLabels {
                    kind,
                    name: Name::new(name),
                };
                (labels, expiry.days_left(now))
            })),
        );
        registry.register(
            "patchwork_tls_generation",
            "the TLS material's generation: 1 at start, one more for each successful reload",
            ConstGauge::new(signed(self.tls.generation())),
        );
        registry.register(
            "patchwork_tls_reloads_refused",
            "reloads refused (SIGHUP or `patchwork reload`): TLS material, config or federation; what was in force stays in force",
            ConstCounter::new(self.tls.reloads_refused()),
        );
    }

    /// The store's gauges, read on the blocking pool; none while the store
    /// is still opening, or when it cannot be read (logged).
    async fn store_gauges(&self) -> Option<StoreGauges> {
        let store = self.store.get().cloned()?;
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, patchwork_store::StoreError>(StoreGauges {
                bytes: store.size_on_disk()?,
                counts: store.counts()?,
                audit_entries: store.audit_len()?,
                last_imports: store.last_imports()?,
            })
        })
        .await;
        match read {
            Ok(Ok(gauges)) => Some(gauges),
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "metrics: cannot read the store's gauges");
                None
            }
            Err(_) => None,
        }
    }
}

fn register_store(registry: &mut Registry, store: StoreGauges) {
    registry.register(
        "patchwork_store_size_bytes",
        "the store's size on disk",
        ConstGauge::new(signed(store.bytes)),
    );
    let counts = store.counts;
    registry.register(
        "patchwork_store_records",
        "records held, by kind",
        gauges(
            [
                ("persons", counts.persons),
                ("practitioners", counts.practitioners),
                ("organisations", counts.organisations),
                ("involvements", counts.involvements),
                ("active_involvements", counts.active_involvements),
            ]
            .map(|(kind, count)| (KindLabels { kind }, signed(count))),
        ),
    );
    registry.register(
        "patchwork_audit_entries",
        "entries in the audit log (a Merkle tree, witnessed by peers)",
        ConstGauge::new(signed(store.audit_entries)),
    );
    let last = |kind: patchwork_store::Kind| {
        store
            .last_imports
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, last)| last.clone())
            .unwrap_or_default()
    };
    let kinds = patchwork_store::last_import::IMPORT_KINDS;
    registry.register(
        "patchwork_last_import_timestamp_seconds",
        "when the last applied import of each kind finished (0: never); alert when it grows old",
        gauges(kinds.map(|kind| {
            let at = last(kind).at_unix_seconds;
            (KindLabels { kind: kind.into() }, at)
        })),
    );
    registry.register(
        "patchwork_last_import_rows",
        "rows of the last applied import of each kind, by outcome",
        gauges(kinds.iter().flat_map(|&kind| {
            let last = last(kind);
            [
                ("created", last.created),
                ("updated", last.updated),
                ("unchanged", last.unchanged),
                ("bad", last.bad_rows),
            ]
            .map(|(outcome, rows)| {
                let labels = ImportRowLabels {
                    kind: kind.into(),
                    outcome,
                };
                (labels, signed(rows))
            })
        })),
    );
}

// ------------------------------------------------------------ HTTP endpoint

/// Scrapes served at once; more are closed at once.
const MAX_CONCURRENT_SCRAPES: usize = 8;
/// How long a scraper may take to send its request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request buffered (line and headers): hyper's minimum.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Binds `[metrics] listen`. A failure is logged, not fatal: a node that
/// cannot publish metrics must still answer practitioners.
pub(crate) async fn bind(listen: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(listen).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::error!(listen = %listen, error = %error, "metrics.listen: cannot listen; serving no metrics");
            None
        }
    }
}

/// Serves `GET /metrics` (HTTP/1.1 by hyper) on `listener` until aborted:
/// one request per connection, which is all Prometheus needs, at most
/// [`MAX_CONCURRENT_SCRAPES`] at once, each head within
/// [`REQUEST_TIMEOUT`] and [`MAX_REQUEST_BYTES`].
pub(crate) fn serve(listener: TcpListener, sources: ScrapeSources) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_SCRAPES));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(listen = %addr, "metrics serving");
    }
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // dropped: too many scrapes at once
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let answer = hyper::service::service_fn(|request| {
                    let sources = sources.clone();
                    async move { Ok::<_, Infallible>(answer(&request, &sources).await) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(REQUEST_TIMEOUT)
                    .max_buf_size(MAX_REQUEST_BYTES)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), answer);
                // A scraper that went away or sent nonsense is its problem.
                let _ = tokio::time::timeout(REQUEST_TIMEOUT * 6, connection).await;
            });
        }
    })
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

async fn answer<B>(request: &Request<B>, sources: &ScrapeSources) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    match (readable, request.uri().path()) {
        (true, "/metrics") => text(StatusCode::OK, OPENMETRICS, sources.render().await),
        (true, _) => text(
            StatusCode::NOT_FOUND,
            plain,
            "not found: metrics are at /metrics\n".to_owned(),
        ),
        (false, _) => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                plain,
                "only GET /metrics\n".to_owned(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_labels_and_escaping() {
        assert_eq!(
            expiry_labels("own certificate spiffe://a/node/b"),
            ("certificate", "spiffe://a/node/b")
        );
        assert_eq!(expiry_labels("trusted CA Surrey CA"), ("ca", "Surrey CA"));
        assert_eq!(expiry_labels("CRL /etc/x.crl"), ("crl", "/etc/x.crl"));
        // Label values are escaped by the library as the text format wants.
        let mut registry = Registry::default();
        let name = Name::new("a\"b\\c\nd");
        registry.register("x", "x", gauges([(ExpiryLabels { kind: "ca", name }, 1)]));
        let mut out = String::new();
        encode_registry(&mut out, &registry).expect("encode");
        assert!(out.contains(r#"x{kind="ca",name="a\"b\\c\nd"} 1"#), "{out}");
    }
}
