//! Sign-in attempts allowed per account and per client address, so that a password cannot be
//! guessed at the speed of the network (and a botnet spreading its guesses over accounts still
//! meets the per-address limit). Both limits are token buckets (governor's GCRA).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use limits::Allowance;

/// The two limits a sign-in attempt must pass.
pub struct LoginThrottle {
    per_account: Allowance<String>,
    per_address: Allowance<IpAddr>,
}

impl LoginThrottle {
    /// `per_account` and `per_address` attempts a minute, each allowed as a burst.
    pub fn new(per_account: NonZeroU32, per_address: NonZeroU32) -> Self {
        Self {
            per_account: Allowance::per_minute(per_account),
            per_address: Allowance::per_minute(per_address),
        }
    }

    /// Takes one attempt for `username` from `address`, or says how long to wait. The address
    /// is checked first, so that guesses against many accounts from one place spend only its
    /// allowance.
    pub fn attempt(&self, username: &str, address: IpAddr) -> Result<(), Duration> {
        self.per_address.take(&address)?;
        self.per_account.take(&username.to_lowercase())
    }

    /// Forgets keys whose buckets are full again, so that memory follows recent attempts only.
    pub fn forget_idle(&self) {
        self.per_account.forget_idle();
        self.per_address.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn an_account_gets_its_burst_then_waits() {
        let throttle = LoginThrottle::new(nz(3), nz(100));
        let here: IpAddr = [127, 0, 0, 1].into();
        for _ in 0..3 {
            assert!(throttle.attempt("ann", here).is_ok());
        }
        let wait = throttle
            .attempt("ANN", here)
            .expect_err("same account, any case");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            throttle.attempt("bob", here).is_ok(),
            "other accounts are not held up"
        );
    }

    #[test]
    fn an_address_is_limited_across_accounts() {
        let throttle = LoginThrottle::new(nz(100), nz(2));
        let here: IpAddr = [10, 0, 0, 1].into();
        assert!(throttle.attempt("a", here).is_ok());
        assert!(throttle.attempt("b", here).is_ok());
        assert!(throttle.attempt("c", here).is_err());
        assert!(throttle.attempt("c", [10, 0, 0, 2].into()).is_ok());
    }
}
