//! The `ceilings` scenario: what this host allows before any QUIC work, raw UDP `sendmsg` over
//! loopback with one datagram per call and with generic segmentation offload (10 and 64
//! segments per call), so that the stacks' numbers can be read against it. (Packet
//! protection's ceiling is the `wire` scenario's seal+open lines.)

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The datagram size both stacks use on loopback after path MTU discovery.
const DATAGRAM: usize = 1452;
/// How long each measurement sends.
const SPAN: Duration = Duration::from_millis(700);

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
    Ok(())
}
