//! How fast applicant tokens are handed out: per client address for requests without a proven
//! kiosk (the public phone page, and kiosk credentials that were refused), and per kiosk for
//! kiosks, so that neither a script on the internet nor a stolen kiosk credential can mint
//! identities at the speed of the network; and per applicant subject for renewals of its
//! token, which a page asks for once in a token's lifetime (and again only after a failure).
//! Token buckets (governor's GCRA), as sign-in's.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use limits::Allowance;

pub struct ApplicantThrottle {
    per_address: Allowance<IpAddr>,
    per_kiosk: Allowance<String>,
    per_subject: Allowance<String>,
}

impl ApplicantThrottle {
    /// `per_address` and `per_kiosk` tokens, and `per_subject` renewals, a minute, each
    /// allowed as a burst.
    pub fn new(per_address: NonZeroU32, per_kiosk: NonZeroU32, per_subject: NonZeroU32) -> Self {
        Self {
            per_address: Allowance::per_minute(per_address),
            per_kiosk: Allowance::per_minute(per_kiosk),
            per_subject: Allowance::per_minute(per_subject),
        }
    }

    /// Takes one request from `address`'s allowance, or says how long to wait.
    pub fn take_for_address(&self, address: IpAddr) -> Result<(), Duration> {
        self.per_address.take(&address)
    }

    /// Takes one token from `kiosk_id`'s allowance, or says how long to wait.
    pub fn take_for_kiosk(&self, kiosk_id: &str) -> Result<(), Duration> {
        self.per_kiosk.take(&kiosk_id.to_owned())
    }

    /// Takes one renewal from applicant `subject`'s allowance, or says how long to wait.
    pub fn take_for_subject(&self, subject: &str) -> Result<(), Duration> {
        self.per_subject.take(&subject.to_owned())
    }

    /// Forgets keys whose buckets are full again.
    pub fn forget_idle(&self) {
        self.per_address.forget_idle();
        self.per_kiosk.forget_idle();
        self.per_subject.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn addresses_and_kiosks_have_their_own_allowances() {
        let throttle = ApplicantThrottle::new(nz(2), nz(3), nz(1));
        let here: IpAddr = [192, 0, 2, 1].into();
        assert!(throttle.take_for_address(here).is_ok());
        assert!(throttle.take_for_address(here).is_ok());
        let wait = throttle.take_for_address(here).expect_err("over the limit");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(throttle.take_for_address([192, 0, 2, 2].into()).is_ok());
        for _ in 0..3 {
            assert!(throttle.take_for_kiosk("k-1").is_ok());
        }
        assert!(throttle.take_for_kiosk("k-1").is_err());
        assert!(
            throttle.take_for_kiosk("k-2").is_ok(),
            "kiosks do not share"
        );
        assert!(throttle.take_for_subject("ap-1").is_ok());
        assert!(throttle.take_for_subject("ap-1").is_err());
        assert!(throttle.take_for_subject("ap-2").is_ok(), "nor do subjects");
    }
}
