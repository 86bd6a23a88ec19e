//! Arbitrary bytes on a WebTransport CONNECT stream through the capsule parser, whole and
//! split in two: no panic, both parses agree, a close message stays within 1024 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gquic_hyper::webtransport::fuzzing::capsules(data);
});
