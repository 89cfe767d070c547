//! Defences of the answering node against a peer that misuses its
//! agreement, or a caller that has none: replayed request ids
//! ([`ReplayGuard`]), queries that look like enumeration
//! ([`EnumerationWatch`]) and refusals counted rather than written one by
//! one ([`RefusalTally`]). All keep bounded memory whatever a caller sends.

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

/// Why a query was refused without a per-request audit entry: the refusals
/// a caller can repeat as fast as it likes, so they are counted and audited
/// as one summary per caller, reason and period ([`RefusalTally`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TalliedRefusal {
    /// The caller's identity has no agreement with this node.
    NoAgreement,
    /// The peer asked faster than its agreement's rate.
    RateLimited,
}

impl TalliedRefusal {
    /// The name audit entries and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            TalliedRefusal::NoAgreement => "no_agreement",
            TalliedRefusal::RateLimited => "rate_limited",
        }
    }
}

/// The most distinct callers a [`RefusalTally`] counts one by one per
/// period; beyond it, refusals are counted under [`TALLY_OVERFLOW`].
pub const MAX_TALLIED_CALLERS: usize = 1_024;
/// The caller name refusals beyond [`MAX_TALLIED_CALLERS`] are counted under.
pub const TALLY_OVERFLOW: &str = "other callers";

/// Refusals of one caller for one reason since the last drain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalCount {
    /// The caller's verified identity (or [`TALLY_OVERFLOW`]).
    pub caller: String,
    pub reason: TalliedRefusal,
    pub count: u64,
    /// Unix seconds of the first and the last refusal counted.
    pub first_unix_seconds: i64,
    pub last_unix_seconds: i64,
}

/// Counts refusals in memory so that a caller refused again and again makes
/// the node write one audit entry per period, not one per request: the
/// answer to "any certificate from any trusted CA can flood the audit log".
/// Memory is bounded whatever callers send.
#[derive(Debug, Default)]
pub struct RefusalTally {
    counts: Mutex<HashMap<(String, TalliedRefusal), RefusalCount>>,
}

impl RefusalTally {
    /// Counts one refusal of `caller` at `unix_seconds`.
    pub fn record(&self, caller: &SpiffeId, reason: TalliedRefusal, unix_seconds: i64) {
        let mut counts = lock(&self.counts);
        let mut key = (caller.to_string(), reason);
        if !counts.contains_key(&key) && counts.len() >= MAX_TALLIED_CALLERS {
            key.0 = TALLY_OVERFLOW.to_owned();
        }
        let entry = counts
            .entry(key)
            .or_insert_with_key(|(caller, reason)| RefusalCount {
                caller: caller.clone(),
                reason: *reason,
                count: 0,
                first_unix_seconds: unix_seconds,
                last_unix_seconds: unix_seconds,
            });
        entry.count += 1;
        entry.last_unix_seconds = unix_seconds;
    }

    /// Everything counted since the last drain, in caller then reason order,
    /// and starts counting afresh.
    pub fn drain(&self) -> Vec<RefusalCount> {
        let mut drained: Vec<RefusalCount> = std::mem::take(&mut *lock(&self.counts))
            .into_values()
            .collect();
        drained.sort_by(|a, b| (&a.caller, a.reason).cmp(&(&b.caller, b.reason)));
        drained
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
    fn refusals_are_counted_per_caller_and_reason_in_bounded_memory() {
        let tally = RefusalTally::default();
        for t in 0..1_000 {
            tally.record(&peer("a"), TalliedRefusal::NoAgreement, 100 + t);
        }
        tally.record(&peer("b"), TalliedRefusal::RateLimited, 150);
        tally.record(&peer("a"), TalliedRefusal::RateLimited, 160);
        let drained = tally.drain();
        assert_eq!(
            drained
                .iter()
                .map(|c| (c.caller.as_str(), c.reason, c.count))
                .collect::<Vec<_>>(),
            vec![
                (
                    "spiffe://test.patchwork/node/a",
                    TalliedRefusal::NoAgreement,
                    1_000
                ),
                (
                    "spiffe://test.patchwork/node/a",
                    TalliedRefusal::RateLimited,
                    1
                ),
                (
                    "spiffe://test.patchwork/node/b",
                    TalliedRefusal::RateLimited,
                    1
                ),
            ]
        );
        assert_eq!(
            (drained[0].first_unix_seconds, drained[0].last_unix_seconds),
            (100, 1_099)
        );
        assert!(tally.drain().is_empty(), "a drain starts afresh");
        // Many identities (a compromised CA minting them): bounded.
        for i in 0..(MAX_TALLIED_CALLERS + 500) {
            tally.record(&peer(&format!("n{i}")), TalliedRefusal::NoAgreement, 1);
        }
        let drained = tally.drain();
        assert_eq!(drained.len(), MAX_TALLIED_CALLERS + 1);
        let other = drained
            .iter()
            .find(|c| c.caller == TALLY_OVERFLOW)
            .expect("overflow counted");
        assert_eq!(other.count, 500);
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
