//! Arbitrary payloads through the frame decoder for every packet type; every decoded frame
//! re-encodes to a frame that decodes to itself.
#![no_main]

use bytes::Bytes;
use gquic_transport::wire::frame::{Frame, Iter};
use gquic_transport::wire::PacketType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let packet_type = match selector % 4 {
        0 => PacketType::Initial,
        1 => PacketType::ZeroRtt,
        2 => PacketType::Handshake,
        _ => PacketType::OneRtt,
    };
    let mut frames = 0;
    for result in Iter::new(Bytes::copy_from_slice(payload), packet_type) {
        frames += 1;
        assert!(frames <= payload.len() + 1, "the frame iterator must make progress");
        match result {
            Ok(frame) => {
                let mut buf = Vec::new();
                frame.encode(&mut buf);
                assert_eq!(buf.len(), frame.encoded_len());
                let again = Frame::decode(&mut Bytes::from(buf)).expect("re-encoded frame decodes");
                // Padding runs and length-less STREAM/DATAGRAM frames re-encode differently but
                // must carry the same content.
                if !matches!(frame, Frame::Padding(_)) {
                    assert_eq!(again, frame);
                }
            }
            Err(e) => {
                let _ = e.code();
                let _ = e.frame_type();
            }
        }
    }
});
