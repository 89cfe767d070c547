//! Peers and the agreements with them: which purposes a peer may ask (and be
//! asked) about, which sensitivities may be disclosed to it, how fast it may
//! ask, and which match-key set applies. Deny by default: a caller without an
//! agreement is not a peer.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroU32;
use std::sync::Arc;

use patchwork_certs::SpiffeId;
use patchwork_proto::v1::{LawfulBasis, Sensitivity};

/// The terms agreed with one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub purposes: BTreeSet<LawfulBasis>,
    pub sensitivities: BTreeSet<Sensitivity>,
    pub rate_limit_per_minute: u32,
    /// The name of the match-key set shared with this peer.
    pub key_set: String,
}

/// What of one involvement may go to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disclosure {
    /// The practitioner's contact details.
    Practitioner,
    /// Only that a restricted service is involved, and its gatekeeper.
    GatekeeperOnly,
    /// Nothing.
    Withheld,
}

/// Safeguarding purposes: those for which always-findable involvements are
/// disclosed to every agreed peer.
pub fn is_safeguarding(basis: LawfulBasis) -> bool {
    matches!(
        basis,
        LawfulBasis::ChildSafeguarding
            | LawfulBasis::AdultSafeguarding
            | LawfulBasis::VitalInterests
    )
}

impl Agreement {
    pub fn allows(&self, basis: LawfulBasis) -> bool {
        self.purposes.contains(&basis)
    }

    /// What of an involvement of `sensitivity` may be disclosed to this peer
    /// asking for `basis` (a purpose it is allowed to ask for).
    pub fn disclosure(&self, sensitivity: Sensitivity, basis: LawfulBasis) -> Disclosure {
        let agreed = |s| self.sensitivities.contains(&s);
        match sensitivity {
            Sensitivity::AlwaysFindable if is_safeguarding(basis) => Disclosure::Practitioner,
            Sensitivity::AlwaysFindable
                if agreed(Sensitivity::AlwaysFindable) || agreed(Sensitivity::Standard) =>
            {
                Disclosure::Practitioner
            }
            Sensitivity::Standard if agreed(Sensitivity::Standard) => Disclosure::Practitioner,
            Sensitivity::Restricted if agreed(Sensitivity::Restricted) => {
                Disclosure::GatekeeperOnly
            }
            _ => Disclosure::Withheld,
        }
    }
}

/// One peer's allowance: up to a minute's worth of calls at once, refilled
/// continuously (`governor`'s GCRA, the token bucket's equivalent).
pub struct RateLimiter {
    per_minute: NonZeroU32,
    limiter: governor::DefaultDirectRateLimiter,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `per_minute` calls a minute (0 counts as 1).
    pub fn new(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        RateLimiter {
            per_minute,
            limiter: governor::RateLimiter::direct(governor::Quota::per_minute(per_minute)),
        }
    }

    /// Takes one call's allowance if there is one.
    pub fn try_acquire(&self) -> bool {
        self.limiter.check().is_ok()
    }
}

/// Another node this node asks and answers.
#[derive(Debug)]
pub struct Peer {
    pub identity: SpiffeId,
    pub name: String,
    /// "host:port".
    pub address: String,
    pub agreement: Agreement,
    /// Its queries to this node.
    pub limiter: Arc<RateLimiter>,
    /// Its polls for subscription notifications (each poll audits what it
    /// is sent, so a peer may not poll at any pace it likes).
    pub poll_limiter: Arc<RateLimiter>,
}

/// Every configured peer, by identity.
#[derive(Debug, Default)]
pub struct PeerRegistry {
    peers: Vec<Arc<Peer>>,
    by_identity: HashMap<SpiffeId, Arc<Peer>>,
}

impl PeerRegistry {
    pub fn new(peers: Vec<Peer>) -> Self {
        let peers: Vec<Arc<Peer>> = peers.into_iter().map(Arc::new).collect();
        let by_identity = peers
            .iter()
            .map(|p| (p.identity.clone(), p.clone()))
            .collect();
        PeerRegistry { peers, by_identity }
    }

    /// The peer with this identity, if there is an agreement with it.
    pub fn get(&self, identity: &SpiffeId) -> Option<&Arc<Peer>> {
        self.by_identity.get(identity)
    }

    pub fn all(&self) -> &[Arc<Peer>] {
        &self.peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreement(sensitivities: &[Sensitivity]) -> Agreement {
        Agreement {
            purposes: [LawfulBasis::ChildSafeguarding, LawfulBasis::DirectCare]
                .into_iter()
                .collect(),
            sensitivities: sensitivities.iter().copied().collect(),
            rate_limit_per_minute: 60,
            key_set: "england".into(),
        }
    }

    #[test]
    fn always_findable_is_disclosed_for_safeguarding_whatever_else_is_agreed() {
        let restricted_only = agreement(&[Sensitivity::Restricted]);
        assert_eq!(
            restricted_only.disclosure(Sensitivity::AlwaysFindable, LawfulBasis::ChildSafeguarding),
            Disclosure::Practitioner
        );
        assert_eq!(
            restricted_only.disclosure(Sensitivity::AlwaysFindable, LawfulBasis::DirectCare),
            Disclosure::Withheld
        );
        assert_eq!(
            restricted_only.disclosure(Sensitivity::Restricted, LawfulBasis::DirectCare),
            Disclosure::GatekeeperOnly
        );
        assert_eq!(
            restricted_only.disclosure(Sensitivity::Standard, LawfulBasis::ChildSafeguarding),
            Disclosure::Withheld
        );
        let standard = agreement(&[Sensitivity::Standard]);
        assert_eq!(
            standard.disclosure(Sensitivity::Restricted, LawfulBasis::ChildSafeguarding),
            Disclosure::Withheld
        );
        assert_eq!(
            standard.disclosure(Sensitivity::Standard, LawfulBasis::DirectCare),
            Disclosure::Practitioner
        );
    }

    #[test]
    fn the_bucket_holds_a_minutes_worth() {
        let limiter = RateLimiter::new(3);
        assert!(limiter.try_acquire() && limiter.try_acquire() && limiter.try_acquire());
        assert!(
            !limiter.try_acquire(),
            "the fourth query within the minute is refused"
        );
    }
}
