//! Sign-in attempts allowed, so that a password cannot be guessed at the speed of the network,
//! while a stranger's guesses cannot lock the account's owner out.
//!
//! Three token buckets (governor's GCRA), each a number of attempts a minute allowed as a burst:
//!
//! 1. **per address** (`admin.login_attempts_per_address`): every attempt from one client
//!    address, whatever the account, so that one machine spreading guesses over many accounts
//!    is slowed;
//! 2. **per account and address** (`admin.login_attempts_per_account_and_address`): attempts at
//!    one account from one address. This is the limit a guesser at one account meets, and it is
//!    the guesser's own: the owner, at another address, has a full bucket of their own;
//! 3. **per account** (`admin.login_attempts_per_account`): attempts at one account from every
//!    address together, against guessing spread over many addresses, except from the
//!    account's *known addresses*: those it signed in from successfully within
//!    `admin.login_known_address_days`. So even many strangers together, who can empty this
//!    bucket, cannot keep the owner out at the desk they use.
//!
//! They are taken in that order and a refusal stops there, so that attempts a narrower bucket
//! refused are not also charged to the account-wide one: one address guessing at an account
//! spends at most its own per-account-and-address share of the account's allowance.
//!
//! An IPv6 address counts as its /64 network, which one subscriber usually holds whole: taken
//! address by address, a single guesser would have billions of fresh buckets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use limits::Allowance;

/// The limits sign-in enforces, from the `[admin]` configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LoginLimits {
    pub(crate) per_address: NonZeroU32,
    pub(crate) per_account_and_address: NonZeroU32,
    pub(crate) per_account: NonZeroU32,
    /// How long an address the account signed in from stays known to it.
    pub(crate) known_address_for: Duration,
}

/// The sign-in limits and the addresses each account is known at.
pub struct LoginThrottle {
    per_address: Allowance<IpAddr>,
    per_account_and_address: Allowance<(String, IpAddr)>,
    per_account: Allowance<String>,
    /// (account, address) -> when the account last signed in from there.
    known: Mutex<HashMap<(String, IpAddr), Instant>>,
    known_address_for: Duration,
}

impl LoginThrottle {
    pub(crate) fn new(limits: LoginLimits) -> Self {
        Self {
            per_address: Allowance::per_minute(limits.per_address),
            per_account_and_address: Allowance::per_minute(limits.per_account_and_address),
            per_account: Allowance::per_minute(limits.per_account),
            known: Mutex::new(HashMap::new()),
            known_address_for: limits.known_address_for,
        }
    }

    /// Takes one attempt at `username` from `address` now, or says how long to wait.
    pub fn attempt(&self, username: &str, address: IpAddr) -> Result<(), Duration> {
        self.attempt_at(username, address, Instant::now())
    }

    /// Takes one attempt at `username` from `address` at `now`, or says how long to wait.
    pub fn attempt_at(
        &self,
        username: &str,
        address: IpAddr,
        now: Instant,
    ) -> Result<(), Duration> {
        let (account, address) = (account(username), network(address));
        self.per_address.take_at(&address, now)?;
        let pair = (account, address);
        self.per_account_and_address.take_at(&pair, now)?;
        if self.is_known(&pair, now) {
            return Ok(());
        }
        self.per_account.take_at(&pair.0, now)
    }

    /// Records a successful sign-in at `username` from `address` now: the address becomes one
    /// of the account's known addresses.
    pub fn succeeded(&self, username: &str, address: IpAddr) {
        self.succeeded_at(username, address, Instant::now());
    }

    /// [`LoginThrottle::succeeded`] at `now`.
    pub fn succeeded_at(&self, username: &str, address: IpAddr, now: Instant) {
        self.lock()
            .insert((account(username), network(address)), now);
    }

    /// Forgets keys whose buckets are full again, and known addresses not used for sign-in
    /// within their time, so that memory follows recent attempts and recent staff only.
    pub fn forget_idle(&self) {
        self.forget_idle_at(Instant::now());
    }

    fn forget_idle_at(&self, now: Instant) {
        self.per_address.forget_idle();
        self.per_account_and_address.forget_idle();
        self.per_account.forget_idle();
        let keep = self.known_address_for;
        self.lock()
            .retain(|_, at| now.saturating_duration_since(*at) < keep);
    }

    fn is_known(&self, pair: &(String, IpAddr), now: Instant) -> bool {
        self.lock()
            .get(pair)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.known_address_for)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, IpAddr), Instant>> {
        // Single inserts, lookups and a retain: a poisoned map is still consistent.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Accounts are one whatever the case of the name typed.
fn account(username: &str) -> String {
    username.to_lowercase()
}

/// The address as the limits count it: IPv4 as it is, IPv6 as its /64 network (an IPv4 address
/// mapped into IPv6 as the IPv4 address).
fn network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn throttle(per_address: u32, per_pair: u32, per_account: u32) -> LoginThrottle {
        LoginThrottle::new(LoginLimits {
            per_address: nz(per_address),
            per_account_and_address: nz(per_pair),
            per_account: nz(per_account),
            known_address_for: Duration::from_secs(3600),
        })
    }

    fn ip(last: u8) -> IpAddr {
        [192, 0, 2, last].into()
    }

    #[test]
    fn a_stranger_spends_their_own_allowance_not_the_owners() {
        let throttle = throttle(100, 3, 100);
        let now = Instant::now();
        let (stranger, owner) = (ip(66), ip(7));
        for _ in 0..3 {
            assert!(throttle.attempt_at("ann", stranger, now).is_ok());
        }
        let wait = throttle
            .attempt_at("ANN", stranger, now)
            .expect_err("same account, any case, same address");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            throttle.attempt_at("ann", owner, now).is_ok(),
            "the owner, elsewhere, is not held up"
        );
        assert!(
            throttle.attempt_at("bob", stranger, now).is_ok(),
            "other accounts are not held up"
        );
    }

    #[test]
    fn an_address_is_limited_across_accounts() {
        let throttle = throttle(2, 100, 100);
        let now = Instant::now();
        assert!(throttle.attempt_at("a", ip(1), now).is_ok());
        assert!(throttle.attempt_at("b", ip(1), now).is_ok());
        assert!(throttle.attempt_at("c", ip(1), now).is_err());
        assert!(throttle.attempt_at("c", ip(2), now).is_ok());
    }

    #[test]
    fn many_strangers_slow_an_account_but_not_at_its_known_addresses() {
        let throttle = throttle(100, 2, 4);
        let now = Instant::now();
        let owner = ip(7);
        assert!(throttle.attempt_at("ann", owner, now).is_ok());
        throttle.succeeded_at("ann", owner, now);
        // With the owner's first attempt, three guesses from two strangers (each within its
        // own allowance of two) spend the account-wide allowance (four)...
        for stranger in [ip(10), ip(10), ip(11)] {
            assert!(throttle.attempt_at("ann", stranger, now).is_ok());
        }
        // ...so a third stranger, and a first-time address of the owner's, must wait...
        assert!(throttle.attempt_at("ann", ip(12), now).is_err());
        // ...but the owner's known address is not held up by strangers.
        assert!(throttle.attempt_at("ann", owner, now).is_ok());
        // The account-wide allowance refills at its own pace.
        let later = now + Duration::from_secs(15);
        assert!(throttle.attempt_at("ann", ip(12), later).is_ok());
    }

    #[test]
    fn known_addresses_are_forgotten_after_their_time() {
        let throttle = throttle(100, 100, 1);
        let now = Instant::now();
        throttle.succeeded_at("ann", ip(7), now);
        assert!(throttle.attempt_at("ann", ip(8), now).is_ok());
        assert!(throttle.attempt_at("ann", ip(8), now).is_err());
        assert!(throttle.attempt_at("ANN", ip(7), now).is_ok(), "known");
        let later = now + Duration::from_secs(3600);
        throttle.forget_idle_at(later);
        assert!(throttle.lock().is_empty());
        assert!(throttle.attempt_at("ann", ip(7), later).is_ok());
        assert!(
            throttle.attempt_at("ann", ip(7), later).is_err(),
            "no longer known: the account-wide limit applies"
        );
    }

    #[test]
    fn ipv6_counts_by_its_64_network() {
        // (address, what the limits count)
        let rows: [(&str, &str); 4] = [
            ("192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
        ];
        for (address, counted) in rows {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(network(address).to_string(), counted, "{address}");
        }
    }
}
