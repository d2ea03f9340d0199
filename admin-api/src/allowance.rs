//! A per-key allowance of requests a minute: a token bucket per key (governor's GCRA), which
//! says how long to wait when a key's bucket is empty and forgets keys whose buckets are full
//! again. Sign-in and applicant tokens are limited with it.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct Allowance<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> Allowance<K> {
    /// `per_minute` requests a minute for each key, allowed as a burst.
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from `key`'s allowance, or says how long to wait.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = self.clock.now();
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(now))
    }

    /// Forgets keys whose buckets are full again, so that memory follows recent requests only.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}
