//! Defences of the answering node against a peer that misuses its
//! agreement: replayed request ids ([`ReplayGuard`]) and queries that look
//! like enumeration — many queries, nearly all missing ([`EnumerationWatch`]).
//! Both keep bounded memory whatever a peer sends.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use patchwork_certs::SpiffeId;

/// Largest `FindInvolvementsRequest` a node decodes (a real one is well
/// under 2 KiB: at most 32 keys of 32 bytes, a purpose and a requester).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest `FindInvolvementsResponse` an asking node accepts.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// How long an answered request id is remembered.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Most request ids remembered at once (the oldest are forgotten first).
pub const REPLAY_CAPACITY: usize = 100_000;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update leaves the data whole, so a poisoned lock is still usable.
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Who asked what (for lookups) and in which order (for forgetting).
type Remembered = (
    HashSet<(SpiffeId, String)>,
    VecDeque<(Instant, SpiffeId, String)>,
);

/// The (peer, request id) pairs answered recently.
#[derive(Debug)]
pub struct ReplayGuard {
    window: Duration,
    capacity: usize,
    seen: Mutex<Remembered>,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(REPLAY_WINDOW, REPLAY_CAPACITY)
    }
}

impl ReplayGuard {
    pub fn new(window: Duration, capacity: usize) -> Self {
        ReplayGuard {
            window,
            capacity: capacity.max(1),
            seen: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Remembers `request_id` from `peer`; false if it was seen within the
    /// window (a replay).
    pub fn first_time(&self, peer: &SpiffeId, request_id: &str, now: Instant) -> bool {
        let mut guard = lock(&self.seen);
        let (set, order) = &mut *guard;
        while let Some((at, _, _)) = order.front() {
            if now.saturating_duration_since(*at) < self.window && order.len() < self.capacity {
                break;
            }
            if let Some((_, old_peer, old_id)) = order.pop_front() {
                set.remove(&(old_peer, old_id));
            }
        }
        let key = (peer.clone(), request_id.to_owned());
        if set.contains(&key) {
            return false;
        }
        set.insert(key);
        order.push_back((now, peer.clone(), request_id.to_owned()));
        true
    }

    /// Request ids remembered now.
    pub fn len(&self) -> usize {
        lock(&self.seen).1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// When a peer's queries look like enumeration.
#[derive(Debug, Clone, Copy)]
pub struct EnumerationPolicy {
    pub window: Duration,
    /// More queries than this in the window before the pattern counts.
    pub min_queries: usize,
    /// Misses (no match or ambiguous) above this share of them.
    pub miss_ratio: f64,
}

impl Default for EnumerationPolicy {
    fn default() -> Self {
        EnumerationPolicy {
            window: Duration::from_secs(10 * 60),
            min_queries: 50,
            miss_ratio: 0.9,
        }
    }
}

/// What recording one answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Normal,
    /// This answer took the peer over the threshold (alert once).
    AlertRaised,
}

/// Most answers remembered per peer: well above `min_queries`, so the
/// ratio is still meaningful, and bounded whatever the peer sends.
const MAX_REMEMBERED: usize = 10_000;

/// Each peer's recent answers: when, and whether they missed.
#[derive(Debug, Default)]
pub struct EnumerationWatch {
    policy: EnumerationPolicy,
    peers: Mutex<HashMap<SpiffeId, VecDeque<(Instant, bool)>>>,
}

impl EnumerationWatch {
    pub fn new(policy: EnumerationPolicy) -> Self {
        EnumerationWatch {
            policy,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn over(&self, answers: &VecDeque<(Instant, bool)>) -> bool {
        let total = answers.len();
        if total <= self.policy.min_queries {
            return false;
        }
        let misses = answers.iter().filter(|(_, miss)| *miss).count();
        misses as f64 > self.policy.miss_ratio * total as f64
    }

    fn prune(&self, answers: &mut VecDeque<(Instant, bool)>, now: Instant) {
        while let Some((at, _)) = answers.front() {
            if now.saturating_duration_since(*at) < self.policy.window
                && answers.len() <= MAX_REMEMBERED
            {
                break;
            }
            answers.pop_front();
        }
    }

    /// Whether `peer`'s queries are paused now: its recent answers look
    /// like enumeration (they age out of the window, and the pause with them).
    pub fn paused(&self, peer: &SpiffeId, now: Instant) -> bool {
        let mut peers = lock(&self.peers);
        let Some(answers) = peers.get_mut(peer) else {
            return false;
        };
        self.prune(answers, now);
        self.over(answers)
    }

    /// Records one answer to `peer` (`miss`: no match or ambiguous).
    pub fn record(&self, peer: &SpiffeId, miss: bool, now: Instant) -> Pattern {
        let mut peers = lock(&self.peers);
        let answers = peers.entry(peer.clone()).or_default();
        self.prune(answers, now);
        let before = self.over(answers);
        answers.push_back((now, miss));
        if !before && self.over(answers) {
            Pattern::AlertRaised
        } else {
            Pattern::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str) -> SpiffeId {
        format!("spiffe://test.patchwork/node/{name}")
            .parse()
            .expect("id")
    }

    #[test]
    fn a_replay_is_caught_per_peer_within_the_window() {
        let guard = ReplayGuard::new(Duration::from_secs(600), 100);
        let t0 = Instant::now();
        assert!(guard.first_time(&peer("a"), "r-1", t0));
        assert!(!guard.first_time(&peer("a"), "r-1", t0 + Duration::from_secs(599)));
        // Another peer may use the same id: ids are only unique per asker.
        assert!(guard.first_time(&peer("b"), "r-1", t0));
        // After the window it is forgotten.
        assert!(guard.first_time(&peer("a"), "r-1", t0 + Duration::from_secs(1200)));
    }

    #[test]
    fn memory_stays_bounded() {
        let guard = ReplayGuard::new(Duration::from_secs(600), 1_000);
        let t0 = Instant::now();
        for i in 0..10_000 {
            assert!(guard.first_time(&peer("a"), &format!("r-{i}"), t0));
        }
        assert!(guard.len() <= 1_000);
        // The newest are still remembered.
        assert!(!guard.first_time(&peer("a"), "r-9999", t0));
    }

    #[test]
    fn mostly_missing_queries_raise_one_alert_and_pause() {
        let watch = EnumerationWatch::new(EnumerationPolicy::default());
        let (p, t0) = (peer("a"), Instant::now());
        let mut alerts = 0;
        for i in 0..60 {
            assert!(!watch.paused(&p, t0) || i > 50);
            if watch.record(&p, true, t0) == Pattern::AlertRaised {
                alerts += 1;
                assert_eq!(i, 50, "the 51st miss crosses the threshold");
            }
        }
        assert_eq!(alerts, 1);
        assert!(watch.paused(&p, t0));
        assert!(!watch.paused(&peer("b"), t0), "other peers unaffected");
        // The pattern ages out of the window.
        assert!(!watch.paused(&p, t0 + Duration::from_secs(601)));
    }

    #[test]
    fn ordinary_traffic_with_hits_is_not_enumeration() {
        let watch = EnumerationWatch::new(EnumerationPolicy::default());
        let (p, t0) = (peer("a"), Instant::now());
        for i in 0..500 {
            // 80 % misses: a busy peer asking about people we mostly lack.
            assert_eq!(watch.record(&p, i % 5 != 0, t0), Pattern::Normal);
        }
        assert!(!watch.paused(&p, t0));
    }
}
