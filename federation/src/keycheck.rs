//! Whether a peer holds the same match-key secret as this node: peers
//! compare key-set fingerprints (`NodeInfo`) before a lookup is sent, since
//! with different secrets every answer would be a silent "no match". What
//! each peer said is cached here, a while for a match and never for a
//! mismatch, so fixing the secret on either side is seen at the next lookup.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use patchwork_certs::SpiffeId;
use patchwork_proto::v1::{self, federation_client::FederationClient};
use tonic::transport::Channel;

/// How long a peer's fingerprint is trusted before it is asked again: a
/// secret changed on both sides mid-way (a rotation) is seen within it.
pub const FINGERPRINT_TTL: Duration = Duration::from_secs(5 * 60);

/// A peer and a key set's name.
type PeerSet = (SpiffeId, String);
/// What the peer said (`None`: no fingerprint) and when.
type Said = (Option<String>, Instant);

/// What a peer said its fingerprint is, per (peer, key set).
#[derive(Debug, Default)]
pub struct PeerFingerprints {
    known: Mutex<HashMap<PeerSet, Said>>,
}

impl PeerFingerprints {
    /// `Some(None)`: the peer answered without a fingerprint (an older
    /// node); `None`: not known (or too old).
    fn get(&self, peer: &SpiffeId, key_set: &str, now: Instant) -> Option<Option<String>> {
        let known = self.known.lock();
        known
            .get(&(peer.clone(), key_set.to_owned()))
            .filter(|(_, at)| now.duration_since(*at) < FINGERPRINT_TTL)
            .map(|(fingerprint, _)| fingerprint.clone())
    }

    fn remember(&self, peer: &SpiffeId, key_set: &str, fingerprint: Option<String>, now: Instant) {
        let mut known = self.known.lock();
        known.insert((peer.clone(), key_set.to_owned()), (fingerprint, now));
    }

    fn forget(&self, peer: &SpiffeId, key_set: &str) {
        let mut known = self.known.lock();
        known.remove(&(peer.clone(), key_set.to_owned()));
    }
}

/// This node's side of the comparison for one call.
#[derive(Debug, Clone)]
pub struct KeyCheck {
    /// The agreed key set's name.
    pub key_set: String,
    /// This node's fingerprint of it.
    pub ours: String,
    pub known: Arc<PeerFingerprints>,
}

impl KeyCheck {
    /// The mismatch, in words for the lookup's answer, if the peer holds
    /// another secret. A peer that cannot say (an older node, or `NodeInfo`
    /// failed) is asked anyway: the query's own outcome tells the rest.
    pub async fn mismatch(
        &self,
        peer: &SpiffeId,
        channel: Channel,
        timeout: Duration,
    ) -> Option<String> {
        let theirs = match self.known.get(peer, &self.key_set, Instant::now()) {
            Some(known) => known,
            None => {
                let mut request = tonic::Request::new(v1::NodeInfoRequest {});
                request.set_timeout(timeout);
                let info = FederationClient::new(channel)
                    .max_decoding_message_size(crate::hostile::MAX_ANSWER_BYTES)
                    .node_info(request)
                    .await
                    .ok()?
                    .into_inner();
                let theirs = info
                    .key_set_fingerprints
                    .into_iter()
                    .find(|f| f.key_set == self.key_set)
                    .map(|f| f.fingerprint);
                self.known
                    .remember(peer, &self.key_set, theirs.clone(), Instant::now());
                theirs
            }
        }?;
        if theirs == self.ours {
            return None;
        }
        // Asked again next time, so a corrected secret is seen at once.
        self.known.forget(peer, &self.key_set);
        Some(format!(
            "match-key secrets differ: key set {} has fingerprint {} here and {} at the peer, \
             so every answer would be \"no match\"; not asked. Compare `patchwork config check` \
             on both nodes and install the same secret file",
            self.key_set,
            self.ours,
            truncate(&theirs)
        ))
    }
}

/// A peer's claimed fingerprint, shown at most as long as a real one.
fn truncate(text: &str) -> String {
    text.chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_claimed_fingerprint_is_shown_as_at_most_16_hex_digits() {
        let hostile = format!("0123456789abcdef\n{}", "f".repeat(10_000));
        assert_eq!(truncate(&hostile), "0123456789abcdef");
        assert_eq!(truncate("<script>ab"), "cab");
    }

    #[test]
    fn a_fingerprint_is_forgotten_after_its_ttl() {
        let known = PeerFingerprints::default();
        let peer: SpiffeId = "spiffe://patchwork/node/kent".parse().expect("id");
        let then = Instant::now();
        known.remember(&peer, "england", Some("ab".into()), then);
        assert_eq!(known.get(&peer, "england", then), Some(Some("ab".into())));
        assert_eq!(known.get(&peer, "wales", then), None);
        assert_eq!(known.get(&peer, "england", then + FINGERPRINT_TTL), None);
    }
}
