//! How many topic filters one sender may subscribe to, per second: every filter a SUBSCRIBE
//! names costs the gateway an authorization check, an index entry and, for wildcards, a walk
//! of the retained messages, and a denied one a denial; so, like every other kind of request,
//! subscriptions are limited per sender (`[mqtt.subscriptions]`). The allowance is charged by
//! filters, not packets (one SUBSCRIBE may name many), and a SUBSCRIBE that does not fit is
//! refused whole: MQTT 5 SUBACK 0x97 (quota exceeded) for each filter, MQTT 3.1.1 0x80.

use std::time::Instant;

use limits::{Allowance, Rate};
use serde::{Deserialize, Serialize};

/// The `[mqtt.subscriptions]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsConfig {
    /// Filters one sender may subscribe to per second, sustained, over all its connections.
    pub rate_per_second: u32,
    /// How many at once: a desk that opens with its sessions' topics, or reconnects and
    /// subscribes to them all again, needs a few per session.
    pub rate_burst: u32,
}

impl Default for SubscriptionsConfig {
    /// A desk following twenty sessions (five topics each) subscribes to them all at once, and
    /// a reconnecting one again; far below what would load the gateway.
    fn default() -> Self {
        Self {
            rate_per_second: 20,
            rate_burst: 200,
        }
    }
}

impl SubscriptionsConfig {
    /// The per-sender rate these settings describe, or the key and why it is not one.
    pub fn rate(&self) -> Result<Rate, (&'static str, String)> {
        Rate::per_second(f64::from(self.rate_per_second), self.rate_burst).map_err(|err| {
            let key = match err {
                limits::RateError::NotPositive => "mqtt.subscriptions.rate_per_second",
                limits::RateError::NoBurst => "mqtt.subscriptions.rate_burst",
            };
            (key, err.to_string())
        })
    }
}

/// Each sender's allowance of filters.
pub(crate) struct SubscribeAllowance(Allowance<String>);

impl SubscribeAllowance {
    pub(crate) fn new(config: &SubscriptionsConfig) -> Result<Self, (&'static str, String)> {
        Ok(Self(Allowance::new(config.rate()?)))
    }

    /// Takes `filters` from `subject`'s allowance at `now`, all or none.
    pub(crate) fn take(&self, subject: &str, filters: usize, now: Instant) -> bool {
        let filters = u32::try_from(filters).unwrap_or(u32::MAX);
        self.0.take_n_at(&subject.to_owned(), filters, now).is_ok()
    }

    pub(crate) fn forget_idle(&self) {
        self.0.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn filters_are_charged_per_sender_and_a_request_is_all_or_none() {
        let config = SubscriptionsConfig {
            rate_per_second: 10,
            rate_burst: 20,
        };
        let allowance = SubscribeAllowance::new(&config).unwrap();
        let start = Instant::now();
        // (sender, filters, seconds after start, taken?)
        let rows = [
            ("ann", 15, 0, true),
            ("ann", 6, 0, false),
            ("ann", 5, 0, true),
            ("bob", 20, 0, true),
            ("ann", 1, 0, false),
            ("ann", 10, 1, true),
            ("ann", 21, 10, false),
        ];
        for (sender, filters, after, expected) in rows {
            let at = start + Duration::from_secs(after);
            assert_eq!(
                allowance.take(sender, filters, at),
                expected,
                "{sender} {filters} at +{after}s"
            );
        }
    }

    #[test]
    fn the_settings_are_checked() {
        let zero = SubscriptionsConfig {
            rate_per_second: 0,
            rate_burst: 1,
        };
        assert_eq!(
            zero.rate().unwrap_err().0,
            "mqtt.subscriptions.rate_per_second"
        );
        let no_burst = SubscriptionsConfig {
            rate_per_second: 1,
            rate_burst: 0,
        };
        assert_eq!(
            no_burst.rate().unwrap_err().0,
            "mqtt.subscriptions.rate_burst"
        );
        assert!(SubscriptionsConfig::default().rate().is_ok());
    }
}
