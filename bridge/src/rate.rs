//! Per-client rate limits: a token bucket per sender, time passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A bucket holding up to `burst` tokens, refilled at `per_second`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl TokenBucket {
    pub fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(
                missing / limit.per_second.max(f64::MIN_POSITIVE),
            ))
        }
    }

    fn is_full(&self, limit: RateLimit, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * limit.per_second
            >= limit.burst
    }
}

/// Buckets by sender. Buckets that have refilled completely carry no information and are
/// dropped when the map grows, so idle senders cost nothing.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<String, TokenBucket>,
}

/// Above this many buckets, full ones are swept.
const SWEEP_AT: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `sender`, or says how long until it may send again.
    pub fn check(&mut self, sender: &str, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= SWEEP_AT {
            let limit = self.limit;
            self.buckets.retain(|_, bucket| !bucket.is_full(limit, now));
        }
        let limit = self.limit;
        self.buckets
            .entry(sender.to_owned())
            .or_insert_with(|| TokenBucket::full(limit, now))
            .try_take(limit, now)
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 2.0,
        burst: 3.0,
    };

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(LIMIT);
        // (milliseconds after start, allowed?)
        let rows = [
            (0, true),
            (0, true),
            (0, true),
            (0, false),
            (400, false),
            (500, true),
            (600, false),
            (1000, true),
        ];
        for (ms, allowed) in rows {
            let result = limiter.check("kiosk-1", start + Duration::from_millis(ms));
            assert_eq!(result.is_ok(), allowed, "at {ms} ms: {result:?}");
        }
        // Senders have their own buckets.
        assert!(
            limiter
                .check("kiosk-2", start + Duration::from_millis(600))
                .is_ok()
        );
    }

    #[test]
    fn a_refusal_says_when_to_retry() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(LIMIT, start);
        for _ in 0..3 {
            bucket.try_take(LIMIT, start).unwrap();
        }
        assert_eq!(
            bucket.try_take(LIMIT, start),
            Err(Duration::from_millis(500))
        );
    }

    #[test]
    fn idle_senders_are_forgotten() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(LIMIT);
        for n in 0..SWEEP_AT {
            limiter.check(&format!("sender-{n}"), start).unwrap();
        }
        // Two seconds later every bucket has refilled; the next check sweeps them.
        limiter
            .check("late", start + Duration::from_secs(2))
            .unwrap();
        assert_eq!(limiter.tracked(), 1);
    }
}
