//! Tests of the UDP layer: offload, batches, readiness, local addresses.

use std::future::poll_fn;

use super::*;

async fn socket() -> tokio::net::UdpSocket {
    tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

fn std_socket() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// A [`UdpIo`] on a fresh loopback socket.
fn io() -> UdpIo {
    UdpIo::new(std_socket()).unwrap()
}

/// The socket buffers grow to 4 MiB, or to what the system allows if that is less, and a
/// larger size set before stays.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn socket_buffers_grow_to_what_the_system_allows() {
    use std::os::fd::AsRawFd;
    let sysctl = |name: &str| -> libc::c_int {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(libc::c_int::MAX)
    };
    let io = io();
    let fd = io.socket.as_raw_fd();
    for (opt, max) in [
        (libc::SO_RCVBUF, sysctl("rmem_max")),
        (libc::SO_SNDBUF, sysctl("wmem_max")),
    ] {
        let got = linux::get_int(fd, libc::SOL_SOCKET, opt).unwrap() / 2;
        assert_eq!(got, linux::BUFFER_SIZE.min(max), "option {opt}");
    }
    // Already larger: left alone.
    let big = std_socket();
    let larger = linux::BUFFER_SIZE.min(sysctl("rmem_max")) + 4096;
    let fd = big.as_raw_fd();
    let set = linux::set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, larger);
    let before = linux::get_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap();
    let io = UdpIo::new(big).unwrap();
    let after = linux::get_int(io.socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF);
    assert!(set && after == Some(before));
}

/// Three datagrams of a batch: two of 1200 bytes and a shorter last one, each filled with
/// its index.
fn batch() -> Vec<u8> {
    let mut buf = vec![0u8; 1200];
    buf.extend_from_slice(&[1u8; 1200]);
    buf.extend_from_slice(&[2u8; 500]);
    buf
}

/// Receives the three datagrams of [`batch`] with a plain socket (no receive offload).
async fn expect_three(rx: &tokio::net::UdpSocket) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 3 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv(&mut buf))
            .await
            .expect("a datagram")
            .unwrap();
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got[0], vec![0u8; 1200]);
    assert_eq!(got[1], vec![1u8; 1200]);
    assert_eq!(got[2], vec![2u8; 500]);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn segmentation_offload_is_detected_on_linux() {
    let io = io();
    assert_eq!(io.max_segments(), MAX_GSO_SEGMENTS);
}

#[tokio::test]
async fn a_batch_arrives_as_separate_datagrams() {
    let rx = socket().await;
    let mut io = io();
    let dst = rx.local_addr().unwrap();
    let buf = batch();
    poll_fn(|cx| io.poll_send(cx, &buf, dst, None, Some(EcnCodepoint::Ect0), Some(1200)))
        .await
        .unwrap();
    expect_three(&rx).await;
}

#[tokio::test]
async fn without_offload_a_batch_goes_one_datagram_at_a_time() {
    let rx = socket().await;
    let mut io = io();
    io.max_segments = 1;
    let dst = rx.local_addr().unwrap();
    let buf = batch();
    poll_fn(|cx| io.poll_send(cx, &buf, dst, None, None, Some(1200)))
        .await
        .unwrap();
    expect_three(&rx).await;
}

/// Whatever the kernel coalesces, splitting each receive at its stride gives back the
/// datagrams that were sent; on Linux a looped-back segmented send arrives in one receive
/// with the segment size as its stride.
#[tokio::test]
async fn receive_offload_reports_the_stride() {
    let rx = io();
    let mut tx = io();
    let dst = rx.local_addr().unwrap();
    let buf = batch();
    poll_fn(|cx| tx.poll_send(cx, &buf, dst, None, None, Some(1200)))
        .await
        .unwrap();
    let mut datagrams = Vec::new();
    let mut receives = 0;
    let mut space = vec![0u8; 65_536];
    while datagrams.len() < 3 {
        let r = poll_fn(|cx| rx.poll_recv(cx, &mut space)).await.unwrap();
        receives += 1;
        for one in space[..r.len].chunks(r.stride) {
            datagrams.push(one.to_vec());
        }
    }
    assert_eq!(datagrams.len(), 3);
    assert_eq!(datagrams.concat(), buf);
    assert_eq!(datagrams[2].len(), 500);
    #[cfg(target_os = "linux")]
    assert_eq!(receives, 1, "receive offload coalesces a looped-back batch");
    let _ = receives;
}

/// Datagrams from several senders (which receive offload cannot coalesce) come in one
/// `recvmmsg`, each in its slot with its own source and ECN mark.
#[tokio::test]
async fn one_receive_call_takes_datagrams_from_several_senders() {
    let rx = io();
    let dst = rx.local_addr().unwrap();
    let mut senders = Vec::new();
    for i in 0..5u8 {
        let mut tx = io();
        let payload = vec![i; 100 + usize::from(i)];
        poll_fn(|cx| tx.poll_send(cx, &payload, dst, None, Some(EcnCodepoint::Ect0), None))
            .await
            .unwrap();
        senders.push(tx.local_addr().unwrap());
    }
    // Loopback delivers synchronously: all five are queued now.
    let slot = 2048;
    let mut space = vec![0u8; slot * RECV_MMSG];
    let mut meta = [Received::EMPTY; RECV_MMSG];
    let mut got = Vec::new();
    let mut calls = 0;
    while got.len() < 5 {
        let n = poll_fn(|cx| rx.poll_recv_batch(cx, &mut space, slot, &mut meta))
            .await
            .unwrap();
        calls += 1;
        for (i, m) in meta[..n].iter().enumerate() {
            got.push((m.from, space[i * slot..i * slot + m.len].to_vec(), m.ecn));
        }
    }
    for (i, (from, data, ecn)) in got.iter().enumerate() {
        assert_eq!(*from, senders[i]);
        assert_eq!(*data, vec![i as u8; 100 + i]);
        #[cfg(target_os = "linux")]
        assert_eq!(*ecn, Some(EcnCodepoint::Ect0));
        let _ = ecn;
    }
    #[cfg(target_os = "linux")]
    assert_eq!(calls, 1, "recvmmsg takes all five in one call");
    let _ = calls;
}

/// A receive that brings fewer messages than asked for found the queue empty: the next
/// poll waits without a system call, and a datagram that comes later still wakes it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_short_batch_ends_the_receive_without_another_call() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::task::Waker;
    let rx = io();
    let dst = rx.local_addr().unwrap();
    let mut tx = io();
    let mut block = bytes::BytesMut::with_capacity(4 * 2048);
    let mut meta = [Received::EMPTY; 4];
    for round in 0..3u8 {
        poll_fn(|cx| tx.poll_send(cx, &[round; 10], dst, None, None, None))
            .await
            .unwrap();
        let calls = rx.receive_calls.load(Relaxed);
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            poll_fn(|cx| rx.poll_recv_block(cx, &mut block, 2048, &mut meta)),
        )
        .await
        .expect("the datagram wakes the receiver")
        .unwrap();
        assert_eq!((n, meta[0].len), (1, 10));
        assert_eq!(&block[block.len() - 10..], &[round; 10]);
        assert_eq!(
            rx.receive_calls.load(Relaxed) - calls,
            1,
            "one call: one datagram of four asked for"
        );
        // The queue is known empty: polling again waits without asking the kernel.
        let mut cx = Context::from_waker(Waker::noop());
        let again = rx.poll_recv_block(&mut cx, &mut block, 2048, &mut meta);
        assert!(again.is_pending());
        assert_eq!(rx.receive_calls.load(Relaxed) - calls, 1);
    }
}

/// A block receive appends the messages back to back into uninitialized capacity.
#[tokio::test]
async fn a_block_receive_appends_messages_back_to_back() {
    let rx = io();
    let dst = rx.local_addr().unwrap();
    let mut expected = Vec::new();
    for i in 0..4u8 {
        let mut tx = io();
        let payload = vec![i + 1; 300 * (usize::from(i) + 1)];
        poll_fn(|cx| tx.poll_send(cx, &payload, dst, None, None, None))
            .await
            .unwrap();
        expected.extend_from_slice(&payload);
    }
    let mut block = bytes::BytesMut::with_capacity(4 * 2048);
    let mut meta = [Received::EMPTY; RECV_MMSG];
    let mut lens = Vec::new();
    while block.len() < expected.len() {
        let n = poll_fn(|cx| rx.poll_recv_block(cx, &mut block, 2048, &mut meta))
            .await
            .unwrap();
        lens.extend(meta[..n].iter().map(|m| m.len));
    }
    assert_eq!(lens, [300, 600, 900, 1200]);
    assert_eq!(&block[..], &expected[..]);
}

/// The events `fd` is registered for in any epoll instance of this process (from
/// `/proc/self/fdinfo`), or `None` if it is registered nowhere.
#[cfg(target_os = "linux")]
fn epoll_events(fd: std::os::fd::RawFd) -> Option<u32> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let is_epoll = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().contains("eventpoll"));
        if !is_epoll {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        for line in info.lines() {
            // "tfd:        7 events: 80002001 data: ..."
            let mut words = line.split_whitespace();
            if words.next() == Some("tfd:")
                && words.next() == Some(fd.to_string().as_str())
                && words.next() == Some("events:")
            {
                return words.next().and_then(|e| u32::from_str_radix(e, 16).ok());
            }
        }
    }
    None
}

/// The socket is watched for readability only, so a datagram sent does not wake the
/// thread again when the kernel frees it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_socket_is_not_watched_for_writability() {
    use std::os::fd::AsRawFd;
    let rx = socket().await;
    let mut io = io();
    let dst = rx.local_addr().unwrap();
    poll_fn(|cx| io.poll_send(cx, &batch(), dst, None, None, Some(1200)))
        .await
        .unwrap();
    expect_three(&rx).await;
    let events = epoll_events(io.socket.as_raw_fd()).expect("registered");
    assert_ne!(events & libc::EPOLLIN as u32, 0, "readable: {events:#x}");
    assert_eq!(events & libc::EPOLLOUT as u32, 0, "writable: {events:#x}");
    assert!(io.socket.write.is_none());
}

/// A send that finds the send buffer full waits for room (a writability edge on a
/// duplicate of the descriptor, registered for the wait) and then goes; the duplicate is
/// let go once enough sends in a row found room.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_full_send_buffer_is_waited_out() {
    use std::os::fd::AsRawFd;
    use std::task::Waker;
    let rx = socket().await;
    let dst = rx.local_addr().unwrap();
    let mut io = io();
    // The kernel says "full" twice, then takes the datagram.
    let calls = std::cell::Cell::new(0);
    let send = |fd: std::os::fd::RawFd| {
        calls.set(calls.get() + 1);
        if calls.get() <= 2 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        linux::send(fd, b"after the wait", dst, None, None, None)
    };
    // Full: the duplicate is registered for writability, and reported writable at once
    // (the buffer is not really full).
    let mut cx = Context::from_waker(Waker::noop());
    assert!(io.socket.poll_send_with(&mut cx, send).is_pending());
    let write_fd = io.socket.write.as_ref().expect("watching").as_raw_fd();
    assert_ne!(write_fd, io.socket.as_raw_fd());
    let events = epoll_events(write_fd).expect("registered");
    assert_ne!(events & libc::EPOLLOUT as u32, 0, "writable: {events:#x}");
    // Once the reactor has seen that, the send runs again and finds it full again.
    for _ in 0..100 {
        tokio::task::yield_now().await;
        assert!(io.socket.poll_send_with(&mut cx, send).is_pending());
        if calls.get() == 2 {
            break;
        }
    }
    assert_eq!(calls.get(), 2);
    // Now it waits for room: no more tries, however often it is polled.
    for _ in 0..10 {
        tokio::task::yield_now().await;
        assert!(io.socket.poll_send_with(&mut cx, send).is_pending());
    }
    assert_eq!(calls.get(), 2, "no busy loop");
    // Room comes (a datagram of ours leaves the buffer): the wait ends and the send goes.
    io.socket
        .read
        .get_ref()
        .send_to(b"frees room", dst)
        .unwrap();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        poll_fn(|cx| io.socket.poll_send_with(cx, send)),
    )
    .await
    .expect("woken by room in the send buffer")
    .unwrap();
    assert_eq!((n, calls.get()), (14, 3));
    // The watch stays while sends keep finding room, until enough of them in a row did.
    for i in 1..linux::KEEP_WATCHING {
        assert!(io.socket.write.is_some(), "let go after {i} sends");
        poll_fn(|cx| {
            io.socket
                .poll_send_with(cx, |fd| linux::send(fd, b"more", dst, None, None, None))
        })
        .await
        .unwrap();
    }
    assert!(io.socket.write.is_none(), "the duplicate is let go");
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    for _ in 0..2 {
        let n = rx.recv(&mut buf).await.unwrap();
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got, [&b"frees room"[..], &b"after the wait"[..]]);
}

/// Bound to a wildcard address, the socket learns the address each datagram was sent
/// to, and sends from the address it is told; the kernel's own choice (by route) would
/// be another one here.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_wildcard_socket_answers_from_the_address_it_was_sent_to() {
    use std::net::Ipv4Addr;
    for wildcard in ["0.0.0.0:0", "[::]:0"] {
        let Ok(bound) = std::net::UdpSocket::bind(wildcard) else {
            continue; // no IPv6 here
        };
        let io = UdpIo::new(bound).unwrap();
        assert!(io.pktinfo, "{wildcard}");
        let port = io.local_addr().unwrap().port();
        let peer = socket().await;
        for last in [2u8, 3] {
            let ours = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            peer.send_to(b"hello", (ours, port)).await.unwrap();
            let mut space = vec![0u8; 65_536];
            let r = poll_fn(|cx| io.poll_recv(cx, &mut space)).await.unwrap();
            assert_eq!(r.from, peer.local_addr().unwrap(), "{wildcard}");
            assert_eq!(r.dst_ip, Some(ours), "{wildcard}");
        }
    }
    // Replies: from the address given, else the kernel's choice (127.0.0.1).
    let mut io = UdpIo::new(std::net::UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
    let peer = socket().await;
    let dst = peer.local_addr().unwrap();
    let mut buf = [0u8; 64];
    for (src, segment) in [
        (Some([127, 0, 0, 2]), None),
        (Some([127, 0, 0, 3]), Some(2)),
    ] {
        let src = src.map(|a| IpAddr::V4(Ipv4Addr::from(a)));
        poll_fn(|cx| io.poll_send(cx, b"back", dst, src, Some(EcnCodepoint::Ect0), segment))
            .await
            .unwrap();
        let (n, from) = peer.recv_from(&mut buf).await.unwrap();
        assert_eq!(from.ip(), src.unwrap());
        assert_eq!(
            &buf[..n],
            if segment.is_some() {
                &b"ba"[..]
            } else {
                b"back"
            }
        );
        if segment.is_some() {
            let (_, from) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!(from.ip(), src.unwrap());
        }
    }
    poll_fn(|cx| io.poll_send(cx, b"back", dst, None, None, None))
        .await
        .unwrap();
    let (_, from) = peer.recv_from(&mut buf).await.unwrap();
    assert_eq!(from.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    // IPv6 both ways (`IPV6_PKTINFO`), where the host has it: a datagram to ::1 reports
    // ::1, and a reply from ::1 arrives from there (no fallback to the kernel's choice).
    if let (Ok(wild), Ok(peer6)) = (
        std::net::UdpSocket::bind("[::]:0"),
        tokio::net::UdpSocket::bind("[::1]:0").await,
    ) {
        let mut io = UdpIo::new(wild).unwrap();
        let port = io.local_addr().unwrap().port();
        let loopback6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        peer6.send_to(b"six", (loopback6, port)).await.unwrap();
        let mut space = vec![0u8; 65_536];
        let r = poll_fn(|cx| io.poll_recv(cx, &mut space)).await.unwrap();
        assert_eq!(
            (r.from, r.dst_ip),
            (peer6.local_addr().unwrap(), Some(loopback6))
        );
        let to = peer6.local_addr().unwrap();
        poll_fn(|cx| io.poll_send(cx, b"back", to, Some(loopback6), None, None))
            .await
            .unwrap();
        let (n, from) = peer6.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from.ip()), (&b"back"[..], loopback6));
    }
    // A socket bound to one address neither asks nor tells.
    let mut io = super::tests::io();
    assert!(!io.pktinfo);
    poll_fn(|cx| {
        io.poll_send(
            cx,
            b"x",
            dst,
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
            None,
            None,
        )
    })
    .await
    .unwrap();
    let (_, from) = peer.recv_from(&mut buf).await.unwrap();
    assert_eq!(from, io.local_addr().unwrap());
}

fn transmit(destination: SocketAddr, size: usize) -> crate::connection::Transmit {
    crate::connection::Transmit {
        destination,
        source: None,
        size,
        ecn: None,
        segment_size: None,
    }
}

/// Transmits for several destinations, one of them a segmented batch, go out in one
/// `sendmmsg`, each with its own ECN mark and segmentation.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn several_transmits_go_in_one_call() {
    let (rx1, rx2) = (socket().await, socket().await);
    let (a1, a2) = (rx1.local_addr().unwrap(), rx2.local_addr().unwrap());
    let mut io = io();
    let bufs = vec![b"first".to_vec(), batch(), b"third".to_vec()];
    let ts = [
        crate::connection::Transmit {
            ecn: Some(EcnCodepoint::Ect0),
            ..transmit(a1, 5)
        },
        crate::connection::Transmit {
            segment_size: Some(1200),
            ..transmit(a2, bufs[1].len())
        },
        transmit(a1, 5),
    ];
    let n = poll_fn(|cx| io.poll_send_many(cx, &bufs, &ts))
        .await
        .unwrap();
    assert_eq!((n, io.send_many_calls), (3, 1));
    expect_three(&rx2).await;
    let mut buf = [0u8; 64];
    for want in [&b"first"[..], b"third"] {
        let (len, _) = rx1.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], want);
    }
}

/// A transmit the kernel refuses stops the call there: the ones before it are sent, it
/// comes back as the error of the next call (which sends nothing else), and the ones
/// after it go with the call after that.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_refused_transmit_stops_the_call_at_itself() {
    let rx = socket().await;
    let dst = rx.local_addr().unwrap();
    let mut io = io();
    // 70,000 bytes in one datagram: more than UDP carries (EMSGSIZE).
    let bufs = vec![b"before".to_vec(), vec![0u8; 70_000], b"after".to_vec()];
    let ts = [transmit(dst, 6), transmit(dst, 70_000), transmit(dst, 5)];
    let n = poll_fn(|cx| io.poll_send_many(cx, &bufs, &ts))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let e = poll_fn(|cx| io.poll_send_many(cx, &bufs[1..], &ts[1..]))
        .await
        .unwrap_err();
    assert!(is_transient(&e), "{e}");
    let n = poll_fn(|cx| io.poll_send_many(cx, &bufs[2..], &ts[2..]))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let mut buf = [0u8; 64];
    for want in [&b"before"[..], b"after"] {
        let (len, _) = rx.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], want);
    }
}
