//! UDP socket I/O with ECN (RFC 9000 §13.4, RFC 3168 §5).
//!
//! On Linux the ECN codepoint of each received datagram is read from its IP header
//! (`IP_RECVTOS` / `IPV6_RECVTCLASS` control messages), and each sent datagram carries the
//! codepoint its connection chose (`IP_TOS` / `IPV6_TCLASS` control messages on `sendmsg`).
//! Elsewhere, or if the kernel refuses the control message, datagrams go without ECN: the
//! connections' ECN validation then sees no marks and stops marking.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use tokio::net::UdpSocket;

use crate::connection::EcnCodepoint;

/// A UDP socket with ECN on the datagrams.
#[derive(Debug)]
pub(crate) struct UdpIo {
    socket: UdpSocket,
    /// `sendmsg` with an ECN control message works here.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    ecn_send: bool,
}

impl UdpIo {
    pub(crate) fn new(socket: UdpSocket) -> Self {
        #[cfg(target_os = "linux")]
        let ecn_send = linux::enable_ecn_receive(&socket);
        #[cfg(not(target_os = "linux"))]
        let ecn_send = false;
        Self { socket, ecn_send }
    }

    /// Receives one datagram into `buf`: its length, source and ECN codepoint.
    pub(crate) fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr, Option<EcnCodepoint>)>> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            loop {
                std::task::ready!(self.socket.poll_recv_ready(cx))?;
                let fd = self.socket.as_raw_fd();
                match self
                    .socket
                    .try_io(tokio::io::Interest::READABLE, || linux::recv(fd, buf))
                {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return Poll::Ready(other),
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let mut rb = tokio::io::ReadBuf::new(buf);
            let from = std::task::ready!(self.socket.poll_recv_from(cx, &mut rb))?;
            Poll::Ready(Ok((rb.filled().len(), from, None)))
        }
    }

    /// Sends one datagram to `dst` with the ECN codepoint `ecn`.
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        dst: SocketAddr,
        ecn: Option<EcnCodepoint>,
    ) -> Poll<io::Result<usize>> {
        #[cfg(target_os = "linux")]
        if let (Some(ecn), true) = (ecn, self.ecn_send) {
            use std::os::fd::AsRawFd;
            loop {
                std::task::ready!(self.socket.poll_send_ready(cx))?;
                let fd = self.socket.as_raw_fd();
                match self.socket.try_io(tokio::io::Interest::WRITABLE, || {
                    linux::send(fd, buf, dst, ecn)
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        // The kernel refuses the control message: no ECN from now on.
                        tracing::debug!(error = %e, "ECN control message refused; sending without");
                        self.ecn_send = false;
                        break;
                    }
                    other => return Poll::Ready(other),
                }
            }
        }
        let _ = ecn;
        self.socket.poll_send_to(cx, buf, dst)
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod linux {
    use std::io;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsRawFd, RawFd};

    use tokio::net::UdpSocket;

    use crate::connection::EcnCodepoint;

    /// Room for one TOS / TCLASS control message, 8-byte aligned.
    type Control = [u64; 8];

    fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
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

    pub(super) fn recv(
        fd: RawFd,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<EcnCodepoint>)> {
        // SAFETY: every pointer in `hdr` points at a local that outlives `recvmsg`, with its
        // size; the control messages are read only within `msg_controllen` through the CMSG
        // macros, and their data only at the size the kernel documents for each type.
        unsafe {
            let mut name: libc::sockaddr_storage = zeroed();
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut control: Control = [0; 8];
            let mut hdr: libc::msghdr = zeroed();
            hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = size_of::<Control>() as _;
            let n = libc::recvmsg(fd, &mut hdr, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let from = from_sockaddr(&name)?;
            let mut ecn = None;
            let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
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
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
            }
            Ok((n as usize, from, ecn))
        }
    }

    pub(super) fn send(
        fd: RawFd,
        buf: &[u8],
        dst: SocketAddr,
        ecn: EcnCodepoint,
    ) -> io::Result<usize> {
        let (mut name, namelen) = to_sockaddr(dst);
        // IPv4, or IPv4 through an IPv6 socket (a mapped address), takes IP_TOS; IPv6 takes
        // IPV6_TCLASS.
        let v4 = match dst {
            SocketAddr::V4(_) => true,
            SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_some(),
        };
        let (level, ty) = if v4 {
            (libc::IPPROTO_IP, libc::IP_TOS)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
        };
        let value = libc::c_int::from(ecn.bits());
        // SAFETY: as in `recv`; the control buffer is large enough for one `c_int` message
        // (checked by `CMSG_SPACE`), and written through the CMSG macros.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let mut control: Control = [0; 8];
            let space = libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) as usize;
            debug_assert!(space <= size_of::<Control>());
            let mut hdr: libc::msghdr = zeroed();
            hdr.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = namelen;
            hdr.msg_iov = &mut iov;
            hdr.msg_iovlen = 1;
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = level;
            (*cmsg).cmsg_type = ty;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), value);
            let n = libc::sendmsg(fd, &hdr, 0);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }
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
