//! The node's TLS: its own certificate and the trust bundle loaded from the
//! files the config names, swapped atomically on reload; the acceptor that
//! turns TCP connections into verified TLS connections for tonic; and the
//! record of who is on the other end of each connection.
//!
//! tonic's own TLS cannot check CRLs, so handshakes happen here (rustls via
//! tokio-rustls), each in its own task with a deadline, never on the accept
//! loop. A connection remembers the trust generation it was verified under;
//! after a reload the first request on it re-verifies its chain against the
//! new bundle, so a revoked peer loses access on live connections too.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use patchwork_certs::{
    OwnCertificate, SpiffeId, TrustBundle, certs_from_pem, private_key_from_pem, summarize_cert_der,
};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::config::TlsSection;
use crate::metrics::HandshakeRefusal;
use crate::server::{NodeError, read_private_key};

/// Handshakes in progress at once (a flood of slow handshakes cannot starve
/// the node of memory). A connection arriving when all are taken is closed
/// at once rather than queued: waiting for a slot would stall the accept
/// loop, and everyone behind it, for up to the handshake timeout.
const MAX_CONCURRENT_HANDSHAKES: usize = 512;
/// Handshakes in progress from one IP address at once, so one host opening
/// idle connections cannot take every slot.
const MAX_HANDSHAKES_PER_IP: usize = 32;
/// At most one warning about closed connections per this interval.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

fn key_error(key: &'static str, message: impl Into<String>) -> NodeError {
    NodeError::KeyMaterial {
        key,
        message: message.into(),
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| key_error(key, format!("cannot read {}: {e}", path.display())))
}

/// How long something the node relies on has left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// e.g. "own certificate", "trusted CA Surrey County Council CA", "CRL of ...".
    pub what: String,
    pub not_after: OffsetDateTime,
}

impl Expiry {
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }
}

/// Everything TLS needs at one moment; replaced whole on reload.
#[derive(Debug)]
pub struct TlsMaterial {
    pub own: OwnCertificate,
    pub trust: TrustBundle,
    pub server_config: Arc<rustls::ServerConfig>,
    pub min_version: patchwork_certs::MinTlsVersion,
    pub expiries: Vec<Expiry>,
}

impl TlsMaterial {
    /// Reads and checks everything `tls` names. Refuses an own certificate
    /// that has expired or whose key does not fit, a key file others can
    /// read, an empty bundle, and unreadable or expired CRLs.
    pub fn load(tls: &TlsSection) -> Result<Self, NodeError> {
        let (chain, own_summary) = read_own_chain(tls)?;
        let key = private_key_from_pem(&read_private_key("tls.key_file", &tls.key_file)?)
            .map_err(|e| key_error("tls.key_file", e.to_string()))?;
        let own = OwnCertificate::new(chain, key)
            .map_err(|e| key_error("tls.cert_file", e.to_string()))?;
        let (trust, trust_expiries) = load_trust(tls)?;
        let mut expiries = vec![Expiry {
            what: format!("own certificate {}", own.identity()),
            not_after: own_summary.not_after,
        }];
        expiries.extend(trust_expiries);
        let min_version = tls.min_version.into();
        let server_config = patchwork_certs::server_config(&own, &trust, min_version)
            .map_err(|e| key_error("tls.cert_file", e.to_string()))?;
        Ok(TlsMaterial {
            own,
            trust,
            server_config: Arc::new(server_config),
            min_version,
            expiries,
        })
    }

    /// Logs how long each certificate, CA and CRL has left; warns when one
    /// is close to its end.
    pub fn log_expiries(&self) {
        let now = OffsetDateTime::now_utc();
        for expiry in &self.expiries {
            let days_left = expiry.days_left(now);
            // CRLs are republished often; certificates are renewed with notice.
            let warn_below = if expiry.what.starts_with("CRL") {
                2
            } else {
                14
            };
            if days_left < warn_below {
                tracing::warn!(what = %expiry.what, days_left, not_after = %expiry.not_after.date(), "expires soon: renew it");
            } else {
                tracing::info!(what = %expiry.what, days_left, "valid");
            }
        }
    }
}

/// The node's own certificate chain, refused if it has expired.
pub fn read_own_chain(
    tls: &TlsSection,
) -> Result<
    (
        Vec<CertificateDer<'static>>,
        patchwork_certs::CertificateSummary,
    ),
    NodeError,
> {
    let chain = certs_from_pem(&read_file("tls.cert_file", &tls.cert_file)?)
        .map_err(|e| key_error("tls.cert_file", e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| key_error("tls.cert_file", "holds no certificate"))?;
    let summary =
        summarize_cert_der(leaf.as_ref()).map_err(|e| key_error("tls.cert_file", e.to_string()))?;
    if summary.not_after < OffsetDateTime::now_utc() {
        return Err(key_error(
            "tls.cert_file",
            format!(
                "the node's certificate expired on {}",
                summary.not_after.date()
            ),
        ));
    }
    Ok((chain, summary))
}

/// The trust bundle and CRLs `tls` names, with how long each has left.
/// Refuses a file that holds no CA, a certificate that is not a CA, and an
/// unreadable or expired CRL.
pub fn load_trust(tls: &TlsSection) -> Result<(TrustBundle, Vec<Expiry>), NodeError> {
    let now = OffsetDateTime::now_utc();
    let mut expiries = Vec::new();
    let mut cas = Vec::new();
    for path in &tls.trust_bundle {
        let found = certs_from_pem(&read_file("tls.trust_bundle", path)?)
            .map_err(|e| key_error("tls.trust_bundle", format!("{}: {e}", path.display())))?;
        for ca in found {
            let summary = summarize_cert_der(ca.as_ref())
                .map_err(|e| key_error("tls.trust_bundle", format!("{}: {e}", path.display())))?;
            if !summary.is_ca {
                return Err(key_error(
                    "tls.trust_bundle",
                    format!(
                        "{}: {} is not a CA certificate",
                        path.display(),
                        summary.subject
                    ),
                ));
            }
            expiries.push(Expiry {
                what: format!("trusted CA {}", summary.subject),
                not_after: summary.not_after,
            });
            cas.push(ca);
        }
    }
    let mut crls: Vec<CertificateRevocationListDer<'static>> = Vec::new();
    for path in &tls.crl_files {
        let pem = read_file("tls.crl_files", path)?;
        let found = patchwork_certs::crls_from_pem(&pem)
            .map_err(|e| key_error("tls.crl_files", format!("{}: {e}", path.display())))?;
        for crl in found {
            if let Some(next_update) = crl_next_update(&crl) {
                if next_update < now {
                    return Err(key_error(
                        "tls.crl_files",
                        format!(
                            "{} expired on {}: publish a fresh CRL",
                            path.display(),
                            next_update.date()
                        ),
                    ));
                }
                expiries.push(Expiry {
                    what: format!("CRL {}", path.display()),
                    not_after: next_update,
                });
            }
            crls.push(crl);
        }
    }
    let trust =
        TrustBundle::new(cas, crls).map_err(|e| key_error("tls.trust_bundle", e.to_string()))?;
    Ok((trust, expiries))
}

/// A CRL's nextUpdate, read with the certs crate's parser.
fn crl_next_update(crl: &CertificateRevocationListDer<'_>) -> Option<OffsetDateTime> {
    patchwork_certs::summarize_crl_der(crl.as_ref())
        .ok()
        .and_then(|s| s.next_update)
}

/// The TLS material in force, and a generation number that changes with it.
#[derive(Debug)]
pub struct TlsState {
    section: TlsSection,
    current: RwLock<Arc<TlsMaterial>>,
    generation: AtomicU64,
}

impl TlsState {
    pub fn new(section: TlsSection, material: TlsMaterial) -> Self {
        TlsState {
            section,
            current: RwLock::new(Arc::new(material)),
            generation: AtomicU64::new(1),
        }
    }

    pub fn current(&self) -> Arc<TlsMaterial> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Re-reads every file; on success the new material is in force for new
    /// handshakes at once, and live connections re-verify on their next
    /// request. On failure nothing changes and the error says why.
    pub fn reload(&self) -> Result<Arc<TlsMaterial>, NodeError> {
        let material = Arc::new(TlsMaterial::load(&self.section)?);
        let old_identity = self.current().own.identity().clone();
        if material.own.identity() != &old_identity {
            return Err(key_error(
                "tls.cert_file",
                format!(
                    "the new certificate is for {}, this node is {old_identity}; restart to change identity",
                    material.own.identity()
                ),
            ));
        }
        match self.current.write() {
            Ok(mut guard) => *guard = material.clone(),
            Err(poisoned) => *poisoned.into_inner() = material.clone(),
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(material)
    }
}

/// Who is on the other end of one connection, as its verified certificate says.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    pub remote_addr: SocketAddr,
    /// The identity in the client certificate, or why it has none we accept.
    pub identity: Result<SpiffeId, String>,
    pub not_after: Option<OffsetDateTime>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    verified_generation: Arc<AtomicU64>,
}

impl PeerConnection {
    /// Checks that the connection's certificate is still trusted under the
    /// material in force: still valid now, and — if the trust bundle changed
    /// since it was last checked — passing the new bundle.
    pub fn still_trusted(&self, tls: &TlsState) -> Result<(), String> {
        if self
            .not_after
            .is_some_and(|t| t < OffsetDateTime::now_utc())
        {
            return Err("the client certificate has expired".into());
        }
        let generation = tls.generation();
        if self.verified_generation.load(Ordering::SeqCst) == generation {
            return Ok(());
        }
        let material = tls.current();
        let identity = material
            .trust
            .verify_client_chain(&self.chain, UnixTime::now())
            .map_err(|e| format!("the client certificate is no longer trusted: {e}"))?;
        if self.identity.as_ref().ok() != Some(&identity) {
            return Err(
                "the client certificate's identity changed meaning under the new trust bundle"
                    .into(),
            );
        }
        self.verified_generation.store(generation, Ordering::SeqCst);
        Ok(())
    }
}

/// A verified TLS connection handed to tonic, carrying its [`PeerConnection`]
/// into every request's extensions.
pub struct PeerStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerConnection,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerConnection;

    fn connect_info(&self) -> PeerConnection {
        self.peer.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn peer_connection(
    remote_addr: SocketAddr,
    stream: &tokio_rustls::server::TlsStream<TcpStream>,
    trust: &TrustBundle,
    generation: u64,
) -> PeerConnection {
    let chain: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let (identity, not_after) = match chain.first() {
        Some(leaf) => (
            trust.identity_of(leaf).map_err(|e| e.to_string()),
            summarize_cert_der(leaf.as_ref()).ok().map(|s| s.not_after),
        ),
        None => (Err("no client certificate".to_owned()), None),
    };
    PeerConnection {
        remote_addr,
        identity,
        not_after,
        chain: Arc::new(chain),
        verified_generation: Arc::new(AtomicU64::new(generation)),
    }
}

/// Why a new connection got no handshake slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoSlot {
    Node,
    Peer,
}

/// The handshakes in progress: at most [`MAX_CONCURRENT_HANDSHAKES`] in all
/// and [`MAX_HANDSHAKES_PER_IP`] from one address.
#[derive(Clone)]
struct HandshakeSlots {
    total: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    per_ip_limit: usize,
}

/// The address that stands for one host: an IPv4 address as itself (also
/// when mapped into IPv6), an IPv6 address as its /64, which one host
/// usually holds whole.
fn host_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// One handshake's slot, given back when dropped.
struct HandshakeSlot {
    _total: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl HandshakeSlots {
    fn new(total: usize, per_ip_limit: usize) -> Self {
        HandshakeSlots {
            total: Arc::new(Semaphore::new(total)),
            per_ip: Arc::new(Mutex::new(HashMap::new())),
            per_ip_limit,
        }
    }

    fn try_acquire(&self, ip: IpAddr) -> Result<HandshakeSlot, NoSlot> {
        let ip = host_of(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if per_ip
            .get(&ip)
            .is_some_and(|count| *count >= self.per_ip_limit)
        {
            return Err(NoSlot::Peer);
        }
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| NoSlot::Node)?;
        *per_ip.entry(ip).or_insert(0) += 1;
        Ok(HandshakeSlot {
            _total: total,
            ip,
            per_ip: self.per_ip.clone(),
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Counts connections closed for want of a slot and warns about them at
/// most once per [`FULL_WARNING_INTERVAL`] (a flood must not flood the log).
#[derive(Default)]
struct ClosedForWantOfSlot {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl ClosedForWantOfSlot {
    fn note(&mut self, remote_addr: SocketAddr, why: NoSlot) {
        self.since_warning += 1;
        let why = match why {
            NoSlot::Node => "every handshake slot is taken",
            NoSlot::Peer => "too many handshakes from this address",
        };
        tracing::debug!(peer = %remote_addr, reason = why, "connection closed before its handshake");
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= FULL_WARNING_INTERVAL)
        {
            tracing::warn!(
                peer = %remote_addr,
                reason = why,
                closed = self.since_warning,
                "connections closed before their handshake: too many handshakes in progress"
            );
            self.since_warning = 0;
            self.last_warning = Some(now);
        }
    }
}

/// Accepts TCP connections on `listener` and yields the ones whose TLS
/// handshake succeeds within `handshake_timeout`. Refused handshakes are
/// logged (with the peer's address and the reason), counted in `metrics` and
/// dropped; so are connections that find no handshake slot (see
/// [`MAX_CONCURRENT_HANDSHAKES`]).
pub fn accept_tls(
    listener: TcpListener,
    tls: Arc<TlsState>,
    handshake_timeout: Duration,
    metrics: Arc<crate::metrics::Metrics>,
) -> (
    ReceiverStream<Result<PeerStream, std::io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (sender, receiver) = mpsc::channel(64);
    let slots = HandshakeSlots::new(MAX_CONCURRENT_HANDSHAKES, MAX_HANDSHAKES_PER_IP);
    let mut closed = ClosedForWantOfSlot::default();
    let task = tokio::spawn(async move {
        loop {
            let (tcp, remote_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: back off rather than spin.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match slots.try_acquire(remote_addr.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    metrics.handshake_refused(HandshakeRefusal::NoSlot);
                    closed.note(remote_addr, why);
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let generation = tls.generation();
            let material = tls.current();
            let acceptor = tokio_rustls::TlsAcceptor::from(material.server_config.clone());
            let sender = sender.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        metrics.handshake_accepted();
                        let peer =
                            peer_connection(remote_addr, &stream, &material.trust, generation);
                        let _ = sender
                            .send(Ok(PeerStream {
                                inner: stream,
                                peer,
                            }))
                            .await;
                    }
                    Ok(Err(error)) => {
                        metrics.handshake_refused(HandshakeRefusal::Refused);
                        tracing::warn!(peer = %remote_addr, error = %error, "tls handshake refused");
                    }
                    Err(_) => {
                        metrics.handshake_refused(HandshakeRefusal::TimedOut);
                        tracing::warn!(peer = %remote_addr, timeout_ms = handshake_timeout.as_millis() as u64, "tls handshake timed out");
                    }
                }
            });
        }
    });
    (ReceiverStream::new(receiver), task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn handshake_slots_are_capped_per_host_and_in_all_and_given_back() {
        let slots = HandshakeSlots::new(5, 2);
        let a1 = slots.try_acquire(ip("10.0.0.1")).expect("first from a");
        let _a2 = slots
            .try_acquire(ip("::ffff:10.0.0.1"))
            .expect("second from a");
        assert_eq!(
            slots.try_acquire(ip("10.0.0.1")).err(),
            Some(NoSlot::Peer),
            "a third from the same host"
        );
        let _b1 = slots.try_acquire(ip("2001:db8::1")).expect("first from b");
        let _b2 = slots.try_acquire(ip("2001:db8::2")).expect("same /64");
        assert_eq!(
            slots.try_acquire(ip("2001:db8::3")).err(),
            Some(NoSlot::Peer)
        );
        let _c1 = slots.try_acquire(ip("10.0.0.3")).expect("fifth in all");
        assert_eq!(
            slots.try_acquire(ip("10.0.0.4")).err(),
            Some(NoSlot::Node),
            "every slot taken"
        );
        drop(a1);
        let d1 = slots
            .try_acquire(ip("10.0.0.4"))
            .expect("a slot given back is free again");
        assert_eq!(slots.try_acquire(ip("10.0.0.1")).err(), Some(NoSlot::Node));
        drop(d1);
        assert!(
            slots.try_acquire(ip("10.0.0.1")).is_ok(),
            "a's count went down"
        );
    }
}
