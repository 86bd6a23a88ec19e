//! UDP socket I/O: ECN (RFC 9000 §13.4, RFC 3168 §5) and, on Linux, segmentation offload.
//!
//! On Linux the ECN codepoint of each received datagram is read from its IP header
//! (`IP_RECVTOS` / `IPV6_RECVTCLASS` control messages), and each sent datagram carries the
//! codepoint its connection chose (`IP_TOS` / `IPV6_TCLASS` control messages on `sendmsg`).
//! Elsewhere, or if the kernel refuses the control message, datagrams go without ECN: the
//! connections' ECN validation then sees no marks and stops marking.
//!
//! Batches: where the kernel offers generic segmentation offload (`UDP_SEGMENT`, Linux 4.18)
//! one `sendmsg` carries up to [`MAX_GSO_SEGMENTS`] datagrams of one size for one
//! destination, and with generic receive offload (`UDP_GRO`, Linux 5.0) one `recvmsg` returns
//! several datagrams of one flow back to back with their size. Both are detected when the
//! socket is set up; a socket without them sends and receives one datagram per call, and a
//! send the device refuses to segment (`EIO`: no checksum offload) turns segmentation off and
//! sends the batch one datagram at a time.
//!
//! Local addresses: a socket bound to a wildcard address (`0.0.0.0`, `::`) on Linux asks for
//! the destination address of each datagram (`IP_PKTINFO` / `IPV6_RECVPKTINFO`), and sends
//! each datagram from the address its connection's peer sends to (`IP_PKTINFO` /
//! `IPV6_PKTINFO` control messages on `sendmsg`): on a host with several addresses the
//! kernel's own choice of source, by route, may be another, and the peer drops what comes
//! from an address it did not send to (RFC 9000 §9.6).
//!
//! Wake-ups: on Linux the socket is registered with the reactor for readability only. Tokio's
//! `UdpSocket` registers for writability as well, and then every datagram sent wakes the
//! thread once more when the kernel frees it (an edge-triggered `EPOLLOUT` that nobody waits
//! for; on a ping-pong it comes while the reply is on its way). A send that finds the send
//! buffer full registers a duplicate of the descriptor for writability until a send goes
//! through again.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

#[cfg(not(target_os = "linux"))]
use tokio::net::UdpSocket;

use crate::connection::EcnCodepoint;

/// The most datagrams one segmentation-offload send carries (the kernel's
/// `UDP_MAX_SEGMENTS`).
pub(crate) const MAX_GSO_SEGMENTS: usize = 64;

/// One receive: `len` bytes from `from`, holding datagrams of `stride` bytes back to back (the
/// last may be shorter); `stride == len` for a single datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    pub(crate) len: usize,
    pub(crate) from: SocketAddr,
    /// The local address it was sent to, where the socket reports it (a socket bound to a
    /// wildcard address, on Linux).
    pub(crate) dst_ip: Option<IpAddr>,
    pub(crate) ecn: Option<EcnCodepoint>,
    pub(crate) stride: usize,
}

impl Received {
    /// A placeholder for receive tables.
    pub(crate) const EMPTY: Self = Self {
        len: 0,
        from: SocketAddr::V4(std::net::SocketAddrV4::new(
            std::net::Ipv4Addr::UNSPECIFIED,
            0,
        )),
        dst_ip: None,
        ecn: None,
        stride: 0,
    };
}

/// Most transmits one send call takes ([`UdpIo::poll_send_many`]).
#[cfg(target_os = "linux")]
pub(crate) const SEND_MMSG: usize = linux::MAX_SEND_BATCH;
/// Most transmits one send call takes ([`UdpIo::poll_send_many`]).
#[cfg(not(target_os = "linux"))]
pub(crate) const SEND_MMSG: usize = 1;

/// Most messages one receive call takes ([`UdpIo::poll_recv_batch`]).
#[cfg(target_os = "linux")]
pub(crate) const RECV_MMSG: usize = linux::MAX_BATCH;
/// Most messages one receive call takes ([`UdpIo::poll_recv_batch`]).
#[cfg(not(target_os = "linux"))]
pub(crate) const RECV_MMSG: usize = 1;

/// Errors a UDP socket reports for one datagram (ICMP feedback on some platforms, a datagram
/// larger than the path allows) rather than for the socket.
pub(crate) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(90) // EMSGSIZE on Linux: one datagram too large.
}

/// A UDP socket with ECN on the datagrams and, where the kernel has it, segmentation offload.
#[derive(Debug)]
pub(crate) struct UdpIo {
    #[cfg(target_os = "linux")]
    socket: linux::Socket,
    #[cfg(not(target_os = "linux"))]
    socket: UdpSocket,
    /// `sendmsg` with an ECN control message works here.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    ecn_send: bool,
    /// Datagrams go with the source address their connection chose (a socket bound to a
    /// wildcard address, where the kernel reports each datagram's destination address).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pktinfo: bool,
    /// Datagrams one send may carry: [`MAX_GSO_SEGMENTS`] with segmentation offload, else 1.
    max_segments: usize,
    /// Bytes of the batch being sent one datagram at a time already gone (a send that was
    /// interrupted by a full socket buffer resumes here).
    partial: usize,
    /// An IPv6 socket, which may carry IPv4 too (dual-stack).
    v6: bool,
    /// Receive system calls made (tests count them).
    #[cfg(test)]
    receive_calls: std::sync::atomic::AtomicU64,
    /// `sendmmsg` calls made (tests count them).
    #[cfg(test)]
    send_many_calls: u64,
}

/// IPv4 peers of a dual-stack socket arrive as IPv4-mapped IPv6 addresses; the endpoint knows
/// them by their IPv4 addresses (RFC 4291 §2.5.5.2).
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::from((ip, a.port())),
            None => addr,
        },
        v4 => v4,
    }
}

impl UdpIo {
    /// Sets the socket up (non-blocking, options, registered with the reactor); call it
    /// within a tokio runtime.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        #[cfg(target_os = "linux")]
        let (socket, ecn_send, pktinfo, max_segments) = {
            let ecn = linux::enable_ecn_receive(&socket);
            let pktinfo = socket.local_addr().is_ok_and(|a| a.ip().is_unspecified())
                && linux::enable_pktinfo(&socket);
            linux::enable_gro(&socket);
            linux::grow_buffers(&socket);
            let gso = !offload_disabled() && linux::gso_supported(&socket);
            let socket = linux::Socket::new(socket)?;
            (socket, ecn, pktinfo, if gso { MAX_GSO_SEGMENTS } else { 1 })
        };
        #[cfg(not(target_os = "linux"))]
        let (socket, ecn_send, pktinfo, max_segments) =
            (UdpSocket::from_std(socket)?, false, false, 1);
        tracing::debug!(max_segments, v6, pktinfo, "UDP socket ready");
        Ok(Self {
            socket,
            ecn_send,
            pktinfo,
            max_segments,
            partial: 0,
            v6,
            #[cfg(test)]
            receive_calls: Default::default(),
            #[cfg(test)]
            send_many_calls: 0,
        })
    }

    /// The socket's local address.
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The address to send to for `addr`: IPv4 through an IPv6 socket goes as a mapped
    /// address; a mapped address through an IPv4 socket as the IPv4 address it maps.
    fn on_wire(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(a) if self.v6 => SocketAddr::V6(std::net::SocketAddrV6::new(
                a.ip().to_ipv6_mapped(),
                a.port(),
                0,
                0,
            )),
            SocketAddr::V6(_) if !self.v6 => unmap(addr),
            other => other,
        }
    }

    /// How many datagrams one [`UdpIo::poll_send`] should carry.
    pub(crate) fn max_segments(&self) -> usize {
        self.max_segments
    }

    /// Receives one message into `buf` (which should hold 64 KiB: with receive offload,
    /// several datagrams of one flow arrive together).
    #[cfg(test)]
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<Received>> {
        let mut out = [Received::EMPTY];
        let len = buf.len();
        std::task::ready!(self.poll_recv_batch(cx, buf, len, &mut out))?;
        Poll::Ready(Ok(out[0]))
    }

    /// Waits for the socket to be readable and runs `recv` (a `recvmmsg` filling `out`);
    /// IPv4-mapped sources come back as IPv4.
    #[cfg(target_os = "linux")]
    fn poll_recv_linux(
        &self,
        cx: &mut Context<'_>,
        out: &mut [Received],
        mut recv: impl FnMut(std::os::fd::RawFd, &mut [Received]) -> io::Result<linux::Batch>,
    ) -> Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        loop {
            let mut ready = std::task::ready!(self.socket.read.poll_read_ready(cx))?;
            let fd = self.socket.read.as_raw_fd();
            // A batch shorter than asked for emptied the queue: the readiness is cleared now
            // (as a `WouldBlock` would), which saves the `recvmmsg` that would only have
            // found the queue empty. Tokio clears it only if no readiness event came in
            // since, so a datagram that arrives meanwhile still wakes the driver.
            let mut drained = None;
            let r = ready.try_io(|_| {
                #[cfg(test)]
                self.receive_calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let batch = recv(fd, &mut *out)?;
                if batch.received < batch.asked {
                    drained = Some(batch.received);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(batch.received)
            });
            let n = match (r, drained) {
                (_, Some(n)) | (Ok(Ok(n)), None) => n,
                (Err(_would_block), None) => continue,
                (Ok(Err(e)), None) => return Poll::Ready(Err(e)),
            };
            for r in &mut out[..n] {
                r.from = unmap(r.from);
                r.dst_ip = r.dst_ip.map(|ip| ip.to_canonical());
            }
            return Poll::Ready(Ok(n));
        }
    }

    /// Receives up to `out.len()` messages with one system call (`recvmmsg` on Linux), the
    /// i-th into `buf[i * slot..]` (at most `slot` bytes; 64 KiB covers receive offload);
    /// returns how many arrived. `buf` must hold at least one slot.
    #[cfg(any(test, not(target_os = "linux")))]
    pub(crate) fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
        slot: usize,
        out: &mut [Received],
    ) -> Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        {
            self.poll_recv_linux(cx, out, |fd, out| linux::recv_batch(fd, buf, slot, out))
        }
        #[cfg(not(target_os = "linux"))]
        {
            let buf = &mut buf[..slot.min(buf.len())];
            let mut rb = tokio::io::ReadBuf::new(buf);
            let from = std::task::ready!(self.socket.poll_recv_from(cx, &mut rb))?;
            let len = rb.filled().len();
            out[0] = Received {
                len,
                from: unmap(from),
                dst_ip: None,
                ecn: None,
                stride: len,
            };
            Poll::Ready(Ok(1))
        }
    }

    /// Receives up to `out.len()` messages (one system call) into the spare capacity of
    /// `block`, which must have room left, and appends them back to back: on return `block`
    /// is longer by the messages' total length, each message following the one before. No
    /// part of `block` needs to be initialized beforehand (a receive block costs no
    /// `memset`); at most `slot` bytes per message (64 KiB covers receive offload).
    pub(crate) fn poll_recv_block(
        &self,
        cx: &mut Context<'_>,
        block: &mut bytes::BytesMut,
        slot: usize,
        out: &mut [Received],
    ) -> Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        {
            self.poll_recv_linux(cx, out, |fd, out| {
                linux::recv_into_block(fd, block, slot, out)
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            // Portable path: one datagram into zeroed space.
            let start = block.len();
            let room = block.capacity() - start;
            block.resize(start + room.min(slot), 0);
            let r = self.poll_recv_batch(cx, &mut block[start..], slot, &mut out[..1]);
            let n = match &r {
                Poll::Ready(Ok(n)) => out[..*n].iter().map(|m| m.len).sum(),
                _ => 0,
            };
            block.truncate(start + n);
            r
        }
    }

    /// Sends `buf` to `dst` from the local address `src` (where the socket can choose) with
    /// the ECN codepoint `ecn`: one datagram, or with `segment_size` several of that size
    /// back to back (the last may be shorter). Ready once all of them are gone; an error
    /// means the rest of the batch is dropped.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        dst: SocketAddr,
        src: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        segment_size: Option<usize>,
    ) -> Poll<io::Result<()>> {
        let dst = self.on_wire(dst);
        #[cfg(target_os = "linux")]
        let src = src.filter(|_| self.pktinfo);
        let segment = segment_size.filter(|&n| n > 0 && n < buf.len());
        #[cfg(target_os = "linux")]
        if let (Some(n), 0, true) = (segment, self.partial, self.max_segments > 1) {
            match std::task::ready!(self.poll_sendmsg(cx, buf, dst, src, ecn, Some(n))) {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    // The device cannot checksum segments (the kernel says EIO).
                    tracing::info!(error = %e, "UDP segmentation offload refused; sending datagrams one by one");
                    self.max_segments = 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // A segment larger than the device allows (a path MTU probe in the
                    // batch): this batch goes one by one, the next may segment again.
                    tracing::debug!(error = %e, "segmented send refused; this batch goes one by one");
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let Some(n) = segment else {
            return self.poll_send_one(cx, buf, dst, src, ecn);
        };
        while self.partial < buf.len() {
            let end = (self.partial + n).min(buf.len());
            let one = &buf[self.partial..end];
            match std::task::ready!(self.poll_send_one(cx, one, dst, src, ecn)) {
                Ok(()) => {}
                Err(e) if is_transient(&e) => {
                    tracing::debug!(error = %e, %dst, "send error; datagram dropped");
                }
                Err(e) => {
                    self.partial = 0;
                    return Poll::Ready(Err(e));
                }
            }
            self.partial = end;
        }
        self.partial = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends the transmits `ts`, the i-th from `bufs[i]` (its first `ts[i].size` bytes), in
    /// order, as many as one system call takes (`sendmmsg` on Linux; at least the first);
    /// returns how many went. An error concerns the first transmit, which is then not sent
    /// (the caller drops it if [`is_transient`], as after [`UdpIo::poll_send`]).
    pub(crate) fn poll_send_many(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[Vec<u8>],
        ts: &[crate::connection::Transmit],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = ts.first() else {
            return Poll::Ready(Ok(0));
        };
        #[cfg(target_os = "linux")]
        if ts.len() > 1 && self.partial == 0 {
            // The messages a `sendmmsg` can carry as they are: not a segmented batch the
            // socket can no longer segment (those go one datagram at a time).
            let mut outs = [linux::Out {
                buf: &[],
                dst: first.destination,
                src: None,
                ecn: None,
                segment: None,
            }; SEND_MMSG];
            let mut count = 0;
            for (t, buf) in ts.iter().zip(bufs).take(SEND_MMSG) {
                let segment = t.segment_size.filter(|&n| n > 0 && n < t.size);
                if segment.is_some() && self.max_segments == 1 {
                    break;
                }
                let Some(segment) = segment.map(u16::try_from).transpose().ok() else {
                    break;
                };
                outs[count] = linux::Out {
                    buf: &buf[..t.size],
                    dst: self.on_wire(t.destination),
                    src: t.source.filter(|_| self.pktinfo),
                    ecn: t.ecn.filter(|_| self.ecn_send),
                    segment,
                };
                count += 1;
            }
            if count > 1 {
                #[cfg(test)]
                {
                    self.send_many_calls += 1;
                }
                let outs = &outs[..count];
                match std::task::ready!(self
                    .socket
                    .poll_send_with(cx, |fd| linux::send_many(fd, outs)))
                {
                    Ok(n) if n > 0 => return Poll::Ready(Ok(n)),
                    // The first message failed: it goes alone, where each error has its
                    // answer (no ECN, no segmentation, another source, or dropped).
                    _ => {}
                }
            }
        }
        let r = std::task::ready!(self.poll_send(
            cx,
            &bufs[0][..first.size],
            first.destination,
            first.source,
            first.ecn,
            first.segment_size,
        ));
        Poll::Ready(r.map(|()| 1))
    }

    /// Sends one datagram.
    fn poll_send_one(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        dst: SocketAddr,
        src: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
    ) -> Poll<io::Result<()>> {
        #[cfg(target_os = "linux")]
        {
            self.poll_sendmsg(cx, buf, dst, src, ecn, None)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (ecn, src);
            self.socket.poll_send_to(cx, buf, dst).map_ok(|_| ())
        }
    }

    /// One `sendmsg` with the ECN and segmentation control messages that apply.
    #[cfg(target_os = "linux")]
    fn poll_sendmsg(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        dst: SocketAddr,
        src: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        segment: Option<usize>,
    ) -> Poll<io::Result<()>> {
        let tos = ecn.filter(|_| self.ecn_send);
        let segment16 = segment.and_then(|n| u16::try_from(n).ok());
        let r = std::task::ready!(self
            .socket
            .poll_send_with(cx, |fd| linux::send(fd, buf, dst, src, tos, segment16)));
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && src.is_some() => {
                // The source address is not (or no longer) ours: the kernel chooses.
                tracing::debug!(error = %e, ?src, "source address refused; sending without");
                self.poll_sendmsg(cx, buf, dst, None, ecn, segment)
            }
            Err(e)
                if e.raw_os_error() == Some(libc::EINVAL) && tos.is_some() && segment.is_none() =>
            {
                // The kernel refuses the control message: no ECN from now on.
                tracing::debug!(error = %e, "ECN control message refused; sending without");
                self.ecn_send = false;
                self.poll_sendmsg(cx, buf, dst, src, None, None)
            }
            other => Poll::Ready(other.map(|_| ())),
        }
    }
}

/// `GQUIC_NO_OFFLOAD=1` turns segmentation offload off (to compare, or to work around a
/// broken driver).
#[cfg(target_os = "linux")]
fn offload_disabled() -> bool {
    std::env::var_os("GQUIC_NO_OFFLOAD").is_some_and(|v| v != "0" && !v.is_empty())
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    use std::io;
    use std::mem::{size_of, zeroed, MaybeUninit};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
    use std::task::{Context, Poll};

    use std::net::UdpSocket;
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    use crate::connection::EcnCodepoint;

    /// A UDP socket registered with the reactor for readability only (see the module
    /// documentation); writability is watched only while a send waits for room.
    #[derive(Debug)]
    pub(super) struct Socket {
        pub(super) read: AsyncFd<UdpSocket>,
        /// A duplicate of the descriptor, registered for writability once the send buffer
        /// was full, and let go after [`KEEP_WATCHING`] sends in a row went through.
        pub(super) write: Option<AsyncFd<OwnedFd>>,
        /// Sends that went through since the send buffer was last full.
        clear_sends: u32,
    }

    /// Sends in a row that find room before the writability watch is let go: a sender that
    /// fills the buffer now and then (a bulk transfer against a slower receiver) keeps it,
    /// rather than registering (an allocation in the reactor) at every full buffer.
    pub(super) const KEEP_WATCHING: u32 = 256;

    impl Socket {
        /// Registers `socket` (non-blocking) for readability; call it within a tokio runtime.
        pub(super) fn new(socket: UdpSocket) -> io::Result<Self> {
            Ok(Self {
                read: register(socket, Interest::READABLE)?,
                write: None,
                clear_sends: 0,
            })
        }

        #[cfg(test)]
        pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
            self.read.get_ref().local_addr()
        }

        /// Runs `send` (one non-blocking system call on the descriptor); when the send buffer
        /// is full, waits until there is room and runs it again.
        pub(super) fn poll_send_with(
            &mut self,
            cx: &mut Context<'_>,
            mut send: impl FnMut(RawFd) -> io::Result<usize>,
        ) -> Poll<io::Result<usize>> {
            let fd = self.read.as_raw_fd();
            loop {
                let Some(write) = &self.write else {
                    match send(fd) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            // The send buffer is full: watch for room (an edge is reported
                            // at once if room came meanwhile).
                            let dup = self.read.get_ref().as_fd().try_clone_to_owned()?;
                            self.write = Some(register(dup, Interest::WRITABLE)?);
                            self.clear_sends = 0;
                            continue;
                        }
                        other => return Poll::Ready(other),
                    }
                };
                let r = {
                    let mut ready = std::task::ready!(write.poll_write_ready(cx))?;
                    ready.try_io(|_| send(fd))
                };
                match r {
                    Ok(r) => {
                        self.clear_sends += 1;
                        if self.clear_sends >= KEEP_WATCHING {
                            // Room for a while now: stop watching for it.
                            self.write = None;
                        }
                        return Poll::Ready(r);
                    }
                    Err(_would_block) => {
                        self.clear_sends = 0;
                        continue;
                    }
                }
            }
        }
    }

    /// Registers `owned` with the reactor for `interest`.
    fn register<T: AsRawFd + Into<OwnedFd>>(
        owned: T,
        interest: Interest,
    ) -> io::Result<AsyncFd<T>> {
        // SAFETY: `T` owns its descriptor (a `UdpSocket` or an `OwnedFd`), which stays open
        // and refers to the same socket for as long as the `AsyncFd` holds it.
        unsafe { AsyncFd::register_with_interest(owned, interest) }.map_err(|e| e.into_parts().1)
    }

    impl AsRawFd for Socket {
        fn as_raw_fd(&self) -> RawFd {
            self.read.as_raw_fd()
        }
    }

    /// Room for the control messages of one send or receive (TOS / TCLASS, segment size),
    /// 8-byte aligned.
    type Control = [u64; 16];

    pub(super) fn set_int(
        fd: RawFd,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> bool {
        // SAFETY: `value` outlives the call and its size is passed along.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    }

    /// Asks for the TOS / Traffic Class byte of received datagrams; returns whether sending
    /// with ECN is worth trying on this socket.
    pub(super) fn enable_ecn_receive(socket: &UdpSocket) -> bool {
        let fd = socket.as_raw_fd();
        let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        // An IPv6 socket may also carry IPv4 (mapped addresses): ask for both.
        let v4_ok = set_int(fd, libc::IPPROTO_IP, libc::IP_RECVTOS, 1);
        let v6_ok = v6 && set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS, 1);
        if !(v4_ok || v6_ok) {
            tracing::debug!("ECN: cannot read the TOS byte on this socket");
        }
        true
    }

    /// Asks for the destination address of received datagrams (for a socket bound to a
    /// wildcard address); returns whether the kernel agreed.
    pub(super) fn enable_pktinfo(socket: &UdpSocket) -> bool {
        let fd = socket.as_raw_fd();
        let v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
        let ok = if v6 {
            // IPv4 through a dual-stack socket reports `IP_PKTINFO`.
            let v6_ok = set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1);
            let v4_ok = set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
            v6_ok || v4_ok
        } else {
            set_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
        };
        if !ok {
            tracing::debug!("cannot learn the destination address of datagrams on this socket");
        }
        ok
    }

    /// Whether the kernel knows `UDP_SEGMENT` on this socket (generic segmentation offload).
    pub(super) fn gso_supported(socket: &UdpSocket) -> bool {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` outlive the call and describe a `c_int`.
        unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            ) == 0
        }
    }

    /// The socket buffer size asked for (the kernel caps it at `net.core.rmem_max` /
    /// `wmem_max`). At 2 MiB a bulk receiver on loopback lost 1,000-5,000 datagrams per GiB
    /// to a full buffer while it was busy, each loss a congestion event and a retransmission;
    /// at 4 MiB none in most runs, and 11% less CPU on both sides (`gquic-bench bulk`, upload,
    /// 6 interleaved runs).
    pub(super) const BUFFER_SIZE: libc::c_int = 4 << 20;

    pub(super) fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> Option<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` outlive the call and describe a `c_int`.
        let ok = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        ok.then_some(value)
    }

    /// Raises the receive and send buffers to [`BUFFER_SIZE`] where they are smaller (never
    /// lowers what the user set). The Linux default, about 208 KiB, holds a fraction of a
    /// millisecond at a few Gbit/s: a receiver busy that long drops what arrives, and the
    /// sender takes it as congestion.
    pub(super) fn grow_buffers(socket: &UdpSocket) {
        let fd = socket.as_raw_fd();
        for (name, what) in [(libc::SO_RCVBUF, "receive"), (libc::SO_SNDBUF, "send")] {
            // The kernel reports twice the size asked for (its bookkeeping included).
            let now = get_int(fd, libc::SOL_SOCKET, name).unwrap_or(0) / 2;
            if now < BUFFER_SIZE && !set_int(fd, libc::SOL_SOCKET, name, BUFFER_SIZE) {
                tracing::debug!(what, "cannot grow the socket buffer");
            }
        }
    }

    /// Asks for generic receive offload (several datagrams of one flow per receive).
    pub(super) fn enable_gro(socket: &UdpSocket) -> bool {
        let ok = set_int(socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1);
        if !ok {
            tracing::debug!("UDP receive offload not available");
        }
        ok
    }

    /// Most messages one `recvmmsg` takes.
    pub(super) const MAX_BATCH: usize = 16;

    /// One `recvmmsg`: up to `out.len()` (at most [`MAX_BATCH`]) messages, the i-th into
    /// `buf[i * slot..(i + 1) * slot]` (the last slot may be shorter, and there are only as
    /// many slots as `buf` holds).
    #[cfg(test)]
    pub(super) fn recv_batch(
        fd: RawFd,
        buf: &mut [u8],
        slot: usize,
        out: &mut [super::Received],
    ) -> io::Result<Batch> {
        // SAFETY: `buf` is valid for writes of its length.
        unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len(), slot, out) }
    }

    /// [`recv_batch`] into the spare capacity of `block`; then the messages are moved
    /// together so they follow each other, and `block`'s length extended over them.
    pub(super) fn recv_into_block(
        fd: RawFd,
        block: &mut bytes::BytesMut,
        slot: usize,
        out: &mut [super::Received],
    ) -> io::Result<Batch> {
        let spare = block.spare_capacity_mut();
        let base = spare.as_mut_ptr().cast::<u8>();
        let cap = spare.len();
        if cap == 0 {
            return Err(io::Error::other("receive block full"));
        }
        let slot = slot.max(1);
        // SAFETY: `base` is valid for writes of `cap` bytes (the spare capacity).
        let batch = unsafe { recv_raw(fd, base, cap, slot, out)? };
        let mut filled = 0;
        for (i, m) in out[..batch.received].iter().enumerate() {
            let start = i * slot;
            if start != filled {
                // SAFETY: both ranges lie within the spare capacity (the kernel wrote at most
                // the slot, so `start + m.len <= cap`, and `filled <= start`); `ptr::copy`
                // allows the overlap; the source bytes were written by the kernel.
                unsafe { std::ptr::copy(base.add(start), base.add(filled), m.len) };
            }
            filled += m.len;
        }
        // SAFETY: the first `filled` bytes of the spare capacity now hold the messages,
        // written by the kernel (and moved above): they are initialized.
        unsafe { block.set_len(block.len() + filled) };
        Ok(batch)
    }

    /// What one `recvmmsg` brought.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Batch {
        /// Messages received.
        pub(super) received: usize,
        /// Messages asked for: more than `received` means the queue ran empty.
        pub(super) asked: usize,
    }

    /// `recvmmsg` into `cap` bytes at `base`, message i at `base + i * slot`.
    ///
    /// # Safety
    /// `base` must be valid for writes of `cap` bytes.
    unsafe fn recv_raw(
        fd: RawFd,
        base: *mut u8,
        cap: usize,
        slot: usize,
        out: &mut [super::Received],
    ) -> io::Result<Batch> {
        let slot = slot.max(1);
        let n = out.len().min(MAX_BATCH).min(cap.div_ceil(slot)).max(1);
        // SAFETY: every pointer in the headers points at a local array (or into `base`, split
        // into disjoint slots within `cap`) that outlives `recvmmsg`, with its size; the
        // control messages are read only within each header's `msg_controllen` through the
        // CMSG macros, and their data only at the size the kernel documents for each type.
        unsafe {
            // Only the `n` entries the call uses are initialized: zeroing all `MAX_BATCH`
            // (5 KiB) cost more than the rest of a one-message receive, the usual one with
            // receive offload.
            let mut names = [const { MaybeUninit::<libc::sockaddr_storage>::uninit() }; MAX_BATCH];
            let mut controls = [const { MaybeUninit::<Control>::uninit() }; MAX_BATCH];
            let mut iovs = [const { MaybeUninit::<libc::iovec>::uninit() }; MAX_BATCH];
            let mut msgs = [const { MaybeUninit::<libc::mmsghdr>::uninit() }; MAX_BATCH];
            for i in 0..n {
                let start = i * slot;
                let len = slot.min(cap - start);
                let iov = iovs[i].write(libc::iovec {
                    iov_base: base.add(start).cast(),
                    iov_len: len,
                });
                let name = names[i].write(zeroed());
                let control = controls[i].write([0; 16]);
                let mut msg: libc::mmsghdr = zeroed();
                msg.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                msg.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                msg.msg_hdr.msg_iov = iov;
                msg.msg_hdr.msg_iovlen = 1;
                msg.msg_hdr.msg_control = control.as_mut_ptr().cast();
                msg.msg_hdr.msg_controllen = size_of::<Control>() as _;
                msgs[i].write(msg);
            }
            // The first `n` headers are initialized, and the kernel writes at most `n`.
            let msgs = msgs.as_mut_ptr().cast::<libc::mmsghdr>();
            let got = libc::recvmmsg(fd, msgs, n as _, 0, std::ptr::null_mut());
            if got < 0 {
                return Err(io::Error::last_os_error());
            }
            let got = (got as usize).min(n);
            for i in 0..got {
                let msg = &*msgs.add(i);
                let hdr = &msg.msg_hdr;
                let len = msg.msg_len as usize;
                let from = from_sockaddr(names[i].assume_init_ref())?;
                let mut ecn = None;
                let mut dst_ip = None;
                let mut stride = len;
                let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
                while !cmsg.is_null() {
                    let c = &*cmsg;
                    let data = libc::CMSG_DATA(cmsg);
                    match (c.cmsg_level, c.cmsg_type) {
                        (libc::IPPROTO_IP, libc::IP_TOS) => {
                            ecn = EcnCodepoint::from_bits(*data);
                        }
                        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                            let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                            ecn = EcnCodepoint::from_bits(v as u8);
                        }
                        (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                            let info = std::ptr::read_unaligned(data.cast::<libc::in_pktinfo>());
                            dst_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                                info.ipi_addr.s_addr,
                            ))));
                        }
                        (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                            let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                            dst_ip = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                        }
                        (libc::SOL_UDP, libc::UDP_GRO) => {
                            let v = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                            if v > 0 {
                                stride = v as usize;
                            }
                        }
                        _ => {}
                    }
                    cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
                }
                out[i] = super::Received {
                    len,
                    from,
                    dst_ip,
                    ecn,
                    stride,
                };
            }
            Ok(Batch {
                received: got,
                asked: n,
            })
        }
    }

    /// One datagram, or a segmentation-offload batch, for [`send`] and [`send_many`].
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Out<'a> {
        pub(super) buf: &'a [u8],
        pub(super) dst: SocketAddr,
        /// The local address to send from (`IP_PKTINFO` / `IPV6_PKTINFO`).
        pub(super) src: Option<IpAddr>,
        /// The ECN codepoint for the IP header (`IP_TOS` / `IPV6_TCLASS`).
        pub(super) ecn: Option<EcnCodepoint>,
        /// The kernel cuts `buf` into datagrams of this size (`UDP_SEGMENT`).
        pub(super) segment: Option<u16>,
    }

    /// Room for one message's headers: the address, the buffer and the control messages.
    struct MsgSpace {
        name: libc::sockaddr_storage,
        iov: libc::iovec,
        control: Control,
    }

    impl MsgSpace {
        fn new() -> Self {
            // SAFETY: all-zero is a valid value of these plain C structs.
            unsafe { zeroed() }
        }

        /// Writes `out` into this space and returns the header pointing at it; the header
        /// borrows `self` (and `out.buf`) by raw pointers, so both must stay in place until
        /// the system call is done.
        fn header(&mut self, out: &Out<'_>) -> libc::msghdr {
            let (name, namelen) = to_sockaddr(out.dst);
            self.name = name;
            self.iov = libc::iovec {
                iov_base: out.buf.as_ptr() as *mut libc::c_void,
                iov_len: out.buf.len(),
            };
            // IPv4, or IPv4 through an IPv6 socket (a mapped address), takes IP_TOS and
            // IP_PKTINFO; IPv6 takes IPV6_TCLASS and IPV6_PKTINFO.
            let v4 = match out.dst {
                SocketAddr::V4(_) => true,
                SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
            };
            // A source of the other family is left out.
            let src = match out.src.map(|ip| ip.to_canonical()) {
                Some(IpAddr::V4(ip)) if v4 => Some(IpAddr::V4(ip)),
                Some(IpAddr::V6(ip)) if !v4 => Some(IpAddr::V6(ip)),
                _ => None,
            };
            // The control messages: level, type and the value's bytes (an `int` for the ECN
            // codepoint, a `u16` segment size, an `in_pktinfo` / `in6_pktinfo` source).
            let ecn = out.ecn.map(|ecn| {
                let (level, ty) = if v4 {
                    (libc::IPPROTO_IP, libc::IP_TOS)
                } else {
                    (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
                };
                Cmsg::new(level, ty, libc::c_int::from(ecn.bits()))
            });
            let segment = out
                .segment
                .map(|n| Cmsg::new(libc::SOL_UDP, libc::UDP_SEGMENT, n));
            let src = src.map(|ip| match ip {
                IpAddr::V4(ip) => {
                    // SAFETY: all-zero is a valid `in_pktinfo`.
                    let mut info: libc::in_pktinfo = unsafe { zeroed() };
                    info.ipi_spec_dst.s_addr = u32::from(ip).to_be();
                    Cmsg::new(libc::IPPROTO_IP, libc::IP_PKTINFO, info)
                }
                IpAddr::V6(ip) => {
                    // SAFETY: all-zero is a valid `in6_pktinfo`.
                    let mut info: libc::in6_pktinfo = unsafe { zeroed() };
                    info.ipi6_addr.s6_addr = ip.octets();
                    Cmsg::new(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, info)
                }
            });
            let cmsgs = [ecn, segment, src];
            // SAFETY: the control buffer is large enough for the messages (checked against
            // `CMSG_SPACE`), which are written through the CMSG macros within
            // `msg_controllen`; every pointer in the header points into `self` or `out.buf`.
            unsafe {
                let space: usize = cmsgs.iter().flatten().map(Cmsg::space).sum();
                assert!(space <= size_of::<Control>());
                let mut hdr: libc::msghdr = zeroed();
                hdr.msg_name = (&mut self.name as *mut libc::sockaddr_storage).cast();
                hdr.msg_namelen = namelen;
                hdr.msg_iov = &mut self.iov;
                hdr.msg_iovlen = 1;
                if space == 0 {
                    return hdr;
                }
                self.control = [0; 16];
                hdr.msg_control = self.control.as_mut_ptr().cast();
                hdr.msg_controllen = space as _;
                let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
                for c in cmsgs.iter().flatten() {
                    (*cmsg).cmsg_level = c.level;
                    (*cmsg).cmsg_type = c.ty;
                    (*cmsg).cmsg_len = libc::CMSG_LEN(c.len as u32) as _;
                    std::ptr::copy_nonoverlapping(c.data.as_ptr(), libc::CMSG_DATA(cmsg), c.len);
                    cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
                }
                hdr
            }
        }
    }

    /// One control message to send: its level, type and value bytes.
    struct Cmsg {
        level: libc::c_int,
        ty: libc::c_int,
        /// Room for the largest value sent (`in6_pktinfo`, 20 bytes).
        data: [u8; 20],
        len: usize,
    }

    impl Cmsg {
        /// A message carrying `value`'s bytes (a plain C value of at most 20 bytes).
        fn new<T: Copy>(level: libc::c_int, ty: libc::c_int, value: T) -> Self {
            let len = size_of::<T>();
            let mut data = [0u8; 20];
            assert!(len <= data.len());
            // SAFETY: `value` is a plain value of `len` bytes, copied into room for them.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&value as *const T).cast::<u8>(),
                    data.as_mut_ptr(),
                    len,
                );
            }
            Self {
                level,
                ty,
                data,
                len,
            }
        }

        /// Its room in the control buffer, header and padding included.
        fn space(&self) -> usize {
            // SAFETY: `CMSG_SPACE` is arithmetic on the length.
            unsafe { libc::CMSG_SPACE(self.len as u32) as usize }
        }
    }

    /// One `sendmsg`: from the local address `src` if given, `ecn` in the IP header if
    /// given, and with `segment` the buffer is cut into datagrams of that size by the kernel
    /// (`UDP_SEGMENT`).
    pub(super) fn send(
        fd: RawFd,
        buf: &[u8],
        dst: SocketAddr,
        src: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        segment: Option<u16>,
    ) -> io::Result<usize> {
        let mut space = MsgSpace::new();
        let hdr = space.header(&Out {
            buf,
            dst,
            src,
            ecn,
            segment,
        });
        // SAFETY: `hdr` points into `space` and `buf`, both alive and unmoved here.
        let n = unsafe { libc::sendmsg(fd, &hdr, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Most messages one `sendmmsg` takes.
    pub(super) const MAX_SEND_BATCH: usize = 8;

    /// One `sendmmsg` of up to [`MAX_SEND_BATCH`] messages, each as [`send`] would send
    /// it; returns how many went. An error stops the call at the message that failed: the
    /// kernel reports it for the first message, else it returns the count before it (and the
    /// failing message, sent again, reports its error).
    pub(super) fn send_many(fd: RawFd, outs: &[Out<'_>]) -> io::Result<usize> {
        let n = outs.len().min(MAX_SEND_BATCH);
        let mut spaces: [MsgSpace; MAX_SEND_BATCH] = std::array::from_fn(|_| MsgSpace::new());
        // SAFETY: all-zero is a valid `mmsghdr`.
        let mut msgs: [libc::mmsghdr; MAX_SEND_BATCH] = unsafe { zeroed() };
        for i in 0..n {
            msgs[i].msg_hdr = spaces[i].header(&outs[i]);
        }
        // SAFETY: each header points into `spaces[i]` and `outs[i].buf`, alive and unmoved
        // until the call returns.
        let sent = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as _, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }

    fn from_sockaddr(s: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
        match libc::c_int::from(s.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says this storage holds a `sockaddr_in`.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says this storage holds a `sockaddr_in6`.
                let a =
                    unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Ok(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram from an address family other than IPv4/IPv6",
            )),
        }
    }

    fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: an all-zero `sockaddr_storage` is valid; it is large enough and aligned for
        // both `sockaddr_in` and `sockaddr_in6`, which are written below.
        unsafe {
            let mut s: libc::sockaddr_storage = zeroed();
            match addr {
                SocketAddr::V4(a) => {
                    let p = (&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                    (*p).sin_family = libc::AF_INET as libc::sa_family_t;
                    (*p).sin_port = a.port().to_be();
                    (*p).sin_addr = libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    };
                    (s, size_of::<libc::sockaddr_in>() as libc::socklen_t)
                }
                SocketAddr::V6(a) => {
                    let p = (&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                    (*p).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                    (*p).sin6_port = a.port().to_be();
                    (*p).sin6_flowinfo = a.flowinfo();
                    (*p).sin6_addr = libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    };
                    (*p).sin6_scope_id = a.scope_id();
                    (s, size_of::<libc::sockaddr_in6>() as libc::socklen_t)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
