//! The knee: the highest offered rate a target carries with its 99th percentile within a limit
//! and every delivery verified. The search is pure (what to try next from what held so far);
//! running each step is the caller's, one fresh server per step.

use std::time::Duration;

use serde::Serialize;

/// One step of a search: what was offered and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct KneeStep {
    /// Messages per second offered (chat: stored messages; fanout: messages published).
    pub offered: f64,
    /// Messages per second carried over the run.
    pub achieved: f64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Nothing lost, duplicated, reordered or refused, and every session checked.
    pub verified: bool,
    /// The server's CPU per message, when its process is known.
    pub cpu_us_per_message: Option<f64>,
    /// The server's CPU as a share of one core, in percent.
    pub cpu_percent: Option<f64>,
}

impl KneeStep {
    /// Whether the target carried this rate: verified, within the latency limit, and keeping up
    /// (a target that falls behind its offered rate is queueing, whatever its percentiles say).
    pub fn holds(&self, p99_limit: Duration) -> bool {
        self.verified
            && u128::from(self.p99_us) <= p99_limit.as_micros()
            && self.achieved >= self.offered * KEEPING_UP
    }
}

/// The share of the offered rate a run must carry to count as keeping up: the run's first and
/// last second are ramps, so a little under the offer is normal.
const KEEPING_UP: f64 = 0.9;

/// A geometric climb from `from` by `factor` until a step fails (or `max` is passed), then
/// `refine` halvings of the interval between the last step that held and the first that failed.
#[derive(Clone, Debug)]
pub struct KneeSearch {
    factor: f64,
    max: f64,
    refine: u32,
    next: Option<f64>,
    held: Option<f64>,
    failed: Option<f64>,
}

impl KneeSearch {
    pub fn new(from: f64, factor: f64, max: f64, refine: u32) -> Self {
        Self {
            factor: factor.max(1.01),
            max,
            refine,
            next: (from > 0.0 && from <= max).then_some(from),
            held: None,
            failed: None,
        }
    }

    /// The rate to try next; `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// Records whether `rate` held and chooses the next rate.
    pub fn record(&mut self, rate: f64, held: bool) {
        if held {
            self.held = Some(self.held.map_or(rate, |h| h.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
        self.next = match (self.held, self.failed) {
            // Still climbing.
            (_, None) => Some(rate * self.factor).filter(|r| *r <= self.max * 1.0001),
            // The very first step failed: nothing below it is known to hold.
            (None, Some(_)) => None,
            (Some(low), Some(high)) if self.refine > 0 => {
                self.refine -= 1;
                Some((low + high) / 2.0)
            }
            (Some(_), Some(_)) => None,
        };
    }

    /// The highest rate that held.
    pub fn knee(&self) -> Option<f64> {
        self.held
    }

    /// The lowest rate that failed, if any did.
    pub fn first_failure(&self) -> Option<f64> {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: f64, achieved: f64, p99_ms: u64, verified: bool) -> KneeStep {
        KneeStep {
            offered,
            achieved,
            p99_us: p99_ms * 1000,
            p999_us: 0,
            max_us: 0,
            verified,
            cpu_us_per_message: None,
            cpu_percent: None,
        }
    }

    #[test]
    fn a_step_holds_only_verified_within_the_limit_and_keeping_up() {
        let limit = Duration::from_millis(50);
        assert!(step(1000.0, 990.0, 50, true).holds(limit));
        assert!(!step(1000.0, 990.0, 51, true).holds(limit));
        assert!(!step(1000.0, 990.0, 5, false).holds(limit));
        assert!(!step(1000.0, 800.0, 5, true).holds(limit));
    }

    #[test]
    fn the_search_climbs_then_halves_between_held_and_failed() {
        let mut search = KneeSearch::new(1000.0, 2.0, 100_000.0, 2);
        let knee = 5000.0;
        let mut tried = Vec::new();
        while let Some(rate) = search.next_rate() {
            tried.push(rate);
            search.record(rate, rate <= knee);
        }
        // 1000, 2000, 4000 hold; 8000 fails; then 6000 (fails) and 5000 (holds).
        assert_eq!(tried, vec![1000.0, 2000.0, 4000.0, 8000.0, 6000.0, 5000.0]);
        assert_eq!(search.knee(), Some(5000.0));
        assert_eq!(search.first_failure(), Some(6000.0));
    }

    #[test]
    fn the_search_stops_at_its_ceiling_and_when_the_first_step_fails() {
        let mut search = KneeSearch::new(1000.0, 2.0, 3000.0, 2);
        while let Some(rate) = search.next_rate() {
            search.record(rate, true);
        }
        assert_eq!(
            (search.knee(), search.first_failure()),
            (Some(2000.0), None)
        );

        let mut search = KneeSearch::new(1000.0, 2.0, 3000.0, 2);
        search.record(1000.0, false);
        assert_eq!(search.next_rate(), None);
        assert_eq!(search.knee(), None);
        assert_eq!(KneeSearch::new(0.0, 2.0, 10.0, 0).next_rate(), None);
    }
}
