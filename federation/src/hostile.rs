//! Defences of the answering node against a peer that misuses its
//! agreement, or a caller that has none: replayed request ids
//! ([`ReplayGuard`]), queries that look like enumeration
//! ([`EnumerationWatch`]) and refusals counted rather than written one by
//! one ([`RefusalTally`]). All keep bounded memory whatever a caller sends.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
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
        let mut guard = self.seen.lock();
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
        self.seen.lock().1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One miss-ratio rule: more than `min_queries` answers in `window`, of
/// which more than `miss_ratio` missed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MissWindow {
    pub window: Duration,
    pub min_queries: u32,
    pub miss_ratio: f64,
}

/// When a peer's queries look like enumeration. Every rule is checked on
/// every query; any one pauses the peer until it no longer holds.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumerationPolicy {
    /// Miss-ratio rules over several windows: a fast sweep trips the short
    /// one, a slow sweep the long ones. A hit counts only for a person not
    /// already hit in the longest window, so one known child asked about
    /// between probes (in ever different words) does not dilute the misses;
    /// a query identical to one in the last day counts neither way.
    pub windows: Vec<MissWindow>,
    /// Distinct queries (different key sets; the same person asked about
    /// again with the same keys counts once) per peer in 24 hours (at most
    /// [`MAX_DAILY_DISTINCT`]).
    pub daily_distinct_queries: u32,
    /// Distinct queries answered "ambiguous" per peer in 24 hours: each
    /// tells the peer that someone like that is held here, so a sweep, however
    /// slow, spends this budget first.
    pub daily_ambiguous: u32,
    /// A sweep around a constant key: one digest seen in more than this many
    /// distinct queries in 24 hours (the other keys changing each time, e.g.
    /// the same name and postcode with every date of birth).
    pub sweep_variants: u32,
}

impl Default for EnumerationPolicy {
    fn default() -> Self {
        EnumerationPolicy {
            windows: vec![
                MissWindow {
                    window: Duration::from_secs(10 * 60),
                    min_queries: 50,
                    miss_ratio: 0.9,
                },
                MissWindow {
                    window: Duration::from_secs(60 * 60),
                    min_queries: 150,
                    miss_ratio: 0.9,
                },
                MissWindow {
                    window: DAY,
                    min_queries: 500,
                    miss_ratio: 0.9,
                },
            ],
            daily_distinct_queries: 5_000,
            daily_ambiguous: 100,
            sweep_variants: 20,
        }
    }
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const MINUTE: Duration = Duration::from_secs(60);

/// Which rule paused a peer (for logs and alerts; the peer is told only
/// that its queries are paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Mostly misses over the window of this many minutes.
    Misses { window_minutes: u64 },
    /// More distinct queries in 24 hours than the budget.
    DailyBudget,
    /// More "ambiguous" answers in 24 hours than the budget.
    AmbiguousBudget,
    /// One key held constant while the others swept.
    Sweep,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signal::Misses { window_minutes } => {
                write!(f, "mostly misses over {window_minutes} minutes")
            }
            Signal::DailyBudget => write!(f, "more distinct queries in 24 hours than agreed"),
            Signal::AmbiguousBudget => {
                write!(f, "more ambiguous answers in 24 hours than agreed")
            }
            Signal::Sweep => write!(f, "one key held while the others swept"),
        }
    }
}

/// What recording one answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Normal,
    /// This answer made the peer's queries look like enumeration (alert
    /// once, each time it starts).
    AlertRaised(Signal),
}

/// The shape of one answered query, as the watch needs it: its keys'
/// digests and, if its answer disclosed someone, who.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    pub digests: &'a [[u8; 32]],
    /// The person disclosed about (`None`: no match, ambiguous, or matched
    /// with nothing to disclose — a miss).
    pub disclosed_person: Option<&'a str>,
    /// Whether the peer was answered "ambiguous".
    pub ambiguous: bool,
}

/// Most persons, fingerprints or digests remembered per peer: bounded
/// whatever it sends (the oldest are forgotten first).
const MAX_REMEMBERED: usize = 20_000;

/// The largest `daily_distinct_queries` a watch keeps count of exactly.
pub const MAX_DAILY_DISTINCT: u32 = 100_000;

/// Keys seen recently, each with a value, forgotten oldest first once older
/// than the span or beyond the capacity. Every operation is amortised O(1).
#[derive(Debug)]
struct Recent<K, V> {
    entries: HashMap<K, (Instant, V)>,
    /// Insertion and refresh order; an item whose time no longer matches its
    /// entry's is a stale copy, skipped.
    order: VecDeque<(Instant, K)>,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone, V: Default> Recent<K, V> {
    fn forget(&mut self, now: Instant, span: Duration, capacity: usize) {
        while let Some((at, key)) = self.order.front() {
            let current = self.entries.get(key).is_some_and(|(seen, _)| seen == at);
            let old = now.saturating_duration_since(*at) >= span;
            if current && !old && self.entries.len() <= capacity {
                break;
            }
            if let Some((_, key)) = self.order.pop_front()
                && current
            {
                self.entries.remove(&key);
            }
        }
        // Refreshes leave stale copies behind: rebuild once they dominate
        // (amortised over the pushes that made them).
        if self.order.len() > 2 * self.entries.len().max(16) {
            let mut order: Vec<(Instant, K)> = self
                .entries
                .iter()
                .map(|(key, (at, _))| (*at, key.clone()))
                .collect();
            order.sort_by_key(|(at, _)| *at);
            self.order = order.into();
        }
    }

    /// The value kept for `key`, marked as seen `now` (created if new).
    fn touch(&mut self, key: K, now: Instant) -> (&mut V, bool) {
        let fresh = !self.entries.contains_key(&key);
        self.order.push_back((now, key.clone()));
        let entry = self.entries.entry(key).or_insert((now, V::default()));
        entry.0 = now;
        (&mut entry.1, fresh)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[derive(Debug, Default)]
struct PeerHistory {
    /// Minute buckets (minute index, answers, misses), oldest first, at
    /// most a day of them.
    minutes: VecDeque<(u64, u32, u32)>,
    /// Persons disclosed about in the longest window: a hit counts once.
    hit_persons: Recent<String, ()>,
    /// Distinct queries (fingerprints) in the last day.
    queries: Recent<u64, ()>,
    /// Distinct queries answered "ambiguous" in the last day.
    ambiguous: Recent<u64, ()>,
    /// Digest (first 8 bytes) → the fingerprints of the queries it was in,
    /// in the last day.
    digests: Recent<u64, Vec<u64>>,
    /// When a digest last went past `sweep_variants`.
    swept_at: Option<Instant>,
    /// The rule that paused the peer, while it holds.
    paused: Option<Signal>,
}

/// Each peer's recent answers: detects enumeration by several signals
/// ([`EnumerationPolicy`]) in bounded memory.
#[derive(Debug)]
pub struct EnumerationWatch {
    /// Replaced whole by a config reload; the peers' histories stay.
    policy: parking_lot::RwLock<EnumerationPolicy>,
    epoch: Instant,
    /// Keyed per watch, so a peer cannot craft two different queries with
    /// the same fingerprint (one would count as a repeat of the other).
    hasher: std::collections::hash_map::RandomState,
    peers: Mutex<HashMap<SpiffeId, PeerHistory>>,
}

impl Default for EnumerationWatch {
    fn default() -> Self {
        EnumerationWatch::new(EnumerationPolicy::default())
    }
}

fn fingerprint(hasher: &impl std::hash::BuildHasher, digests: &[[u8; 32]]) -> u64 {
    let mut sorted: Vec<&[u8; 32]> = digests.iter().collect();
    sorted.sort();
    hasher.hash_one(sorted)
}

fn short(digest: &[u8; 32]) -> u64 {
    let mut bytes = [0_u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(bytes)
}

impl EnumerationWatch {
    pub fn new(policy: EnumerationPolicy) -> Self {
        EnumerationWatch {
            policy: parking_lot::RwLock::new(policy),
            epoch: Instant::now(),
            hasher: std::collections::hash_map::RandomState::new(),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// The rules from now on (a reload); what peers asked so far still counts.
    pub fn set_policy(&self, policy: EnumerationPolicy) {
        *self.policy.write() = policy;
    }

    fn policy(&self) -> parking_lot::RwLockReadGuard<'_, EnumerationPolicy> {
        self.policy.read()
    }

    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs() / 60
    }

    fn longest(&self) -> Duration {
        self.policy()
            .windows
            .iter()
            .map(|w| w.window)
            .max()
            .unwrap_or(MINUTE)
    }

    fn prune(&self, history: &mut PeerHistory, now: Instant) {
        let minute = self.minute(now);
        let keep_minutes = (self.longest().max(DAY).as_secs() / 60).max(1);
        while history
            .minutes
            .front()
            .is_some_and(|(m, _, _)| minute.saturating_sub(*m) >= keep_minutes)
        {
            history.minutes.pop_front();
        }
        history
            .hit_persons
            .forget(now, self.longest(), MAX_REMEMBERED);
        let budget = (self.policy().daily_distinct_queries as usize).saturating_add(1);
        history
            .queries
            .forget(now, DAY, budget.min(MAX_DAILY_DISTINCT as usize + 1));
        let ambiguous = (self.policy().daily_ambiguous as usize).saturating_add(1);
        history
            .ambiguous
            .forget(now, DAY, ambiguous.min(MAX_DAILY_DISTINCT as usize + 1));
        history.digests.forget(now, DAY, MAX_REMEMBERED);
    }

    /// The first rule that holds for `history` now, if any.
    fn signal(&self, history: &PeerHistory, now: Instant) -> Option<Signal> {
        let minute = self.minute(now);
        for rule in &self.policy().windows {
            let span = (rule.window.as_secs() / 60).max(1);
            let (answers, misses) = history
                .minutes
                .iter()
                .rev()
                .take_while(|(m, _, _)| minute.saturating_sub(*m) < span)
                .fold((0_u64, 0_u64), |(a, m), (_, answers, misses)| {
                    (a + u64::from(*answers), m + u64::from(*misses))
                });
            if answers > u64::from(rule.min_queries)
                && misses as f64 > rule.miss_ratio * answers as f64
            {
                return Some(Signal::Misses {
                    window_minutes: span,
                });
            }
        }
        if history.queries.len() > self.policy().daily_distinct_queries as usize {
            return Some(Signal::DailyBudget);
        }
        if history.ambiguous.len() > self.policy().daily_ambiguous as usize {
            return Some(Signal::AmbiguousBudget);
        }
        if history
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < DAY)
        {
            return Some(Signal::Sweep);
        }
        None
    }

    /// Why `peer`'s queries are paused now, if they are: some rule holds
    /// (rules look back over their windows, so the pause ages out with them).
    pub fn paused(&self, peer: &SpiffeId, now: Instant) -> Option<Signal> {
        let mut peers = self.peers.lock();
        let history = peers.get_mut(peer)?;
        self.prune(history, now);
        let signal = self.signal(history, now);
        history.paused = signal;
        signal
    }

    /// Records one answer to `peer`.
    pub fn record(&self, peer: &SpiffeId, answered: Answered<'_>, now: Instant) -> Pattern {
        let mut peers = self.peers.lock();
        let history = peers.entry(peer.clone()).or_default();
        // A hit counts once per person in the longest window.
        let hit = match answered.disclosed_person {
            Some(person) => history.hit_persons.touch(person.to_owned(), now).1,
            None => false,
        };
        let fingerprint = fingerprint(&self.hasher, answered.digests);
        // The same query again with a hit (another practitioner asking about
        // the same child) teaches the peer nothing new: it counts neither
        // way. The same miss again still counts as a miss.
        let repeat = !history.queries.touch(fingerprint, now).1;
        if answered.ambiguous {
            history.ambiguous.touch(fingerprint, now);
        }
        let minute = self.minute(now);
        match history.minutes.back_mut() {
            _ if repeat && answered.disclosed_person.is_some() => {}
            Some((m, answers, misses)) if *m == minute => {
                *answers += 1;
                *misses += u32::from(!hit);
            }
            _ => history.minutes.push_back((minute, 1, u32::from(!hit))),
        }
        let variants = self.policy().sweep_variants as usize;
        // Only queries that found nobody count towards a sweep: many
        // practitioners asking about one child in crisis, each in slightly
        // other words, share its keys too.
        let digests = if answered.disclosed_person.is_some() {
            &[][..]
        } else {
            answered.digests
        };
        for digest in digests {
            let (seen, _) = history.digests.touch(short(digest), now);
            if !seen.contains(&fingerprint) && seen.len() <= variants {
                seen.push(fingerprint);
                if seen.len() > variants {
                    history.swept_at = Some(now);
                }
            }
        }
        self.prune(history, now);
        let was = history.paused;
        let signal = self.signal(history, now);
        history.paused = signal;
        match (was, signal) {
            (None, Some(signal)) => Pattern::AlertRaised(signal),
            _ => Pattern::Normal,
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
    /// The peer's queries are paused: they looked like enumeration.
    Paused,
}

impl TalliedRefusal {
    /// The name audit entries and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            TalliedRefusal::NoAgreement => "no_agreement",
            TalliedRefusal::RateLimited => "rate_limited",
            TalliedRefusal::Paused => "paused_enumeration",
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
        let mut counts = self.counts.lock();
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

    /// Counts back that were drained but not written (merged with anything
    /// counted since).
    pub fn restore(&self, drained: Vec<RefusalCount>) {
        let mut counts = self.counts.lock();
        for count in drained {
            let key = (count.caller.clone(), count.reason);
            match counts.get_mut(&key) {
                Some(entry) => {
                    entry.count += count.count;
                    entry.first_unix_seconds =
                        entry.first_unix_seconds.min(count.first_unix_seconds);
                    entry.last_unix_seconds = entry.last_unix_seconds.max(count.last_unix_seconds);
                }
                None => {
                    counts.insert(key, count);
                }
            }
        }
    }

    /// Everything counted since the last drain, in caller then reason order,
    /// and starts counting afresh.
    pub fn drain(&self) -> Vec<RefusalCount> {
        let mut drained: Vec<RefusalCount> = std::mem::take(&mut *self.counts.lock())
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
        // Drained but not written: back they go, merged with newer counts.
        tally.record(&peer("a"), TalliedRefusal::NoAgreement, 2_000);
        tally.restore(drained.clone());
        let again = tally.drain();
        assert_eq!(again[0].count, 1_001);
        assert_eq!(
            (again[0].first_unix_seconds, again[0].last_unix_seconds),
            (100, 2_000)
        );
        assert_eq!(again.len(), 3);
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

    fn miss(digest: u8) -> ([u8; 32], Option<&'static str>) {
        ([digest; 32], None)
    }

    fn record(
        watch: &EnumerationWatch,
        peer: &SpiffeId,
        (digest, person): ([u8; 32], Option<&str>),
        now: Instant,
    ) -> Pattern {
        watch.record(
            peer,
            Answered {
                digests: &[digest],
                disclosed_person: person,
                ambiguous: false,
            },
            now,
        )
    }

    #[test]
    fn mostly_missing_queries_raise_one_alert_and_pause() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let mut alerts = 0;
        for i in 0..60u8 {
            assert!(watch.paused(&p, t0).is_none() || i > 50);
            if let Pattern::AlertRaised(signal) = record(&watch, &p, miss(i), t0) {
                alerts += 1;
                assert_eq!(i, 50, "the 51st miss crosses the threshold");
                assert_eq!(signal, Signal::Misses { window_minutes: 10 });
            }
        }
        assert_eq!(alerts, 1);
        assert!(watch.paused(&p, t0).is_some());
        assert!(
            watch.paused(&peer("b"), t0).is_none(),
            "other peers unaffected"
        );
        // The pattern ages out of the window.
        assert!(watch.paused(&p, t0 + Duration::from_secs(601)).is_none());
    }

    #[test]
    fn ordinary_traffic_with_hits_is_not_enumeration() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let persons: Vec<String> = (0..100).map(|i| format!("P-{i}")).collect();
        for i in 0..500u32 {
            // 80 % misses: a busy peer asking about people we mostly lack,
            // finding a different person each time it hits.
            let person = (i % 5 == 0).then(|| persons[(i / 5) as usize].as_str());
            let digest = [
                (i % 251) as u8,
                (i / 251) as u8,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11,
                12,
                13,
                14,
                15,
                16,
                17,
                18,
                19,
                20,
                21,
                22,
                23,
                24,
                25,
                26,
                27,
                28,
                29,
                30,
            ];
            let at = t0 + Duration::from_secs(u64::from(i) * 10);
            assert_eq!(
                record(&watch, &p, (digest, person), at),
                Pattern::Normal,
                "{i}"
            );
        }
    }

    #[test]
    fn one_known_hit_between_probes_does_not_dilute_the_misses() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let mut raised = None;
        for i in 0..200u8 {
            // Nine probes, then the same known child again in other words:
            // 90 % misses stayed under the old threshold; no hit now.
            let answer = if i % 10 == 9 {
                ([200 + i / 10; 32], Some("P-KNOWN"))
            } else {
                miss(i)
            };
            if let Pattern::AlertRaised(signal) = record(&watch, &p, answer, t0) {
                raised.get_or_insert((i, signal));
            }
        }
        assert_eq!(raised, Some((50, Signal::Misses { window_minutes: 10 })));
    }

    #[test]
    fn a_slow_sweep_is_caught_by_the_longer_windows() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let mut raised = None;
        // One query every 2 minutes, all missing: 5 per 10 minutes (never
        // enough for the short window), 30 an hour.
        for i in 0..1_215u32 {
            let at = t0 + Duration::from_secs(u64::from(i) * 120);
            let digest = {
                let mut d = [0_u8; 32];
                d[..4].copy_from_slice(&i.to_le_bytes());
                d
            };
            if let Pattern::AlertRaised(signal) = record(&watch, &p, (digest, None), at) {
                raised.get_or_insert((i, signal));
            }
        }
        assert_eq!(
            raised,
            Some((
                500,
                Signal::Misses {
                    window_minutes: 1440
                }
            ))
        );
    }

    #[test]
    fn a_constant_key_with_the_others_sweeping_is_a_sweep() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let constant = [42_u8; 32];
        let mut raised = None;
        for i in 0..40u8 {
            let at = t0 + Duration::from_secs(u64::from(i) * 600);
            let answered = Answered {
                digests: &[constant, [i; 32]],
                disclosed_person: None,
                ambiguous: false,
            };
            if let Pattern::AlertRaised(signal) = watch.record(&p, answered, at) {
                raised.get_or_insert((i, signal));
            }
        }
        assert_eq!(raised, Some((20, Signal::Sweep)));
        // The same person asked about again and again is not a sweep.
        let watch = EnumerationWatch::default();
        for i in 0..100u64 {
            let answered = Answered {
                digests: &[constant, [7; 32]],
                disclosed_person: Some("P-1"),
                ambiguous: false,
            };
            let at = t0 + Duration::from_secs(i * 600);
            assert_eq!(watch.record(&p, answered, at), Pattern::Normal);
        }
    }

    #[test]
    fn ambiguous_answers_have_their_own_daily_budget_at_any_pace() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let mut raised = None;
        // One "ambiguous" in three among misses at one query per 3
        // minutes (480 a day: under every miss-ratio window's minimum).
        for i in 0..1_500u32 {
            let mut digest = [0_u8; 32];
            digest[..4].copy_from_slice(&i.to_le_bytes());
            let answered = Answered {
                digests: &[digest],
                disclosed_person: None,
                ambiguous: i % 3 == 0,
            };
            let at = t0 + Duration::from_secs(u64::from(i) * 180);
            if let Pattern::AlertRaised(signal) = watch.record(&p, answered, at) {
                raised.get_or_insert((i, signal));
            }
        }
        assert_eq!(raised, Some((300, Signal::AmbiguousBudget)));
    }

    #[test]
    fn one_child_asked_about_in_many_words_is_not_a_sweep() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let nhs = [9_u8; 32];
        for i in 0..60u8 {
            // The same identifier with other details each time, all found.
            let answered = Answered {
                digests: &[nhs, [i; 32]],
                disclosed_person: Some("P-CRISIS"),
                ambiguous: false,
            };
            let at = t0 + Duration::from_secs(u64::from(i) * 60);
            assert_eq!(watch.record(&p, answered, at), Pattern::Normal, "{i}");
        }
    }

    #[test]
    fn the_same_miss_again_still_counts() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        let mut raised = None;
        for i in 0..60u32 {
            if let Pattern::AlertRaised(signal) = record(&watch, &p, miss(1), t0) {
                raised.get_or_insert((i, signal));
            }
        }
        assert_eq!(raised, Some((50, Signal::Misses { window_minutes: 10 })));
    }

    #[test]
    fn the_daily_budget_counts_distinct_queries() {
        let watch = EnumerationWatch::new(EnumerationPolicy {
            windows: Vec::new(),
            daily_distinct_queries: 100,
            daily_ambiguous: 1_000,
            sweep_variants: 1_000,
        });
        let (p, t0) = (peer("a"), Instant::now());
        for i in 0..100u8 {
            assert_eq!(
                record(&watch, &p, ([i; 32], Some("P-1")), t0),
                Pattern::Normal
            );
            // Asking again about the same subject counts once.
            assert_eq!(
                record(&watch, &p, ([i; 32], Some("P-1")), t0),
                Pattern::Normal
            );
        }
        assert_eq!(
            record(&watch, &p, ([200; 32], None), t0),
            Pattern::AlertRaised(Signal::DailyBudget)
        );
        assert!(watch.paused(&p, t0 + DAY + MINUTE).is_none(), "a day later");
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_queries() {
        let watch = EnumerationWatch::default();
        let (p, t0) = (peer("a"), Instant::now());
        for i in 0..60_000u32 {
            let mut digest = [0_u8; 32];
            digest[..4].copy_from_slice(&i.to_le_bytes());
            let person = format!("P-{i}");
            record(&watch, &p, (digest, Some(&person)), t0);
        }
        let peers = watch.peers.lock();
        let history = peers.get(&p).expect("history");
        assert!(history.hit_persons.len() <= MAX_REMEMBERED);
        assert!(history.hit_persons.order.len() <= 2 * MAX_REMEMBERED + 1);
        assert!(history.queries.len() <= 5_001);
        assert!(history.digests.len() <= MAX_REMEMBERED);
        assert!(history.digests.order.len() <= 2 * MAX_REMEMBERED + 1);
        assert!(history.minutes.len() <= 1_440);
    }
}
