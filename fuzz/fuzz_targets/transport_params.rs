//! Arbitrary bytes through the transport-parameter decoder, from either side; whatever decodes
//! re-encodes to the same parameters.
#![no_main]

use gquic_transport::wire::TransportParameters;
use gquic_transport::Side;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for side in [Side::Client, Side::Server] {
        match TransportParameters::decode(side, data) {
            Ok(params) => {
                let mut buf = Vec::new();
                params.encode(&mut buf);
                assert_eq!(buf.len(), params.encoded_len());
                let again = TransportParameters::decode(side, &buf).expect("re-encoded parameters decode");
                assert_eq!(again, params);
            }
            Err(e) => {
                let _ = e.code();
            }
        }
    }
});
