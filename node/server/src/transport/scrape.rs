//! What a scrape reads besides the counters, and where it is served: the
//! gauges computed when scraped (health, certificate and CRL expiry, the TLS
//! generation, the store's size, records and last imports) and the plain
//! HTTP `GET /metrics` endpoint on `[metrics] listen`. Above `metrics` (the
//! counters), `tls` and `health`, which it reads.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::transport::health::Health;
use crate::transport::metrics::{Metrics, OTHER, escape, header};
use crate::transport::tls::TlsState;
use patchwork_store::Store;

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
pub struct ScrapeSources {
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

impl ScrapeSources {
    /// Everything, in the text format.
    pub async fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        header(
            &mut out,
            "patchwork_build_info",
            "gauge",
            "always 1; the node's software version and API version",
        );
        let _ = writeln!(
            out,
            "patchwork_build_info{{version=\"{}\",api=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            patchwork_proto::API_VERSION
        );
        header(
            &mut out,
            "patchwork_serving",
            "gauge",
            "1 while grpc.health.v1 reports SERVING; 0 while starting, draining or while the store fails",
        );
        let _ = writeln!(
            out,
            "patchwork_serving {}",
            u8::from(self.health.is_serving())
        );
        self.metrics.render_counters(&mut out);
        self.render_expiries(&mut out);
        self.render_store(&mut out).await;
        out
    }

    fn render_expiries(&self, out: &mut String) {
        let material = self.tls.current();
        let now = OffsetDateTime::now_utc();
        header(
            out,
            "patchwork_tls_expiry_days",
            "gauge",
            "whole days until the node's certificate, a trusted CA or a CRL (its nextUpdate) expires; negative once expired",
        );
        for expiry in &material.expiries {
            let (kind, name) = expiry_labels(&expiry.what);
            let _ = writeln!(
                out,
                "patchwork_tls_expiry_days{{kind=\"{kind}\",name=\"{}\"}} {}",
                escape(name),
                expiry.days_left(now)
            );
        }
        header(
            out,
            "patchwork_tls_generation",
            "gauge",
            "the TLS material's generation: 1 at start, one more for each successful reload",
        );
        let _ = writeln!(out, "patchwork_tls_generation {}", self.tls.generation());
        header(
            out,
            "patchwork_tls_reloads_refused_total",
            "counter",
            "reloads refused (SIGHUP or `patchwork reload`): TLS material, config or federation; what was in force stays in force",
        );
        let _ = writeln!(
            out,
            "patchwork_tls_reloads_refused_total {}",
            self.tls.reloads_refused()
        );
    }

    async fn render_store(&self, out: &mut String) {
        let Some(store) = self.store.get().cloned() else {
            return; // still starting
        };
        let read = tokio::task::spawn_blocking(move || {
            Ok::<_, patchwork_store::StoreError>(StoreGauges {
                bytes: store.size_on_disk()?,
                counts: store.counts()?,
                audit_entries: store.audit_len()?,
                last_imports: store.last_imports()?,
            })
        })
        .await;
        let gauges = match read {
            Ok(Ok(gauges)) => gauges,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "metrics: cannot read the store's gauges");
                return;
            }
            Err(_) => return,
        };
        header(
            out,
            "patchwork_store_size_bytes",
            "gauge",
            "the store's size on disk",
        );
        let _ = writeln!(out, "patchwork_store_size_bytes {}", gauges.bytes);
        header(
            out,
            "patchwork_store_records",
            "gauge",
            "records held, by kind",
        );
        let counts = gauges.counts;
        for (kind, count) in [
            ("persons", counts.persons),
            ("practitioners", counts.practitioners),
            ("organisations", counts.organisations),
            ("involvements", counts.involvements),
            ("active_involvements", counts.active_involvements),
        ] {
            let _ = writeln!(out, "patchwork_store_records{{kind=\"{kind}\"}} {count}");
        }
        header(
            out,
            "patchwork_audit_entries",
            "gauge",
            "entries in the hash-chained audit log",
        );
        let _ = writeln!(out, "patchwork_audit_entries {}", gauges.audit_entries);
        header(
            out,
            "patchwork_last_import_timestamp_seconds",
            "gauge",
            "when the last applied import of each kind finished (0: never); alert when it grows old",
        );
        let last = |kind: patchwork_store::Kind| {
            gauges
                .last_imports
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, last)| last.clone())
                .unwrap_or_default()
        };
        for kind in patchwork_store::last_import::IMPORT_KINDS {
            let _ = writeln!(
                out,
                "patchwork_last_import_timestamp_seconds{{kind=\"{kind}\"}} {}",
                last(kind).at_unix_seconds
            );
        }
        header(
            out,
            "patchwork_last_import_rows",
            "gauge",
            "rows of the last applied import of each kind, by outcome",
        );
        for kind in patchwork_store::last_import::IMPORT_KINDS {
            let last = last(kind);
            for (outcome, rows) in [
                ("created", last.created),
                ("updated", last.updated),
                ("unchanged", last.unchanged),
                ("bad", last.bad_rows),
            ] {
                let _ = writeln!(
                    out,
                    "patchwork_last_import_rows{{kind=\"{kind}\",outcome=\"{outcome}\"}} {rows}"
                );
            }
        }
    }
}

// ------------------------------------------------------------ HTTP endpoint

/// Scrapes served at once; more are closed at once.
const MAX_CONCURRENT_SCRAPES: usize = 8;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request read (line and headers).
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Binds `[metrics] listen`. A failure is logged, not fatal: a node that
/// cannot publish metrics must still answer practitioners.
pub async fn bind(listen: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(listen).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::error!(listen = %listen, error = %error, "metrics.listen: cannot listen; serving no metrics");
            None
        }
    }
}

/// Serves `GET /metrics` on `listener` until aborted. One request per
/// connection (`Connection: close`), which is all Prometheus needs.
pub fn serve(listener: TcpListener, sources: ScrapeSources) -> tokio::task::JoinHandle<()> {
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
                let _ = answer(stream, &sources).await;
            });
        }
    })
}

/// Reads the request line and headers (bounded in size and time).
async fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            head.extend_from_slice(&buf[..n]);
            if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
                return Some(());
            }
            if head.len() > MAX_REQUEST_BYTES {
                return None;
            }
        }
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.ok()??;
    String::from_utf8(head).ok()
}

async fn answer(mut stream: TcpStream, sources: &ScrapeSources) -> std::io::Result<()> {
    let Some(head) = read_request_head(&mut stream).await else {
        return Ok(());
    };
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            sources.render().await,
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET /metrics\n".to_owned(),
        ),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if method != "HEAD" {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
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
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
