//! A circuit breaker per peer: a peer that failed several times in a row
//! (timed out, unreachable, broken answers) is not asked for a cool-down, so
//! a dead or flapping peer costs lookups nothing instead of the whole
//! deadline each time. After the cool-down one trial call goes through; its
//! success closes the circuit, its failure opens it again. Refusals are
//! answers (the peer is alive), not failures.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use patchwork_certs::SpiffeId;

/// Consecutive failures that open a peer's circuit.
pub const DEFAULT_THRESHOLD: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cool-down is over and one trial call is out.
    Trial,
}

/// Whether to call a peer now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Call,
    /// Skipped: the circuit is open for this long still.
    Skip {
        remaining: Duration,
    },
}

impl Admission {
    /// What a lookup reports for a skipped peer.
    pub fn skip_detail(remaining: Duration) -> String {
        let seconds = remaining.as_millis().div_ceil(1000).max(1);
        format!("circuit open: skipped for {seconds} s after repeated failures")
    }
}

/// Every peer's circuit.
#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    cool_down: Duration,
    states: Mutex<HashMap<SpiffeId, State>>,
}

impl Breakers {
    /// `threshold` consecutive failures open a circuit for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Breakers {
            threshold: threshold.max(1),
            cool_down,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to call `peer` at `now`. An open circuit whose cool-down is
    /// over admits exactly one trial call until its result is recorded.
    pub fn admit(&self, peer: &SpiffeId, now: Instant) -> Admission {
        let mut states = self.states.lock();
        let state = states
            .entry(peer.clone())
            .or_insert(State::Closed { failures: 0 });
        match *state {
            State::Closed { .. } => Admission::Call,
            State::Open { until } if now < until => Admission::Skip {
                remaining: until - now,
            },
            State::Open { .. } => {
                *state = State::Trial;
                Admission::Call
            }
            State::Trial => Admission::Skip {
                remaining: Duration::ZERO,
            },
        }
    }

    /// Records how a call to `peer` went.
    pub fn record(&self, peer: &SpiffeId, success: bool, now: Instant) {
        let mut states = self.states.lock();
        let state = states
            .entry(peer.clone())
            .or_insert(State::Closed { failures: 0 });
        *state = match (*state, success) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            // A late failure from before the circuit opened changes nothing.
            (State::Open { until }, false) => State::Open { until },
            (_, false) => State::Open {
                until: now + self.cool_down,
            },
        };
    }

    /// Whether `peer`'s circuit is open (or on trial) now.
    pub fn is_open(&self, peer: &SpiffeId) -> bool {
        !matches!(
            self.states.lock().get(peer),
            None | Some(State::Closed { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SpiffeId {
        "spiffe://test.patchwork/node/flaky".parse().expect("id")
    }

    #[test]
    fn opens_after_threshold_then_admits_one_trial() {
        let breakers = Breakers::new(3, Duration::from_secs(30));
        let (p, t0) = (peer(), Instant::now());
        for _ in 0..2 {
            assert_eq!(breakers.admit(&p, t0), Admission::Call);
            breakers.record(&p, false, t0);
        }
        assert!(!breakers.is_open(&p));
        breakers.record(&p, false, t0);
        assert!(breakers.is_open(&p));
        assert_eq!(
            breakers.admit(&p, t0 + Duration::from_secs(10)),
            Admission::Skip {
                remaining: Duration::from_secs(20)
            }
        );
        // Cool-down over: one trial, everyone else still skips.
        let later = t0 + Duration::from_secs(31);
        assert_eq!(breakers.admit(&p, later), Admission::Call);
        assert!(matches!(breakers.admit(&p, later), Admission::Skip { .. }));
        // The trial fails: open again for a full cool-down.
        breakers.record(&p, false, later);
        assert!(matches!(
            breakers.admit(&p, later + Duration::from_secs(29)),
            Admission::Skip { .. }
        ));
        let trial = later + Duration::from_secs(30);
        assert_eq!(breakers.admit(&p, trial), Admission::Call);
        breakers.record(&p, true, trial);
        assert!(!breakers.is_open(&p));
        assert_eq!(breakers.admit(&p, trial), Admission::Call);
    }

    #[test]
    fn a_success_resets_the_count() {
        let breakers = Breakers::new(3, Duration::from_secs(30));
        let (p, t0) = (peer(), Instant::now());
        for _ in 0..10 {
            breakers.record(&p, false, t0);
            breakers.record(&p, false, t0);
            breakers.record(&p, true, t0);
        }
        assert!(!breakers.is_open(&p));
    }

    #[test]
    fn skip_detail_rounds_up_to_whole_seconds() {
        assert_eq!(
            Admission::skip_detail(Duration::from_millis(1500)),
            "circuit open: skipped for 2 s after repeated failures"
        );
        assert_eq!(
            Admission::skip_detail(Duration::ZERO),
            "circuit open: skipped for 1 s after repeated failures"
        );
    }
}
