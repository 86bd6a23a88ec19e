use super::*;
use crate::error::TransportErrorCode;
use proptest::prelude::*;

fn cid() -> impl Strategy<Value = ConnectionId> {
    proptest::collection::vec(any::<u8>(), 0..=20).prop_map(|v| ConnectionId::new(&v))
}

fn opt_cid() -> impl Strategy<Value = Option<ConnectionId>> {
    proptest::option::of(cid())
}

fn var() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, 0u64..(1 << 20), 0..=VarInt::MAX.into_inner()]
}

fn params() -> impl Strategy<Value = TransportParameters> {
    let a = (
        opt_cid(),
        var(),
        proptest::option::of(any::<[u8; 16]>()),
        1200..=VarInt::MAX.into_inner(),
        var(),
        var(),
        var(),
        var(),
    );
    let b = (
        0..=(1u64 << 60),
        0..=(1u64 << 60),
        0u64..=20,
        0u64..(1 << 14),
        any::<bool>(),
        proptest::option::of((
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 1..=20),
            any::<[u8; 16]>(),
        )),
        2..=VarInt::MAX.into_inner(),
        (opt_cid(), opt_cid(), proptest::option::of(var())),
    );
    let vi = proptest::option::of(proptest::collection::vec(1u32.., 1..8));
    (a, b, vi).prop_map(|(a, b, vi)| TransportParameters {
        original_destination_connection_id: a.0,
        max_idle_timeout: a.1,
        stateless_reset_token: a.2.map(ResetToken),
        max_udp_payload_size: a.3,
        initial_max_data: a.4,
        initial_max_stream_data_bidi_local: a.5,
        initial_max_stream_data_bidi_remote: a.6,
        initial_max_stream_data_uni: a.7,
        initial_max_streams_bidi: b.0,
        initial_max_streams_uni: b.1,
        ack_delay_exponent: b.2,
        max_ack_delay: b.3,
        disable_active_migration: b.4,
        preferred_address: b.5.map(|(ip4, p4, ip6, p6, cid, token)| PreferredAddress {
            address_v4: SocketAddrV4::new(ip4.into(), p4),
            address_v6: SocketAddrV6::new(ip6.into(), p6, 0, 0),
            connection_id: ConnectionId::new(&cid),
            stateless_reset_token: ResetToken(token),
        }),
        active_connection_id_limit: b.6,
        initial_source_connection_id: b.7 .0,
        retry_source_connection_id: b.7 .1,
        max_datagram_frame_size: b.7 .2,
        version_information: vi.map(|v| VersionInformation {
            chosen: Version(v[0]),
            available: v.into_iter().map(Version).collect(),
        }),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// encode -> decode -> equal, and encoded_len == bytes written.
    #[test]
    fn transport_params_roundtrip(p in params()) {
        let mut buf = Vec::new();
        p.encode(&mut buf);
        prop_assert_eq!(buf.len(), p.encoded_len());
        let decoded = TransportParameters::decode(Side::Server, &buf).unwrap();
        prop_assert_eq!(decoded, p);
    }

    /// Arbitrary bytes never panic the decoder, for either sender.
    #[test]
    fn transport_params_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        for side in [Side::Client, Side::Server] {
            if let Err(e) = TransportParameters::decode(side, &data) {
                let code = e.code();
                prop_assert!(code == TransportErrorCode::TRANSPORT_PARAMETER_ERROR
                    || code == TransportErrorCode::FRAME_ENCODING_ERROR);
            }
        }
    }
}

fn decode_err(sender: Side, bytes: &[u8]) -> DecodeError {
    TransportParameters::decode(sender, bytes).unwrap_err()
}

#[test]
fn rfc9000_transport_parameter_errors() {
    let tpe = TransportErrorCode::TRANSPORT_PARAMETER_ERROR;
    // max_udp_payload_size below 1200.
    assert_eq!(
        decode_err(Side::Server, &[0x03, 0x02, 0x44, 0xaf]).code(),
        tpe
    );
    // ack_delay_exponent 21.
    assert_eq!(decode_err(Side::Server, &[0x0a, 0x01, 21]).code(), tpe);
    // max_ack_delay 2^14.
    assert_eq!(
        decode_err(Side::Server, &[0x0b, 0x04, 0x80, 0x00, 0x40, 0x00]).code(),
        tpe
    );
    // active_connection_id_limit 1.
    assert_eq!(decode_err(Side::Server, &[0x0e, 0x01, 1]).code(), tpe);
    // initial_max_streams_bidi above 2^60.
    let mut over = vec![0x08, 0x08];
    varint::encode((1 << 60) + 1, &mut over);
    assert_eq!(decode_err(Side::Server, &over).code(), tpe);
    // stateless_reset_token of the wrong length.
    assert_eq!(decode_err(Side::Server, &[0x02, 0x01, 0]).code(), tpe);
    // disable_active_migration with a value.
    assert_eq!(decode_err(Side::Server, &[0x0c, 0x01, 0]).code(), tpe);
    // An integer that does not fill its parameter.
    assert_eq!(
        decode_err(Side::Server, &[0x04, 0x02, 0x01, 0x00]).code(),
        tpe
    );
    // A connection ID longer than 20 bytes.
    let mut long = vec![0x0f, 21];
    long.extend_from_slice(&[0; 21]);
    assert_eq!(decode_err(Side::Server, &long).code(), tpe);
    // Length beyond the extension.
    assert_eq!(decode_err(Side::Server, &[0x04, 0x05, 0x01]).code(), tpe);
}

#[test]
fn rfc9000_server_only_parameters_from_client() {
    let p = TransportParameters {
        original_destination_connection_id: Some(ConnectionId::new(&[1; 8])),
        ..Default::default()
    };
    let mut buf = Vec::new();
    p.encode(&mut buf);
    assert!(TransportParameters::decode(Side::Server, &buf).is_ok());
    let err = decode_err(Side::Client, &buf);
    assert_eq!(err.code(), TransportErrorCode::TRANSPORT_PARAMETER_ERROR);
    for id in [0x02u8, 0x0d, 0x10] {
        let e = decode_err(Side::Client, &[id, 0x00]);
        assert!(
            matches!(e, DecodeError::InvalidTransportParameter { .. }),
            "{id:#x}: {e:?}"
        );
    }
}

#[test]
fn rfc9000_duplicates_rejected_unknown_and_grease_skipped() {
    let dup = [0x04, 0x01, 0x05, 0x04, 0x01, 0x06];
    assert_eq!(
        decode_err(Side::Server, &dup),
        DecodeError::DuplicateTransportParameter(0x04)
    );
    // A reserved (31 * 5 + 27 = 182) parameter and an unknown one, each twice, are skipped.
    let mut buf = Vec::new();
    for _ in 0..2 {
        varint::encode(31 * 5 + 27, &mut buf);
        buf.extend_from_slice(&[0x03, 1, 2, 3]);
        varint::encode(0x4242, &mut buf);
        buf.push(0x00);
    }
    buf.extend_from_slice(&[0x04, 0x01, 0x05]);
    let p = TransportParameters::decode(Side::Client, &buf).unwrap();
    assert_eq!(p.initial_max_data, 5);
}

#[test]
fn rfc9368_version_information() {
    let tpe = TransportErrorCode::TRANSPORT_PARAMETER_ERROR;
    let v1 = Version::V1.0.to_be_bytes();
    let v2 = Version::V2.0.to_be_bytes();
    // Chosen v1, available [v2, v1]: fine from a client.
    let mut ok = vec![0x11, 12];
    ok.extend_from_slice(&v1);
    ok.extend_from_slice(&v2);
    ok.extend_from_slice(&v1);
    let p = TransportParameters::decode(Side::Client, &ok).unwrap();
    let info = p.version_information.unwrap();
    assert_eq!(info.chosen, Version::V1);
    assert_eq!(info.available, vec![Version::V2, Version::V1]);
    // Client whose chosen version is not among its available versions.
    let mut bad = vec![0x11, 8];
    bad.extend_from_slice(&v1);
    bad.extend_from_slice(&v2);
    assert_eq!(decode_err(Side::Client, &bad).code(), tpe);
    assert!(TransportParameters::decode(Side::Server, &bad).is_ok());
    // Length not a multiple of four; version zero.
    assert_eq!(decode_err(Side::Server, &[0x11, 3, 0, 0, 1]).code(), tpe);
    assert_eq!(decode_err(Side::Server, &[0x11, 4, 0, 0, 0, 0]).code(), tpe);
    assert_eq!(decode_err(Side::Server, &[0x11, 0]).code(), tpe);
}

#[test]
fn rfc9000_defaults() {
    let p = TransportParameters::decode(Side::Server, &[]).unwrap();
    assert_eq!(p.max_udp_payload_size, 65527);
    assert_eq!(p.ack_delay_exponent, 3);
    assert_eq!(p.max_ack_delay, 25);
    assert_eq!(p.active_connection_id_limit, 2);
    assert_eq!(p.max_datagram_frame_size, None);
    assert_eq!(TransportParameters::default().encoded_len(), 0);
}
