//! Per-sender allowances: how often each key (a subject, an address, a kiosk) may act, as a
//! token bucket per key (governor's GCRA). The gateway, the chat pipeline and the admin API
//! limit their senders with the same type, so that "limited per sender" means one thing
//! everywhere and one crate owns the `governor` dependency.
//!
//! Time can be passed in ([`Allowance::take_at`]): the pipeline decides with the batch's clock,
//! and tests move time without sleeping. [`Allowance::take`] reads the monotonic clock.
//! A bucket can also be charged more than one unit at once ([`Allowance::take_n_at`]), which
//! makes it a byte budget.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

/// A rate: `per_second` units replenished each second, at most `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: NonZeroU32,
}

/// A rate that cannot be a token bucket.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum RateError {
    #[error("the rate must be a positive number of units a second (at most 1e9)")]
    NotPositive,
    #[error("the burst must be at least 1")]
    NoBurst,
}

impl Rate {
    /// `per_second` units a second (a fraction for slower rates), `burst` at once.
    pub fn per_second(per_second: f64, burst: u32) -> Result<Self, RateError> {
        if !(per_second.is_finite() && per_second > 0.0 && per_second <= 1e9) {
            return Err(RateError::NotPositive);
        }
        let burst = NonZeroU32::new(burst).ok_or(RateError::NoBurst)?;
        Ok(Self { per_second, burst })
    }

    /// `per_minute` units a minute, all of them allowed at once.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self {
            per_second: f64::from(per_minute.get()) / 60.0,
            burst: per_minute,
        }
    }

    pub fn units_per_second(&self) -> f64 {
        self.per_second
    }

    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    fn quota(&self) -> Quota {
        // A period of at least one nanosecond: `per_second` is at most 1e9.
        let period = Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1));
        Quota::with_period(period)
            .expect("the period is at least one nanosecond")
            .allow_burst(self.burst)
    }
}

/// Why units were not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The key's bucket is short: try again after this long.
    #[error("over the limit; retry in {} ms", .0.as_millis())]
    Wait(Duration),
    /// More units were asked for at once than the bucket ever holds.
    #[error("more than the limit allows at once")]
    TooMany,
}

impl Refused {
    /// How long to wait before asking again (for [`Refused::TooMany`], a full bucket's time).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refused::Wait(wait) => Some(*wait),
            Refused::TooMany => None,
        }
    }
}

/// A token bucket per key.
pub struct Allowance<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, HashMapStateStore<K>, PassedClock, NoOpMiddleware<Nanos>>,
    clock: PassedClock,
    rate: Rate,
}

impl<K: Hash + Eq + Clone> Allowance<K> {
    pub fn new(rate: Rate) -> Self {
        let clock = PassedClock::new();
        Self {
            limiter: RateLimiter::new(rate.quota(), HashMapStateStore::default(), clock.clone()),
            clock,
            rate,
        }
    }

    /// `per_minute` requests a minute for each key, allowed as a burst.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self::new(Rate::per_minute(per_minute))
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one unit from `key`'s bucket now, or says how long to wait.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.take_at(key, Instant::now())
    }

    /// Takes one unit from `key`'s bucket at `now`, or says how long to wait.
    pub fn take_at(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let at = self.clock.advance_to(now);
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(at))
    }

    /// Takes `n` units at once from `key`'s bucket at `now` (all or none).
    pub fn take_n_at(&self, key: &K, n: u32, now: Instant) -> Result<(), Refused> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let at = self.clock.advance_to(now);
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refused::Wait(not_until.wait_time_from(at))),
            Err(_) => Err(Refused::TooMany),
        }
    }

    /// Forgets keys whose buckets are full again, so that memory follows recent senders only.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys with a bucket that is not full (or not yet forgotten).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The clock the buckets read: nanoseconds since the allowance was made, moved forward by each
/// caller to the time it passes in (never backward, so concurrent callers with slightly
/// different clocks cannot confuse the buckets; at worst one sees a time a few microseconds
/// later than its own).
#[derive(Clone, Debug)]
struct PassedClock {
    base: Instant,
    nanos: Arc<AtomicU64>,
}

impl PassedClock {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance_to(&self, now: Instant) -> Nanos {
        let since =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let before = self.nanos.fetch_max(since, Ordering::AcqRel);
        Nanos::from(before.max(since))
    }
}

impl Clock for PassedClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.nanos.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate::per_second(per_second, burst).unwrap()
    }

    #[test]
    fn rates_are_checked() {
        for (per_second, burst, expected) in [
            (5.0, 20, Ok(())),
            (0.5, 1, Ok(())),
            (0.0, 1, Err(RateError::NotPositive)),
            (-1.0, 1, Err(RateError::NotPositive)),
            (f64::NAN, 1, Err(RateError::NotPositive)),
            (f64::INFINITY, 1, Err(RateError::NotPositive)),
            (1.0, 0, Err(RateError::NoBurst)),
        ] {
            assert_eq!(
                Rate::per_second(per_second, burst).map(|_| ()),
                expected,
                "{per_second}/s, burst {burst}"
            );
        }
    }

    #[test]
    fn a_key_gets_its_burst_then_waits_for_the_rate() {
        let allowance = Allowance::new(rate(2.0, 3));
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(allowance.take_at(&"a", start), Ok(()));
        }
        let wait = allowance.take_at(&"a", start).expect_err("burst spent");
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert_eq!(allowance.take_at(&"b", start), Ok(()), "keys do not share");
        assert_eq!(
            allowance.take_at(&"a", start + Duration::from_millis(500)),
            Ok(()),
            "one unit back after 1/rate"
        );
        assert!(
            allowance
                .take_at(&"a", start + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn time_never_runs_backward() {
        let allowance = Allowance::new(rate(1.0, 1));
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        assert_eq!(allowance.take_at(&1, later), Ok(()));
        // An earlier time from another caller counts as the latest one seen.
        let wait = allowance.take_at(&1, start).expect_err("spent at `later`");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn a_budget_is_charged_by_size() {
        let budget = Allowance::new(rate(1_000.0, 4_000));
        let start = Instant::now();
        assert_eq!(budget.take_n_at(&"s", 3_000, start), Ok(()));
        let refused = budget
            .take_n_at(&"s", 2_000, start)
            .expect_err("1,000 left");
        let wait = refused.retry_after().unwrap();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1_000),
            "{wait:?}"
        );
        assert_eq!(
            budget.take_n_at(&"s", 5_000, start),
            Err(Refused::TooMany),
            "never fits"
        );
        assert_eq!(budget.take_n_at(&"s", 0, start), Ok(()), "nothing to take");
        assert_eq!(
            budget.take_n_at(&"s", 2_000, start + Duration::from_secs(1)),
            Ok(())
        );
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let allowance = Allowance::new(rate(1_000.0, 1));
        let start = Instant::now();
        for key in 0..100 {
            allowance.take_at(&key, start).unwrap();
        }
        assert_eq!(allowance.len(), 100);
        allowance
            .take_at(&0, start + Duration::from_secs(1))
            .unwrap();
        allowance.forget_idle();
        assert!(allowance.len() <= 1, "{} left", allowance.len());
    }

    #[test]
    fn per_minute_allows_the_whole_minute_at_once() {
        let allowance = Allowance::per_minute(NonZeroU32::new(5).unwrap());
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(allowance.take_at(&"k", start), Ok(()));
        }
        let wait = allowance
            .take_at(&"k", start)
            .expect_err("a minute's worth spent");
        assert!(
            wait > Duration::from_secs(11) && wait <= Duration::from_secs(12),
            "{wait:?}"
        );
    }
}
