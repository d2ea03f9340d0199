//! Utilization's arithmetic: each member of staff's time signed in and in chats over a range,
//! as unions and intersections of half-open spans, before `stats` sums them into a share
//! (by the definitions it states).

use std::collections::HashMap;

use crate::stats_record::{AvailabilityChange, Range, Record};

/// One member of staff's time, before it is summed into a share.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct StaffTime {
    pub signed_in_ms: i64,
    pub in_chat_ms: i64,
    pub in_chat_while_away_ms: i64,
    /// Whether any of it happened in the range (a chat, or availability changed).
    pub active: bool,
}

/// Half-open intervals in milliseconds since the epoch.
pub(crate) type Spans = Vec<(i64, i64)>;

pub(crate) fn staff_utilization(range: Range, record: &Record) -> HashMap<&str, StaffTime> {
    let (since, until) = (
        range.since.timestamp_millis(),
        range.until.timestamp_millis(),
    );
    let mut chats: HashMap<&str, Spans> = HashMap::new();
    for stint in &record.stints {
        let end = [stint.left_at, stint.session_closed_at]
            .into_iter()
            .flatten()
            .map(|t| t.timestamp_millis())
            .fold(until, i64::min);
        let start = stint.joined_at.timestamp_millis().max(since);
        if start < end {
            chats.entry(&stint.subject).or_default().push((start, end));
        }
    }
    let mut changes: HashMap<&str, Vec<&AvailabilityChange>> = HashMap::new();
    for change in &record.availability {
        changes.entry(&change.subject).or_default().push(change);
    }
    record
        .staff
        .iter()
        .map(|member| {
            let subject = member.subject.as_str();
            let changes = changes.get(subject).map_or(&[][..], Vec::as_slice);
            let signed_in = signed_in(since, until, changes);
            let chat = union(chats.remove(subject).unwrap_or_default());
            let in_chat = measure(&intersection(&chat, &signed_in));
            let time = StaffTime {
                signed_in_ms: measure(&signed_in),
                in_chat_ms: in_chat,
                in_chat_while_away_ms: measure(&chat) - in_chat,
                active: !chat.is_empty()
                    || changes
                        .iter()
                        .any(|c| (since..until).contains(&c.at.timestamp_millis()))
                    || !signed_in.is_empty(),
            };
            (subject, time)
        })
        .collect()
}

/// The periods within `[since, until)` someone was available, from their availability changes
/// (any order). Before the first change in the range they were as the last change before it
/// left them, or, without one, as the first change in the range says they were before it;
/// with no change at all, away.
pub(crate) fn signed_in(since: i64, until: i64, changes: &[&AvailabilityChange]) -> Spans {
    let mut changes: Vec<(i64, bool, bool)> = changes
        .iter()
        .map(|c| (c.at.timestamp_millis(), c.before, c.after))
        .collect();
    changes.sort_by_key(|&(at, ..)| at);
    let earlier = changes.iter().rev().find(|&&(at, ..)| at < since);
    let first_inside = changes.iter().find(|&&(at, ..)| at >= since);
    let mut available = match (earlier, first_inside) {
        (Some(&(_, _, after)), _) => after,
        (None, Some(&(_, before, _))) => before,
        (None, None) => false,
    };
    let mut spans = Vec::new();
    let mut from = since;
    for &(at, _, after) in changes
        .iter()
        .filter(|&&(at, ..)| at >= since && at < until)
    {
        if available && !after {
            spans.push((from, at));
        } else if !available && after {
            from = at;
        }
        available = after;
    }
    if available {
        spans.push((from, until));
    }
    spans.retain(|&(start, end)| start < end);
    spans
}

/// `spans` merged into disjoint, ordered spans.
pub(crate) fn union(mut spans: Spans) -> Spans {
    spans.sort_unstable();
    let mut merged: Spans = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The overlap of two sets of disjoint, ordered spans.
pub(crate) fn intersection(a: &[(i64, i64)], b: &[(i64, i64)]) -> Spans {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (start, end) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if start < end {
            out.push((start, end));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

pub(crate) fn measure(spans: &[(i64, i64)]) -> i64 {
    spans.iter().map(|(start, end)| end - start).sum()
}
