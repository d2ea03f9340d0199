//! Session scripts that walk the state machine's paths on purpose: the `session` fuzz target's
//! seed corpus (`fuzz/corpus/session/`) and the broker tests' handwritten sequences.

use super::script::{AliasUse, IdUse, Step};

/// An MQTT 5 client that allows `aliases` topic aliases and `receive_maximum` deliveries at
/// once, with a clean session that ends with the connection.
pub(crate) fn v5(receive_maximum: u16, aliases: u16) -> Step {
    Step::Connect {
        v5: true,
        clean_start: true,
        expiry: 0,
        receive_maximum,
        alias_maximum: aliases,
        will: false,
        small_packets: false,
        keep_alive: 0,
    }
}

pub(crate) fn v4() -> Step {
    Step::Connect {
        v5: false,
        clean_start: true,
        expiry: 0,
        receive_maximum: 1,
        alias_maximum: 0,
        will: false,
        small_packets: false,
        keep_alive: 0,
    }
}

/// A publish to `TOPICS[topic]`.
pub(crate) fn publish(topic: usize, qos: u8, pkid: u16, alias: AliasUse) -> Step {
    Step::Publish {
        topic,
        qos,
        retain: false,
        alias,
        pkid,
        expiry: false,
    }
}

/// A subscription to `FILTERS[filter]` with a fresh identifier.
pub(crate) fn subscribe(filter: usize, qos: u8) -> Step {
    Step::Subscribe {
        filter,
        qos,
        no_local: false,
        retain_as_published: false,
        retain_handling: 2,
        id: IdUse::Fresh,
    }
}

/// Indexes into `script::TOPICS` and `script::FILTERS`, by name.
pub(crate) mod at {
    pub const A_B: usize = 0;
    pub const A_C: usize = 1;
    pub const X: usize = 2;
    pub const DENIED: usize = 4;
    pub const CC: usize = 5;
    pub const A_B_FILTER: usize = 0;
    pub const PLUS: usize = 1;
    pub const ALL: usize = 2;
    pub const SHARE_G_PLUS: usize = 4;
    pub const SHARE_H_ALL: usize = 6;
    pub const SHARE_NO_FILTER: usize = 8;
    pub const SHARE_CC: usize = 11;
}

pub(crate) fn scripts() -> Vec<(&'static str, Vec<(usize, Step)>)> {
    use AliasUse::{None as Plain, Set, Use};
    vec![
        (
            "qos2-flow",
            vec![
                (0, v5(3, 0)),
                (1, v5(2, 0)),
                (1, subscribe(at::A_B, 2)),
                (0, publish(at::A_B, 2, 1, Plain)),
                (0, Step::Resend { pkid: 1 }),
                (0, Step::PubRel { pkid: 1 }),
                (0, Step::PubRel { pkid: 1 }),
                (
                    1,
                    Step::PubRec {
                        nth: 0,
                        accepted: true,
                    },
                ),
                (
                    1,
                    Step::PubRec {
                        nth: 0,
                        accepted: true,
                    },
                ),
                (1, Step::PubComp { nth: 0 }),
                (0, Step::Resend { pkid: 1 }),
                (0, publish(at::DENIED, 2, 2, Plain)),
                (0, Step::PubRel { pkid: 2 }),
            ],
        ),
        (
            "receive-maximum",
            vec![
                (0, v5(3, 0)),
                (0, publish(at::A_B, 2, 1, Plain)),
                (0, publish(at::A_C, 2, 2, Plain)),
                (0, publish(at::X, 2, 3, Plain)),
                (0, publish(at::A_B, 2, 3, Plain)),
                (0, publish(at::A_B, 2, 4, Plain)),
            ],
        ),
        (
            "outbound-window",
            vec![
                (0, v5(3, 0)),
                (1, v5(1, 0)),
                (1, subscribe(at::ALL, 2)),
                (0, publish(at::A_B, 1, 1, Plain)),
                (0, publish(at::A_C, 2, 2, Plain)),
                (0, publish(at::X, 1, 3, Plain)),
                (1, Step::PubAck { nth: 0 }),
                (
                    1,
                    Step::PubRec {
                        nth: 0,
                        accepted: false,
                    },
                ),
                (1, Step::PubAck { nth: 0 }),
                // Nothing in flight: packet identifier 5 is not found (PUBREL 0x92).
                (
                    1,
                    Step::PubRec {
                        nth: 4,
                        accepted: true,
                    },
                ),
            ],
        ),
        (
            "aliases-in",
            vec![
                (0, v5(3, 0)),
                (1, v5(3, 0)),
                (1, subscribe(at::PLUS, 0)),
                (0, publish(at::A_C, 0, 1, Set(1))),
                (0, publish(at::A_B, 0, 1, Use(1))),
                (0, publish(at::A_B, 1, 2, Set(1))),
                (0, publish(at::X, 0, 1, Use(1))),
                (0, publish(at::X, 0, 1, Use(2))),
            ],
        ),
        (
            "alias-invalid",
            vec![(0, v5(3, 0)), (0, publish(at::A_B, 1, 1, Set(0)))],
        ),
        (
            "aliases-out",
            vec![
                (0, v5(3, 0)),
                (1, v5(3, 2)),
                (1, subscribe(at::ALL, 0)),
                (0, publish(at::A_B, 0, 1, Plain)),
                (0, publish(at::A_C, 0, 1, Plain)),
                (0, publish(at::A_B, 0, 1, Plain)),
                (0, publish(at::X, 0, 1, Plain)),
                (0, publish(at::A_C, 0, 1, Plain)),
                (0, publish(at::X, 0, 1, Plain)),
            ],
        ),
        (
            "too-large",
            vec![
                (0, v5(3, 0)),
                (
                    1,
                    Step::Connect {
                        v5: true,
                        clean_start: true,
                        expiry: 0,
                        receive_maximum: 2,
                        alias_maximum: 2,
                        will: false,
                        small_packets: true,
                        keep_alive: 0,
                    },
                ),
                (1, subscribe(at::ALL, 1)),
                (0, publish(at::CC, 1, 1, Plain)),
                (0, publish(at::X, 1, 2, Plain)),
                (0, publish(at::CC, 0, 1, Plain)),
                (0, publish(at::X, 0, 1, Plain)),
                (1, Step::PubAck { nth: 0 }),
                // Ended with 0x94, in a DISCONNECT with no room for its reason string.
                (1, publish(at::X, 0, 1, Set(0))),
            ],
        ),
        (
            "identifiers",
            vec![
                (0, v4()),
                (1, v5(1, 0)),
                (1, subscribe(at::ALL, 2)),
                (1, subscribe(at::A_B_FILTER, 0)),
                (1, subscribe(at::PLUS, 1)),
                (0, publish(at::A_B, 0, 1, Plain)),
                (0, publish(at::A_B, 2, 1, Plain)),
                (
                    1,
                    Step::PubRec {
                        nth: 0,
                        accepted: true,
                    },
                ),
                (1, Step::PubComp { nth: 0 }),
            ],
        ),
        (
            "shared",
            vec![
                (0, v5(3, 0)),
                (1, v5(3, 0)),
                (2, v4()),
                (3, v5(3, 0)),
                (1, subscribe(at::SHARE_G_PLUS, 0)),
                (2, subscribe(at::SHARE_G_PLUS, 0)),
                (3, subscribe(at::SHARE_G_PLUS, 0)),
                (3, subscribe(at::SHARE_H_ALL, 0)),
                (3, subscribe(at::PLUS, 0)),
                (1, subscribe(at::SHARE_NO_FILTER, 0)),
                (1, subscribe(at::SHARE_CC, 0)),
                (0, publish(at::A_B, 0, 1, Plain)),
                (0, publish(at::A_C, 0, 1, Plain)),
                (0, publish(at::A_B, 0, 1, Plain)),
                (0, publish(at::X, 0, 1, Plain)),
                (
                    1,
                    Step::Unsubscribe {
                        filter: at::SHARE_G_PLUS,
                    },
                ),
                (0, publish(at::A_B, 0, 1, Plain)),
                (
                    2,
                    Step::Disconnect {
                        with_will: false,
                        expiry: None,
                    },
                ),
                (0, publish(at::A_C, 0, 1, Plain)),
                (3, Step::Drop),
                (0, publish(at::A_C, 1, 1, Plain)),
            ],
        ),
        (
            "persistent-share",
            vec![
                (
                    0,
                    Step::Connect {
                        v5: true,
                        clean_start: false,
                        expiry: 120,
                        receive_maximum: 2,
                        alias_maximum: 1,
                        will: true,
                        small_packets: false,
                        keep_alive: 5,
                    },
                ),
                (0, subscribe(at::SHARE_H_ALL, 2)),
                (0, Step::Drop),
                (1, v4()),
                (1, publish(at::A_B, 1, 1, Plain)),
                (1, publish(at::X, 2, 2, Plain)),
                (1, Step::PubRel { pkid: 2 }),
                (
                    0,
                    Step::Connect {
                        v5: true,
                        clean_start: false,
                        expiry: 120,
                        receive_maximum: 1,
                        alias_maximum: 1,
                        will: false,
                        small_packets: false,
                        keep_alive: 0,
                    },
                ),
                (0, Step::PubAck { nth: 0 }),
                (
                    0,
                    Step::PubRec {
                        nth: 0,
                        accepted: true,
                    },
                ),
                (0, Step::Wait { seconds: 10 }),
                (0, Step::PubComp { nth: 0 }),
                (1, Step::Ping),
            ],
        ),
        (
            "v4-qos2",
            vec![
                (0, v4()),
                (1, v4()),
                (1, subscribe(at::PLUS, 2)),
                (0, publish(at::A_B, 2, 5, Plain)),
                (0, Step::Resend { pkid: 5 }),
                (
                    1,
                    Step::PubRec {
                        nth: 0,
                        accepted: true,
                    },
                ),
                (0, Step::PubRel { pkid: 5 }),
                (1, Step::PubComp { nth: 0 }),
                (0, publish(at::DENIED, 1, 1, Plain)),
            ],
        ),
    ]
}
