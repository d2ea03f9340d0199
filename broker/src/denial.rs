//! Denials, bounded before anything is written: a refused CONNECT or a denied publish or
//! subscribe carries text a stranger chose (a client id, a topic), so every field is cut to
//! `mqtt.denials.max_field_bytes` with its original length kept; and repeats are folded, so
//! that a flood costs a few entries: per address (CONNECT refusals, whose client id is anyone's
//! to choose) or per subject (denied publishes and subscribes), the first denial of a window of
//! `mqtt.denials.fold_window_secs` is recorded whole and the rest are counted, then reported
//! together when the window ends. At most `mqtt.denials.max_tracked` addresses and subjects are
//! followed at once; beyond them, denials of each kind fold together.
//!
//! [`Folder`] decides, as a pure function of what it has seen and the time it is given; the
//! broker's hooks (`hooks`) act on its verdicts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// The `[mqtt.denials]` section: how denials are bounded before they are logged and recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenialsConfig {
    /// Longest text kept of a denial's client id, subject, topic or reason, in bytes (at
    /// least 16); the original length is kept beside it.
    pub max_field_bytes: usize,
    /// Seconds during which repeats from one address or subject are counted rather than
    /// recorded each (at least 1).
    pub fold_window_secs: u64,
    /// Addresses and subjects followed at once (at least 1); beyond them denials of each kind
    /// fold together.
    pub max_tracked: usize,
}

impl Default for DenialsConfig {
    /// A client id is at most 128 bytes when valid, so 256 keeps every honest one whole; a
    /// minute of folding makes a flood a few entries a minute per address.
    fn default() -> Self {
        Self {
            max_field_bytes: 256,
            fold_window_secs: 60,
            max_tracked: 1_000,
        }
    }
}

impl DenialsConfig {
    /// Checks what serde cannot; the error names the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_field_bytes < 16 {
            return Err((
                "mqtt.denials.max_field_bytes",
                "must be at least 16".to_owned(),
            ));
        }
        if self.fold_window_secs == 0 {
            return Err((
                "mqtt.denials.fold_window_secs",
                "must be at least 1".to_owned(),
            ));
        }
        if self.max_tracked == 0 {
            return Err(("mqtt.denials.max_tracked", "must be at least 1".to_owned()));
        }
        Ok(())
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_secs(self.fold_window_secs)
    }
}

/// Text cut to a bound, with the length it had.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bounded {
    /// At most the bound's bytes of the original, cut at a character boundary.
    pub text: String,
    /// The original's length in bytes.
    pub len: usize,
}

impl Bounded {
    pub fn new(text: &str, max: usize) -> Self {
        let mut end = text.len().min(max);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self {
            text: text[..end].to_owned(),
            len: text.len(),
        }
    }

    /// Whether the text was cut.
    pub fn truncated(&self) -> bool {
        self.text.len() < self.len
    }
}

/// What was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenialKind {
    Connect,
    Publish,
    Subscribe,
}

impl DenialKind {
    /// Its name in logs, metrics and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            DenialKind::Connect => "connect",
            DenialKind::Publish => "publish",
            DenialKind::Subscribe => "subscribe",
        }
    }
}

/// A refused connection or a denied publish or subscribe, its text bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub kind: DenialKind,
    /// Where the connection came from.
    pub peer: SocketAddr,
    /// The client id offered (a refused CONNECT) or the authenticated subject.
    pub actor: Bounded,
    /// The topic of a publish, the filter of a subscribe.
    pub target: Option<Bounded>,
    pub reason: Bounded,
    pub at: SystemTime,
}

/// Whose denials fold together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FoldedBy {
    /// Refused CONNECTs from this address.
    Address(IpAddr),
    /// Denied publishes or subscribes of this subject.
    Subject(String),
    /// Everyone else's, while `mqtt.denials.max_tracked` others are followed.
    Others,
}

impl std::fmt::Display for FoldedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FoldedBy::Address(address) => write!(f, "{address}"),
            FoldedBy::Subject(subject) => f.write_str(subject),
            FoldedBy::Others => f.write_str("others"),
        }
    }
}

/// The denials of one kind and one address or subject that a window counted instead of
/// recording each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedDenials {
    pub kind: DenialKind,
    pub by: FoldedBy,
    pub count: u64,
    /// When the first and the last of them happened.
    pub first_at: SystemTime,
    pub last_at: SystemTime,
    /// The last of them, as an example.
    pub last: Denial,
}

/// What is to be recorded (on the audit chain) and logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenialRecord {
    /// A denial recorded whole: the first of its window.
    Single(Denial),
    /// The rest of a window, counted.
    Folded(FoldedDenials),
}

impl DenialRecord {
    /// How many denials this record accounts for.
    pub fn count(&self) -> u64 {
        match self {
            DenialRecord::Single(_) => 1,
            DenialRecord::Folded(folded) => folded.count,
        }
    }
}

/// One address's or subject's window.
struct Tally {
    opened: Instant,
    folded: Option<FoldedDenials>,
}

/// Decides which denials are recorded whole and which are counted.
pub(crate) struct Folder {
    window: Duration,
    max_tracked: usize,
    tallies: HashMap<(DenialKind, FoldedBy), Tally>,
}

impl Folder {
    pub(crate) fn new(config: &DenialsConfig) -> Self {
        Self {
            window: config.window(),
            max_tracked: config.max_tracked,
            tallies: HashMap::new(),
        }
    }

    /// Sees `denial` at `now`: what to record because of it, in order (the count of its key's
    /// window that just ended, if any; then the denial itself if it opens a new window).
    pub(crate) fn observe(&mut self, denial: Denial, now: Instant) -> Vec<DenialRecord> {
        let mut records = Vec::new();
        let mut by = match denial.kind {
            DenialKind::Connect => FoldedBy::Address(denial.peer.ip()),
            DenialKind::Publish | DenialKind::Subscribe => {
                FoldedBy::Subject(denial.actor.text.clone())
            }
        };
        let mut key = (denial.kind, by.clone());
        if let Some(tally) = self.tallies.get(&key)
            && now.saturating_duration_since(tally.opened) >= self.window
            && let Some(ended) = self.tallies.remove(&key)
        {
            records.extend(ended.folded.map(DenialRecord::Folded));
        }
        if !self.tallies.contains_key(&key) && self.followed() >= self.max_tracked {
            by = FoldedBy::Others;
            key = (denial.kind, FoldedBy::Others);
        }
        match self.tallies.get_mut(&key) {
            Some(tally) if now.saturating_duration_since(tally.opened) < self.window => {
                match &mut tally.folded {
                    Some(folded) => {
                        folded.count += 1;
                        folded.last_at = denial.at;
                        folded.last = denial;
                    }
                    None => {
                        tally.folded = Some(FoldedDenials {
                            kind: denial.kind,
                            by,
                            count: 1,
                            first_at: denial.at,
                            last_at: denial.at,
                            last: denial,
                        });
                    }
                }
            }
            _ => {
                if let Some(ended) = self.tallies.remove(&key) {
                    records.extend(ended.folded.map(DenialRecord::Folded));
                }
                self.tallies.insert(
                    key,
                    Tally {
                        opened: now,
                        folded: None,
                    },
                );
                records.push(DenialRecord::Single(denial));
            }
        }
        records
    }

    /// Ends the windows that are over at `now`: the counts they hold, to be recorded.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<DenialRecord> {
        let window = self.window;
        let mut ended = Vec::new();
        self.tallies.retain(|_, tally| {
            if now.saturating_duration_since(tally.opened) < window {
                return true;
            }
            ended.extend(tally.folded.take());
            false
        });
        Self::in_order(ended)
    }

    /// Ends every window now (the broker is stopping): the counts they hold.
    pub(crate) fn drain(&mut self) -> Vec<DenialRecord> {
        let ended = self
            .tallies
            .drain()
            .filter_map(|(_, tally)| tally.folded)
            .collect();
        Self::in_order(ended)
    }

    /// Addresses and subjects followed now (the overflow keys aside, one per kind at most).
    fn followed(&self) -> usize {
        let overflow = [
            DenialKind::Connect,
            DenialKind::Publish,
            DenialKind::Subscribe,
        ]
        .into_iter()
        .filter(|kind| self.tallies.contains_key(&(*kind, FoldedBy::Others)))
        .count();
        self.tallies.len() - overflow
    }

    fn in_order(mut ended: Vec<FoldedDenials>) -> Vec<DenialRecord> {
        ended.sort_by_key(|folded| folded.first_at);
        ended.into_iter().map(DenialRecord::Folded).collect()
    }
}

#[cfg(test)]
mod tests;
