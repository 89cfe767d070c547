//! The node's side of federation: match-key secrets read from their files,
//! the peers and agreements from the config, and one long-lived channel per
//! peer (rebuilt when the node's own certificate or trust bundle changes, so a
//! rotated certificate is what peers see on the next connection).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use patchwork_certs::SpiffeId;
use patchwork_federation::agreement::{Agreement, Peer, PeerRegistry, RateLimiter};
use patchwork_federation::matchkeys::KeySet;
use patchwork_federation::transport::TlsErrors;
use patchwork_proto::v1;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::config::{FederationSection, PurposeName, SensitivityName};
use crate::server::{NodeError, read_private_key};
use crate::tls::TlsState;

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
pub fn load_key_sets(section: &FederationSection) -> Result<Vec<KeySet>, NodeError> {
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
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn basis(name: PurposeName) -> v1::LawfulBasis {
    match name {
        PurposeName::ChildSafeguarding => v1::LawfulBasis::ChildSafeguarding,
        PurposeName::AdultSafeguarding => v1::LawfulBasis::AdultSafeguarding,
        PurposeName::VitalInterests => v1::LawfulBasis::VitalInterests,
        PurposeName::DirectCare => v1::LawfulBasis::DirectCare,
        PurposeName::PublicTask => v1::LawfulBasis::PublicTask,
        PurposeName::CrimePrevention => v1::LawfulBasis::CrimePrevention,
        PurposeName::Consent => v1::LawfulBasis::Consent,
    }
}

fn sensitivity(name: SensitivityName) -> v1::Sensitivity {
    match name {
        SensitivityName::Standard => v1::Sensitivity::Standard,
        SensitivityName::Restricted => v1::Sensitivity::Restricted,
        SensitivityName::AlwaysFindable => v1::Sensitivity::AlwaysFindable,
    }
}

/// Each peer's channel and where its connections note TLS errors.
type PeerChannels = HashMap<SpiffeId, (Channel, TlsErrors)>;

/// Peers, their agreements and channels, and the key sets.
#[derive(Debug)]
pub struct Federation {
    pub registry: PeerRegistry,
    key_sets: HashMap<String, KeySet>,
    pub default_deadline: Duration,
    /// Peer calls in flight across all lookups.
    pub slots: Arc<Semaphore>,
    /// Each peer's circuit breaker (lookups skip a peer that keeps failing).
    pub breakers: patchwork_federation::breaker::Breakers,
    /// When peers' queries to this node look like enumeration.
    pub enumeration: patchwork_federation::hostile::EnumerationPolicy,
    tls: Arc<TlsState>,
    channels: RwLock<(u64, PeerChannels)>,
    /// Peers' key-set fingerprints, compared before each lookup.
    pub peer_fingerprints: Arc<patchwork_federation::keycheck::PeerFingerprints>,
}

impl Federation {
    /// `section` has been validated: identities parse, key sets exist.
    pub fn new(section: &FederationSection, key_sets: Vec<KeySet>, tls: Arc<TlsState>) -> Self {
        let peers = section
            .peers
            .iter()
            .filter_map(|entry| {
                let identity: SpiffeId = entry.identity.parse().ok()?;
                Some(Peer {
                    identity,
                    name: entry.name.trim().to_owned(),
                    address: entry.address.clone(),
                    agreement: Agreement {
                        purposes: entry.purposes.iter().map(|p| basis(*p)).collect(),
                        sensitivities: entry
                            .sensitivities
                            .iter()
                            .map(|s| sensitivity(*s))
                            .collect(),
                        rate_limit_per_minute: entry.rate_limit_per_minute,
                        key_set: entry.key_set.clone(),
                    },
                    limiter: RateLimiter::new(entry.rate_limit_per_minute),
                })
            })
            .collect();
        Federation {
            registry: PeerRegistry::new(peers),
            key_sets: key_sets
                .into_iter()
                .map(|set| (set.name().to_owned(), set))
                .collect(),
            default_deadline: Duration::from_millis(u64::from(section.default_deadline_ms)),
            slots: Arc::new(Semaphore::new(section.max_concurrent_calls)),
            breakers: patchwork_federation::breaker::Breakers::new(
                patchwork_federation::breaker::DEFAULT_THRESHOLD,
                Duration::from_millis(u64::from(section.breaker_cool_down_ms)),
            ),
            enumeration: section.enumeration.policy(),
            tls,
            channels: RwLock::new((0, HashMap::new())),
            peer_fingerprints: Arc::default(),
        }
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
    pub fn channel_and_tls_errors(&self, peer: &Peer) -> Result<(Channel, TlsErrors), String> {
        let generation = self.tls.generation();
        if let Ok(channels) = self.channels.read()
            && channels.0 == generation
            && let Some(channel) = channels.1.get(&peer.identity)
        {
            return Ok(channel.clone());
        }
        let material = self.tls.current();
        let config = patchwork_certs::client_config(
            &material.own,
            &material.trust,
            peer.identity.clone(),
            material.min_version,
        )
        .map_err(|e| e.to_string())?;
        let channel = patchwork_federation::transport::lazy_tls_channel(
            &peer.address,
            Arc::new(config),
            PEER_CONNECT_TIMEOUT,
        )?;
        let mut channels = match self.channels.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if channels.0 != generation {
            *channels = (generation, HashMap::new());
        }
        channels.1.insert(peer.identity.clone(), channel.clone());
        Ok(channel)
    }
}
