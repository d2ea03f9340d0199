//! Reads: what a resync may send back. The page is built once the batch is stored, but its size
//! is decided here, from the sender's byte budget (`bridge.resync_bytes_*`): a resync is charged
//! the most its page may hold, the smaller of `bridge.resync_page_bytes` and what the entries
//! asked for can take up (each at most [`entry_bound`]). When the budget is short of that, a
//! page of one entry is tried; when it is short of one entry too, the resync is refused as
//! `rate_limited`, saying when to retry.

use std::time::Duration;

use schemas::wire::RejectReason;

use super::{Context, Verdict, refuse};

/// The most bytes one stream entry takes in a page: a body of `max_body_bytes`, every character
/// escaped in the worst case (a quote or backslash doubles; control characters are refused),
/// and the entry's other fields.
pub(crate) fn entry_bound(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_mul(2).saturating_add(512)
}

/// Decides a resync of `from_seq..=to_seq` by `sender`: the page's byte limit, or a refusal.
pub(crate) fn resync(
    ctx: &Context<'_>,
    sender: &str,
    from_seq: u64,
    to_seq: u64,
    staff: bool,
) -> Verdict {
    let entries = if from_seq <= to_seq {
        (to_seq - from_seq).saturating_add(1)
    } else {
        0
    };
    let one = entry_bound(ctx.config.max_body_bytes).min(ctx.config.resync_page_bytes);
    let asked = usize::try_from(entries)
        .unwrap_or(usize::MAX)
        .saturating_mul(one)
        .min(ctx.config.resync_page_bytes);
    let granted = match ctx.limits.take_resync_bytes(sender, asked, ctx.instant) {
        Ok(()) => Ok(asked),
        Err(_) if asked > one => ctx
            .limits
            .take_resync_bytes(sender, one, ctx.instant)
            .map(|()| one),
        Err(refused) => Err(refused),
    };
    match granted {
        Ok(max_bytes) => Verdict::Resync {
            from_seq,
            to_seq,
            staff,
            max_bytes,
        },
        Err(refused) => {
            let retry = refused.retry_after().unwrap_or(Duration::from_secs(1));
            refuse(
                RejectReason::RateLimited,
                format!(
                    "too many bytes of resync for now; retry in {} ms",
                    retry.as_millis().max(1)
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::pipeline::BridgeConfig;
    use crate::pipeline::decide::testing::Fixture;
    use crate::pipeline::rate::SenderLimits;

    fn fixture() -> Fixture {
        let mut fixture = Fixture::new(HashMap::new());
        fixture.config = BridgeConfig {
            max_body_bytes: 100,
            resync_page_bytes: 1_000,
            resync_bytes_per_second: 1_000,
            resync_bytes_burst: 2_000,
            ..BridgeConfig::default()
        };
        fixture.limits = SenderLimits::new(&fixture.config);
        fixture
    }

    fn granted(verdict: &Verdict) -> Option<usize> {
        match verdict {
            Verdict::Resync { max_bytes, .. } => Some(*max_bytes),
            _ => None,
        }
    }

    #[test]
    fn a_resync_is_charged_the_most_its_page_may_hold() {
        let mut fixture = fixture();
        let ctx = fixture.at(0);
        // An entry takes at most 2 × 100 + 512 = 712 bytes.
        assert_eq!(entry_bound(100), 712);
        // (from, to, bytes granted; None: refused)
        let rows = [
            // One entry: its bound.
            (5, 5, Some(712)),
            // Many: a full page (1,000 of the 2,000).
            (1, 100, Some(1_000)),
            // Nothing asked for: nothing charged.
            (9, 3, Some(0)),
            // 288 left: short of a page and of one entry.
            (1, 100, None),
        ];
        for (from, to, expected) in rows {
            let verdict = resync(&ctx, "kiosk", from, to, false);
            assert_eq!(granted(&verdict), expected, "{from}..={to}: {verdict:?}");
            if expected.is_none() {
                assert!(
                    matches!(&verdict, Verdict::Refused(RejectReason::RateLimited, m) if m.contains("retry in")),
                    "{verdict:?}"
                );
            }
        }
        // Another sender has a budget of its own.
        assert_eq!(granted(&resync(&ctx, "other", 1, 100, false)), Some(1_000));
    }

    #[test]
    fn a_short_budget_still_grants_a_page_of_one_entry() {
        let mut fixture = fixture();
        fixture.config.resync_bytes_burst = 1_800;
        fixture.limits = SenderLimits::new(&fixture.config);
        let ctx = fixture.at(0);
        assert_eq!(granted(&resync(&ctx, "kiosk", 1, 100, true)), Some(1_000));
        // 800 left: short of a page, enough for one entry (712).
        assert_eq!(granted(&resync(&ctx, "kiosk", 1, 100, true)), Some(712));
        assert_eq!(granted(&resync(&ctx, "kiosk", 1, 100, true)), None);
    }
}
