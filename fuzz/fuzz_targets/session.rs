//! A script of what a few clients send to a real broker over in-memory streams, through the
//! per-session state machine: QoS 2 flows both ways, topic aliases both ways, shared
//! subscriptions, subscription identifiers, persistent sessions (`broker::fuzzing::session`
//! says what must hold). A crash is a panic reachable from the network, or a broken invariant.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::session::check(data));
