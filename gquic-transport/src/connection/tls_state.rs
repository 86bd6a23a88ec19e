//! The connection's TLS session (RFC 9001 §4): the rustls connection while the handshake
//! runs; then only what the API still reports, which frees the session's buffers and record
//! keys (part of the idle-connection diet). A server lets its session go once the handshake is
//! complete and its last messages (the session tickets) are written: no TLS message follows
//! (TLS 1.3 over QUIC has no post-handshake messages from the client, RFC 9001 §4.1.3). A
//! client keeps its session for the server's session tickets until the connection is first
//! quiet ([`Tls::finish`] from compaction); a ticket that comes later is ignored (the
//! connection goes on, only that ticket is not stored).

use rustls::pki_types::CertificateDer;
use rustls::quic::{self as tls, DirectionalKeys, KeyChange};
use rustls::{AlertDescription, SupportedCipherSuite};

/// What a finished server session still answers.
#[derive(Debug)]
pub(super) struct Summary {
    /// Whether this end is the client (post-handshake messages are then ignored).
    client: bool,
    alpn: Option<Vec<u8>>,
    server_name: Option<String>,
    kind: Option<rustls::HandshakeKind>,
    suite: Option<SupportedCipherSuite>,
    peer_certificates: Option<Vec<CertificateDer<'static>>>,
}

impl Summary {
    /// What `c` has negotiated so far.
    fn of(c: &tls::Connection) -> Self {
        let (client, server_name) = match c {
            tls::Connection::Server(s) => (false, s.server_name().map(str::to_owned)),
            tls::Connection::Client(_) => (true, None),
        };
        Summary {
            client,
            alpn: c.alpn_protocol().map(<[u8]>::to_vec),
            server_name,
            kind: c.handshake_kind(),
            suite: c.negotiated_cipher_suite(),
            peer_certificates: c.peer_certificates().map(<[_]>::to_vec),
        }
    }
}

/// The TLS session of a connection.
#[derive(Debug)]
pub(super) enum Tls {
    /// The rustls connection (boxed: 1.2 KB that an idle server connection does not keep).
    Live(Box<tls::Connection>),
    /// A server's session after the handshake.
    Done(Box<Summary>),
    /// The session is away in a [`super::TlsJob`] (a TLS step on another thread); it comes
    /// back with the job. Meanwhile it reads and writes nothing, and reports what it had
    /// negotiated when it went (ALPN, SNI, suite, peer certificates): an application that
    /// asks in that moment must not see a handshake that has not happened.
    Out(Box<Summary>),
}

impl From<tls::Connection> for Tls {
    fn from(c: tls::Connection) -> Self {
        Tls::Live(Box::new(c))
    }
}

impl From<tls::ServerConnection> for Tls {
    fn from(c: tls::ServerConnection) -> Self {
        Tls::Live(Box::new(c.into()))
    }
}

impl Tls {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes a finished server session out (connection hibernation); refuses while the
    /// rustls connection lives (a client's, or a handshake's).
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        let Tls::Done(s) = self else {
            return None;
        };
        p.bool(s.client);
        let opt_bytes = |p: &mut crate::pack::Packer, b: Option<&[u8]>| {
            p.bool(b.is_some());
            if let Some(b) = b {
                p.bytes(b);
            }
        };
        opt_bytes(p, s.alpn.as_deref());
        opt_bytes(p, s.server_name.as_deref().map(str::as_bytes));
        p.u64(match s.kind {
            None => 0,
            Some(rustls::HandshakeKind::Full) => 1,
            Some(rustls::HandshakeKind::FullWithHelloRetryRequest) => 2,
            Some(rustls::HandshakeKind::Resumed) => 3,
        });
        p.opt_u64(s.suite.map(|c| u64::from(u16::from(c.suite()))));
        p.bool(s.peer_certificates.is_some());
        if let Some(certs) = &s.peer_certificates {
            p.u64(certs.len() as u64);
            for c in certs {
                p.bytes(c);
            }
        }
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`Tls::pack`] wrote; the suite comes from `provider`.
    pub(super) fn unpack(
        u: &mut crate::pack::Unpacker<'_>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Option<Self> {
        let client = u.bool()?;
        let alpn = if u.bool()? {
            Some(u.bytes()?.to_vec())
        } else {
            None
        };
        let server_name = if u.bool()? {
            Some(String::from_utf8(u.bytes()?.to_vec()).ok()?)
        } else {
            None
        };
        let kind = match u.u64()? {
            0 => None,
            1 => Some(rustls::HandshakeKind::Full),
            2 => Some(rustls::HandshakeKind::FullWithHelloRetryRequest),
            3 => Some(rustls::HandshakeKind::Resumed),
            _ => return None,
        };
        let suite = match u.opt_u64()? {
            None => None,
            Some(id) => {
                let id = rustls::CipherSuite::from(u16::try_from(id).ok()?);
                Some(*provider.cipher_suites.iter().find(|s| s.suite() == id)?)
            }
        };
        let peer_certificates = if u.bool()? {
            let n = u.u64()?;
            let mut certs = Vec::new();
            for _ in 0..n {
                certs.push(CertificateDer::from(u.bytes()?.to_vec()));
            }
            Some(certs)
        } else {
            None
        };
        Some(Tls::Done(Box::new(Summary {
            client,
            alpn,
            server_name,
            kind,
            suite,
            peer_certificates,
        })))
    }

    /// A server whose handshake is complete: keeps only the summary. No effect on a client
    /// (it still receives session tickets: see [`Tls::finish`]) or while the handshake runs.
    pub(super) fn finish_server(&mut self) {
        if matches!(self, Tls::Live(c) if matches!(**c, tls::Connection::Server(_))) {
            self.finish();
        }
    }

    /// Keeps only the summary, once the handshake is complete (either side).
    pub(super) fn finish(&mut self) {
        let Tls::Live(c) = self else {
            return;
        };
        if c.is_handshaking() {
            return;
        }
        *self = Tls::Done(Box::new(Summary::of(c)));
    }

    /// Takes the live session out for a TLS step elsewhere, leaving [`Tls::Out`] with what
    /// it had negotiated so far; `None` unless the session is live.
    pub(super) fn take_out(&mut self) -> Option<Tls> {
        let Tls::Live(c) = self else {
            return None;
        };
        let summary = Box::new(Summary::of(c));
        Some(std::mem::replace(self, Tls::Out(summary)))
    }

    pub(super) fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            Tls::Live(c) => c.alpn_protocol(),
            Tls::Done(s) | Tls::Out(s) => s.alpn.as_deref(),
        }
    }

    /// The SNI a client sent (server side only).
    pub(super) fn sni(&self) -> Option<&str> {
        match self {
            Tls::Live(c) => match c.as_ref() {
                tls::Connection::Server(s) => s.server_name(),
                tls::Connection::Client(_) => None,
            },
            Tls::Done(s) | Tls::Out(s) => s.server_name.as_deref(),
        }
    }

    pub(super) fn negotiated_cipher_suite(&self) -> Option<SupportedCipherSuite> {
        match self {
            Tls::Live(c) => c.negotiated_cipher_suite(),
            Tls::Done(s) | Tls::Out(s) => s.suite,
        }
    }

    pub(super) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            Tls::Live(c) => c.peer_certificates(),
            Tls::Done(s) | Tls::Out(s) => s.peer_certificates.as_deref(),
        }
    }

    pub(super) fn write_hs(&mut self, buf: &mut Vec<u8>) -> Option<KeyChange> {
        match self {
            Tls::Live(c) => c.write_hs(buf),
            Tls::Done(_) | Tls::Out(_) => None,
        }
    }

    /// Handshake data from the peer. After a server's handshake there is no TLS message the
    /// client may send: any is an unexpected message. A client whose session is finished
    /// ignores what the server sends (late session tickets).
    pub(super) fn read_hs(&mut self, data: &[u8]) -> Result<(), rustls::Error> {
        match self {
            Tls::Live(c) => c.read_hs(data),
            Tls::Done(s) if s.client => {
                tracing::debug!(
                    bytes = data.len(),
                    "TLS data after the session finished ignored"
                );
                Ok(())
            }
            Tls::Done(_) => Err(rustls::Error::InappropriateHandshakeMessage {
                expect_types: Vec::new(),
                got_type: rustls::HandshakeType::Unknown(data.first().copied().unwrap_or(0)),
            }),
            // Not reached: CRYPTO data waits in its stream while the session is out.
            Tls::Out(_) => Err(rustls::Error::General("TLS session busy".into())),
        }
    }

    pub(super) fn alert(&self) -> Option<AlertDescription> {
        match self {
            Tls::Live(c) => c.alert(),
            Tls::Done(_) => Some(AlertDescription::UnexpectedMessage),
            Tls::Out(_) => None,
        }
    }

    pub(super) fn quic_transport_parameters(&self) -> Option<&[u8]> {
        match self {
            Tls::Live(c) => c.quic_transport_parameters(),
            Tls::Done(_) | Tls::Out(_) => None,
        }
    }

    pub(super) fn is_handshaking(&self) -> bool {
        match self {
            Tls::Live(c) => c.is_handshaking(),
            Tls::Done(_) => false,
            // Out only during the handshake.
            Tls::Out(_) => true,
        }
    }

    pub(super) fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        match self {
            Tls::Live(c) => c.handshake_kind(),
            Tls::Done(s) | Tls::Out(s) => s.kind,
        }
    }

    /// Whether a client's early data was accepted (false on a server).
    pub(super) fn is_early_data_accepted(&self) -> bool {
        match self {
            Tls::Live(c) => match c.as_ref() {
                tls::Connection::Client(c) => c.is_early_data_accepted(),
                tls::Connection::Server(_) => false,
            },
            Tls::Done(_) | Tls::Out(_) => false,
        }
    }

    pub(super) fn zero_rtt_keys(&self) -> Option<DirectionalKeys> {
        match self {
            Tls::Live(c) => c.zero_rtt_keys(),
            Tls::Done(_) | Tls::Out(_) => None,
        }
    }
}
