//! Compatible version negotiation (RFC 9368 §2.3, §4; RFC 9369 §4 for v1 and v2).
//!
//! Both sides send `version_information` (RFC 9369 §4: "MUST send, process, and validate").
//! The client lists the versions its first flight is compatible with, most preferred first.
//!
//! - **Server**: it waits until the whole ClientHello is in (the CRYPTO data of the client's
//!   Initial packets), reads the client's `version_information` from it, and if the client
//!   prefers a compatible version the server also supports over the one it started in, the
//!   server starts TLS in that version and answers in it: Initial packets under that version's
//!   keys, Handshake and 1-RTT packets in it. Until its first Handshake packet it still opens
//!   the client's Initials in the original version. A client attempting 0-RTT stays in its
//!   original version (its 0-RTT keys and ticket belong to it; RFC 9368 §8.3 leaves the choice
//!   to the versions, and staying keeps the early data).
//! - **Client**: the first Initial from the server that authenticates under the keys of
//!   another offered version moves the connection to it (RFC 9369 §4: the client learns the
//!   negotiated version from "the first long header Version field that differs"); a CRYPTO
//!   frame in the original version settles on it. rustls keeps the version it was created
//!   with, so the Handshake and 1-RTT keys of the negotiated version are derived from the TLS
//!   secrets (see [`crate::crypto::version_keys`]). 0-RTT packets stay in the original
//!   version.
//! - Both validate the peer's `version_information` (RFC 9368 §4): a client's Chosen Version
//!   must be the version of its first flight, a server's the negotiated version, else the
//!   connection closes with VERSION_NEGOTIATION_ERROR.

use std::sync::Arc;

use rustls::quic::{self as tls, Keys};

use super::{Connection, SpaceId, TransportError};
use crate::crypto;
use crate::error::TransportErrorCode;
use crate::wire::transport_params::VersionInformation;
use crate::wire::{ConnectionId, TransportParameters, Version};
use crate::Side;

/// Whether a first flight of `from` converts to `to` (RFC 9369 §4: v1 and v2 both ways).
pub(crate) fn compatible(from: Version, to: Version) -> bool {
    from == to || (from.is_supported() && to.is_supported())
}

/// The version state of a connection.
#[derive(Default)]
pub(super) struct VersionState {
    /// The version of the client's first flight.
    pub(super) original: Option<Version>,
    /// Client: the Available Versions we sent, most preferred first. Server: the versions it
    /// supports. Emptied once the handshake is confirmed (idle diet: only the handshake reads
    /// it).
    pub(super) available: Vec<Version>,
    /// Server: what it needs to restart TLS in another version, until the ClientHello is in.
    pub(super) pending: Option<Box<ServerPending>>,
    /// Server, after a switch: the original version's Initial keys, for the client's Initials
    /// sent before it learned (RFC 9369 §4: kept until a Handshake packet arrives).
    pub(super) original_initial: Option<Box<Keys>>,
    /// Client: the negotiated version is known (no more switching).
    pub(super) settled: bool,
    /// Where the TLS secrets come from, until the ClientHello is written (client) or read
    /// (server).
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(super) capture_source: Option<Arc<crypto::version_keys::SecretCapture>>,
    /// This connection's registration for its TLS secrets, until the 1-RTT keys are in.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(super) capture: Option<Box<crypto::version_keys::CaptureHandle>>,
    /// The 1-RTT secrets, for the key phase to expand its keys from again after hibernating.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(super) key_source: Option<Box<crypto::version_keys::KeySource>>,
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
impl VersionState {
    /// Writes the settled state out (connection hibernation); refuses while anything of the
    /// negotiation is held.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(
            self.available.is_empty()
                && self.pending.is_none()
                && self.original_initial.is_none()
                && self.capture_source.is_none()
                && self.capture.is_none()
                && self.key_source.is_none(),
        )?;
        p.opt_u64(self.original.map(|v| u64::from(v.0)));
        p.bool(self.settled);
        Some(())
    }

    /// Reads back what [`VersionState::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            original: u
                .opt_u64()?
                .map(|v| u32::try_from(v).map(Version))
                .transpose()
                .ok()?,
            available: Vec::new(),
            pending: None,
            original_initial: None,
            settled: u.bool()?,
            capture_source: None,
            capture: None,
            key_source: None,
        })
    }
}

/// Server: the ClientHello gathered so far and how to start TLS again.
pub(super) struct ServerPending {
    hello: Vec<u8>,
    /// The TLS configs for v1 and v2 (session tickets bound to each, RFC 9369 §5).
    crypto_v1: Arc<rustls::ServerConfig>,
    crypto_v2: Arc<rustls::ServerConfig>,
    /// NEW_TOKEN tokens for the versions the connection may move to (RFC 9369 §5).
    new_tokens: Vec<(Version, bytes::Bytes)>,
    params: TransportParameters,
    initial_dcid: ConnectionId,
}

/// What the server needs from a ClientHello.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ClientHelloInfo<'a> {
    /// The `quic_transport_parameters` extension (RFC 9001 §8.2), if present.
    pub(crate) transport_params: Option<&'a [u8]>,
    /// Whether the client offers early data (RFC 8446 §4.2.10).
    pub(crate) early_data: bool,
}

/// How long the ClientHello at the start of `data` is (handshake header included), if the
/// header is there and says it is a ClientHello (RFC 8446 §4).
pub(crate) fn client_hello_len(data: &[u8]) -> Option<usize> {
    let header = data.get(..4)?;
    (header[0] == 1)
        .then(|| 4 + usize::from_be_bytes([0, 0, 0, 0, 0, header[1], header[2], header[3]]))
}

/// Reads the extensions of a complete ClientHello (RFC 8446 §4.1.2); `None` if it does not
/// parse (TLS will then say what is wrong with it).
pub(crate) fn parse_client_hello(data: &[u8]) -> Option<ClientHelloInfo<'_>> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u8(&mut self) -> Option<usize> {
            self.take(1).map(|b| usize::from(b[0]))
        }
        fn u16(&mut self) -> Option<usize> {
            self.take(2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        }
    }
    let len = client_hello_len(data)?;
    let mut r = Reader(data.get(4..len)?);
    r.take(2 + 32)?; // legacy_version, random
    let n = r.u8()?;
    r.take(n)?; // legacy_session_id
    let n = r.u16()?;
    r.take(n)?; // cipher_suites
    let n = r.u8()?;
    r.take(n)?; // legacy_compression_methods
    let n = r.u16()?;
    let mut ext = Reader(r.take(n)?);
    let mut info = ClientHelloInfo::default();
    while !ext.0.is_empty() {
        let ty = ext.u16()?;
        let n = ext.u16()?;
        let body = ext.take(n)?;
        match ty {
            0x39 => info.transport_params = Some(body),
            42 => info.early_data = true,
            _ => {}
        }
    }
    Some(info)
}

/// RFC 9368 §4: errors of version negotiation.
fn vn_error(reason: String) -> TransportError {
    TransportError::new(TransportErrorCode::VERSION_NEGOTIATION_ERROR, reason)
}

impl VersionState {
    /// Server: waits for the ClientHello before TLS starts, so it can start in another
    /// version.
    pub(super) fn server(
        original: Version,
        supported: Vec<Version>,
        crypto_v1: Arc<rustls::ServerConfig>,
        crypto_v2: Arc<rustls::ServerConfig>,
        new_tokens: Vec<(Version, bytes::Bytes)>,
        params: TransportParameters,
        initial_dcid: ConnectionId,
    ) -> Self {
        Self {
            original: Some(original),
            available: supported,
            pending: Some(Box::new(ServerPending {
                hello: Vec::new(),
                crypto_v1,
                crypto_v2,
                new_tokens,
                params,
                initial_dcid,
            })),
            ..Self::default()
        }
    }
}

impl Connection {
    /// The version of the client's first flight (differs from [`Connection::version`] after
    /// compatible version negotiation, RFC 9368 §2.3).
    pub fn original_version(&self) -> Version {
        self.versions.original.unwrap_or(self.version)
    }

    /// Server: whether TLS still waits for the rest of the ClientHello.
    pub(super) fn versions_pending(&self) -> bool {
        self.versions.pending.is_some()
    }

    /// Client: the server sent CRYPTO data, so the version is the one it came in.
    pub(super) fn settle_version(&mut self) {
        self.versions.settled = true;
    }

    /// Server: gathers the ClientHello from Initial CRYPTO data; once it is complete, chooses
    /// the version and returns the bytes for TLS. `None` while more is needed, or when the
    /// choice was made before.
    pub(super) fn server_client_hello(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let Some(pending) = self.versions.pending.as_mut() else {
            return Ok(None);
        };
        let sp = &mut self.spaces[SpaceId::Initial as usize];
        while let Some(data) = sp.crypto_if_held().and_then(|c| c.recv.read(usize::MAX)) {
            pending.hello.extend_from_slice(&data);
        }
        // Wait for the whole ClientHello unless it is no ClientHello or larger than the CRYPTO
        // buffer: TLS then has the last word.
        let limit = self.config.crypto_buffer_size as usize;
        match client_hello_len(&pending.hello) {
            None if pending.hello.len() < 4 => return Ok(None),
            Some(len) if len <= limit && pending.hello.len() < len => return Ok(None),
            _ => {}
        }
        let Some(pending) = self.versions.pending.take() else {
            return Ok(None);
        };
        self.negotiate_version(&pending)?;
        Ok(Some(pending.hello))
    }

    /// Server: RFC 9368 §2.3, §4 on a complete ClientHello.
    fn negotiate_version(&mut self, pending: &ServerPending) -> Result<(), TransportError> {
        let info = parse_client_hello(&pending.hello)
            .and_then(|hello| Some((hello.early_data, hello.transport_params?)))
            .and_then(|(early, raw)| {
                // A parameter that does not decode is reported once TLS has the ClientHello.
                let params = TransportParameters::decode(Side::Client, raw).ok()?;
                Some((early, params.version_information?))
            });
        // RFC 9368 §4: a server MAY complete the handshake without the client's version
        // information.
        let Some((early_data, info)) = info else {
            return Ok(());
        };
        if info.chosen != self.version {
            return Err(vn_error(format!(
                "the client's chosen version {} differs from the version of its Initial packets {}",
                info.chosen, self.version
            )));
        }
        let current = self.version;
        let chosen = info
            .available
            .iter()
            .copied()
            .find(|v| {
                *v == current || (self.versions.available.contains(v) && compatible(current, *v))
            })
            .unwrap_or(current);
        if chosen == current {
            return Ok(());
        }
        if early_data {
            tracing::debug!(%current, preferred = %chosen, "0-RTT attempted: staying in the original version");
            return Ok(());
        }
        self.switch_server(chosen, pending)
    }

    fn switch_server(
        &mut self,
        to: Version,
        pending: &ServerPending,
    ) -> Result<(), TransportError> {
        let internal = |e: String| TransportError::new(TransportErrorCode::INTERNAL_ERROR, e);
        let tls_version = to
            .tls_version()
            .ok_or_else(|| internal(format!("no TLS key schedule for {to}")))?;
        let mut params = pending.params.clone();
        params.version_information = Some(VersionInformation {
            chosen: to,
            available: self.versions.available.clone(),
        });
        let mut encoded = Vec::with_capacity(params.encoded_len());
        params.encode(&mut encoded);
        let crypto = if to == Version::V2 {
            &pending.crypto_v2
        } else {
            &pending.crypto_v1
        };
        let tls = tls::ServerConnection::new(crypto.clone(), tls_version, encoded)
            .map_err(|e| internal(format!("TLS for {to}: {e}")))?;
        let suite = crypto::initial_suite(&self.provider).map_err(|e| internal(e.to_string()))?;
        let keys = crypto::initial_keys(&suite, to, &pending.initial_dcid, Side::Server)
            .map_err(|e| internal(e.to_string()))?;
        tracing::debug!(from = %self.version, %to, "compatible version negotiation: switching");
        self.versions.original_initial = self.spaces[SpaceId::Initial as usize]
            .keys
            .replace(Box::new(keys));
        self.tls = tls.into();
        self.version = to;
        // RFC 9369 §5: tokens issued on this connection originate from the negotiated version.
        if let Some(e) = self.extras.as_deref_mut().filter(|e| e.new_token.is_some()) {
            e.new_token = pending
                .new_tokens
                .iter()
                .find(|(v, _)| *v == to)
                .map(|(_, t)| t.clone());
        }
        Ok(())
    }

    /// Whether a long-header packet of version `v` (not the current one) in `space` may be
    /// opened: a server's original-version Initials after a switch, or the server's first
    /// Initial in another offered version at a client that has not settled yet.
    pub(super) fn other_version_allowed(&self, v: Version, space: SpaceId, early: bool) -> bool {
        match self.side {
            Side::Server => {
                Some(v) == self.versions.original
                    && ((space == SpaceId::Initial && self.versions.original_initial.is_some())
                        || early)
            }
            Side::Client => {
                space == SpaceId::Initial
                    && !self.versions.settled
                    && self.versions.available.contains(&v)
                    && compatible(self.version, v)
                    && self.can_follow_switch()
            }
        }
    }

    fn can_follow_switch(&self) -> bool {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        return self.versions.capture.is_some();
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        false
    }

    /// Client: Initial keys to try a packet of version `v` with.
    pub(super) fn initial_keys_for(&self, v: Version) -> Option<Keys> {
        let suite = crypto::initial_suite(&self.provider).ok()?;
        let dcid = self.retry_src_cid().unwrap_or(self.original_dst_cid);
        crypto::initial_keys(&suite, v, &dcid, Side::Client).ok()
    }

    /// Client: the server's Initial in version `to` authenticated; the connection goes on in
    /// it.
    pub(super) fn switch_client(&mut self, to: Version, keys: Keys) {
        tracing::debug!(from = %self.version, %to, "the server chose another version (RFC 9368 §2.3)");
        self.version = to;
        self.versions.settled = true;
        // RFC 9369 §4: "it SHOULD send subsequent Initial packets using that version".
        self.spaces[SpaceId::Initial as usize].keys = Some(Box::new(keys));
    }

    /// Right after the ClientHello is written (client) or complete (server), registers for the
    /// TLS secrets: a client needs them if a server switches the version, and either side to
    /// expand its 1-RTT keys again after hibernating ([`crypto::KeyPhase::hibernate`]).
    pub(super) fn on_client_hello(&mut self, hello: &[u8]) {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        if let Some(capture) = self.versions.capture_source.take() {
            // RFC 8446 §4.1.2: the random follows the handshake header and legacy_version.
            if let Some(random) = hello.get(6..38).and_then(|r| <[u8; 32]>::try_from(r).ok()) {
                self.versions.capture =
                    crypto::version_keys::CaptureHandle::register(capture, random).map(Box::new);
            }
        }
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        let _ = hello;
    }

    /// Handshake or 1-RTT keys from rustls, replaced by the negotiated version's when a
    /// server switched this client (rustls derived them with the original version's labels).
    pub(super) fn keys_for_version(
        &mut self,
        change: tls::KeyChange,
    ) -> Result<(Keys, Option<crypto::NextSecrets>), TransportError> {
        let switched = self.side.is_client() && Some(self.version) != self.versions.original;
        let (keys, next) = match change {
            tls::KeyChange::Handshake { keys } => (keys, None),
            tls::KeyChange::OneRtt { keys, next } => (keys, Some(next.into())),
        };
        if !switched {
            if next.is_some() {
                // The secrets are no longer needed once the key phase has its source.
                #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
                if let Some(capture) = self.versions.capture.take() {
                    self.versions.key_source = self.key_source(capture.traffic(), self.version);
                }
            }
            return Ok((keys, next));
        }
        self.derived_keys(next.is_some())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    fn derived_keys(
        &mut self,
        one_rtt: bool,
    ) -> Result<(Keys, Option<crypto::NextSecrets>), TransportError> {
        use crypto::version_keys::{keys, VersionSecrets};
        let internal = |e: String| TransportError::new(TransportErrorCode::INTERNAL_ERROR, e);
        let suite = self
            .tls
            .negotiated_cipher_suite()
            .and_then(|s| s.tls13())
            .ok_or_else(|| internal("no TLS 1.3 cipher suite negotiated".into()))?;
        let capture = self
            .versions
            .capture
            .as_ref()
            .ok_or_else(|| internal("TLS secrets not captured".into()))?;
        let secrets = if one_rtt {
            capture.traffic()
        } else {
            capture.handshake()
        }
        .ok_or_else(|| internal("TLS secrets not captured".into()))?;
        let version = self.version;
        let derived =
            keys(suite, version, Side::Client, &secrets).map_err(|e| internal(e.to_string()))?;
        if !one_rtt {
            return Ok((derived, None));
        }
        let next = VersionSecrets::after(suite, version, Side::Client, &secrets)
            .map_err(|e| internal(e.to_string()))?;
        self.versions.capture = None;
        self.versions.key_source = self.key_source(Some(secrets), version);
        Ok((derived, Some(crypto::NextSecrets::Version(next))))
    }

    /// The source of the first 1-RTT keys, from the captured application traffic secrets.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    fn key_source(
        &self,
        secrets: Option<crypto::version_keys::TrafficSecrets>,
        version: Version,
    ) -> Option<Box<crypto::version_keys::KeySource>> {
        let suite = self.tls.negotiated_cipher_suite()?.tls13()?;
        crypto::version_keys::KeySource::new(suite, version, self.side, secrets?)
            .ok()
            .map(Box::new)
    }

    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    fn derived_keys(
        &mut self,
        _one_rtt: bool,
    ) -> Result<(Keys, Option<crypto::NextSecrets>), TransportError> {
        Err(TransportError::new(
            TransportErrorCode::INTERNAL_ERROR,
            "no backend to derive the negotiated version's keys",
        ))
    }

    /// RFC 9368 §4: the peer's version information against what happened on the wire.
    pub(crate) fn validate_version_information(
        &self,
        info: Option<&VersionInformation>,
    ) -> Result<(), TransportError> {
        let original = self.original_version();
        match (self.side, info) {
            (Side::Server, Some(info)) if info.chosen != original => Err(vn_error(format!(
                "the client's chosen version {} differs from the version of its Initial packets {original}",
                info.chosen
            ))),
            (Side::Client, Some(info)) if info.chosen != self.version => Err(vn_error(format!(
                "the server's chosen version {} differs from the negotiated version {}",
                info.chosen, self.version
            ))),
            (Side::Client, Some(info)) if !self.versions.available.contains(&info.chosen) => {
                Err(vn_error(format!("the server chose {}, which we did not offer", info.chosen)))
            }
            (Side::Client, None) if self.version != original => Err(vn_error(
                "the server switched versions without sending version_information".into(),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(extensions: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0xaa; 32]);
        body.extend_from_slice(&[0]); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut ext = Vec::new();
        for (ty, data) in extensions {
            ext.extend_from_slice(&ty.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(data);
        }
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut out = vec![1];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn client_hello_extensions_are_found() {
        let h = hello(&[(0, b"sni"), (0x39, b"params"), (42, b"")]);
        assert_eq!(client_hello_len(&h), Some(h.len()));
        let info = parse_client_hello(&h).unwrap();
        assert_eq!(info.transport_params, Some(&b"params"[..]));
        assert!(info.early_data);
        let h = hello(&[(0x39, b"p")]);
        assert!(!parse_client_hello(&h).unwrap().early_data);
        // Truncated or not a ClientHello: no answer, no panic.
        assert_eq!(parse_client_hello(&h[..h.len() - 1]), None);
        let mut not_hello = h.clone();
        not_hello[0] = 2;
        assert_eq!(client_hello_len(&not_hello), None);
        assert_eq!(parse_client_hello(&not_hello), None);
    }

    #[test]
    fn v1_and_v2_are_compatible_both_ways() {
        assert!(compatible(Version::V1, Version::V2));
        assert!(compatible(Version::V2, Version::V1));
        assert!(!compatible(Version::V1, Version(0x1a2a_3a4a)));
    }

    proptest::proptest! {
        #[test]
        fn client_hello_parser_never_panics(data: Vec<u8>) {
            let _ = parse_client_hello(&data);
        }
    }
}
