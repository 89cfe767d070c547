//! The node's configuration: one TOML file, unknown keys rejected, every error
//! naming its key. Loading is a pure function of the file's text and folder
//! (relative paths are resolved against the folder the file is in), so tests
//! never touch the process environment.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use patchwork_certs::SpiffeId;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {0}")]
    Parse(String),
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub tls: TlsSection,
    pub api: ApiSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub cli: CliSection,
    #[serde(default)]
    pub federation: FederationSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// What the council's retention schedule deletes, and when.
    #[serde(default)]
    pub retention: RetentionSection,
    /// Bulk imports.
    #[serde(default)]
    pub import: ImportSection,
    /// Where team events are pushed (`[[webhooks]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookEntry>,
    /// The file this config was read from, which a reload reads again
    /// (`None` for a config made in code).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// A council system team events are POSTed to, signed with a shared secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    /// `https://host[:port]/path` (`http://` only with `allow_http`, to a
    /// receiver on this machine). The events carry personal data.
    pub url: String,
    /// At least 32 random bytes, hex-encoded, mode 0600: the HMAC-SHA256 key
    /// of the `X-Patchwork-Signature` header.
    pub secret_file: PathBuf,
    /// Whose events: `"all"`, or a list of practitioner ids.
    #[serde(default)]
    pub practitioners: WebhookPractitioners,
    /// CA certificates (PEM) to trust for this receiver *instead of* the
    /// public web PKI: for a receiver with a private CA's certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Plain http, allowed only to a loopback receiver (127.0.0.0/8, ::1,
    /// `localhost`): e.g. a local relay. Never across a network.
    #[serde(default)]
    pub allow_http: bool,
}

/// A webhook URL, checked: https (or http to loopback with `allow_http`), a
/// host, no user name or password, no fragment, no control characters or
/// whitespace (the URL parser would silently drop CR, LF and tab, and a
/// hand-built request would send them: header injection). Returns the
/// parsed URL or the message for `webhooks[i].url`.
pub(crate) fn parse_webhook_url(text: &str, allow_http: bool) -> Result<url::Url, String> {
    if let Some(bad) = text.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "must not contain whitespace or control characters (found U+{:04X})",
            u32::from(bad)
        ));
    }
    let url = url::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    let host = match url.host() {
        Some(host) => host,
        None => return Err("needs a host".into()),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry a user name or password (the signature authenticates the node)".into(),
        );
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if !allow_http => Err(
            "is plain http: use https, or set allow_http = true for a receiver on this machine (loopback only)"
                .into(),
        ),
        "http" if !is_loopback(&host) => Err(format!(
            "is plain http to {host}: allow_http is only for a loopback receiver (127.0.0.1, ::1, localhost); use https"
        )),
        "http" => Ok(url),
        other => Err(format!("must be https:// (not {other}://)")),
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// `practitioners = "all"` or `practitioners = ["PR1", ...]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WebhookPractitioners {
    All(String),
    Only(Vec<String>),
}

impl Default for WebhookPractitioners {
    fn default() -> Self {
        WebhookPractitioners::All("all".into())
    }
}

impl WebhookPractitioners {
    /// Whether an event for `practitioner_id` goes to this webhook.
    pub fn includes(&self, practitioner_id: &str) -> bool {
        match self {
            WebhookPractitioners::All(_) => true,
            WebhookPractitioners::Only(ids) => ids.iter().any(|id| id == practitioner_id),
        }
    }
}

/// The Prometheus metrics endpoint: plain HTTP, no TLS and no client
/// certificates, so it belongs on loopback or a management network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `GET /metrics` at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Where it listens, e.g. "127.0.0.1:9464" (an IP address, not a host name).
    #[serde(
        default = "default_metrics_listen",
        deserialize_with = "listen_address"
    )]
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            listen: default_metrics_listen(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// Why a listen address must be an IP literal, in the words an operator
/// sees (shared with `patchwork config init`).
pub(crate) const LISTEN_ADDRESS_RULE: &str = "must be an IP address and port, such as 0.0.0.0:7443, \
     10.1.2.3:7443 or [::]:7443; host names are not accepted (a name can resolve \
     to several addresses, or change, and the node listens on exactly one)";

/// Parses a listen address, refusing a host name with [`LISTEN_ADDRESS_RULE`].
pub fn parse_listen_address(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} {LISTEN_ADDRESS_RULE}"))
}

fn listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen_address(&text).map_err(serde::de::Error::custom)
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

/// Which other nodes this node asks and answers, and on what terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// How long a lookup waits for peers when the request does not say (ms).
    #[serde(default = "default_peer_deadline_ms")]
    pub default_deadline_ms: u32,
    /// Peer calls in flight at once across all lookups.
    #[serde(default = "default_max_concurrent_calls")]
    pub(crate) max_concurrent_calls: usize,
    /// How long a peer that failed several lookups in a row is skipped
    /// before one trial call (its circuit breaker's cool-down, ms).
    #[serde(default = "default_breaker_cool_down_ms")]
    pub breaker_cool_down_ms: u32,
    /// How often this node polls peers for its cross-border subscriptions'
    /// notifications (ms, 50-600000).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u32,
    /// How often this node witnesses its peers' audit logs: fetches each
    /// one's signed checkpoint with a consistency proof, verifies it and
    /// cosigns it (ms, 100-86400000; default 5 minutes).
    #[serde(default = "default_witness_interval_ms")]
    pub witness_interval_ms: u32,
    /// When peers' queries look like enumeration, and are paused.
    #[serde(default)]
    pub enumeration: EnumerationSection,
    /// Secrets shared with groups of nodes, under which match keys are made.
    #[serde(default)]
    pub key_sets: Vec<KeySetEntry>,
    #[serde(default)]
    pub peers: Vec<PeerEntry>,
}

/// `[federation.enumeration]`: the rules that pause a peer whose queries
/// look like a sweep for persons (each rule alone pauses; see
/// `patchwork_federation::hostile::EnumerationPolicy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumerationSection {
    /// Miss-ratio rules, short and long windows (replacing the defaults
    /// when given): 10 min / 50 / 0.9, 60 min / 150 / 0.9, 1440 min / 500 / 0.9.
    #[serde(default = "default_miss_windows")]
    pub windows: Vec<MissWindowEntry>,
    /// Distinct queries a peer may ask in 24 hours (1-100000).
    #[serde(default = "default_daily_distinct_queries")]
    pub daily_distinct_queries: u32,
    /// Distinct queries a peer may have answered "ambiguous" in 24 hours
    /// (1-100000): each tells it someone like that is held here.
    #[serde(default = "default_daily_ambiguous")]
    pub daily_ambiguous: u32,
    /// Distinct queries one key may appear in within 24 hours before it
    /// counts as a sweep around it (2-100000).
    #[serde(default = "default_sweep_variants")]
    pub sweep_variants: u32,
}

/// One miss-ratio rule of `[federation.enumeration]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissWindowEntry {
    /// The window, in whole minutes (1-1440).
    pub minutes: u32,
    /// More answers than this in the window before the rule applies.
    pub min_queries: u32,
    /// Share of misses (no match, ambiguous, nothing disclosed, or a person
    /// already found in the window) above which the peer is paused (0-1).
    pub miss_ratio: f64,
}

impl Default for EnumerationSection {
    fn default() -> Self {
        EnumerationSection {
            windows: default_miss_windows(),
            daily_distinct_queries: default_daily_distinct_queries(),
            daily_ambiguous: default_daily_ambiguous(),
            sweep_variants: default_sweep_variants(),
        }
    }
}

impl EnumerationSection {
    /// The policy these settings describe (validated).
    pub(crate) fn policy(&self) -> patchwork_federation::hostile::EnumerationPolicy {
        patchwork_federation::hostile::EnumerationPolicy {
            windows: self
                .windows
                .iter()
                .map(|w| patchwork_federation::hostile::MissWindow {
                    window: std::time::Duration::from_secs(u64::from(w.minutes) * 60),
                    min_queries: w.min_queries,
                    miss_ratio: w.miss_ratio,
                })
                .collect(),
            daily_distinct_queries: self.daily_distinct_queries,
            daily_ambiguous: self.daily_ambiguous,
            sweep_variants: self.sweep_variants,
        }
    }

    /// The settings in the config's words, for a reload's report.
    pub(crate) fn describe(&self) -> String {
        let windows: Vec<String> = self
            .windows
            .iter()
            .map(|w| format!("{} min / {} / {}", w.minutes, w.min_queries, w.miss_ratio))
            .collect();
        format!(
            "windows {}; daily_distinct_queries {}; daily_ambiguous {}; sweep_variants {}",
            windows.join(", "),
            self.daily_distinct_queries,
            self.daily_ambiguous,
            self.sweep_variants
        )
    }
}

fn default_miss_windows() -> Vec<MissWindowEntry> {
    patchwork_federation::hostile::EnumerationPolicy::default()
        .windows
        .iter()
        .map(|w| MissWindowEntry {
            minutes: u32::try_from(w.window.as_secs() / 60).unwrap_or(u32::MAX),
            min_queries: w.min_queries,
            miss_ratio: w.miss_ratio,
        })
        .collect()
}

fn default_daily_distinct_queries() -> u32 {
    patchwork_federation::hostile::EnumerationPolicy::default().daily_distinct_queries
}

fn default_daily_ambiguous() -> u32 {
    patchwork_federation::hostile::EnumerationPolicy::default().daily_ambiguous
}

fn default_sweep_variants() -> u32 {
    patchwork_federation::hostile::EnumerationPolicy::default().sweep_variants
}

impl Default for FederationSection {
    fn default() -> Self {
        FederationSection {
            default_deadline_ms: default_peer_deadline_ms(),
            max_concurrent_calls: default_max_concurrent_calls(),
            breaker_cool_down_ms: default_breaker_cool_down_ms(),
            poll_interval_ms: default_poll_interval_ms(),
            witness_interval_ms: default_witness_interval_ms(),
            enumeration: EnumerationSection::default(),
            key_sets: Vec::new(),
            peers: Vec::new(),
        }
    }
}

fn default_peer_deadline_ms() -> u32 {
    2_000
}

fn default_max_concurrent_calls() -> usize {
    256
}

fn default_breaker_cool_down_ms() -> u32 {
    30_000
}

fn default_poll_interval_ms() -> u32 {
    5_000
}

fn default_witness_interval_ms() -> u32 {
    300_000
}

/// A match-key secret shared by a group of nodes (a federation, or a
/// cross-border agreement): every node in the group holds the same file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetEntry {
    /// 1-64 characters of a-z 0-9 -; the same on every node of the group.
    pub name: String,
    /// At least 32 random bytes, hex-encoded. Must not be readable by group or others.
    pub secret_file: PathBuf,
}

/// Another node, and the agreement with it. The same terms apply both ways
/// from this node's side: it asks the peer only for agreed purposes, and
/// answers the peer only for agreed purposes, disclosing only agreed
/// sensitivities (always-findable involvements are disclosed for
/// safeguarding purposes whatever this list says).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// The peer's identity, e.g. "spiffe://brighton.patchwork/node/brighton".
    pub identity: String,
    /// Shown to practitioners, e.g. "Brighton & Hove City Council".
    pub name: String,
    /// Where it listens, "host:port"; the host must be in its certificate.
    pub address: String,
    /// The key set shared with it (a name from `federation.key_sets`).
    pub key_set: String,
    /// Lawful bases it may be asked and may ask under.
    pub purposes: Vec<patchwork_store::model::LawfulBasis>,
    /// What may be disclosed to it.
    pub sensitivities: Vec<patchwork_store::model::Sensitivity>,
    /// Queries a minute it may make of this node.
    pub rate_limit_per_minute: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Shown to practitioners next to this node's answers, e.g. "Surrey County Council".
    pub display_name: String,
    /// Where the store lives; created if missing.
    pub data_dir: PathBuf,
    /// The identifier scheme of national ids given without one.
    #[serde(default = "default_scheme")]
    pub default_id_scheme: String,
    /// Involvements not confirmed for this many days are listed by
    /// `ListUnconfirmedInvolvements` (when the request names no period), 1-3650.
    #[serde(default = "default_confirm_after_days")]
    pub(crate) confirm_after_days: u32,
}

fn default_confirm_after_days() -> u32 {
    90
}

fn default_scheme() -> String {
    patchwork_federation::NHS_SCHEME.to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// This node's certificate (PEM, leaf first, then any intermediates).
    pub cert_file: PathBuf,
    /// This node's private key (PEM). Must not be readable by group or others.
    pub key_file: PathBuf,
    /// PEM files of the CA certificates this node trusts: its own region's,
    /// and other regions' an operator added. Clients' and peers' chains must
    /// end at one of them.
    pub trust_bundle: Vec<PathBuf>,
    /// PEM files of the CRLs those CAs publish. Once any is configured, every
    /// chain needs a current CRL from its issuer (unknown status and expired
    /// CRLs fail closed).
    #[serde(default)]
    pub crl_files: Vec<PathBuf>,
    /// The oldest TLS version spoken: "1.3" (default) or "1.2".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// How long a TLS handshake may take before the connection is dropped.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// How long a new connection may take to send its whole TLS ClientHello
    /// (a real client sends it at once) before it is closed as idle, so idle
    /// sockets hold a handshake slot for this long, not the full timeout
    /// (never longer than `handshake_timeout_ms`).
    #[serde(default = "default_client_hello_timeout_ms")]
    pub(crate) client_hello_timeout_ms: u64,
    /// Handshakes in progress at once, in all (connections beyond it are
    /// closed at once).
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Of `max_handshakes`, the slots only priority sources may take:
    /// configured peers' addresses (`federation.peers[].address`, resolved),
    /// this machine (127.0.0.1, ::1) and `priority_sources`.
    #[serde(default = "default_reserved_handshakes")]
    pub reserved_handshakes: usize,
    /// Handshakes in progress at once from one source (an IPv4 address, or
    /// an IPv6 /64) in the slots everyone shares.
    #[serde(default = "default_max_handshakes_per_source")]
    pub max_handshakes_per_source: usize,
    /// Further source addresses given the reserved slots, e.g. a peer whose
    /// connections come from another address than the one it listens on.
    #[serde(default)]
    pub(crate) priority_sources: Vec<IpAddr>,
}

fn default_handshake_timeout_ms() -> u64 {
    10_000
}

fn default_client_hello_timeout_ms() -> u64 {
    2_000
}

fn default_max_handshakes() -> usize {
    512
}

fn default_reserved_handshakes() -> usize {
    128
}

fn default_max_handshakes_per_source() -> usize {
    8
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
    #[serde(rename = "1.2")]
    Tls12,
}

impl From<TlsVersion> for patchwork_certs::MinTlsVersion {
    fn from(version: TlsVersion) -> Self {
        match version {
            TlsVersion::Tls13 => patchwork_certs::MinTlsVersion::Tls13,
            TlsVersion::Tls12 => patchwork_certs::MinTlsVersion::Tls12,
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Create, update and read persons, practitioners, organisations, involvements.
    Records,
    /// Look people up (audited).
    Lookup,
    /// Import, statistics, audit verification, reload.
    Admin,
    /// Watch any practitioner's team events (`Directory.Watch`, audited):
    /// for an integration that relays every practitioner's alerts, e.g. the
    /// council's portal. Neither `lookup` nor `records` grants it: a
    /// practitioner's events say who is on their caseload.
    Watch,
}

impl Role {
    /// As the config writes it: `records`.
    pub(crate) fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    /// The caller's identity: the spiffe:// URI SAN of its certificate.
    pub identity: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Where the local API listens, e.g. "127.0.0.1:7443" (an IP address, not
    /// a host name).
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// Who may call, by certificate identity. Anyone else is refused. The
    /// node's own identity (used by the CLI on this machine) may do anything.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
    /// Requests served at once on one connection; also the HTTP/2 streams a
    /// client may open on it at once (more are refused by HTTP/2 itself).
    #[serde(default = "default_concurrency")]
    pub(crate) max_concurrent_requests_per_connection: usize,
    /// `grpc.health.v1.Health/Watch` streams open at once, in all (health
    /// answers any caller the trust bundle accepts); more are refused
    /// RESOURCE_EXHAUSTED.
    #[serde(default = "default_max_health_watches")]
    pub(crate) max_health_watches: usize,
    /// Of those, the most one caller identity may hold open, over any
    /// number of connections.
    #[serde(default = "default_max_health_watches_per_identity")]
    pub max_health_watches_per_identity: usize,
    /// Serve gRPC server reflection (grpc.reflection.v1 and v1alpha), so
    /// tools like grpcurl can list and describe the API. Reachable by any
    /// caller whose certificate the trust bundle accepts.
    #[serde(default = "default_true")]
    pub reflection: bool,
}

fn default_concurrency() -> usize {
    256
}

fn default_max_health_watches() -> usize {
    512
}

fn default_max_health_watches_per_identity() -> usize {
    16
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// The store's page cache in MiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
}

fn default_cache_mb() -> u64 {
    256
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            cache_mb: default_cache_mb(),
        }
    }
}

/// `[import]`: bulk imports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportSection {
    /// The largest share of the persons (or involvements) a `--mirror`
    /// import may delete (0-1, default 0.05): more, and the import writes and
    /// deletes nothing unless forced, because a truncated export must not
    /// wipe the node.
    #[serde(default = "default_mirror_max_share")]
    pub mirror_max_share: f64,
}

fn default_mirror_max_share() -> f64 {
    0.05
}

impl Default for ImportSection {
    fn default() -> Self {
        ImportSection {
            mirror_max_share: default_mirror_max_share(),
        }
    }
}

/// `[retention]`: the council's retention schedule, in whole years; 0 (the
/// default) keeps for ever. Lawful periods differ by service and council,
/// so nothing is deleted until the DPO writes them here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    /// Years after an involvement ended that it is deleted.
    #[serde(default)]
    pub ended_involvements_years: u32,
    /// Years a person has had no current involvement before they are
    /// erased, with everything naming them.
    #[serde(default)]
    pub inactive_persons_years: u32,
    /// The hour of the day (UTC, 0-23) the daily run starts.
    #[serde(default = "default_retention_hour")]
    pub daily_at_hour_utc: u8,
    /// The largest share of the persons, or of the involvements, one run may
    /// delete (0-1, default 0.1): more, and the run deletes nothing, logs
    /// why and waits for `patchwork retention run --force`, because a wrong
    /// clock or a mistyped rule must not empty the node overnight.
    #[serde(default = "default_retention_max_share")]
    pub max_share: f64,
    /// Years an audit entry stays in the log: whole segments (64 MiB of
    /// entries each) whose last entry is older are sealed into an archive
    /// file in `audit_archive_dir`, with the node's signed checkpoint, and
    /// removed from the log. The archives are the record from then on:
    /// keep them as long as the law asks.
    #[serde(default)]
    pub audit_years: u32,
    /// Where archive files are written (created 0700; files 0600). Default:
    /// `audit-archive` in the data folder. Relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_archive_dir: Option<PathBuf>,
}

fn default_retention_hour() -> u8 {
    2
}

fn default_retention_max_share() -> f64 {
    0.1
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            ended_involvements_years: 0,
            inactive_persons_years: 0,
            daily_at_hour_utc: default_retention_hour(),
            max_share: default_retention_max_share(),
            audit_years: 0,
            audit_archive_dir: None,
        }
    }
}

impl RetentionSection {
    pub fn rules(&self) -> patchwork_store::retention::RetentionRules {
        patchwork_store::retention::RetentionRules {
            ended_involvements_years: self.ended_involvements_years,
            inactive_persons_years: self.inactive_persons_years,
        }
    }

    /// The rules in force, in the config's words.
    pub fn describe(&self) -> Vec<String> {
        let rule = |years: u32, what: &str| match years {
            0 => format!("{what}: kept"),
            n => format!("{what}: {n} years"),
        };
        vec![
            rule(
                self.ended_involvements_years,
                "retention.ended_involvements_years",
            ),
            rule(
                self.inactive_persons_years,
                "retention.inactive_persons_years",
            ),
        ]
    }

    /// The audit rule in force, in the config's words.
    pub fn describe_audit(&self) -> String {
        match self.audit_years {
            0 => "retention.audit_years: kept".to_owned(),
            n => format!("retention.audit_years: {n} years"),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(default)]
    pub format: LogFormat,
}

/// How the `patchwork` CLI on this machine reaches the node. Every key is
/// optional: by default it calls `api.listen` (a wildcard address becomes
/// loopback) as the node itself, trusting `tls.trust_bundle` and expecting
/// the node's identity and the first DNS name of its certificate (or the
/// address dialled, when it has none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliSection {
    pub address: Option<SocketAddr>,
    pub server_name: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// A TOML error as one line: where, and what (toml's own rendering spans
/// several lines with a caret, which journald and log shippers mangle).
fn one_line(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim().replace('\n', "; ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            // The line itself names the key (the config holds no secrets,
            // only paths to them).
            let source: String = text
                .lines()
                .nth(line - 1)
                .unwrap_or("")
                .trim()
                .chars()
                .take(80)
                .collect();
            format!("line {line} `{source}`, column {column}: {message}")
        }
        None => message,
    }
}

// Configs built in code (the tests' harness, the benchmark): every optional
// key at the default a node.toml without it gets.

impl NodeSection {
    pub fn new(display_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        NodeSection {
            display_name: display_name.into(),
            data_dir: data_dir.into(),
            default_id_scheme: default_scheme(),
            confirm_after_days: default_confirm_after_days(),
        }
    }
}

impl TlsSection {
    pub fn new(
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
        trust_bundle: Vec<PathBuf>,
    ) -> Self {
        TlsSection {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            trust_bundle,
            crl_files: Vec::new(),
            min_version: TlsVersion::default(),
            handshake_timeout_ms: default_handshake_timeout_ms(),
            client_hello_timeout_ms: default_client_hello_timeout_ms(),
            max_handshakes: default_max_handshakes(),
            reserved_handshakes: default_reserved_handshakes(),
            max_handshakes_per_source: default_max_handshakes_per_source(),
            priority_sources: Vec::new(),
        }
    }
}

impl ApiSection {
    pub fn new(listen: SocketAddr) -> Self {
        ApiSection {
            listen,
            clients: Vec::new(),
            max_concurrent_requests_per_connection: default_concurrency(),
            max_health_watches: default_max_health_watches(),
            max_health_watches_per_identity: default_max_health_watches_per_identity(),
            reflection: true,
        }
    }
}

impl NodeConfig {
    /// A config of these three sections, everything else at its default.
    /// Check it as a file would be with [`NodeConfig::to_toml`] and
    /// [`NodeConfig::from_toml`].
    pub fn new(node: NodeSection, tls: TlsSection, api: ApiSection) -> Self {
        NodeConfig {
            node,
            tls,
            api,
            store: StoreSection::default(),
            log: LogSection::default(),
            cli: CliSection::default(),
            federation: FederationSection::default(),
            metrics: MetricsSection::default(),
            retention: RetentionSection::default(),
            import: ImportSection::default(),
            webhooks: Vec::new(),
            source: None,
        }
    }

    /// The config as node.toml text, which [`NodeConfig::from_toml`] reads
    /// back to the same config.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut config = Self::from_toml(&text, base)?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Parses and validates a config; relative paths are taken from `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let mut config: NodeConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(one_line(&e, text)))?;
        config.validate()?;
        // Stored identifiers carry the normal form ("NHS" → "nhs"), so the
        // default must be in it too or the same person would never match.
        config.node.default_id_scheme =
            patchwork_federation::validate_scheme(&config.node.default_id_scheme)
                .map_err(|e| invalid("node.default_id_scheme", e.to_string()))?;
        config.resolve_paths(base_dir);
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let name = self.node.display_name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(invalid("node.display_name", "must be 1-100 characters"));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(invalid("node.data_dir", "is required"));
        }
        patchwork_federation::validate_scheme(&self.node.default_id_scheme)
            .map_err(|e| invalid("node.default_id_scheme", e.to_string()))?;
        if !(1..=3650).contains(&self.node.confirm_after_days) {
            return Err(invalid("node.confirm_after_days", "must be 1-3650"));
        }
        for (key, path) in [
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if path.as_os_str().is_empty() {
                return Err(invalid(key, "is required"));
            }
        }
        if self.tls.trust_bundle.is_empty() {
            return Err(invalid(
                "tls.trust_bundle",
                "must name at least one CA file",
            ));
        }
        for (key, paths) in [
            ("tls.trust_bundle", &self.tls.trust_bundle),
            ("tls.crl_files", &self.tls.crl_files),
        ] {
            let mut seen = BTreeSet::new();
            for path in paths {
                if path.as_os_str().is_empty() {
                    return Err(invalid(key, "holds an empty path"));
                }
                if !seen.insert(path) {
                    return Err(invalid(key, format!("lists {} twice", path.display())));
                }
            }
        }
        if !(100..=120_000).contains(&self.tls.handshake_timeout_ms) {
            return Err(invalid("tls.handshake_timeout_ms", "must be 100-120000"));
        }
        if !(100..=120_000).contains(&self.tls.client_hello_timeout_ms) {
            return Err(invalid("tls.client_hello_timeout_ms", "must be 100-120000"));
        }
        if !(2..=65_536).contains(&self.tls.max_handshakes) {
            return Err(invalid("tls.max_handshakes", "must be 2-65536"));
        }
        if self.tls.reserved_handshakes >= self.tls.max_handshakes {
            return Err(invalid(
                "tls.reserved_handshakes",
                "must be less than tls.max_handshakes (strangers need some slots)",
            ));
        }
        if !(1..=self.tls.max_handshakes - self.tls.reserved_handshakes)
            .contains(&self.tls.max_handshakes_per_source)
        {
            return Err(invalid(
                "tls.max_handshakes_per_source",
                "must be 1 up to tls.max_handshakes - tls.reserved_handshakes",
            ));
        }
        if self.api.listen.port() == 0 {
            return Err(invalid("api.listen", "needs a port"));
        }
        if !(1..=10_000).contains(&self.api.max_concurrent_requests_per_connection) {
            return Err(invalid(
                "api.max_concurrent_requests_per_connection",
                "must be 1-10000",
            ));
        }
        if !(1..=100_000).contains(&self.api.max_health_watches) {
            return Err(invalid("api.max_health_watches", "must be 1-100000"));
        }
        if !(1..=self.api.max_health_watches).contains(&self.api.max_health_watches_per_identity) {
            return Err(invalid(
                "api.max_health_watches_per_identity",
                "must be 1 up to api.max_health_watches",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, client) in self.api.clients.iter().enumerate() {
            let key = format!("api.clients[{i}].identity");
            let identity: SpiffeId = client
                .identity
                .parse()
                .map_err(|e| invalid(&key, format!("{e}")))?;
            if !seen.insert(identity.to_string()) {
                return Err(invalid(key, format!("{identity} is listed twice")));
            }
            if client.roles.is_empty() {
                return Err(invalid(
                    format!("api.clients[{i}].roles"),
                    "must name at least one role",
                ));
            }
        }
        if self.metrics.enabled {
            if self.metrics.listen.port() == 0 {
                return Err(invalid("metrics.listen", "needs a port"));
            }
            if self.metrics.listen == self.api.listen {
                return Err(invalid("metrics.listen", "must differ from api.listen"));
            }
        }
        if !(16..=65_536).contains(&self.store.cache_mb) {
            return Err(invalid("store.cache_mb", "must be 16-65536"));
        }
        self.validate_federation()?;
        self.validate_webhooks()?;
        self.validate_retention()?;
        if let Some(name) = &self.cli.server_name
            && name.trim().is_empty()
        {
            return Err(invalid("cli.server_name", "must not be empty"));
        }
        if self.cli.cert_file.is_some() != self.cli.key_file.is_some() {
            return Err(invalid(
                "cli.cert_file",
                "cli.cert_file and cli.key_file go together",
            ));
        }
        Ok(())
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let mut urls = BTreeSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let key = |field: &str| format!("webhooks[{i}].{field}");
            let url = parse_webhook_url(&hook.url, hook.allow_http)
                .map_err(|message| invalid(key("url"), message))?;
            if hook.allow_http && url.scheme() != "http" {
                return Err(invalid(
                    key("allow_http"),
                    "applies only to an http:// url; remove it",
                ));
            }
            if hook.ca_file.is_some() && url.scheme() != "https" {
                return Err(invalid(key("ca_file"), "applies only to an https:// url"));
            }
            if hook
                .ca_file
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                return Err(invalid(key("ca_file"), "is empty"));
            }
            if !urls.insert(&hook.url) {
                return Err(invalid(key("url"), "is listed twice"));
            }
            if hook.secret_file.as_os_str().is_empty() {
                return Err(invalid(key("secret_file"), "is required"));
            }
            match &hook.practitioners {
                WebhookPractitioners::All(word) if word != "all" => {
                    return Err(invalid(
                        key("practitioners"),
                        "must be \"all\" or a list of practitioner ids",
                    ));
                }
                WebhookPractitioners::Only(ids) if ids.is_empty() => {
                    return Err(invalid(key("practitioners"), "lists no practitioner"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn validate_retention(&self) -> Result<(), ConfigError> {
        let retention = &self.retention;
        for (key, years) in [
            (
                "retention.ended_involvements_years",
                retention.ended_involvements_years,
            ),
            (
                "retention.inactive_persons_years",
                retention.inactive_persons_years,
            ),
            ("retention.audit_years", retention.audit_years),
        ] {
            if years > 100 {
                return Err(invalid(key, "must be 0 (kept) to 100 years"));
            }
        }
        if retention.daily_at_hour_utc > 23 {
            return Err(invalid("retention.daily_at_hour_utc", "must be 0-23"));
        }
        let share = self.import.mirror_max_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(invalid(
                "import.mirror_max_share",
                "must be more than 0 and at most 1",
            ));
        }
        if !(retention.max_share > 0.0 && retention.max_share <= 1.0) {
            return Err(invalid(
                "retention.max_share",
                "must be more than 0 and at most 1",
            ));
        }
        Ok(())
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let federation = &self.federation;
        if !(100..=60_000).contains(&federation.default_deadline_ms) {
            return Err(invalid(
                "federation.default_deadline_ms",
                "must be 100-60000",
            ));
        }
        if !(50..=600_000).contains(&federation.poll_interval_ms) {
            return Err(invalid("federation.poll_interval_ms", "must be 50-600000"));
        }
        if !(100..=86_400_000).contains(&federation.witness_interval_ms) {
            return Err(invalid(
                "federation.witness_interval_ms",
                "must be 100-86400000",
            ));
        }
        let enumeration = &federation.enumeration;
        if enumeration.windows.len() > 8 {
            return Err(invalid(
                "federation.enumeration.windows",
                "at most 8 windows",
            ));
        }
        for (i, window) in enumeration.windows.iter().enumerate() {
            let key = |field: &str| format!("federation.enumeration.windows[{i}].{field}");
            if !(1..=1_440).contains(&window.minutes) {
                return Err(invalid(key("minutes"), "must be 1-1440"));
            }
            if !(1..=10_000_000).contains(&window.min_queries) {
                return Err(invalid(key("min_queries"), "must be 1-10000000"));
            }
            if !(window.miss_ratio > 0.0 && window.miss_ratio <= 1.0) {
                return Err(invalid(
                    key("miss_ratio"),
                    "must be more than 0 and at most 1",
                ));
            }
        }
        let most = patchwork_federation::hostile::MAX_DAILY_DISTINCT;
        for (key, value) in [
            ("daily_distinct_queries", enumeration.daily_distinct_queries),
            ("daily_ambiguous", enumeration.daily_ambiguous),
        ] {
            if !(1..=most).contains(&value) {
                return Err(invalid(
                    format!("federation.enumeration.{key}"),
                    format!("must be 1-{most}"),
                ));
            }
        }
        if !(2..=100_000).contains(&enumeration.sweep_variants) {
            return Err(invalid(
                "federation.enumeration.sweep_variants",
                "must be 2-100000",
            ));
        }
        if !(1..=10_000).contains(&federation.max_concurrent_calls) {
            return Err(invalid(
                "federation.max_concurrent_calls",
                "must be 1-10000",
            ));
        }
        let mut sets = BTreeSet::new();
        for (i, set) in federation.key_sets.iter().enumerate() {
            let key = format!("federation.key_sets[{i}].name");
            let name_ok = !set.name.is_empty()
                && set.name.len() <= 64
                && set
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(invalid(key, "must be 1-64 characters of a-z 0-9 -"));
            }
            if !sets.insert(set.name.as_str()) {
                return Err(invalid(key, format!("{} is defined twice", set.name)));
            }
            if set.secret_file.as_os_str().is_empty() {
                return Err(invalid(
                    format!("federation.key_sets[{i}].secret_file"),
                    "is required",
                ));
            }
        }
        let mut identities = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, peer) in federation.peers.iter().enumerate() {
            let key = |field: &str| format!("federation.peers[{i}].{field}");
            let identity: SpiffeId = peer
                .identity
                .parse()
                .map_err(|e| invalid(key("identity"), format!("{e}")))?;
            if identity.node_name().is_none() {
                return Err(invalid(
                    key("identity"),
                    "must be a node identity spiffe://<trust-domain>/node/<name>",
                ));
            }
            if !identities.insert(identity.to_string()) {
                return Err(invalid(
                    key("identity"),
                    format!("{identity} is listed twice"),
                ));
            }
            if self
                .api
                .clients
                .iter()
                .any(|c| c.identity == identity.to_string())
            {
                return Err(invalid(key("identity"), "is also listed as a local client"));
            }
            let name = peer.name.trim();
            if name.is_empty() || name.chars().count() > 100 {
                return Err(invalid(key("name"), "must be 1-100 characters"));
            }
            if !names.insert(name.to_owned()) {
                return Err(invalid(key("name"), format!("{name} is used by two peers")));
            }
            match peer.address.rsplit_once(':') {
                Some((host, port))
                    if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {}
                _ => return Err(invalid(key("address"), "must be host:port")),
            }
            if !sets.contains(peer.key_set.as_str()) {
                return Err(invalid(
                    key("key_set"),
                    format!("{} is not one of federation.key_sets", peer.key_set),
                ));
            }
            if peer.purposes.is_empty() {
                return Err(invalid(
                    key("purposes"),
                    "an agreement must allow at least one purpose",
                ));
            }
            if peer.sensitivities.is_empty() {
                return Err(invalid(
                    key("sensitivities"),
                    "an agreement must allow at least one sensitivity",
                ));
            }
            if peer.purposes.iter().collect::<BTreeSet<_>>().len() != peer.purposes.len() {
                return Err(invalid(key("purposes"), "lists a purpose twice"));
            }
            if peer.sensitivities.iter().collect::<BTreeSet<_>>().len() != peer.sensitivities.len()
            {
                return Err(invalid(key("sensitivities"), "lists a sensitivity twice"));
            }
            if !(1..=1_000_000).contains(&peer.rate_limit_per_minute) {
                return Err(invalid(key("rate_limit_per_minute"), "must be 1-1000000"));
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        for set in &mut self.federation.key_sets {
            if set.secret_file.is_relative() {
                set.secret_file = base.join(&set.secret_file);
            }
        }
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.node.data_dir);
        if let Some(dir) = &mut self.retention.audit_archive_dir {
            resolve(dir);
        }
        for hook in &mut self.webhooks {
            resolve(&mut hook.secret_file);
            if let Some(ca_file) = &mut hook.ca_file {
                resolve(ca_file);
            }
        }
        resolve(&mut self.tls.cert_file);
        resolve(&mut self.tls.key_file);
        self.tls.trust_bundle.iter_mut().for_each(resolve);
        self.tls.crl_files.iter_mut().for_each(resolve);
        for path in [&mut self.cli.cert_file, &mut self.cli.key_file]
            .into_iter()
            .flatten()
        {
            resolve(path);
        }
    }

    /// The store's folder inside the data folder.
    pub fn store_dir(&self) -> PathBuf {
        self.node.data_dir.join("store")
    }

    /// Where audit retention writes its archive files.
    pub fn audit_archive_dir(&self) -> PathBuf {
        self.retention
            .audit_archive_dir
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("audit-archive"))
    }

    /// How the store is opened: `[store] cache_mb` as bytes.
    pub fn store_options(&self) -> patchwork_store::StoreOptions {
        patchwork_store::StoreOptions {
            cache_capacity_bytes: self.store.cache_mb << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
[node]
display_name = "Surrey County Council"
data_dir = "data"

[tls]
cert_file = "node.crt"
key_file = "node.key"
trust_bundle = ["ca.crt"]

[api]
listen = "127.0.0.1:7443"
clients = [{ identity = "spiffe://patchwork/client/portal", roles = ["lookup"] }]
"#;

    #[test]
    fn a_valid_config_resolves_paths_against_its_folder() {
        let config = NodeConfig::from_toml(VALID, Path::new("/etc/patchwork")).expect("valid");
        assert_eq!(config.tls.key_file, Path::new("/etc/patchwork/node.key"));
        assert_eq!(config.node.default_id_scheme, "nhs");
        let shouting = VALID.replace(
            "data_dir = \"data\"",
            "data_dir = \"data\"\ndefault_id_scheme = \" IHI \"",
        );
        let config = NodeConfig::from_toml(&shouting, Path::new("/")).expect("valid");
        assert_eq!(
            config.node.default_id_scheme, "ihi",
            "kept in its normal form"
        );
        assert_eq!(config.store.cache_mb, 256);
        assert!(config.api.reflection, "reflection is on by default");
        assert!(config.metrics.enabled, "metrics are on by default");
        assert_eq!(
            config.metrics.listen,
            "127.0.0.1:9464".parse().expect("addr")
        );
    }

    #[test]
    fn the_documented_example_config_is_valid() {
        let text = include_str!("../../../../deploy/node.example.toml");
        let config = NodeConfig::from_toml(text, Path::new("/")).expect("deploy/node.example.toml");
        assert_eq!(config.api.clients.len(), 2);
        assert_eq!(config.federation.peers.len(), 2);
        assert!(config.api.reflection);
        assert_eq!(config.node.confirm_after_days, 90);
        assert!(config.metrics.enabled);
        assert_eq!(
            config.metrics.listen,
            "127.0.0.1:9464".parse().expect("addr")
        );
    }

    #[test]
    fn a_bad_retention_rule_is_refused_naming_its_key() {
        let text = include_str!("../../../../deploy/node.example.toml");
        for (from, to, key) in [
            (
                "ended_involvements_years = 0",
                "ended_involvements_years = 101",
                "retention.ended_involvements_years",
            ),
            (
                "inactive_persons_years = 0",
                "inactive_persons_years = -1",
                "inactive_persons_years", // serde's error quotes the line
            ),
            (
                "daily_at_hour_utc = 2",
                "daily_at_hour_utc = 24",
                "retention.daily_at_hour_utc",
            ),
            ("max_share = 0.1", "max_share = 0.0", "retention.max_share"),
            (
                "audit_years = 0",
                "audit_years = 250",
                "retention.audit_years",
            ),
            ("max_share = 0.1", "max_share = 1.5", "retention.max_share"),
            (
                "mirror_max_share = 0.05",
                "mirror_max_share = 0",
                "import.mirror_max_share",
            ),
        ] {
            let bad = text.replace(from, to);
            let error = NodeConfig::from_toml(&bad, Path::new("/"))
                .expect_err(to)
                .to_string();
            assert!(error.contains(key), "{to}: {error}");
        }
    }

    #[test]
    fn a_config_written_as_toml_reads_back_the_same() {
        let text = include_str!("../../../../deploy/node.example.toml");
        let mut example = NodeConfig::from_toml(text, Path::new("/etc/patchwork"))
            .expect("deploy/node.example.toml");
        example.webhooks.push(WebhookEntry {
            url: "https://portal.example/hooks".into(),
            secret_file: "/etc/patchwork/hook.key".into(),
            practitioners: WebhookPractitioners::Only(vec!["PR1".into()]),
            ca_file: None,
            allow_http: false,
        });
        let mut built = NodeConfig::new(
            NodeSection::new("Kent County Council", "/var/lib/patchwork"),
            TlsSection::new(
                "/etc/patchwork/node.crt",
                "/etc/patchwork/node.key",
                vec!["/etc/patchwork/ca.crt".into()],
            ),
            ApiSection::new("127.0.0.1:7443".parse().expect("addr")),
        );
        built.tls.min_version = TlsVersion::Tls12;
        for config in [example, built] {
            let written = config.to_toml().expect("toml");
            let read = NodeConfig::from_toml(&written, Path::new("/elsewhere")).expect(&written);
            assert_eq!(read, config, "{written}");
        }
    }

    #[test]
    fn every_error_names_its_key() {
        let cases = [
            (VALID.replace("[api]", "[api]\nlisten_on = 1"), "listen_on"),
            (
                VALID.replace("Surrey County Council", " "),
                "node.display_name",
            ),
            (VALID.replace("127.0.0.1:7443", "localhost"), "listen"),
            (VALID.replace("127.0.0.1:7443", "127.0.0.1:0"), "api.listen"),
            (
                VALID.replace("spiffe://patchwork/client/portal", "https://portal"),
                "api.clients[0].identity",
            ),
            (VALID.replace("[\"lookup\"]", "[]"), "api.clients[0].roles"),
            (VALID.replace("[\"lookup\"]", "[\"god\"]"), "god"),
            (VALID.replace("cert_file = \"node.crt\"\n", ""), "cert_file"),
            (
                format!("{VALID}\n[store]\ncache_mb = 1\n"),
                "store.cache_mb",
            ),
            (format!("{VALID}\n[log]\nformat = \"xml\"\n"), "xml"),
            (
                format!("{VALID}\n[metrics]\nlisten = \"127.0.0.1:7443\"\n"),
                "metrics.listen",
            ),
            (
                format!("{VALID}\n[metrics]\nlisten = \"127.0.0.1:0\"\n"),
                "metrics.listen",
            ),
            (format!("{VALID}\n[metrics]\nport = 9464\n"), "port"),
            (
                VALID.replace("[api]", "[api]\nreflection = \"yes\""),
                "reflection",
            ),
            (
                VALID.replace("trust_bundle = [\"ca.crt\"]", "trust_bundle = []"),
                "tls.trust_bundle",
            ),
            (
                VALID.replace("[tls]", "[tls]\nclient_hello_timeout_ms = 10"),
                "tls.client_hello_timeout_ms",
            ),
            (
                VALID.replace("[api]", "[api]\nmax_health_watches = 0"),
                "api.max_health_watches",
            ),
            (
                VALID.replace(
                    "[api]",
                    "[api]\nmax_health_watches = 8\nmax_health_watches_per_identity = 9",
                ),
                "api.max_health_watches_per_identity",
            ),
            (
                VALID.replace("[tls]", "[tls]\nmax_handshakes = 1"),
                "tls.max_handshakes",
            ),
            (
                VALID.replace(
                    "[tls]",
                    "[tls]\nmax_handshakes = 64\nreserved_handshakes = 64",
                ),
                "tls.reserved_handshakes",
            ),
            (
                VALID.replace("[tls]", "[tls]\nmax_handshakes_per_source = 0"),
                "tls.max_handshakes_per_source",
            ),
            (
                VALID.replace("[tls]", "[tls]\nmax_handshakes_per_source = 400"),
                "tls.max_handshakes_per_source",
            ),
            (
                VALID.replace("[tls]", "[tls]\npriority_sources = [\"peer.example\"]"),
                "priority_sources",
            ),
            (
                VALID.replace(
                    "trust_bundle = [\"ca.crt\"]",
                    "trust_bundle = [\"ca.crt\", \"ca.crt\"]",
                ),
                "tls.trust_bundle",
            ),
            (
                VALID.replace(
                    "trust_bundle = [\"ca.crt\"]",
                    "trust_bundle = [\"ca.crt\"]\nmin_version = \"1.1\"",
                ),
                "1.1",
            ),
            (
                VALID.replace(
                    "data_dir = \"data\"",
                    "data_dir = \"data\"\ndefault_id_scheme = \"N H S\"",
                ),
                "node.default_id_scheme",
            ),
            (
                VALID.replace(
                    "data_dir = \"data\"",
                    "data_dir = \"data\"\nconfirm_after_days = 0",
                ),
                "node.confirm_after_days",
            ),
        ];
        for (text, key) in cases {
            let error = NodeConfig::from_toml(&text, Path::new("/"))
                .expect_err(key)
                .to_string();
            assert!(error.contains(key), "{key} not named in: {error}");
        }
    }

    #[test]
    fn impossible_agreements_are_refused_naming_the_key() {
        let peer = |extra: &str| {
            format!(
                "{VALID}\n[[federation.key_sets]]\nname = \"england\"\nsecret_file = \"e.key\"\n\
                 [[federation.peers]]\nidentity = \"spiffe://patchwork/node/brighton\"\nname = \"Brighton\"\n\
                 address = \"brighton:7443\"\nkey_set = \"england\"\npurposes = [\"child-safeguarding\"]\n\
                 sensitivities = [\"standard\"]\nrate_limit_per_minute = 60\n{extra}"
            )
        };
        assert!(NodeConfig::from_toml(&peer(""), Path::new("/")).is_ok());
        let twice = peer(
            "[[federation.peers]]\nidentity = \"spiffe://patchwork/node/brighton\"\nname = \"B2\"\naddress = \"b:1\"\nkey_set = \"england\"\npurposes = [\"consent\"]\nsensitivities = [\"standard\"]\nrate_limit_per_minute = 1\n",
        );
        let cases = [
            (twice, "federation.peers[1].identity"),
            (
                peer("").replace("purposes = [\"child-safeguarding\"]", "purposes = []"),
                "federation.peers[0].purposes",
            ),
            (
                peer("").replace("sensitivities = [\"standard\"]", "sensitivities = []"),
                "federation.peers[0].sensitivities",
            ),
            (
                peer("").replace("rate_limit_per_minute = 60", "rate_limit_per_minute = 0"),
                "federation.peers[0].rate_limit_per_minute",
            ),
            (
                peer("").replace("key_set = \"england\"", "key_set = \"scotland\""),
                "federation.peers[0].key_set",
            ),
            (
                peer("").replace("brighton:7443", "brighton"),
                "federation.peers[0].address",
            ),
            (
                peer("").replace("node/brighton", "client/brighton"),
                "federation.peers[0].identity",
            ),
            (
                peer("").replace("\"child-safeguarding\"]", "\"snooping\"]"),
                "snooping",
            ),
        ];
        for (text, key) in cases {
            let error = NodeConfig::from_toml(&text, Path::new("/"))
                .expect_err(key)
                .to_string();
            assert!(error.contains(key), "{key} not named in: {error}");
        }
    }

    #[test]
    fn enumeration_rules_are_checked_naming_the_key() {
        let with = |section: &str| format!("{VALID}\n[federation.enumeration]\n{section}");
        let config = NodeConfig::from_toml(
            &with("daily_distinct_queries = 300\n[[federation.enumeration.windows]]\nminutes = 5\nmin_queries = 10\nmiss_ratio = 0.5\n"),
            Path::new("/"),
        )
        .expect("valid");
        let policy = config.federation.enumeration.policy();
        assert_eq!(policy.daily_distinct_queries, 300);
        assert_eq!(policy.sweep_variants, 20, "the default");
        assert_eq!(
            policy.windows.len(),
            1,
            "given windows replace the defaults"
        );
        let window = "[[federation.enumeration.windows]]\nminutes = 10\nmin_queries = 50\nmiss_ratio = 0.9\n";
        let cases = [
            (
                with("daily_distinct_queries = 0"),
                "federation.enumeration.daily_distinct_queries",
            ),
            (
                with("sweep_variants = 1"),
                "federation.enumeration.sweep_variants",
            ),
            (
                with("daily_distinct_queries = 100001"),
                "federation.enumeration.daily_distinct_queries",
            ),
            (
                with("daily_ambiguous = 0"),
                "federation.enumeration.daily_ambiguous",
            ),
            (
                with(&window.replace("minutes = 10", "minutes = 0")),
                "federation.enumeration.windows[0].minutes",
            ),
            (
                with(&window.replace("minutes = 10", "minutes = 1441")),
                "federation.enumeration.windows[0].minutes",
            ),
            (
                with(&window.replace("min_queries = 50", "min_queries = 0")),
                "federation.enumeration.windows[0].min_queries",
            ),
            (
                with(&window.replace("0.9", "1.5")),
                "federation.enumeration.windows[0].miss_ratio",
            ),
            (
                with(&window.replace("0.9", "nan")),
                "federation.enumeration.windows[0].miss_ratio",
            ),
            (with(&window.repeat(9)), "federation.enumeration.windows"),
            (with("treshold = 3"), "treshold"),
        ];
        for (text, key) in cases {
            let error = NodeConfig::from_toml(&text, Path::new("/"))
                .expect_err(key)
                .to_string();
            assert!(error.contains(key), "{key} not named in: {error}");
        }
    }

    #[test]
    fn webhook_urls_are_https_or_loopback_http_and_carry_nothing_else() {
        let hook = |url: &str, extra: &str| {
            format!("{VALID}\n[[webhooks]]\nurl = \"{url}\"\nsecret_file = \"w.key\"\n{extra}")
        };
        for (url, extra) in [
            ("https://hooks.example.org/patchwork", ""),
            (
                "https://hooks.example.org:8443/p?council=surrey",
                "ca_file = \"ca.pem\"",
            ),
            ("http://127.0.0.1:8080/patchwork", "allow_http = true"),
            ("http://[::1]:8080/", "allow_http = true"),
            ("http://localhost:8080/", "allow_http = true"),
        ] {
            let config = NodeConfig::from_toml(&hook(url, extra), Path::new("/etc/patchwork"))
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            if !extra.is_empty() && extra.starts_with("ca_file") {
                assert_eq!(
                    config.webhooks[0].ca_file.as_deref(),
                    Some(Path::new("/etc/patchwork/ca.pem"))
                );
            }
        }
        let cases = [
            (
                hook(
                    "http://127.0.0.1:9/a\\r\\nX-Injected: 1",
                    "allow_http = true",
                ),
                "webhooks[0].url: must not contain whitespace or control characters (found U+000D)",
            ),
            (
                hook("https://h.example/a\\tb", ""),
                "webhooks[0].url: must not contain whitespace or control characters (found U+0009)",
            ),
            (
                hook("https://h.example/a b", ""),
                "webhooks[0].url: must not contain whitespace",
            ),
            (
                hook("http://127.0.0.1:8080/", ""),
                "webhooks[0].url: is plain http: use https, or set allow_http = true",
            ),
            (
                hook("http://10.0.0.5:8080/", "allow_http = true"),
                "webhooks[0].url: is plain http to 10.0.0.5: allow_http is only for a loopback receiver",
            ),
            (
                hook("http://hooks.example.org/", "allow_http = true"),
                "webhooks[0].url: is plain http to hooks.example.org",
            ),
            (
                hook("https://127.0.0.1/", "allow_http = true"),
                "webhooks[0].allow_http: applies only to an http:// url",
            ),
            (
                hook(
                    "http://127.0.0.1/",
                    "allow_http = true\nca_file = \"ca.pem\"",
                ),
                "webhooks[0].ca_file: applies only to an https:// url",
            ),
            (
                hook("https://user:pw@h.example/", ""),
                "webhooks[0].url: must not carry a user name or password",
            ),
            (
                hook("https://h.example/#x", ""),
                "webhooks[0].url: must not have a #fragment",
            ),
            (
                hook("ftp://h.example/", ""),
                "webhooks[0].url: must be https://",
            ),
            (
                hook("https://:443/", ""),
                "webhooks[0].url: is not a URL: empty host",
            ),
            (
                hook("hooks.example.org/x", ""),
                "webhooks[0].url: is not a URL",
            ),
        ];
        for (text, expected) in cases {
            let error = NodeConfig::from_toml(&text, Path::new("/"))
                .expect_err(expected)
                .to_string();
            assert!(
                error.contains(expected),
                "expected {expected:?} in: {error}"
            );
        }
    }

    #[test]
    fn a_client_listed_twice_is_refused() {
        let text = VALID.replace(
            "roles = [\"lookup\"] }]",
            "roles = [\"lookup\"] }, { identity = \"spiffe://patchwork/client/portal\", roles = [\"admin\"] }]",
        );
        let error = NodeConfig::from_toml(&text, Path::new("/"))
            .expect_err("twice")
            .to_string();
        assert!(error.contains("api.clients[1].identity"), "{error}");
    }
}
