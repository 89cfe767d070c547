//! The node's TLS: its own certificate and the trust bundle loaded from the
//! files the config names, swapped atomically on reload; the acceptor that
//! turns TCP connections into verified TLS connections for tonic; and the
//! record of who is on the other end of each connection.
//!
//! tonic's own TLS cannot check CRLs, so handshakes happen here (rustls via
//! tokio-rustls), each in its own task with a deadline, never on the accept
//! loop, within bounded slots: a short deadline for the ClientHello (idle
//! sockets), a share per source, and slots reserved for configured peers
//! and this machine, so no flood of sockets without a certificate can lock
//! a peer out. A connection remembers the trust generation it was verified under;
//! after a reload, or once a CRL reaches its nextUpdate, the next request on
//! it re-verifies its chain against the bundle in force, so a revoked peer,
//! or one whose CA's CRL went stale, loses access on live connections too.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
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

use crate::base::config::TlsSection;
use crate::base::error::{NodeError, read_private_key};
use crate::transport::metrics::HandshakeRefusal;

/// At most one warning about closed connections per this interval.
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How a CRL's [`Expiry`] begins.
const CRL_EXPIRY: &str = "CRL ";

/// Below how many whole days left an expiry (named `what`, as an [`Expiry`] names it) is
/// warned about, and what to do. One place, so the log, `trust status` and the guide's
/// alerts agree: a certificate is renewed with two weeks' notice; a CRL is republished
/// every few days (`patchwork ca crl` on a timer, 7-day CRLs by default), so a fresh one
/// must not warn at once — only when it has under 2 days left, as the alert says.
pub fn expiry_warning(what: &str, days_left: i64) -> Option<&'static str> {
    if what.starts_with(CRL_EXPIRY) {
        (days_left < 2).then_some("republish it now (patchwork ca crl)")
    } else {
        (days_left < 14).then_some("renew soon")
    }
}

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
    /// Each CRL's nextUpdate: a chain verified before one passes is
    /// verified again after, so a CRL that expires without a reload fails
    /// closed on live connections too, as it does for new handshakes.
    crl_next_updates: Vec<OffsetDateTime>,
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
        let crl_next_updates = trust_expiries
            .iter()
            .filter(|expiry| expiry.what.starts_with(CRL_EXPIRY))
            .map(|expiry| expiry.not_after)
            .collect();
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
            crl_next_updates,
        })
    }

    /// When a chain verified at `now` under this material must be verified
    /// again: the first CRL nextUpdate after `now` (unix seconds; webpki
    /// holds a CRL expired from that second on), or never.
    fn recheck_at(&self, now: OffsetDateTime) -> i64 {
        self.crl_next_updates
            .iter()
            .filter(|next| **next > now)
            .map(|next| next.unix_timestamp())
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Logs how long each certificate, CA and CRL has left; warns when one
    /// is close to its end.
    pub(crate) fn log_expiries(&self) {
        let now = OffsetDateTime::now_utc();
        for expiry in &self.expiries {
            let days_left = expiry.days_left(now);
            if let Some(advice) = expiry_warning(&expiry.what, days_left) {
                tracing::warn!(what = %expiry.what, days_left, not_after = %expiry.not_after.date(), advice, "expires soon");
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
                    what: format!("{CRL_EXPIRY}{}", path.display()),
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
    current: arc_swap::ArcSwap<TlsMaterial>,
    /// Moves on after each swap of `current` (a reader that saw the old
    /// number with the new material only rebuilds once more).
    generation: AtomicU64,
    /// Reloads refused since start, whatever asked (SIGHUP or `patchwork reload`): the
    /// operator alerts on it, since the old material stays in force silently.
    reloads_refused: AtomicU64,
}

impl TlsState {
    pub fn new(section: TlsSection, material: TlsMaterial) -> Self {
        TlsState {
            section,
            current: arc_swap::ArcSwap::from_pointee(material),
            generation: AtomicU64::new(1),
            reloads_refused: AtomicU64::new(0),
        }
    }

    pub(crate) fn reloads_refused(&self) -> u64 {
        self.reloads_refused.load(Ordering::SeqCst)
    }

    pub(crate) fn count_refused_reload(&self) {
        self.reloads_refused.fetch_add(1, Ordering::SeqCst);
    }

    pub fn current(&self) -> Arc<TlsMaterial> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Re-reads and checks every file without putting anything in force:
    /// the first half of a reload, which may still be refused for another
    /// reason (see `crate::work::reload`).
    pub(crate) fn load_checked(&self) -> Result<TlsMaterial, NodeError> {
        let material = TlsMaterial::load(&self.section)?;
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
        Ok(material)
    }

    /// Puts checked material in force for new handshakes; live connections
    /// re-verify on their next request.
    pub fn install(&self, material: Arc<TlsMaterial>) {
        self.current.store(material);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// Who is on the other end of one connection, as its verified certificate says.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    pub(crate) remote_addr: SocketAddr,
    /// The identity in the client certificate, or why it has none we accept.
    pub identity: Result<SpiffeId, String>,
    pub not_after: Option<OffsetDateTime>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    verified_generation: Arc<AtomicU64>,
    /// When the chain must be verified again even without a reload (unix
    /// seconds): the next CRL nextUpdate after it was last verified.
    recheck_at: Arc<AtomicI64>,
}

impl PeerConnection {
    /// Checks that the connection's certificate is still trusted under the
    /// material in force: still valid now, and — if the trust bundle changed
    /// or a CRL reached its nextUpdate since it was last checked — passing
    /// the bundle now (an expired CRL fails closed).
    pub(crate) fn still_trusted(&self, tls: &TlsState) -> Result<(), String> {
        let now = OffsetDateTime::now_utc();
        if self.not_after.is_some_and(|t| t < now) {
            return Err("the client certificate has expired".into());
        }
        let generation = tls.generation();
        if self.verified_generation.load(Ordering::SeqCst) == generation
            && now.unix_timestamp() < self.recheck_at.load(Ordering::SeqCst)
        {
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
        self.recheck_at
            .store(material.recheck_at(now), Ordering::SeqCst);
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
    material: &TlsMaterial,
    generation: u64,
) -> PeerConnection {
    let trust = &material.trust;
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
        recheck_at: Arc::new(AtomicI64::new(
            material.recheck_at(OffsetDateTime::now_utc()),
        )),
    }
}

/// The handshake limits `[tls]` sets.
#[derive(Debug, Clone)]
pub struct HandshakeLimits {
    /// For the whole handshake, ClientHello included.
    pub(crate) handshake_timeout: Duration,
    /// For the ClientHello: a socket that has not sent it by then is idle.
    pub(crate) client_hello_timeout: Duration,
    /// Handshakes in progress at once, in all.
    pub total: usize,
    /// Of `total`, the slots only priority sources may take.
    pub reserved: usize,
    /// Handshakes in progress at once from one source in the shared slots.
    pub per_source: usize,
}

impl HandshakeLimits {
    /// The limits of a validated `[tls]` section.
    pub fn new(tls: &TlsSection) -> Self {
        HandshakeLimits {
            handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms),
            client_hello_timeout: Duration::from_millis(tls.client_hello_timeout_ms),
            total: tls.max_handshakes,
            reserved: tls.reserved_handshakes,
            per_source: tls.max_handshakes_per_source,
        }
    }
}

/// How often configured peers' addresses are resolved again (their DNS may
/// change while the node runs).
const PRIORITY_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// The sources that may take the reserved handshake slots: the node's
/// configured peers and its own machine. Strangers, however many addresses
/// they hold, cannot take those slots, so a flood of idle or slow sockets
/// never locks a peer out.
#[derive(Debug, Clone, Default)]
pub struct PrioritySources {
    hosts: Arc<RwLock<HashSet<IpAddr>>>,
}

impl PrioritySources {
    fn contains(&self, host: IpAddr) -> bool {
        self.hosts.read().contains(&host)
    }

    fn replace(&self, addresses: impl IntoIterator<Item = IpAddr>) {
        let hosts: HashSet<IpAddr> = addresses.into_iter().map(host_of).collect();
        *self.hosts.write() = hosts;
    }

    /// Gives priority to `fixed` and this machine's loopback addresses at
    /// once, and to what each "host:port" of `peer_addresses` resolves to,
    /// now and every [`PRIORITY_REFRESH_INTERVAL`]. A name that fails to
    /// resolve keeps what it resolved to last.
    pub(crate) fn spawn_refresh(
        &self,
        fixed: Vec<IpAddr>,
        mut peer_addresses: tokio::sync::watch::Receiver<Vec<String>>,
    ) -> tokio::task::JoinHandle<()> {
        let mut always = fixed;
        always.push(IpAddr::from([127, 0, 0, 1]));
        always.push(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        self.replace(always.iter().copied());
        let this = self.clone();
        tokio::spawn(async move {
            let mut resolved: HashMap<String, Vec<IpAddr>> = HashMap::new();
            loop {
                let addresses = peer_addresses.borrow_and_update().clone();
                // A peer a reload removed loses its reserved slots.
                resolved.retain(|address, _| addresses.contains(address));
                for address in &addresses {
                    match tokio::net::lookup_host(address.as_str()).await {
                        Ok(found) => {
                            resolved.insert(address.clone(), found.map(|a| a.ip()).collect());
                        }
                        Err(error) => {
                            tracing::warn!(address = %address, error = %error, "cannot resolve a peer's address: its handshakes get no reserved slot until it resolves");
                        }
                    }
                }
                this.replace(
                    always
                        .iter()
                        .copied()
                        .chain(resolved.values().flatten().copied()),
                );
                // Again after the interval, or at once when a reload changes
                // the peers (a closed channel: the interval only).
                tokio::select! {
                    () = tokio::time::sleep(PRIORITY_REFRESH_INTERVAL) => {}
                    Ok(()) = peer_addresses.changed() => {}
                }
            }
        })
    }
}

/// Why a new connection got no handshake slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoSlot {
    /// Every slot it may take is taken.
    Node,
    /// Its source holds its share of the shared slots.
    Source,
}

/// The handshakes in progress: the shared slots, at most
/// `per_source_limit` of them from one source, and the reserved ones only
/// priority sources take (first, before any shared slot).
#[derive(Clone)]
struct HandshakeSlots {
    shared: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    per_source: SourceCounts,
    per_source_limit: usize,
    priority: PrioritySources,
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

/// Shared slots held per source.
type SourceCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One handshake's slot, given back when dropped.
struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    /// The source's count of shared slots, for a shared slot.
    counted: Option<(IpAddr, SourceCounts)>,
}

impl HandshakeSlots {
    fn new(limits: &HandshakeLimits, priority: PrioritySources) -> Self {
        HandshakeSlots {
            shared: Arc::new(Semaphore::new(limits.total.saturating_sub(limits.reserved))),
            reserved: Arc::new(Semaphore::new(limits.reserved)),
            per_source: Arc::new(Mutex::new(HashMap::new())),
            per_source_limit: limits.per_source,
            priority,
        }
    }

    fn try_acquire(&self, ip: IpAddr) -> Result<HandshakeSlot, NoSlot> {
        let host = host_of(ip);
        if self.priority.contains(host)
            && let Ok(permit) = self.reserved.clone().try_acquire_owned()
        {
            return Ok(HandshakeSlot {
                _permit: permit,
                counted: None,
            });
        }
        let mut per_source = self.per_source.lock();
        if per_source
            .get(&host)
            .is_some_and(|count| *count >= self.per_source_limit)
        {
            return Err(NoSlot::Source);
        }
        let permit = self
            .shared
            .clone()
            .try_acquire_owned()
            .map_err(|_| NoSlot::Node)?;
        *per_source.entry(host).or_insert(0) += 1;
        Ok(HandshakeSlot {
            _permit: permit,
            counted: Some((host, self.per_source.clone())),
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let Some((host, per_source)) = &self.counted else {
            return;
        };
        let mut per_source = per_source.lock();
        if let Some(count) = per_source.get_mut(host) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(host);
            }
        }
    }
}

/// Counts connections closed before their handshake (no slot, or idle) and
/// warns about them at most once per [`FULL_WARNING_INTERVAL`] (a flood
/// must not flood the log).
#[derive(Default)]
struct ClosedEarly {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl ClosedEarly {
    fn note(&mut self, remote_addr: SocketAddr, why: &'static str) {
        self.since_warning += 1;
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
                "connections closed before their handshake: a connection flood or idle sockets"
            );
            self.since_warning = 0;
            self.last_warning = Some(now);
        }
    }
}

/// Accepts TCP connections on `listener` and yields the ones whose TLS
/// handshake succeeds in time. A connection that finds no slot (see
/// [`HandshakeSlots`]) is closed at once: waiting for one would stall the
/// accept loop, and everyone behind it. One that has not sent its whole
/// ClientHello within `client_hello_timeout` is closed as idle, so idle
/// sockets hold a slot briefly; the rest of the handshake has until
/// `handshake_timeout`. Every refusal is counted in `metrics`; refused
/// handshakes are logged with the peer's address and the reason.
pub fn accept_tls(
    listener: TcpListener,
    tls: Arc<TlsState>,
    limits: HandshakeLimits,
    priority: PrioritySources,
    metrics: Arc<crate::transport::metrics::Metrics>,
) -> (
    ReceiverStream<Result<PeerStream, std::io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (sender, receiver) = mpsc::channel(64);
    let slots = HandshakeSlots::new(&limits, priority);
    let closed = Arc::new(Mutex::new(ClosedEarly::default()));
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
                    let (reason, text) = match why {
                        NoSlot::Node => (HandshakeRefusal::NoSlot, "every handshake slot is taken"),
                        NoSlot::Source => (
                            HandshakeRefusal::PerSourceLimit,
                            "too many handshakes from this address",
                        ),
                    };
                    metrics.handshake_refused(reason);
                    closed.lock().note(remote_addr, text);
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let generation = tls.generation();
            let material = tls.current();
            let sender = sender.clone();
            let metrics = metrics.clone();
            let closed = closed.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let started = tokio::time::Instant::now();
                let deadline = started + limits.handshake_timeout;
                let hello_by = started + limits.client_hello_timeout.min(limits.handshake_timeout);
                let hello = tokio::time::timeout_at(
                    hello_by,
                    tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp),
                )
                .await;
                let start = match hello {
                    Ok(Ok(start)) => start,
                    Ok(Err(error)) => {
                        metrics.handshake_refused(HandshakeRefusal::Refused);
                        tracing::warn!(peer = %remote_addr, error = %error, "tls handshake refused");
                        return;
                    }
                    Err(_) => {
                        metrics.handshake_refused(HandshakeRefusal::Idle);
                        closed
                            .lock()
                            .note(remote_addr, "no tls client hello in time");
                        return;
                    }
                };
                let accept = start
                    .into_stream(material.server_config.clone())
                    .into_fallible();
                match tokio::time::timeout_at(deadline, accept).await {
                    Ok(Ok(stream)) => {
                        metrics.handshake_accepted();
                        let peer = peer_connection(remote_addr, &stream, &material, generation);
                        let _ = sender
                            .send(Ok(PeerStream {
                                inner: stream,
                                peer,
                            }))
                            .await;
                    }
                    Ok(Err((error, tcp))) => {
                        metrics.handshake_refused(HandshakeRefusal::Refused);
                        tracing::warn!(peer = %remote_addr, error = %error, "tls handshake refused");
                        linger(tcp).await;
                    }
                    Err(_) => {
                        metrics.handshake_refused(HandshakeRefusal::TimedOut);
                        tracing::warn!(peer = %remote_addr, timeout_ms = limits.handshake_timeout.as_millis() as u64, "tls handshake timed out");
                    }
                }
            });
        }
    });
    (ReceiverStream::new(receiver), task)
}

/// Closes a refused connection so the client reads our TLS alert (and so
/// can say why it was refused): closing a socket with unread data (a TLS
/// 1.3 client sends its request right after its certificate) makes the
/// kernel send a reset, which can discard the alert before the client reads
/// it. So: our side shut first, then the client's bytes read and dropped
/// until it closes too, for at most [`LINGER`] and 64 KiB.
async fn linger(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tcp.shutdown().await.is_err() {
        return;
    }
    let mut buffer = [0_u8; 4096];
    let drained = async {
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drained).await;
}

/// How long a refused connection is drained before it is closed.
const LINGER: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn limits(total: usize, reserved: usize, per_source: usize) -> HandshakeLimits {
        HandshakeLimits {
            handshake_timeout: Duration::from_secs(10),
            client_hello_timeout: Duration::from_secs(2),
            total,
            reserved,
            per_source,
        }
    }

    #[test]
    fn handshake_slots_are_capped_per_host_and_in_all_and_given_back() {
        let slots = HandshakeSlots::new(&limits(5, 0, 2), PrioritySources::default());
        let a1 = slots.try_acquire(ip("10.0.0.1")).expect("first from a");
        let _a2 = slots
            .try_acquire(ip("::ffff:10.0.0.1"))
            .expect("second from a");
        assert_eq!(
            slots.try_acquire(ip("10.0.0.1")).err(),
            Some(NoSlot::Source),
            "a third from the same host"
        );
        let _b1 = slots.try_acquire(ip("2001:db8::1")).expect("first from b");
        let _b2 = slots.try_acquire(ip("2001:db8::2")).expect("same /64");
        assert_eq!(
            slots.try_acquire(ip("2001:db8::3")).err(),
            Some(NoSlot::Source)
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

    #[test]
    fn reserved_slots_go_only_to_priority_sources_and_strangers_cannot_take_them() {
        let priority = PrioritySources::default();
        priority.replace([ip("10.0.0.9")]);
        let slots = HandshakeSlots::new(&limits(6, 2, 2), priority);
        // Two strangers take every shared slot.
        let strangers: Vec<_> = ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"]
            .iter()
            .map(|a| slots.try_acquire(ip(a)).expect("a shared slot"))
            .collect();
        assert_eq!(slots.try_acquire(ip("10.0.0.3")).err(), Some(NoSlot::Node));
        // The peer still gets the reserved ones, beyond the per-source share.
        let p1 = slots.try_acquire(ip("10.0.0.9")).expect("reserved");
        let _p2 = slots.try_acquire(ip("10.0.0.9")).expect("reserved");
        assert_eq!(slots.try_acquire(ip("10.0.0.9")).err(), Some(NoSlot::Node));
        // A reserved slot given back is not counted against the peer's share.
        drop(p1);
        let _p3 = slots.try_acquire(ip("10.0.0.9")).expect("reserved again");
        drop(strangers);
        // With shared slots free, a stranger takes one and the peer its own
        // reserved ones first.
        assert!(slots.try_acquire(ip("10.0.0.3")).is_ok());
    }
}
