//! quinn endpoints for the benchmark's quinn side, on sockets with the same buffers as
//! gquic's runtime gives its own (`measure::SOCKET_BUFFER`).

use std::sync::Arc;

use super::measure;

/// A UDP socket on 127.0.0.1 with `measure::SOCKET_BUFFER`-byte receive and send buffers.
fn socket() -> std::io::Result<std::net::UdpSocket> {
    use std::os::fd::AsRawFd;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: the value outlives the call and its size is passed along.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&measure::SOCKET_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(socket)
}

/// A quinn server endpoint on 127.0.0.1 (any port).
pub(crate) fn server(config: quinn::ServerConfig) -> std::io::Result<quinn::Endpoint> {
    endpoint(Some(config))
}

/// A quinn client endpoint on 127.0.0.1 (any port).
pub(crate) fn client() -> std::io::Result<quinn::Endpoint> {
    endpoint(None)
}

fn endpoint(server: Option<quinn::ServerConfig>) -> std::io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket()?,
        Arc::new(quinn::TokioRuntime),
    )
}
