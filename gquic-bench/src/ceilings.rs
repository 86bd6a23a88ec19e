//! The `ceilings` scenario: what this host allows before any QUIC work, raw UDP `sendmsg` over
//! loopback with one datagram per call and with generic segmentation offload (10 and 64
//! segments per call), so that the stacks' numbers can be read against it. (Packet
//! protection's ceiling is the `wire` scenario's seal+open lines.)
//!
//! And the floor under `bulk`'s CPU-seconds per GB: what moving data costs with no QUIC at
//! all, only the work any QUIC stack must do per packet with this crypto provider and these
//! system calls (see [`floor`]).

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The datagram size both stacks use on loopback after path MTU discovery.
const DATAGRAM: usize = 1452;
/// How long each measurement sends.
pub(crate) const SPAN: Duration = Duration::from_millis(700);

/// One `sendmsg` of `buf` to the connected peer, cut into `segment`-byte datagrams by the
/// kernel when `segment` is set.
fn send(fd: i32, buf: &[u8], segment: Option<u16>) -> io::Result<usize> {
    let mut control = [0u64; 4];
    // SAFETY: the header points at `buf`, `iov` and `control`, which outlive the call; the
    // one control message is written through the CMSG macros within `control`'s size.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        if let Some(segment) = segment {
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
        let n = libc::sendmsg(fd, &hdr, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// Gbit/s of UDP payload sent with `segments` datagrams per call, and CPU-seconds per GB.
fn measure(segments: usize) -> io::Result<(f64, f64)> {
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(sink.local_addr()?)?;
    let buf = vec![0x5au8; DATAGRAM * segments];
    let segment = (segments > 1).then_some(DATAGRAM as u16);
    let fd = socket.as_raw_fd();
    // A reader keeps the sink's queue from overflowing (what a peer would do).
    let reader = std::thread::spawn(move || {
        let mut b = vec![0u8; 65_536];
        let _ = sink.set_read_timeout(Some(Duration::from_millis(200)));
        while sink.recv(&mut b).is_ok() {}
    });
    let cpu0 = crate::measure::thread_cpu_time();
    let t0 = Instant::now();
    let mut bytes = 0u64;
    while t0.elapsed() < SPAN {
        for _ in 0..16 {
            match send(fd, &buf, segment) {
                Ok(n) => bytes += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (crate::measure::thread_cpu_time() - cpu0).as_secs_f64();
    let _ = reader.join();
    Ok((bytes as f64 * 8.0 / wall / 1e9, cpu / (bytes as f64 / 1e9)))
}

/// Plaintext bytes in each [`DATAGRAM`] of the floor: a short header of 11 bytes (8-byte
/// connection ID, 2-byte packet number) and the 16-byte AEAD tag are the rest.
const FLOOR_HEADER: usize = 11;
/// Datagrams per `sendmsg` in the floor: as many as 64 KiB holds, the most any stack sends.
const FLOOR_SEGMENTS: usize = 65_507 / DATAGRAM;

/// CPU-seconds per GB of plaintext for the least a QUIC stack must do to move data over
/// loopback with GSO and GRO, on (sender, receiver): the sender copies each packet's payload
/// in from the application's buffer, seals it and protects its header (RFC 9001 §5.3, §5.4:
/// GQUIC's own `seal_with`, the default provider's AES-128-GCM, the suite both stacks
/// negotiate in `bulk`), and sends [`FLOOR_SEGMENTS`] per `sendmsg`; the receiver reads with
/// `UDP_GRO` into 64 KiB, removes header protection and opens each packet in place. No
/// frames, acknowledgements, flow control, congestion control, timers or tasks: every stack
/// pays at least this, so a stack's `bulk` CPU-s/GB minus this sum is its own work. Each
/// side's cost is per byte it handled (datagrams the receiver's socket dropped cost the
/// sender only), so the two add up without the sides having to keep pace.
pub(crate) fn floor(span: Duration) -> io::Result<(f64, f64)> {
    use gquic_transport::crypto;
    use gquic_transport::wire::packet::PacketNumber;
    let (key, hp) = crate::fixtures::keys(
        &crypto::default_provider(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    );
    let (rkey, rhp) = crate::fixtures::keys(
        &crypto::default_provider(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    );
    let plain = DATAGRAM - FLOOR_HEADER - key.tag_len();
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(sink.local_addr()?)?;
    let rfd = sink.as_raw_fd();
    // Without receive offload (a kernel before 5.0) each datagram comes alone: still a floor
    // for this host, only a higher one.
    let _ = linux_set(rfd, libc::SOL_UDP, libc::UDP_GRO, 1);
    linux_set(rfd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20)?;
    sink.set_read_timeout(Some(Duration::from_millis(300)))?;
    let receiver = std::thread::spawn(move || -> (u64, Duration, u64) {
        let mut buf = vec![0u8; 65_536];
        let (mut bytes, mut bad) = (0u64, 0u64);
        // Waiting in `recvmsg` costs no CPU time: the thread's whole time is its work.
        let cpu0 = crate::measure::thread_cpu_time();
        let mut largest = None;
        while let Ok((n, stride)) = recv_gro(rfd, &mut buf) {
            for one in buf[..n].chunks_mut(stride.max(1)) {
                // Datagrams the socket dropped leave gaps: the number comes from the header
                // (RFC 9000 §17.1, Appendix A.3), as in a real receiver.
                let opened = crypto::remove_header_protection(one, 1 + 8, rhp.as_ref())
                    .ok()
                    .and_then(|_| {
                        let truncated = u16::from_be_bytes([one[9], one[10]]);
                        let pn = PacketNumber::with_len(truncated.into(), 2).expand(largest);
                        let len = crypto::open_in_place(one, FLOOR_HEADER, pn, rkey.as_ref());
                        len.ok().map(|len| (pn, len))
                    });
                match opened {
                    Some((pn, len)) => {
                        bytes += len as u64;
                        largest = largest.max(Some(pn));
                    }
                    None => bad += 1,
                }
            }
        }
        (bytes, crate::measure::thread_cpu_time() - cpu0, bad)
    });
    let source = vec![0x42u8; plain];
    let mut buf = vec![0u8; DATAGRAM * FLOOR_SEGMENTS];
    let fd = socket.as_raw_fd();
    let mut pn = 0u64;
    let mut sent = 0u64;
    let cpu0 = crate::measure::thread_cpu_time();
    let t0 = Instant::now();
    while t0.elapsed() < span {
        for packet in buf.chunks_mut(DATAGRAM) {
            // A short header: form bit 0, fixed bit 1, 2-byte packet number; 8-byte DCID.
            packet[0] = 0x41;
            packet[1..9].copy_from_slice(&[7; 8]);
            packet[9..11].copy_from_slice(&(pn as u16).to_be_bytes());
            packet[FLOOR_HEADER..FLOOR_HEADER + plain].copy_from_slice(&source);
            crypto::seal_with(packet, FLOOR_HEADER, 1 + 8, pn, key.as_ref(), hp.as_ref())
                .map_err(|e| io::Error::other(e.to_string()))?;
            pn += 1;
        }
        match send(fd, &buf, Some(DATAGRAM as u16)) {
            Ok(_) => sent += (plain * FLOOR_SEGMENTS) as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(e),
        }
    }
    let send_cpu = (crate::measure::thread_cpu_time() - cpu0).as_secs_f64();
    let (received, recv_cpu, bad) = receiver.join().map_err(|_| io::Error::other("receiver"))?;
    if bad > 0 || received == 0 {
        return Err(io::Error::other(format!(
            "{bad} datagrams did not open ({received} bytes did)"
        )));
    }
    Ok((
        send_cpu / (sent as f64 / 1e9),
        recv_cpu.as_secs_f64() / (received as f64 / 1e9),
    ))
}

/// `setsockopt` of an `int` option.
fn linux_set(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` outlives the call, and the length given is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One `recvmsg` into `buf`; returns the bytes and the segment size `UDP_GRO` reports (the
/// whole message when it reports none).
fn recv_gro(fd: i32, buf: &mut [u8]) -> io::Result<(usize, usize)> {
    let mut control = [0u64; 8];
    // SAFETY: the header points at `buf`, `iov` and `control`, which outlive the call; the
    // control messages are read through the CMSG macros within what the kernel wrote.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(fd, &mut hdr, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut stride = n;
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                stride = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>()) as usize;
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
        Ok((n, stride))
    }
}

/// Prints the UDP send ceilings.
pub(crate) fn run() -> Result<(), String> {
    println!(
        "\nceilings: raw UDP sendmsg over 127.0.0.1, {DATAGRAM}-byte datagrams, one sending thread \
         (CPU of the sender, which on loopback includes delivery to the receiving socket)"
    );
    for segments in [1usize, 10, 64.min(65_507 / DATAGRAM)] {
        let (gbps, cpu) = measure(segments).map_err(|e| format!("UDP send: {e}"))?;
        let how = if segments == 1 {
            "one datagram per sendmsg".to_owned()
        } else {
            format!("GSO, {segments} datagrams per sendmsg")
        };
        println!("{how:<36} {gbps:>8.2} Gbit/s {cpu:>8.3} CPU-s/GB");
    }
    let (send, recv) = floor(SPAN).map_err(|e| format!("floor: {e}"))?;
    println!(
        "\nfloor under bulk: no QUIC, only copy + seal + header protection + GSO sendmsg \
         ({FLOOR_SEGMENTS} per call) | GRO recvmsg + header protection + open, AES-128-GCM \
         (default provider), CPU-s per GB of plaintext\n{:<36} {send:>8.3} sender {recv:>8.3} \
         receiver {:>8.3} both",
        "floor",
        send + recv
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every datagram that reaches the floor's receiver opens (the packet numbers it recovers
    /// from the headers across the gaps of dropped datagrams are the sender's), and both
    /// sides report a cost.
    #[test]
    fn the_floor_opens_what_it_sends_and_costs_something() {
        let (send, recv) = floor(Duration::from_millis(200)).expect("floor");
        assert!(send > 0.0 && send.is_finite(), "sender {send}");
        assert!(recv > 0.0 && recv.is_finite(), "receiver {recv}");
    }
}
