//! Arbitrary datagrams through the header decoder and coalesced-packet splitting.
#![no_main]

use bytes::BytesMut;
use gquic_transport::wire::packet::PartialDecode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cid_len, datagram)) = data.split_first() else {
        return;
    };
    let cid_len = usize::from(cid_len % 21);
    let mut rest = Some(BytesMut::from(datagram));
    let mut rounds = 0;
    while let Some(d) = rest.take() {
        rounds += 1;
        assert!(rounds <= datagram.len() + 1, "coalesced splitting must make progress");
        let before = d.len();
        match PartialDecode::new(d, cid_len) {
            Ok((partial, r)) => {
                assert!(partial.len() <= before);
                let _ = partial.header().versions().count();
                let _ = partial.header().dst_cid();
                rest = r;
            }
            Err(e) => {
                let _ = e.code();
            }
        }
    }
});
