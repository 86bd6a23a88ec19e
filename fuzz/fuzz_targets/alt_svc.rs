//! Arbitrary `alt-svc` header values through the parser: no panic, and every alternative it
//! returns has a protocol.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(gquic_tower::AltSvcValue::Alternatives(alts)) = gquic_tower::parse_alt_svc(s) {
            assert!(!alts.is_empty());
            assert!(alts.iter().all(|a| !a.protocol.is_empty()));
        }
    }
});
