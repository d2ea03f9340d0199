//! Read receipts: a participant's delivered and read horizons.

use schemas::topics::{SessionTopic, Topic};
use schemas::wire;

use super::{Context, Effects, ReceiptWrite, Subject, Verdict};
use crate::pipeline::view::SessionView;

/// Moves the sender's horizons forward (never back, never past the stream) and tells the
/// session. Receipts are not audited: they are frequent and carry no content.
pub(crate) fn receipt(
    view: &mut SessionView,
    ctx: &mut Context<'_>,
    fx: &mut Effects,
    s: &Subject<'_>,
    delivered: Option<u64>,
    read: Option<u64>,
) -> Verdict {
    let last_seq = view.last_seq;
    let stored = view.receipts.get(s.sender).copied().flatten();
    let (old_delivered, old_read) = stored.unwrap_or((0, 0));
    let clamp = |seq: Option<u64>| {
        seq.map_or(0, |seq| {
            i64::try_from(seq).unwrap_or(i64::MAX).min(last_seq)
        })
    };
    let read_seq = old_read.max(clamp(read));
    // What was read was delivered.
    let delivered_seq = old_delivered.max(clamp(delivered)).max(read_seq);
    view.receipts
        .insert(s.sender.to_owned(), Some((delivered_seq, read_seq)));
    fx.receipts.push(ReceiptWrite {
        session_id: s.session_id.to_owned(),
        subject: s.sender.to_owned(),
        delivered_seq,
        read_seq,
        new: stored.is_none(),
        at: ctx.now,
    });
    let state = wire::ReceiptState {
        v: wire::VERSION,
        session_id: s.session_id.to_owned(),
        subject: s.sender.to_owned(),
        delivered_seq: delivered_seq as u64,
        read_seq: read_seq as u64,
    };
    let topic = Topic::Session {
        session: s.session_id,
        kind: SessionTopic::Receipts,
        subject: None,
    };
    fx.outbox.entry(topic.to_string(), &state);
    Verdict::Accepted { seq: None }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use schemas::wire::Action;

    use super::*;
    use crate::pipeline::decide::testing::{decide, views};

    #[test]
    fn horizons_only_move_forward_and_never_past_the_stream() {
        let staff = HashMap::new();
        let mut views = views(&[]);
        views.get_mut("s-1").unwrap().last_seq = 10;
        views
            .get_mut("s-1")
            .unwrap()
            .receipts
            .insert("kiosk".into(), None);
        let receipt = |delivered, read| Action::Receipt {
            delivered_seq: delivered,
            read_seq: read,
        };
        // (delivered, read) asked -> stored
        type Asked = (Option<u64>, Option<u64>);
        let rows: &[(Asked, (i64, i64), bool)] = &[
            ((Some(3), None), (3, 0), true),
            ((None, Some(5)), (5, 5), false),
            ((Some(2), Some(1)), (5, 5), false),
            ((Some(99), Some(7)), (10, 7), false),
        ];
        for ((delivered, read), expected, new) in rows {
            let (verdict, fx) = decide(
                &mut views,
                &staff,
                "kiosk",
                "r",
                receipt(*delivered, *read),
                0,
            );
            assert_eq!(verdict, Verdict::Accepted { seq: None });
            let write = &fx.receipts[0];
            assert_eq!((write.delivered_seq, write.read_seq), *expected);
            assert_eq!(write.new, *new);
            assert!(fx.audit.is_empty(), "receipts are not audited");
        }
    }
}
