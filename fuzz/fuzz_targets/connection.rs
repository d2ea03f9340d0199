//! One connection's bytes, as a client could send them: framing, decoding and screening
//! (`broker::fuzzing::check` says what must hold). A crash is a panic reachable from the network.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| broker::fuzzing::check(data));
