//! The fuzz input of the session target read as a script: what each of a few clients does, one
//! step at a time. Reading never fails: every byte string is some script (missing bytes read as
//! 0), so libFuzzer's mutations always reach the broker, and a step's parameters are picked from
//! small palettes of topics, filters and packet ids, so that steps meet each other's state
//! (a PUBREL names a packet id a PUBLISH used, a publish matches a subscription).
//!
//! Each step is one byte, `client << 6 | kind`, followed by its parameters.

/// Clients a script can drive (the top two bits of a step's first byte).
pub(crate) const CLIENTS: usize = 4;

/// Steps read from one input, at most: a longer input adds nothing a shorter one cannot, and
/// keeps each run short.
pub(crate) const MAX_STEPS: usize = 96;

/// Topics the clients publish to. `deny/` is refused by the harness's authorizer, `$` by the
/// gateway, and `cc/` never goes through a shared subscription.
pub(crate) const TOPICS: [&str; 8] = [
    "a/b",
    "a/c",
    "x",
    "a/b/c",
    "deny/x",
    "cc/v1/sessions/s1/notes",
    "$share/g/a",
    "b",
];

/// Filters the clients subscribe to: plain, wildcard and shared ones, and malformed shares.
pub(crate) const FILTERS: [&str; 16] = [
    "a/b",
    "a/+",
    "#",
    "x",
    "$share/g/a/+",
    "$share/g/a/b",
    "$share/h/#",
    "$share/h/x",
    "$share/g",
    "$share//x",
    "$share/g+/x",
    "$share/g/cc/v1/#",
    "deny/#",
    "cc/v1/sessions/s1/#",
    "a/#",
    "$SYS/#",
];

/// The maximum packet size a client announces when it wants small packets: a QoS 0 delivery to
/// `x` fits, one to the `cc/` topic does not.
pub(crate) const SMALL_PACKETS: u32 = 16;

/// The message expiry interval of a publish that has one, in seconds.
pub(crate) const MESSAGE_EXPIRY: u32 = 3;

/// How a PUBLISH from a client uses a topic alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AliasUse {
    None,
    /// The topic in full, setting this alias.
    Set(u16),
    /// An empty topic, naming it by this alias.
    Use(u16),
}

/// The subscription identifier a SUBSCRIBE carries (MQTT 5 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdUse {
    None,
    /// One no other subscription of the script has: the deliveries it causes can be told apart.
    Fresh,
    /// 0, a protocol error.
    Zero,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Connects the client, first closing the connection it has, if any.
    Connect {
        v5: bool,
        clean_start: bool,
        /// Session expiry interval in seconds (MQTT 5), or a persistent session (3.1.1).
        expiry: u32,
        /// The receive maximum the client announces (MQTT 5).
        receive_maximum: u16,
        /// The topic alias maximum the client announces (MQTT 5).
        alias_maximum: u16,
        will: bool,
        /// Announces a maximum packet size of [`SMALL_PACKETS`] bytes (MQTT 5): larger
        /// deliveries are dropped, as if sent.
        small_packets: bool,
        keep_alive: u16,
    },
    Publish {
        topic: usize,
        qos: u8,
        retain: bool,
        alias: AliasUse,
        pkid: u16,
        /// With a message expiry interval of [`MESSAGE_EXPIRY`] seconds.
        expiry: bool,
    },
    /// The client's last QoS 2 PUBLISH with this packet id, sent again with DUP set.
    Resend {
        pkid: u16,
    },
    PubRel {
        pkid: u16,
    },
    /// Answers the delivery at this place among those the client has not answered yet.
    PubAck {
        nth: u8,
    },
    PubRec {
        nth: u8,
        accepted: bool,
    },
    PubComp {
        nth: u8,
    },
    Subscribe {
        filter: usize,
        qos: u8,
        no_local: bool,
        retain_as_published: bool,
        retain_handling: u8,
        id: IdUse,
    },
    Unsubscribe {
        filter: usize,
    },
    Ping,
    Disconnect {
        with_will: bool,
        expiry: Option<u32>,
    },
    /// The network connection is lost, without DISCONNECT.
    Drop,
    /// Bytes written as they are: through the gateway's framing and decoding.
    Raw(Vec<u8>),
    /// Time passes: keep alives, will delays, message and session expiry.
    Wait {
        seconds: u32,
    },
}

/// Reads `input` as a script of `(client, step)`.
pub(crate) fn read(input: &[u8]) -> Vec<(usize, Step)> {
    let mut bytes = Bytes(input);
    let mut steps = Vec::new();
    while !bytes.0.is_empty() && steps.len() < MAX_STEPS {
        let head = bytes.byte();
        let client = usize::from(head >> 6);
        let step = match head & 0x3F {
            0 | 14 => {
                let flags = bytes.byte();
                let options = bytes.byte();
                Step::Connect {
                    v5: flags & 1 == 0,
                    clean_start: flags & 2 != 0,
                    // 120 s and "never" are held to the harness's maximum session expiry.
                    expiry: match (flags >> 2) & 3 {
                        0 => 0,
                        1 => 5,
                        2 => 120,
                        _ => u32::MAX,
                    },
                    receive_maximum: u16::from((flags >> 4) & 3) + 1,
                    alias_maximum: u16::from(flags >> 6),
                    will: options & 1 != 0,
                    small_packets: options & 2 != 0,
                    keep_alive: u16::from(bytes.byte() & 7) * 5,
                }
            }
            1 | 15 | 16 | 17 => {
                let a = bytes.byte();
                let b = bytes.byte();
                Step::Publish {
                    topic: usize::from(a & 7),
                    qos: ((a >> 3) & 3) % 3,
                    retain: a & 0x20 != 0,
                    alias: match b >> 6 {
                        0 => AliasUse::None,
                        1 => AliasUse::Set(u16::from(a >> 6)),
                        2 => AliasUse::Use(u16::from(a >> 6)),
                        // Beyond what the gateway announces, or the largest there is.
                        _ if a & 0x40 == 0 => AliasUse::Set(u16::from(b & 0x3F) + 4),
                        _ => AliasUse::Set(u16::MAX),
                    },
                    pkid: u16::from(b & 7) + 1,
                    expiry: b & 0x38 == 0x38,
                }
            }
            2 | 18 => Step::Resend {
                pkid: u16::from(bytes.byte() & 7) + 1,
            },
            3 | 19 => Step::PubRel {
                pkid: u16::from(bytes.byte() & 7) + 1,
            },
            4 | 20 => Step::PubAck { nth: bytes.byte() },
            5 | 21 => {
                let b = bytes.byte();
                Step::PubRec {
                    nth: b >> 1,
                    accepted: b & 1 == 0,
                }
            }
            6 | 22 => Step::PubComp { nth: bytes.byte() },
            7 | 23 | 24 => {
                let a = bytes.byte();
                let b = bytes.byte();
                Step::Subscribe {
                    filter: usize::from(a & 0x0F),
                    qos: (a >> 4) % 3,
                    no_local: a & 0x40 != 0 && a & 0x80 != 0,
                    retain_as_published: b & 1 != 0,
                    retain_handling: (b >> 1) % 3,
                    id: match (b >> 3) & 7 {
                        0..=2 => IdUse::Fresh,
                        3..=5 => IdUse::None,
                        _ => IdUse::Zero,
                    },
                }
            }
            8 | 25 => Step::Unsubscribe {
                filter: usize::from(bytes.byte() & 0x0F),
            },
            9 => Step::Ping,
            10 => {
                let b = bytes.byte();
                Step::Disconnect {
                    with_will: b & 1 != 0,
                    expiry: (b & 2 != 0).then_some(u32::from(b >> 2)),
                }
            }
            11 => Step::Drop,
            12 => {
                let len = usize::from(bytes.byte() & 0x3F);
                Step::Raw(bytes.take(len).to_vec())
            }
            // Up to 15 s: past keep alives (5 s is held to 7.5), will delays (2 s), message
            // expiry (3 s) and the shortest session expiry (5 s). Every virtual second costs a
            // tick of the broker's upkeep, so longer waits would only slow the fuzzer.
            13 => Step::Wait {
                seconds: u32::from(bytes.byte() & 0x0F),
            },
            // The remaining kinds are other clients' connects: most scripts need a few.
            _ => Step::Connect {
                v5: head & 1 == 0,
                clean_start: true,
                expiry: 0,
                receive_maximum: 2,
                alias_maximum: 2,
                will: false,
                small_packets: false,
                keep_alive: 0,
            },
        };
        steps.push((client, step));
    }
    steps
}

/// Writes `steps` as a script that [`read`] reads back: for seeds and tests.
pub(crate) fn write(steps: &[(usize, Step)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (client, step) in steps {
        let head = |kind: u8| ((*client as u8) << 6) | kind;
        match step {
            Step::Connect {
                v5,
                clean_start,
                expiry,
                receive_maximum,
                alias_maximum,
                will,
                small_packets,
                keep_alive,
            } => {
                let expiry = match expiry {
                    0 => 0,
                    5 => 1,
                    120 => 2,
                    _ => 3,
                };
                let flags = u8::from(!v5)
                    | u8::from(*clean_start) << 1
                    | expiry << 2
                    | ((*receive_maximum as u8).clamp(1, 4) - 1) << 4
                    | (*alias_maximum as u8).min(3) << 6;
                let options = u8::from(*will) | u8::from(*small_packets) << 1;
                out.extend([head(0), flags, options, (*keep_alive / 5) as u8]);
            }
            Step::Publish {
                topic,
                qos,
                retain,
                alias,
                pkid,
                expiry,
            } => {
                let (mode, alias) = match alias {
                    AliasUse::None => (0, 0),
                    AliasUse::Set(alias) => (1, *alias),
                    AliasUse::Use(alias) => (2, *alias),
                };
                let a = *topic as u8 | qos << 3 | u8::from(*retain) << 5 | (alias as u8) << 6;
                let b = mode << 6 | ((*pkid - 1) as u8 & 7) | if *expiry { 0x38 } else { 0 };
                out.extend([head(1), a, b]);
            }
            Step::Resend { pkid } => out.extend([head(2), (*pkid - 1) as u8]),
            Step::PubRel { pkid } => out.extend([head(3), (*pkid - 1) as u8]),
            Step::PubAck { nth } => out.extend([head(4), *nth]),
            Step::PubRec { nth, accepted } => {
                out.extend([head(5), nth << 1 | u8::from(!accepted)]);
            }
            Step::PubComp { nth } => out.extend([head(6), *nth]),
            Step::Subscribe {
                filter,
                qos,
                no_local,
                retain_as_published,
                retain_handling,
                id,
            } => {
                let a = *filter as u8 | qos << 4 | if *no_local { 0xC0 } else { 0 };
                let id = match id {
                    IdUse::Fresh => 0,
                    IdUse::None => 3,
                    IdUse::Zero => 6,
                };
                let b = u8::from(*retain_as_published) | retain_handling << 1 | id << 3;
                out.extend([head(7), a, b]);
            }
            Step::Unsubscribe { filter } => out.extend([head(8), *filter as u8]),
            Step::Ping => out.push(head(9)),
            Step::Disconnect { with_will, expiry } => {
                let b = u8::from(*with_will)
                    | expiry.map_or(0, |seconds| 2 | (seconds.min(63) as u8) << 2);
                out.extend([head(10), b]);
            }
            Step::Drop => out.push(head(11)),
            Step::Raw(bytes) => {
                out.extend([head(12), bytes.len().min(0x3F) as u8]);
                out.extend(&bytes[..bytes.len().min(0x3F)]);
            }
            Step::Wait { seconds } => out.extend([head(13), (*seconds).min(0x0F) as u8]),
        }
    }
    out
}

/// The input, read a byte at a time; 0 once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((first, rest)) => {
                self.0 = rest;
                *first
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }
}
