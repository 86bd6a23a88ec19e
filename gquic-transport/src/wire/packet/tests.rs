use super::*;
use proptest::prelude::*;

/// Header protection that masks nothing, to test the header codec on its own.
struct NullHp;

impl HeaderProtectionKey for NullHp {
    fn encrypt_in_place(&self, _: &[u8], _: &mut u8, _: &mut [u8]) -> Result<(), rustls::Error> {
        Ok(())
    }
    fn decrypt_in_place(&self, _: &[u8], _: &mut u8, _: &mut [u8]) -> Result<(), rustls::Error> {
        Ok(())
    }
    fn sample_len(&self) -> usize {
        16
    }
}

fn cid(max: usize) -> impl Strategy<Value = ConnectionId> {
    proptest::collection::vec(any::<u8>(), 0..=max).prop_map(|v| ConnectionId::new(&v))
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

fn number() -> impl Strategy<Value = PacketNumber> {
    (0u64..(1 << 40), 1usize..=4).prop_map(|(pn, len)| PacketNumber::with_len(pn, len))
}

fn header(short_cid_len: usize) -> impl Strategy<Value = Header> {
    prop_oneof![
        (
            version(),
            cid(20),
            cid(20),
            proptest::collection::vec(any::<u8>(), 0..64),
            number()
        )
            .prop_map(
                |(version, dst_cid, src_cid, token, number)| Header::Initial {
                    version,
                    dst_cid,
                    src_cid,
                    token: token.into(),
                    number
                }
            ),
        (version(), any::<bool>(), cid(20), cid(20), number()).prop_map(
            |(version, zero_rtt, dst_cid, src_cid, number)| Header::Long {
                ty: if zero_rtt {
                    LongType::ZeroRtt
                } else {
                    LongType::Handshake
                },
                version,
                dst_cid,
                src_cid,
                number
            }
        ),
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), short_cid_len),
            number()
        )
            .prop_map(|(spin, key_phase, cid, number)| Header::Short {
                spin,
                key_phase,
                dst_cid: ConnectionId::new(&cid),
                number
            }),
    ]
}

fn encode_packet(header: &Header, payload_len: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let partial = header.encode(&mut buf).unwrap();
    buf.resize(partial.header_len() + payload_len, 0xab);
    partial.finish(&mut buf).unwrap();
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// encode -> decode -> equal for every header type and both versions; the decoded header
    /// length equals the bytes the encoder wrote.
    #[test]
    fn header_roundtrip(h in header(8), payload_len in 20usize..200) {
        let buf = encode_packet(&h, payload_len);
        let (partial, rest) = PartialDecode::new(BytesMut::from(&buf[..]), 8).unwrap();
        prop_assert!(rest.is_none());
        prop_assert_eq!(partial.len(), buf.len());
        prop_assert_eq!(partial.header().version(), match &h { Header::Short { .. } => None, Header::Initial { version, .. } | Header::Long { version, .. } => Some(*version) });
        let packet = partial.finish(&NullHp).unwrap();
        prop_assert_eq!(packet.header_len, buf.len() - payload_len);
        prop_assert_eq!(&packet.header, &h);
        prop_assert!(packet.reserved_bits_valid());
    }

    /// Coalesced long-header packets followed by a short one split at the right places.
    #[test]
    fn coalesced_split(hs in proptest::collection::vec(header(4), 1..5), lens in proptest::collection::vec(20usize..100, 5)) {
        // Only the last packet may have a short header (it runs to the end of the datagram).
        let mut datagram = Vec::new();
        let mut expected = Vec::new();
        let n = hs.len();
        for (i, h) in hs.iter().enumerate() {
            if matches!(h, Header::Short { .. }) && i + 1 != n {
                continue;
            }
            let p = encode_packet(h, lens[i]);
            expected.push((h.clone(), p.len()));
            datagram.extend_from_slice(&p);
        }
        let mut rest = Some(BytesMut::from(&datagram[..]));
        let mut got = Vec::new();
        while let Some(d) = rest.take() {
            let (partial, r) = PartialDecode::new(d, 4).unwrap();
            let len = partial.len();
            got.push((partial.finish(&NullHp).unwrap().header, len));
            rest = r;
        }
        prop_assert_eq!(got, expected);
    }

    /// Arbitrary bytes never panic the header decoder, and coalesced splitting terminates.
    #[test]
    fn header_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256), cid_len in 0usize..=20) {
        let mut rest = Some(BytesMut::from(&data[..]));
        let mut rounds = 0;
        while let Some(d) = rest.take() {
            rounds += 1;
            prop_assert!(rounds <= data.len() + 1);
            match PartialDecode::new(d, cid_len) {
                Ok((partial, r)) => {
                    let _ = partial.header().versions().count();
                    let _ = partial.finish(&NullHp);
                    rest = r;
                }
                Err(e) => { let _ = e.code(); }
            }
        }
    }
}

#[test]
fn rfc9000_version_negotiation_roundtrip() {
    let mut buf = Vec::new();
    let their_dst = [1u8; 30]; // RFC 8999 allows up to 255 bytes for unknown versions.
    let their_src = [2u8; 5];
    encode_version_negotiation(
        &mut buf,
        0x2a,
        &their_dst,
        &their_src,
        &[Version::V1, Version::V2, Version(0x1a2a3a4a)],
    )
    .unwrap();
    assert_eq!(buf[0] & 0x80, 0x80);
    let (partial, rest) = PartialDecode::new(BytesMut::from(&buf[..]), 8).unwrap();
    assert!(rest.is_none());
    match partial.header() {
        ProtectedHeader::VersionNegotiation {
            dst_cid, src_cid, ..
        } => {
            assert_eq!(&dst_cid[..], &their_src);
            assert_eq!(&src_cid[..], &their_dst);
        }
        other => panic!("{other:?}"),
    }
    let versions: Vec<_> = partial.header().versions().collect();
    assert_eq!(
        versions,
        vec![Version::V1, Version::V2, Version(0x1a2a3a4a)]
    );
    assert!(!partial.header().has_packet_number());
    assert!(partial.finish(&NullHp).is_err());
}

#[test]
fn rfc9000_unsupported_version_keeps_cids_for_negotiation() {
    // A long header with an unknown version and 30-byte DCID (RFC 8999 §5.1).
    let mut buf = vec![0xc0];
    buf.extend_from_slice(&0x1a2a3a4au32.to_be_bytes());
    buf.push(30);
    buf.extend_from_slice(&[9; 30]);
    buf.push(3);
    buf.extend_from_slice(&[8; 3]);
    buf.resize(1200, 0);
    let (partial, _) = PartialDecode::new(BytesMut::from(&buf[..]), 8).unwrap();
    match partial.header() {
        ProtectedHeader::UnsupportedVersion {
            version,
            dst_cid,
            src_cid,
        } => {
            assert_eq!(*version, Version(0x1a2a3a4a));
            assert_eq!(dst_cid.len(), 30);
            assert_eq!(&src_cid[..], &[8; 3]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(partial.header().dst_cid(), None);
}

#[test]
fn rfc9000_invalid_headers_rejected() {
    // Fixed bit clear on a short header (RFC 9000 §17.3.1).
    assert!(PartialDecode::new(BytesMut::from(&[0x00u8; 40][..]), 8).is_err());
    // v1 long header with a 21-byte DCID.
    let mut buf = vec![0xc0];
    buf.extend_from_slice(&1u32.to_be_bytes());
    buf.push(21);
    buf.extend_from_slice(&[0; 21]);
    buf.resize(100, 0);
    assert_eq!(
        PartialDecode::new(BytesMut::from(&buf[..]), 8).unwrap_err(),
        DecodeError::InvalidPacket("connection ID longer than 20 bytes")
    );
    // Retry with an empty token.
    let mut retry = vec![0xf0];
    retry.extend_from_slice(&1u32.to_be_bytes());
    retry.extend_from_slice(&[0, 0]);
    retry.extend_from_slice(&[0; 16]);
    assert!(PartialDecode::new(BytesMut::from(&retry[..]), 8).is_err());
    // Too short for the header protection sample.
    let short = encode_packet(
        &Header::Short {
            spin: false,
            key_phase: false,
            dst_cid: ConnectionId::EMPTY,
            number: PacketNumber::with_len(0, 1),
        },
        5,
    );
    let (partial, _) = PartialDecode::new(BytesMut::from(&short[..]), 0).unwrap();
    assert!(partial.finish(&NullHp).is_err());
    // Reserved bits set after unprotection are reported.
    let mut bits = encode_packet(
        &Header::Short {
            spin: true,
            key_phase: true,
            dst_cid: ConnectionId::EMPTY,
            number: PacketNumber::with_len(0, 1),
        },
        40,
    );
    bits[0] |= 0x08;
    let (partial, _) = PartialDecode::new(BytesMut::from(&bits[..]), 0).unwrap();
    let packet = partial.finish(&NullHp).unwrap();
    assert!(!packet.reserved_bits_valid());
}

#[test]
fn rfc9369_long_type_bits() {
    for ty in [
        LongType::Initial,
        LongType::ZeroRtt,
        LongType::Handshake,
        LongType::Retry,
    ] {
        for v in [Version::V1, Version::V2] {
            assert_eq!(LongType::from_bits(v, ty.to_bits(v)), ty);
        }
    }
    // RFC 9369 §3.2: Initial 0b01, 0-RTT 0b10, Handshake 0b11, Retry 0b00.
    assert_eq!(LongType::Initial.to_bits(Version::V2), 0b01);
    assert_eq!(LongType::Retry.to_bits(Version::V2), 0b00);
    assert_eq!(LongType::Initial.to_bits(Version::V1), 0b00);
    assert_eq!(LongType::Retry.to_bits(Version::V1), 0b11);
}
