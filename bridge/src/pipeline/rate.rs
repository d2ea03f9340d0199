//! The pipeline's per-sender limits, on the workspace's `limits::Allowance` (a token bucket
//! per sender, time passed in): every submission a sender makes is charged to one of three
//! allowances by its kind, and the entries a resync sends back to a byte budget.
//!
//! Kinds have allowances of their own because they come at different paces from a correct
//! client: actions (messages, notes, opens, the lock, joins, transfers, closing, the survey,
//! availability) at the pace people write; receipts at the pace entries arrive; resyncs in a
//! burst when a desk loads its sessions. Sharing one bucket would let a desk's start-up resyncs
//! or an applicant's receipts refuse their next message.

use std::time::{Duration, Instant};

use limits::{Allowance, Rate, Refused};

use crate::pipeline::BridgeConfig;

/// Which allowance a submission is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charge {
    /// Everything but receipts and resyncs, including submissions refused as invalid.
    Action,
    Receipt,
    Resync,
}

/// Every sender's allowances.
pub(crate) struct SenderLimits {
    actions: Allowance<String>,
    receipts: Allowance<String>,
    resyncs: Allowance<String>,
    resync_bytes: Allowance<String>,
}

impl SenderLimits {
    /// The allowances `config` sets. Its values are checked when the configuration is loaded;
    /// one that is not a rate (possible only for a configuration built in code) falls back to
    /// its default, loudly.
    pub fn new(config: &BridgeConfig) -> Self {
        let defaults = BridgeConfig::default();
        let rate = |key: &str, per_second: f64, burst: f64, default: (f64, f64)| {
            Rate::per_second(per_second, burst_of(burst)).unwrap_or_else(|error| {
                tracing::error!(%error, key, "not a rate; using the default");
                Rate::per_second(default.0, burst_of(default.1))
                    .expect("the default rates are rates")
            })
        };
        Self {
            actions: Allowance::new(rate(
                "bridge.rate_per_second",
                config.rate_per_second,
                config.rate_burst,
                (defaults.rate_per_second, defaults.rate_burst),
            )),
            receipts: Allowance::new(rate(
                "bridge.receipt_rate_per_second",
                config.receipt_rate_per_second,
                config.receipt_rate_burst,
                (
                    defaults.receipt_rate_per_second,
                    defaults.receipt_rate_burst,
                ),
            )),
            resyncs: Allowance::new(rate(
                "bridge.resync_rate_per_second",
                config.resync_rate_per_second,
                config.resync_rate_burst,
                (defaults.resync_rate_per_second, defaults.resync_rate_burst),
            )),
            resync_bytes: Allowance::new(rate(
                "bridge.resync_bytes_per_second",
                config.resync_bytes_per_second as f64,
                config.resync_bytes_burst as f64,
                (
                    defaults.resync_bytes_per_second as f64,
                    defaults.resync_bytes_burst as f64,
                ),
            )),
        }
    }

    /// Charges one submission of `sender` at `now`, or says how long until it may make one.
    pub fn take(&self, charge: Charge, sender: &str, now: Instant) -> Result<(), Duration> {
        let allowance = match charge {
            Charge::Action => &self.actions,
            Charge::Receipt => &self.receipts,
            Charge::Resync => &self.resyncs,
        };
        allowance.take_at(&sender.to_owned(), now)
    }

    /// Charges `bytes` of resync entries to `sender`'s budget at `now` (all or nothing).
    pub fn take_resync_bytes(
        &self,
        sender: &str,
        bytes: usize,
        now: Instant,
    ) -> Result<(), Refused> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.resync_bytes.take_n_at(&sender.to_owned(), bytes, now)
    }

    /// Forgets senders whose allowances are full again, so that memory follows recent senders.
    pub fn forget_idle(&self) {
        self.actions.forget_idle();
        self.receipts.forget_idle();
        self.resyncs.forget_idle();
        self.resync_bytes.forget_idle();
    }

    /// Senders with an allowance that is not full (or not yet forgotten), over all kinds.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.actions.len() + self.receipts.len() + self.resyncs.len() + self.resync_bytes.len()
    }
}

/// A configured burst (a number, possibly written with a fraction) as whole units.
fn burst_of(burst: f64) -> u32 {
    if burst.is_finite() && burst >= 1.0 {
        burst.min(f64::from(u32::MAX)).round() as u32
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SenderLimits {
        SenderLimits::new(&BridgeConfig {
            rate_per_second: 2.0,
            rate_burst: 3.0,
            receipt_rate_per_second: 1.0,
            receipt_rate_burst: 1.0,
            resync_rate_per_second: 1.0,
            resync_rate_burst: 2.0,
            resync_bytes_per_second: 1_000,
            resync_bytes_burst: 4_000,
            ..BridgeConfig::default()
        })
    }

    #[test]
    fn each_kind_has_its_own_allowance_per_sender() {
        // After the allowances are made: their clocks start then.
        let limits = limits();
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        // (sender, kind, milliseconds after start, allowed?)
        let rows = [
            ("kiosk-1", Charge::Action, 0, true),
            ("kiosk-1", Charge::Action, 0, true),
            ("kiosk-1", Charge::Action, 0, true),
            ("kiosk-1", Charge::Action, 0, false),
            // Receipts and resyncs are not charged to the spent actions.
            ("kiosk-1", Charge::Receipt, 0, true),
            ("kiosk-1", Charge::Receipt, 0, false),
            ("kiosk-1", Charge::Resync, 0, true),
            ("kiosk-1", Charge::Resync, 0, true),
            ("kiosk-1", Charge::Resync, 0, false),
            // Nor is another sender.
            ("kiosk-2", Charge::Action, 0, true),
            // One action back after 1 / rate.
            ("kiosk-1", Charge::Action, 400, false),
            ("kiosk-1", Charge::Action, 500, true),
            ("kiosk-1", Charge::Receipt, 1000, true),
        ];
        for (sender, kind, at, allowed) in rows {
            let taken = limits.take(kind, sender, ms(at));
            assert_eq!(
                taken.is_ok(),
                allowed,
                "{sender} {kind:?} at {at} ms: {taken:?}"
            );
        }
    }

    #[test]
    fn a_refusal_says_when_to_retry() {
        // After the allowances are made: their clocks start then.
        let limits = limits();
        let start = Instant::now();
        for _ in 0..3 {
            limits.take(Charge::Action, "a", start).unwrap();
        }
        let wait = limits.take(Charge::Action, "a", start).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
    }

    #[test]
    fn resync_bytes_are_a_budget() {
        // After the allowances are made: their clocks start then.
        let limits = limits();
        let start = Instant::now();
        assert_eq!(limits.take_resync_bytes("a", 3_000, start), Ok(()));
        let refused = limits.take_resync_bytes("a", 2_000, start).unwrap_err();
        assert!(refused.retry_after().is_some(), "{refused:?}");
        assert_eq!(limits.take_resync_bytes("a", 1_000, start), Ok(()));
        assert_eq!(
            limits.take_resync_bytes("a", 5_000, start),
            Err(Refused::TooMany)
        );
        assert_eq!(limits.take_resync_bytes("b", 4_000, start), Ok(()));
    }

    #[test]
    fn idle_senders_are_forgotten() {
        // After the allowances are made: their clocks start then.
        let limits = limits();
        let start = Instant::now();
        for n in 0..100 {
            limits
                .take(Charge::Action, &format!("sender-{n}"), start)
                .unwrap();
        }
        assert_eq!(limits.tracked(), 100);
        // Two seconds later every bucket is full again.
        limits
            .take(Charge::Action, "late", start + Duration::from_secs(2))
            .unwrap();
        limits.forget_idle();
        assert!(limits.tracked() <= 1, "{}", limits.tracked());
    }

    #[test]
    fn bursts_are_whole_units() {
        for (burst, expected) in [(20.0, 20), (1.4, 1), (0.5, 0), (f64::NAN, 0), (-3.0, 0)] {
            assert_eq!(burst_of(burst), expected, "{burst}");
        }
    }
}
