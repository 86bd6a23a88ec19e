use super::*;
use proptest::prelude::*;

const MAX: u64 = (1 << 62) - 1;

fn varint() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..64, 0u64..16384, 0u64..(1 << 30), 0u64..=MAX]
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn cid() -> impl Strategy<Value = ConnectionId> {
    proptest::collection::vec(any::<u8>(), 1..=20).prop_map(|v| ConnectionId::new(&v))
}

fn ack() -> impl Strategy<Value = Ack> {
    // Build ascending, disjoint, non-adjacent ranges from (gap, len) steps.
    (
        0u64..1000,
        proptest::collection::vec((0u64..1000, 0u64..1000), 1..40),
        varint(),
        proptest::option::of((varint(), varint(), varint())),
    )
        .prop_map(|(start, steps, delay, ecn)| {
            let mut ranges = Vec::new();
            let mut next = start;
            for (gap, len) in steps {
                let lo = next + gap;
                let hi = lo + len;
                ranges.push(lo..=hi);
                next = hi + 2;
            }
            let ecn = ecn.map(|(ect0, ect1, ce)| EcnCounts { ect0, ect1, ce });
            Ack::from_ranges(&ranges, delay, ecn).unwrap()
        })
}

fn sid() -> impl Strategy<Value = StreamId> {
    varint().prop_map(StreamId)
}

fn dir() -> impl Strategy<Value = Dir> {
    prop_oneof![Just(Dir::Bi), Just(Dir::Uni)]
}

pub(crate) fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (1usize..100).prop_map(Frame::Padding),
        Just(Frame::Ping),
        ack().prop_map(Frame::Ack),
        (sid(), varint(), varint()).prop_map(|(id, code, final_size)| Frame::ResetStream {
            id,
            error_code: VarInt::from_u64(code).unwrap(),
            final_size
        }),
        (sid(), varint()).prop_map(|(id, code)| Frame::StopSending {
            id,
            error_code: VarInt::from_u64(code).unwrap()
        }),
        (0u64..(1 << 40), bytes(300)).prop_map(|(offset, data)| Frame::Crypto { offset, data }),
        proptest::collection::vec(any::<u8>(), 1..100).prop_map(|t| Frame::NewToken(t.into())),
        (sid(), 0u64..(1 << 50), any::<bool>(), bytes(1300)).prop_map(|(id, offset, fin, data)| {
            Frame::Stream(StreamFrame {
                id,
                offset,
                fin,
                data,
            })
        }),
        varint().prop_map(Frame::MaxData),
        (sid(), varint()).prop_map(|(id, max)| Frame::MaxStreamData { id, max }),
        (dir(), 0..=MAX_STREAM_COUNT).prop_map(|(dir, count)| Frame::MaxStreams { dir, count }),
        varint().prop_map(Frame::DataBlocked),
        (sid(), varint()).prop_map(|(id, limit)| Frame::StreamDataBlocked { id, limit }),
        (dir(), 0..=MAX_STREAM_COUNT).prop_map(|(dir, limit)| Frame::StreamsBlocked { dir, limit }),
        (varint(), any::<u64>(), cid(), any::<[u8; 16]>()).prop_map(|(seq, r, id, token)| {
            Frame::NewConnectionId(NewConnectionId {
                sequence: seq,
                retire_prior_to: if seq == 0 { 0 } else { r % (seq + 1) },
                id,
                reset_token: ResetToken(token),
            })
        }),
        varint().prop_map(|sequence| Frame::RetireConnectionId { sequence }),
        any::<[u8; 8]>().prop_map(Frame::PathChallenge),
        any::<[u8; 8]>().prop_map(Frame::PathResponse),
        (varint(), varint(), bytes(100)).prop_map(|(code, frame_type, reason)| {
            Frame::ConnectionClose(ConnectionClose {
                error_code: TransportErrorCode(code),
                frame_type,
                reason,
            })
        }),
        (varint(), bytes(100)).prop_map(|(code, reason)| Frame::ApplicationClose(
            ApplicationClose {
                error_code: VarInt::from_u64(code).unwrap(),
                reason
            }
        )),
        Just(Frame::HandshakeDone),
        bytes(1200).prop_map(Frame::Datagram),
    ]
}

fn roundtrip(frame: &Frame) -> Frame {
    let mut buf = Vec::new();
    frame.encode(&mut buf);
    assert_eq!(buf.len(), frame.encoded_len(), "encoded_len of {frame:?}");
    let mut bytes = Bytes::from(buf);
    let decoded = Frame::decode(&mut bytes).unwrap();
    assert!(bytes.is_empty(), "trailing bytes after {frame:?}");
    decoded
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// encode -> decode -> equal, and encoded_len == bytes written, for every frame type.
    #[test]
    fn frame_roundtrip(frame in frame()) {
        prop_assert_eq!(roundtrip(&frame), frame);
    }

    /// A packet of several frames decodes back to the same sequence.
    #[test]
    fn frame_sequence_roundtrip(frames in proptest::collection::vec(frame(), 1..8)) {
        // Adjacent padding runs merge on decode; keep one run at most between other frames.
        let mut frames = frames;
        frames.dedup_by(|a, b| matches!((a, b), (Frame::Padding(_), Frame::Padding(_))));
        let mut buf = Vec::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let decoded: Vec<Frame> = Iter::new(Bytes::from(buf), PacketType::OneRtt)
            .filter_map(|r| r.ok())
            .collect();
        let expected: Vec<Frame> = frames
            .into_iter()
            .filter(|f| f.ty().allowed_in(PacketType::OneRtt))
            .collect();
        // Frames not allowed in 1-RTT stop the iterator; compare up to that point.
        prop_assert_eq!(&decoded[..], &expected[..decoded.len()]);
    }

    /// Arbitrary bytes never panic the frame decoder, and it always makes progress.
    #[test]
    fn frame_arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        for ty in [PacketType::Initial, PacketType::ZeroRtt, PacketType::Handshake, PacketType::OneRtt] {
            let mut count = 0;
            for result in Iter::new(Bytes::from(data.clone()), ty) {
                count += 1;
                if let Err(e) = result {
                    // Every error maps to a transport error code.
                    let _ = e.code();
                }
            }
            prop_assert!(count <= data.len() + 1);
        }
    }

    /// A run of PADDING of any length, followed by any byte or by nothing, decodes as one
    /// frame of exactly that length (the scan goes 16 bytes at a time: runs across and
    /// inside those blocks).
    #[test]
    fn padding_run_of_any_length(zeros in 1usize..100, next in 1u8..=255, end in any::<bool>()) {
        let mut data = vec![0u8; zeros];
        if !end {
            data.push(next);
        }
        let mut bytes = Bytes::from(data);
        prop_assert_eq!(Frame::decode(&mut bytes).unwrap(), Frame::Padding(zeros));
        prop_assert_eq!(bytes.len(), usize::from(!end));
    }

    /// Truncating any encoded frame yields an error, never a panic or a wrong frame.
    #[test]
    fn frame_truncated_is_error(frame in frame(), cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        frame.encode(&mut buf);
        let at = cut.index(buf.len());
        let mut bytes = Bytes::copy_from_slice(&buf[..at]);
        match Frame::decode(&mut bytes) {
            Err(_) => {}
            // Frames whose data runs to the end, or padding, may decode shorter.
            Ok(Frame::Padding(_)) | Ok(Frame::Ping) | Ok(Frame::HandshakeDone) => {}
            Ok(other) => prop_assert!(at == 0 || matches!(other, Frame::Stream(_) | Frame::Datagram(_)) || at == buf.len(), "{:?} from {} of {} bytes", other, at, buf.len()),
        }
    }
}

#[test]
fn rfc9000_stream_frame_without_length_runs_to_end() {
    let id = StreamId(4);
    let mut buf = Vec::new();
    StreamFrame::encode_header(id, 1000, 5, true, false, &mut buf);
    assert_eq!(buf.len(), StreamFrame::header_len(id, 1000, 5, false));
    buf.extend_from_slice(b"hello");
    let mut bytes = Bytes::from(buf);
    let frame = Frame::decode(&mut bytes).unwrap();
    assert_eq!(
        frame,
        Frame::Stream(StreamFrame {
            id,
            offset: 1000,
            fin: true,
            data: Bytes::from_static(b"hello"),
        })
    );
    assert!(bytes.is_empty());
}

#[test]
fn rfc9000_stream_data_is_zero_copy() {
    let mut buf = Vec::new();
    Frame::Stream(StreamFrame {
        id: StreamId(0),
        offset: 0,
        fin: false,
        data: Bytes::from_static(&[7; 100]),
    })
    .encode(&mut buf);
    let payload = Bytes::from(buf);
    let mut cursor = payload.clone();
    let Frame::Stream(s) = Frame::decode(&mut cursor).unwrap() else {
        panic!("not a stream frame");
    };
    // The data points into the payload's allocation.
    let range = payload.as_ptr_range();
    assert!(range.contains(&s.data.as_ptr()));
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    Frame::decode(&mut Bytes::copy_from_slice(bytes)).unwrap_err()
}

#[test]
fn rfc9000_frame_encoding_errors() {
    use TransportErrorCode as E;
    // Unknown frame type (RFC 9000 §12.4).
    assert_eq!(decode_err(&[0x21]), DecodeError::UnknownFrameType(0x21));
    assert_eq!(decode_err(&[0x21]).code(), E::FRAME_ENCODING_ERROR);
    // Non-minimal frame type encoding: PING as a two-byte varint.
    assert_eq!(decode_err(&[0x40, 0x01]).code(), E::PROTOCOL_VIOLATION);
    // STREAM data beyond 2^62 - 1 (RFC 9000 §19.8).
    let mut b = vec![
        0x0e, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 1, 2,
    ];
    assert_eq!(decode_err(&b).code(), E::FRAME_ENCODING_ERROR);
    // STREAM length beyond the packet.
    b = vec![0x0a, 0x00, 0x10, 1, 2];
    assert_eq!(decode_err(&b).code(), E::FRAME_ENCODING_ERROR);
    // MAX_STREAMS above 2^60 (RFC 9000 §19.11).
    let mut over = vec![0x12];
    varint::encode(MAX_STREAM_COUNT + 1, &mut over);
    assert_eq!(decode_err(&over).code(), E::FRAME_ENCODING_ERROR);
    // NEW_CONNECTION_ID with retire_prior_to > sequence, and with a zero-length CID.
    assert_eq!(
        decode_err(&[0x18, 1, 2, 4, 1, 2, 3, 4]).code(),
        E::FRAME_ENCODING_ERROR
    );
    let mut zero_len = vec![0x18, 1, 0, 0];
    zero_len.extend_from_slice(&[0; 16]);
    assert_eq!(decode_err(&zero_len).code(), E::FRAME_ENCODING_ERROR);
    // NEW_TOKEN with an empty token (RFC 9000 §19.7).
    assert_eq!(decode_err(&[0x07, 0x00]).code(), E::FRAME_ENCODING_ERROR);
    // Truncated fields.
    assert_eq!(decode_err(&[0x1a, 1, 2, 3]), DecodeError::UnexpectedEnd);
    assert_eq!(decode_err(&[0x04, 0x01]).code(), E::FRAME_ENCODING_ERROR);
}

/// RFC 9000 §12.4 Table 3, row by row.
#[test]
fn rfc9000_frame_types_per_packet_type() {
    use PacketType::*;
    let table: &[(u64, [bool; 4])] = &[
        // type, [Initial, 0-RTT, Handshake, 1-RTT]
        (0x00, [true, true, true, true]),     // PADDING
        (0x01, [true, true, true, true]),     // PING
        (0x02, [true, false, true, true]),    // ACK
        (0x03, [true, false, true, true]),    // ACK_ECN
        (0x04, [false, true, false, true]),   // RESET_STREAM
        (0x05, [false, true, false, true]),   // STOP_SENDING
        (0x06, [true, false, true, true]),    // CRYPTO
        (0x07, [false, false, false, true]),  // NEW_TOKEN
        (0x08, [false, true, false, true]),   // STREAM
        (0x0f, [false, true, false, true]),   // STREAM
        (0x10, [false, true, false, true]),   // MAX_DATA
        (0x11, [false, true, false, true]),   // MAX_STREAM_DATA
        (0x12, [false, true, false, true]),   // MAX_STREAMS
        (0x14, [false, true, false, true]),   // DATA_BLOCKED
        (0x15, [false, true, false, true]),   // STREAM_DATA_BLOCKED
        (0x16, [false, true, false, true]),   // STREAMS_BLOCKED
        (0x18, [false, true, false, true]),   // NEW_CONNECTION_ID
        (0x19, [false, true, false, true]),   // RETIRE_CONNECTION_ID
        (0x1a, [false, true, false, true]),   // PATH_CHALLENGE
        (0x1b, [false, false, false, true]),  // PATH_RESPONSE
        (0x1c, [true, true, true, true]),     // CONNECTION_CLOSE (transport)
        (0x1d, [false, true, false, true]),   // CONNECTION_CLOSE (application)
        (0x1e, [false, false, false, true]),  // HANDSHAKE_DONE
        (0x30, [false, true, false, true]),   // DATAGRAM (RFC 9221 §4)
        (0x31, [false, true, false, true]),   // DATAGRAM
        (0x1f, [false, false, false, false]), // unknown
    ];
    for (ty, allowed) in table {
        for (packet, ok) in [Initial, ZeroRtt, Handshake, OneRtt]
            .into_iter()
            .zip(allowed)
        {
            assert_eq!(
                FrameType(*ty).allowed_in(packet),
                *ok,
                "{:?} in {packet:?}",
                FrameType(*ty)
            );
        }
    }
    // The iterator enforces it with PROTOCOL_VIOLATION.
    let mut stream = Vec::new();
    Frame::Stream(StreamFrame {
        id: StreamId(0),
        offset: 0,
        fin: false,
        data: Bytes::from_static(b"x"),
    })
    .encode(&mut stream);
    let err = Iter::new(stream.into(), Initial)
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), TransportErrorCode::PROTOCOL_VIOLATION);
    assert_eq!(err.frame_type(), Some(0x0a));
    // An empty payload is a PROTOCOL_VIOLATION (RFC 9000 §12.4).
    let err = Iter::new(Bytes::new(), OneRtt).next().unwrap().unwrap_err();
    assert_eq!(err.code(), TransportErrorCode::PROTOCOL_VIOLATION);
}

#[test]
fn padding_runs_collapse() {
    let mut bytes = Bytes::from_static(&[0, 0, 0, 0, 1, 0]);
    assert_eq!(Frame::decode(&mut bytes).unwrap(), Frame::Padding(4));
    assert_eq!(Frame::decode(&mut bytes).unwrap(), Frame::Ping);
    assert_eq!(Frame::decode(&mut bytes).unwrap(), Frame::Padding(1));
    assert!(bytes.is_empty());
}

#[test]
fn ack_eliciting() {
    assert!(!FrameType::ACK.is_ack_eliciting());
    assert!(!FrameType::PADDING.is_ack_eliciting());
    assert!(!FrameType::CONNECTION_CLOSE.is_ack_eliciting());
    assert!(FrameType::PING.is_ack_eliciting());
    assert!(FrameType::STREAM.is_ack_eliciting());
}
