use super::*;

fn params(streams: u64, window: u64) -> TransportParameters {
    TransportParameters {
        initial_max_data: window * 4,
        initial_max_stream_data_bidi_local: window,
        initial_max_stream_data_bidi_remote: window,
        initial_max_stream_data_uni: window,
        initial_max_streams_bidi: streams,
        initial_max_streams_uni: streams,
        ..Default::default()
    }
}

fn pair(streams: u64, window: u64) -> (Streams, Streams) {
    let p = params(streams, window);
    let mut client = Streams::new(Side::Client, &p, window * 8, window * 32, 1 << 20);
    let mut server = Streams::new(Side::Server, &p, window * 8, window * 32, 1 << 20);
    client.set_peer_params(&p);
    server.set_peer_params(&p);
    (client, server)
}

const RTT: Duration = Duration::from_millis(10);

/// Moves every chunk `from` wants to send into `to`, acknowledging each; returns bytes moved.
fn pump(from: &mut Streams, to: &mut Streams, now: Instant) -> usize {
    let mut moved = 0;
    while let Some(chunk) = from.poll_chunk(1000) {
        let mut data = Vec::new();
        from.copy_chunk(&chunk, &mut data);
        moved += data.len();
        to.on_stream_frame(
            chunk.id,
            chunk.range.start,
            data.into(),
            chunk.fin,
            now,
            RTT,
        )
        .unwrap();
        from.on_chunk_acked(&chunk);
    }
    while let Some(c) = to.poll_control() {
        match to.control_frame(c) {
            Some(crate::wire::Frame::MaxData(m)) => from.on_max_data(m),
            Some(crate::wire::Frame::MaxStreamData { id, max }) => {
                from.on_max_stream_data(id, max).unwrap()
            }
            Some(crate::wire::Frame::MaxStreams { dir, count }) => from.on_max_streams(dir, count),
            _ => {}
        }
    }
    moved
}

fn read_all(s: &mut Streams, id: StreamId, now: Instant) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        match s.read(id, 1 << 20, now, RTT) {
            Ok(Some(d)) => out.extend_from_slice(&d),
            Ok(None) => return (out, true),
            Err(ReadError::Blocked) => return (out, false),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn bidi_stream_both_ways_with_flow_control() {
    let now = Instant::now();
    let (mut c, mut s) = pair(10, 1000);
    let id = c.open(Dir::Bi).unwrap();
    let msg: Vec<u8> = (0..5000).map(|i| i as u8).collect();
    let mut written = 0;
    let mut received = Vec::new();
    let mut fin = false;
    for _ in 0..100 {
        if written < msg.len() {
            match c.write(id, Bytes::copy_from_slice(&msg[written..])) {
                Ok(n) => written += n,
                Err(WriteError::Blocked) => {}
                Err(e) => panic!("{e}"),
            }
            if written == msg.len() {
                c.finish(id).unwrap();
            }
        }
        pump(&mut c, &mut s, now);
        if s.accept(Dir::Bi).is_some() {
            assert_eq!(s.accept(Dir::Bi), None);
        }
        let (data, done) = read_all(&mut s, id, now);
        received.extend_from_slice(&data);
        pump(&mut s, &mut c, now);
        if done {
            fin = true;
            break;
        }
    }
    assert!(fin);
    assert_eq!(
        received, msg,
        "5x the stream window arrives intact through MAX_STREAM_DATA"
    );
    // The server answers on the same stream.
    s.write(id, Bytes::from_static(b"pong")).unwrap();
    s.finish(id).unwrap();
    pump(&mut s, &mut c, now);
    assert_eq!(read_all(&mut c, id, now), (b"pong".to_vec(), true));
    assert!(std::iter::from_fn(|| c.poll_event()).any(|e| e == StreamEvent::Finished(id)));
}

/// Idle diet: the queues go only while all are empty, and come back for the next stream.
#[test]
fn queues_are_let_go_only_when_empty() {
    let now = Instant::now();
    let (mut c, mut s) = pair(10, 1000);
    c.release_queues();
    assert!(c.queues.is_some(), "the peer's limits brought events");
    while c.poll_event().is_some() {}
    c.release_queues();
    assert!(c.queues.is_none(), "nothing queued");
    for round in 0..2 {
        let id = c.open(Dir::Bi).unwrap();
        c.write(id, Bytes::from_static(b"ping")).unwrap();
        c.finish(id).unwrap();
        c.release_queues();
        assert!(
            c.has_pending(),
            "round {round}: data to send keeps the queues"
        );
        pump(&mut c, &mut s, now);
        s.release_queues();
        assert!(
            s.queues.is_some(),
            "an accepted stream not taken keeps them"
        );
        assert_eq!(s.accept(Dir::Bi), Some(id));
        assert_eq!(read_all(&mut s, id, now), (b"ping".to_vec(), true));
        while s.poll_event().is_some() {}
        while c.poll_event().is_some() {}
        while s.poll_control().is_some() {}
        s.release_queues();
        c.release_queues();
        assert!(s.queues.is_none() && c.queues.is_none(), "round {round}");
        assert!(!c.has_pending() && c.poll_chunk(1000).is_none());
    }
}

#[test]
fn rfc9000_stream_limits_and_max_streams_renewal() {
    let now = Instant::now();
    let (mut c, mut s) = pair(2, 1000);
    let a = c.open(Dir::Uni).unwrap();
    let b = c.open(Dir::Uni).unwrap();
    assert_eq!(c.open(Dir::Uni), None, "the peer allows two");
    // A peer opening stream index 2 exceeds the limit (RFC 9000 §4.6).
    let over = StreamId::new(Side::Client, Dir::Uni, 2);
    assert_eq!(
        s.on_stream_frame(over, 0, Bytes::new(), false, now, RTT),
        Err(TransportErrorCode::STREAM_LIMIT_ERROR)
    );
    for id in [a, b] {
        c.write(id, Bytes::from_static(b"x")).unwrap();
        c.finish(id).unwrap();
    }
    pump(&mut c, &mut s, now);
    for _ in 0..2 {
        let id = s.accept(Dir::Uni).unwrap();
        assert_eq!(read_all(&mut s, id, now), (b"x".to_vec(), true));
    }
    // Both peer streams closed: MAX_STREAMS raises the limit and the client may open more.
    pump(&mut c, &mut s, now);
    assert!(std::iter::from_fn(|| c.poll_event()).any(|e| e == StreamEvent::Available(Dir::Uni)));
    assert!(c.open(Dir::Uni).is_some());
    assert!(c.open(Dir::Uni).is_some());
    assert_eq!(c.open(Dir::Uni), None);
}

#[test]
fn rfc9000_stream_state_errors() {
    let now = Instant::now();
    let (mut c, mut s) = pair(10, 1000);
    // Data on our own send-only stream, or on a stream we never opened.
    let uni = s.open(Dir::Uni).unwrap();
    assert_eq!(
        s.on_stream_frame(uni, 0, Bytes::new(), false, now, RTT),
        Err(TransportErrorCode::STREAM_STATE_ERROR)
    );
    let never = StreamId::new(Side::Server, Dir::Bi, 5);
    assert_eq!(
        s.on_stream_frame(never, 0, Bytes::new(), false, now, RTT),
        Err(TransportErrorCode::STREAM_STATE_ERROR)
    );
    // MAX_STREAM_DATA / STOP_SENDING for a stream we only receive on.
    let peer_uni = StreamId::new(Side::Client, Dir::Uni, 0);
    assert_eq!(
        s.on_max_stream_data(peer_uni, 10),
        Err(TransportErrorCode::STREAM_STATE_ERROR)
    );
    assert_eq!(
        s.on_stop_sending(peer_uni, VarInt::from_u32(1)),
        Err(TransportErrorCode::STREAM_STATE_ERROR)
    );
    // RESET_STREAM for a stream we only send on.
    assert_eq!(
        c.on_reset_stream(
            StreamId::new(Side::Client, Dir::Uni, 0),
            VarInt::from_u32(1),
            0,
            now,
            RTT
        )
        .unwrap_err(),
        TransportErrorCode::STREAM_STATE_ERROR
    );
}

#[test]
fn rfc9000_flow_control_errors() {
    let now = Instant::now();
    let (_c, mut s) = pair(10, 1000);
    let id = StreamId::new(Side::Client, Dir::Bi, 0);
    // Beyond the stream limit.
    assert_eq!(
        s.on_stream_frame(id, 1000, Bytes::from_static(b"x"), false, now, RTT),
        Err(TransportErrorCode::FLOW_CONTROL_ERROR)
    );
    // Beyond the connection limit (4000) across streams, each within its own limit.
    for i in 0..4 {
        let id = StreamId::new(Side::Client, Dir::Bi, i);
        s.on_stream_frame(id, 999, Bytes::from_static(b"x"), false, now, RTT)
            .unwrap();
    }
    let id = StreamId::new(Side::Client, Dir::Bi, 4);
    assert_eq!(
        s.on_stream_frame(id, 0, Bytes::from_static(b"x"), false, now, RTT),
        Err(TransportErrorCode::FLOW_CONTROL_ERROR)
    );
}

#[test]
fn rfc9000_reset_and_stop_sending() {
    let now = Instant::now();
    let (mut c, mut s) = pair(10, 1000);
    let id = c.open(Dir::Bi).unwrap();
    c.write(id, Bytes::from_static(b"hello")).unwrap();
    pump(&mut c, &mut s, now);
    // The server stops reading; the client answers STOP_SENDING with RESET_STREAM (§3.5).
    s.stop(id, VarInt::from_u32(7), now, RTT).unwrap();
    let ctl = s.poll_control().unwrap();
    assert_eq!(
        s.control_frame(ctl),
        Some(crate::wire::Frame::StopSending {
            id,
            error_code: VarInt::from_u32(7)
        })
    );
    c.on_stop_sending(id, VarInt::from_u32(7)).unwrap();
    assert_eq!(
        c.write(id, Bytes::from_static(b"more")),
        Err(WriteError::Stopped(VarInt::from_u32(7)))
    );
    let ctl = c.poll_control().unwrap();
    assert_eq!(
        c.control_frame(ctl),
        Some(crate::wire::Frame::ResetStream {
            id,
            error_code: VarInt::from_u32(7),
            final_size: 5
        })
    );
    // The peer's RESET_STREAM reaches a reader as an error with the code.
    let id2 = c.open(Dir::Bi).unwrap();
    c.write(id2, Bytes::from_static(b"abc")).unwrap();
    pump(&mut c, &mut s, now);
    s.on_reset_stream(id2, VarInt::from_u32(9), 3, now, RTT)
        .unwrap();
    assert_eq!(
        s.read(id2, 100, now, RTT),
        Err(ReadError::Reset(VarInt::from_u32(9)))
    );
    // A final size that contradicts data received is FINAL_SIZE_ERROR.
    let id3 = c.open(Dir::Bi).unwrap();
    c.write(id3, Bytes::from_static(b"abcdef")).unwrap();
    pump(&mut c, &mut s, now);
    assert_eq!(
        s.on_reset_stream(id3, VarInt::from_u32(1), 2, now, RTT),
        Err(TransportErrorCode::FINAL_SIZE_ERROR)
    );
}

#[test]
fn fair_round_robin_and_retransmission() {
    let (mut c, _s) = pair(10, 100_000);
    let ids: Vec<StreamId> = (0..3).map(|_| c.open(Dir::Bi).unwrap()).collect();
    for id in &ids {
        c.write(*id, Bytes::from(vec![1u8; 3000])).unwrap();
    }
    let order: Vec<StreamId> = (0..6).map(|_| c.poll_chunk(1000).unwrap().id).collect();
    assert_eq!(
        order,
        vec![ids[0], ids[1], ids[2], ids[0], ids[1], ids[2]],
        "streams take turns"
    );
    // A lost chunk is sent again before new data on that stream.
    let lost = StreamChunk {
        id: ids[0],
        range: 0..1000,
        fin: false,
    };
    c.on_chunk_lost(&lost);
    let mut again = None;
    for _ in 0..3 {
        let chunk = c.poll_chunk(1000).unwrap();
        if chunk.id == ids[0] {
            again = Some(chunk);
            break;
        }
    }
    assert_eq!(again.unwrap().range, 0..1000);
}

#[test]
fn state_is_lazy_per_open_stream() {
    let now = Instant::now();
    let (_c, mut s) = pair(1 << 40, 1000);
    assert_eq!(s.open_count(), 0, "a huge stream limit allocates nothing");
    s.on_stream_frame(
        StreamId::new(Side::Client, Dir::Bi, 2),
        0,
        Bytes::from_static(b"x"),
        false,
        now,
        RTT,
    )
    .unwrap();
    assert_eq!(
        s.open_count(),
        3,
        "lower-numbered streams open implicitly (RFC 9000 §3.2)"
    );
}

fn drain_control(c: &mut Streams) -> Vec<crate::wire::Frame> {
    let mut out = Vec::new();
    while let Some(x) = c.poll_control() {
        if let Some(f) = c.control_frame(x) {
            out.push(f);
        }
    }
    out
}

#[test]
fn rfc9000_blocked_frames_once_per_limit() {
    use crate::wire::Frame;
    let (mut c, _s) = pair(1, 1000);
    let id = c.open(Dir::Bi).unwrap();
    // STREAMS_BLOCKED when the stream limit stops an open.
    assert_eq!(c.open(Dir::Bi), None);
    assert_eq!(c.open(Dir::Bi), None);
    // Fill the stream window: STREAM_DATA_BLOCKED at 1000.
    c.write(id, Bytes::from(vec![0u8; 1000])).unwrap();
    c.write(id, Bytes::from(vec![0u8; 10])).unwrap_err();
    while c.poll_chunk(1200).is_some() {}
    let frames = drain_control(&mut c);
    assert!(
        frames.contains(&Frame::StreamsBlocked {
            dir: Dir::Bi,
            limit: 1
        }),
        "{frames:?}"
    );
    // The refused write reported the full stream window.
    assert!(
        frames.contains(&Frame::StreamDataBlocked { id, limit: 1000 }),
        "{frames:?}"
    );

    // Connection-level: a stream window larger than the connection window.
    let p = TransportParameters {
        initial_max_data: 500,
        initial_max_stream_data_bidi_remote: 10_000,
        initial_max_streams_bidi: 4,
        ..Default::default()
    };
    let mut c = Streams::new(Side::Client, &p, 1 << 20, 1 << 20, 1 << 20);
    c.set_peer_params(&p);
    let id = c.open(Dir::Bi).unwrap();
    c.write(id, Bytes::from(vec![0u8; 2000])).unwrap();
    while c.poll_chunk(1200).is_some() {}
    let frames = drain_control(&mut c);
    assert_eq!(frames, vec![Frame::DataBlocked(500)]);
    // Not repeated for the same limit; repeated after the limit rises and is hit again.
    while c.poll_chunk(1200).is_some() {}
    assert!(c.poll_control().is_none());
    c.on_max_data(1000);
    while c.poll_chunk(1200).is_some() {}
    let frames = drain_control(&mut c);
    assert_eq!(frames, vec![Frame::DataBlocked(1000)]);

    // Stream-level with more data buffered than the stream window.
    let p = TransportParameters {
        initial_max_data: 1 << 20,
        initial_max_stream_data_bidi_remote: 300,
        initial_max_streams_bidi: 4,
        ..Default::default()
    };
    let mut c = Streams::new(Side::Client, &p, 1 << 20, 1 << 20, 1 << 20);
    c.set_peer_params(&p);
    let id = c.open(Dir::Bi).unwrap();
    c.write(id, Bytes::from(vec![0u8; 300])).unwrap();
    while c.poll_chunk(1200).is_some() {}
    c.on_max_stream_data(id, 400).unwrap();
    c.write(id, Bytes::from(vec![0u8; 100])).unwrap();
    // More written than the peer allows, the rest waits: blocked at 400.
    while c.poll_chunk(1200).is_some() {}
    assert!(c.write(id, Bytes::from(vec![0u8; 100])).is_err());
    let frames = drain_control(&mut c);
    assert_eq!(frames, vec![Frame::StreamDataBlocked { id, limit: 400 }]);
}

/// MAX_STREAMS frames the server has queued, with their counts.
fn max_streams_sent(s: &mut Streams) -> Vec<u64> {
    let mut counts = Vec::new();
    while let Some(c) = s.poll_control() {
        if let Some(crate::wire::Frame::MaxStreams { count, .. }) = s.control_frame(c) {
            counts.push(count);
        }
    }
    counts
}

/// RFC 9000 §4.6: a peer using few of its 100 streams at a time gets the limit raised by 25
/// every 25 streams, never running short; one using most of them gets a raise as each closes.
#[test]
fn max_streams_goes_out_in_steps_unless_the_peer_is_short() {
    let now = Instant::now();
    let (mut c, mut s) = pair(100, 1000);
    let mut raises = Vec::new();
    for _ in 0..200 {
        let id = c.open(Dir::Uni).expect("never short of streams");
        c.write(id, Bytes::from_static(b"x")).unwrap();
        c.finish(id).unwrap();
        pump(&mut c, &mut s, now);
        let id = s.accept(Dir::Uni).unwrap();
        assert_eq!(read_all(&mut s, id, now), (b"x".to_vec(), true));
        let sent = max_streams_sent(&mut s);
        sent.iter().for_each(|&n| c.on_max_streams(Dir::Uni, n));
        raises.extend(sent);
    }
    assert_eq!(raises, [125, 150, 175, 200, 225, 250, 275, 300]);

    // 90 streams open at once: each of the first 40 to close raises the limit by one.
    let (mut c, mut s) = pair(100, 1000);
    for _ in 0..90 {
        let id = c.open(Dir::Uni).unwrap();
        c.write(id, Bytes::from_static(b"x")).unwrap();
        c.finish(id).unwrap();
    }
    pump(&mut c, &mut s, now);
    for k in 1..=40 {
        let id = s.accept(Dir::Uni).unwrap();
        assert_eq!(read_all(&mut s, id, now), (b"x".to_vec(), true));
        assert_eq!(max_streams_sent(&mut s), [100 + k]);
    }
}

/// RFC 9000 §4.6 leaves the moment to raise the limit to the implementation: a peer stream
/// read to its end and answered in full makes room at once, before the peer acknowledges
/// the end of the answer, for at most as many streams as the peer may have open; beyond
/// that, streams make room as they close.
#[test]
fn an_answered_stream_makes_room_before_its_end_is_acknowledged() {
    let now = Instant::now();
    let (mut c, mut s) = pair(4, 1000);
    let ask = |c: &mut Streams| {
        let id = c.open(Dir::Bi)?;
        c.write(id, Bytes::from_static(b"q")).unwrap();
        c.finish(id).unwrap();
        Some(id)
    };
    // The server answers each of the 4 streams it allows; nothing reaches the client yet.
    let answer = |s: &mut Streams| {
        let id = s.accept(Dir::Bi).unwrap();
        assert_eq!(read_all(s, id, now), (b"q".to_vec(), true));
        s.write(id, Bytes::from_static(b"a")).unwrap();
        assert!(max_streams_sent(s).is_empty(), "not before the answer ends");
        s.finish(id).unwrap();
        max_streams_sent(s)
    };
    for _ in 0..4 {
        ask(&mut c).unwrap();
    }
    assert_eq!(ask(&mut c), None);
    pump(&mut c, &mut s, now);
    for k in 1..=4 {
        assert_eq!(
            answer(&mut s),
            [4 + k],
            "room as soon as stream {k} is answered"
        );
    }
    // 4 more: answered, but 4 answers are still unacknowledged, so no more room yet.
    c.on_max_streams(Dir::Bi, 8);
    for _ in 0..4 {
        ask(&mut c).unwrap();
    }
    pump(&mut c, &mut s, now);
    for _ in 0..4 {
        assert_eq!(answer(&mut s), [] as [u64; 0]);
    }
    assert_eq!(
        s.open_count(),
        8,
        "at most twice the streams the peer may open"
    );
    // The answers arrive and are acknowledged: the first 4 close without more room, the
    // last 4 make theirs as they close (one frame carries the last count).
    pump(&mut s, &mut c, now);
    assert_eq!(s.open_count(), 0);
    assert_eq!(max_streams_sent(&mut s), [12]);
}

fn events(s: &mut Streams) -> Vec<StreamEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// One `Opened` stands for every stream opened until it is taken, and a stream waiting to be
/// accepted reports no `Readable`; once accepted, its data does.
#[test]
fn one_opened_event_per_batch_and_no_readable_before_accept() {
    let now = Instant::now();
    let (mut c, mut s) = pair(10, 1000);
    events(&mut s); // the peer's limits
    let ids: Vec<StreamId> = (0..3).map(|_| c.open(Dir::Bi).unwrap()).collect();
    for &id in &ids {
        c.write(id, Bytes::from_static(b"q")).unwrap();
    }
    pump(&mut c, &mut s, now);
    assert_eq!(events(&mut s), [StreamEvent::Opened(Dir::Bi)]);
    // A stream opened after the event was taken gets an event of its own.
    let late = c.open(Dir::Bi).unwrap();
    c.write(late, Bytes::from_static(b"q")).unwrap();
    pump(&mut c, &mut s, now);
    assert_eq!(events(&mut s), [StreamEvent::Opened(Dir::Bi)]);
    // Accepted, each stream reads what came before; what comes after is reported.
    let first = s.accept(Dir::Bi).unwrap();
    assert_eq!(read_all(&mut s, first, now), (b"q".to_vec(), false));
    c.write(first, Bytes::from_static(b"r")).unwrap();
    c.write(ids[1], Bytes::from_static(b"r")).unwrap();
    pump(&mut c, &mut s, now);
    assert_eq!(
        events(&mut s),
        [StreamEvent::Readable(first)],
        "the second stream is not accepted yet"
    );
    let second = s.accept(Dir::Bi).unwrap();
    assert_eq!(read_all(&mut s, second, now), (b"qr".to_vec(), false));
}

/// Frames for one stream in a row report it readable once until the event is taken (a bulk
/// receiver's packets each brought one); another stream's frame in between, or the event
/// taken, brings the next.
#[test]
fn frames_in_a_row_report_a_stream_readable_once() {
    let now = Instant::now();
    let (_, mut s) = pair(10, 10_000);
    events(&mut s); // the peer's limits
    let a = StreamId::new(Side::Client, Dir::Uni, 0);
    let b = StreamId::new(Side::Client, Dir::Uni, 1);
    let frame = |s: &mut Streams, id, offset: u64| {
        s.on_stream_frame(
            id,
            offset,
            Bytes::from_static(b"0123456789"),
            false,
            now,
            RTT,
        )
        .unwrap();
    };
    frame(&mut s, a, 0);
    assert_eq!(events(&mut s), [StreamEvent::Opened(Dir::Uni)]);
    assert_eq!(s.accept(Dir::Uni), Some(a));
    assert_eq!(s.accept(Dir::Uni), None, "b is not open yet");
    for k in 1..5 {
        frame(&mut s, a, 10 * k);
    }
    assert_eq!(
        events(&mut s),
        [StreamEvent::Readable(a)],
        "four frames, one event"
    );
    frame(&mut s, a, 50);
    assert_eq!(
        events(&mut s),
        [StreamEvent::Readable(a)],
        "taken: the next frame reports"
    );
    frame(&mut s, b, 0);
    assert_eq!(s.accept(Dir::Uni), Some(b));
    events(&mut s);
    frame(&mut s, a, 60);
    frame(&mut s, b, 10);
    frame(&mut s, a, 70);
    frame(&mut s, a, 80);
    assert_eq!(
        events(&mut s),
        [
            StreamEvent::Readable(a),
            StreamEvent::Readable(b),
            StreamEvent::Readable(a)
        ]
    );
    assert_eq!(read_all(&mut s, a, now).0.len(), 90);
}

/// `read_with_end` flags the chunk that completes a stream (all data up to a known final
/// size), and the stream is then over at once: what a `read` after the data would have found.
/// A chunk read before the FIN is known, or while data is still missing or unread, is not
/// flagged; the end found later comes as `Ok(None)`, as from `read`.
#[test]
fn read_with_end_flags_the_last_chunk() {
    let now = Instant::now();
    let (mut c, mut s) = pair(10, 1000);
    let mut clock = || now;
    // Data and FIN together: one read, flagged, and the stream is closed (a peer stream: its
    // room goes back at once, as after the read of the end).
    let a = c.open(Dir::Bi).unwrap();
    c.write(a, Bytes::from_static(b"hello")).unwrap();
    c.finish(a).unwrap();
    pump(&mut c, &mut s, now);
    s.finish(a).unwrap();
    pump(&mut s, &mut c, now);
    let r = s.read_with_end(a, usize::MAX, &mut clock, RTT).unwrap();
    assert_eq!(r, Some((Bytes::from_static(b"hello"), true)));
    assert_eq!(
        s.read_with_end(a, usize::MAX, &mut clock, RTT),
        Err(ReadError::ClosedStream),
        "both halves done: the stream is gone"
    );
    // Read in pieces: only the piece that completes it is flagged.
    let b = c.open(Dir::Bi).unwrap();
    c.write(b, Bytes::from_static(b"abcdef")).unwrap();
    c.finish(b).unwrap();
    pump(&mut c, &mut s, now);
    let r = s.read_with_end(b, 4, &mut clock, RTT).unwrap();
    assert_eq!(r, Some((Bytes::from_static(b"abcd"), false)));
    let r = s.read_with_end(b, 4, &mut clock, RTT).unwrap();
    assert_eq!(r, Some((Bytes::from_static(b"ef"), true)));
    // Data first, its FIN later: the end comes as `Ok(None)`.
    let d = c.open(Dir::Bi).unwrap();
    c.write(d, Bytes::from_static(b"xy")).unwrap();
    pump(&mut c, &mut s, now);
    let r = s.read_with_end(d, usize::MAX, &mut clock, RTT).unwrap();
    assert_eq!(r, Some((Bytes::from_static(b"xy"), false)));
    assert_eq!(
        s.read_with_end(d, usize::MAX, &mut clock, RTT),
        Err(ReadError::Blocked)
    );
    c.finish(d).unwrap();
    pump(&mut c, &mut s, now);
    assert_eq!(s.read_with_end(d, usize::MAX, &mut clock, RTT), Ok(None));
    // `read_with_clock` leaves the end to the next read, as before.
    let e = c.open(Dir::Bi).unwrap();
    c.write(e, Bytes::from_static(b"z")).unwrap();
    c.finish(e).unwrap();
    pump(&mut c, &mut s, now);
    let r = s.read_with_clock(e, usize::MAX, &mut clock, RTT).unwrap();
    assert_eq!(r, Some(Bytes::from_static(b"z")));
    assert_eq!(s.read_with_clock(e, usize::MAX, &mut clock, RTT), Ok(None));
}

mod read_end_props {
    use super::*;
    use proptest::prelude::*;

    /// What one read of a peer stream gave.
    #[derive(Debug, PartialEq)]
    enum Got {
        Chunk(Vec<u8>, bool),
        End,
        Blocked,
        Closed,
    }

    fn read_once(s: &mut Streams, id: StreamId, max: usize, now: Instant) -> Got {
        match s.read_with_end(id, max, &mut || now, RTT) {
            Ok(Some((b, last))) => Got::Chunk(b.to_vec(), last),
            Ok(None) => Got::End,
            Err(ReadError::Blocked) => Got::Blocked,
            Err(ReadError::ClosedStream) => Got::Closed,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    proptest! {
        /// A peer's unidirectional stream, cut into frames that arrive in any order (some
        /// twice), its FIN on the last frame or in an empty frame of its own, read in pieces
        /// of any size between arrivals: the chunks make up the data exactly; the stream's
        /// end is reported once, either as the flag of the chunk that completes it (only
        /// when nothing is missing or unread and the final size is known) or as `Ok(None)`;
        /// and after that the stream is gone (`ClosedStream`), never `Blocked` with
        /// everything read.
        #[test]
        fn the_end_is_reported_once_after_all_data(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            keys in proptest::collection::vec(any::<u32>(), 16),
            fin_alone in any::<bool>(),
            reads in proptest::collection::vec((0usize..3, 1usize..1500), 16),
            again in proptest::collection::vec(any::<bool>(), 16),
        ) {
            let now = Instant::now();
            let (_, mut s) = pair(10, 4096);
            let id = StreamId::new(Side::Client, Dir::Uni, 0);
            let len = data.len();
            // Frames: the data cut at the chosen points, then maybe an empty FIN frame.
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(len + 1)).collect();
            points.extend([0, len]);
            points.sort_unstable();
            points.dedup();
            let mut frames: Vec<(usize, usize, bool)> = points
                .windows(2)
                .map(|w| (w[0], w[1], !fin_alone && w[1] == len))
                .collect();
            if fin_alone || frames.is_empty() {
                frames.push((len, len, true));
            }
            // Any order: sorted by a random key each.
            let mut order: Vec<usize> = (0..frames.len()).collect();
            order.sort_by_key(|&i| keys[i % keys.len()].wrapping_add(i as u32));
            let mut got = Vec::new();
            let mut ends = 0;
            let mut closed = false;
            let mut known_final = false;
            let mut delivered = vec![false; frames.len()];
            let step = |s: &mut Streams, max: usize, delivered: &[bool], known_final: bool,
                            got: &mut Vec<u8>, ends: &mut usize, closed: &mut bool| {
                match read_once(s, id, max, now) {
                    Got::Chunk(b, last) => {
                        prop_assert!(!*closed && *ends == 0, "data after the end");
                        prop_assert!(!b.is_empty());
                        prop_assert!(b.len() <= max);
                        got.extend_from_slice(&b);
                        prop_assert_eq!(&got[..], &data[..got.len()]);
                        if last {
                            prop_assert!(known_final && got.len() == len, "flagged too early");
                            *ends += 1;
                        }
                    }
                    Got::End => {
                        prop_assert!(!*closed && *ends == 0, "a second end");
                        prop_assert_eq!(got.len(), len);
                        prop_assert!(known_final);
                        *ends += 1;
                    }
                    Got::Blocked => {
                        prop_assert!(!*closed && *ends == 0, "blocked after the end");
                        // Something is missing: a frame not yet here covers unread data,
                        // or the final size is not known yet.
                        let all_here = delivered.iter().all(|&d| d);
                        prop_assert!(!all_here, "blocked with every frame delivered");
                    }
                    Got::Closed => {
                        prop_assert!(*ends == 1, "closed before the end was reported");
                        *closed = true;
                    }
                }
                Ok(())
            };
            for (k, &i) in order.iter().enumerate() {
                let (a, b, fin) = frames[i];
                let copies = if again[k % again.len()] { 2 } else { 1 };
                for _ in 0..copies {
                    s.on_stream_frame(id, a as u64, Bytes::copy_from_slice(&data[a..b]), fin, now, RTT)
                        .unwrap();
                }
                delivered[i] = true;
                known_final |= fin;
                let (n, max) = reads[k % reads.len()];
                for _ in 0..n {
                    step(&mut s, max, &delivered, known_final, &mut got, &mut ends, &mut closed)?;
                }
            }
            // Everything is here: reads finish the stream within as many reads as there are
            // bytes (plus the end and the look after it).
            for _ in 0..len + 2 {
                if closed {
                    break;
                }
                step(&mut s, 1000, &delivered, known_final, &mut got, &mut ends, &mut closed)?;
            }
            prop_assert_eq!(got, data.clone());
            prop_assert_eq!(ends, 1);
            prop_assert!(closed, "the stream outlived its end");
        }
    }
}
