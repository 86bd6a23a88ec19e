//! Packet keys for a QUIC version other than the one the TLS connection was created with
//! (compatible version negotiation, RFC 9368 §2.3; RFC 9369 §3.3.2 for the v2 labels).
//!
//! rustls fixes the QUIC version of a connection when it is created, and with it the labels that
//! turn TLS traffic secrets into packet keys. A client offering QUIC v2 in its version
//! information starts in v1 and learns only from the server's first packets that the
//! connection goes on in v2 (RFC 9369 §4: "the first long header Version field that differs
//! from the original version"). From then on its Handshake and 1-RTT keys come from here:
//!
//! - [`SecretCapture`], installed as the rustls `KeyLog` of a client config, hands the
//!   handshake and application traffic secrets of registered connections to them (and passes
//!   every line on to the key log the user configured);
//! - [`keys`] and [`VersionSecrets`] expand those secrets with the negotiated version's labels
//!   (`quicv2 key`, `quicv2 iv`, `quicv2 hp`, `quicv2 ku`) into AEAD and header-protection keys
//!   of the crate's backend (aws-lc-rs or ring).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::crypto::tls13::OkmBlock;
use rustls::quic::{DirectionalKeys, HeaderProtectionKey, Keys, PacketKey, PacketKeySet, Tag};
use rustls::{CipherSuite, KeyLog, Tls13CipherSuite};

// The library whose cipher suites `super::default_provider` uses: ring when it is there.
#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
use aws_lc_rs as backend;
#[cfg(feature = "ring")]
use ring as backend;

use super::CryptoError;
use crate::types::Side;
use crate::wire::Version;

/// The HKDF labels of a QUIC version (RFC 9001 §5.1, §6.1; RFC 9369 §3.3.2).
#[derive(Clone, Copy)]
struct Labels {
    key: &'static [u8],
    iv: &'static [u8],
    hp: &'static [u8],
    ku: &'static [u8],
}

/// The labels of QUIC v1 (RFC 9001 §5.1, §6.1).
static V1_LABELS: Labels = Labels {
    key: b"quic key",
    iv: b"quic iv",
    hp: b"quic hp",
    ku: b"quic ku",
};

/// The labels of QUIC v2 (RFC 9369 §3.3.2).
static V2_LABELS: Labels = Labels {
    key: b"quicv2 key",
    iv: b"quicv2 iv",
    hp: b"quicv2 hp",
    ku: b"quicv2 ku",
};

fn labels(version: Version) -> Result<&'static Labels, CryptoError> {
    match version {
        Version::V1 => Ok(&V1_LABELS),
        Version::V2 => Ok(&V2_LABELS),
        other => Err(CryptoError::UnsupportedVersion(other)),
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context, into `out`.
fn expand_label(suite: &Tls13CipherSuite, secret: &OkmBlock, label: &[u8], out: &mut [u8]) {
    let expander = suite.hkdf_provider.expander_for_okm(secret);
    let len = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    // The output lengths asked for here (at most 48 bytes) are always within HKDF's limit.
    let _ = expander.expand_slice(&[&len, &label_len, b"tls13 ", label, &[0]], out);
}

/// The AEAD of a TLS 1.3 cipher suite usable with QUIC (RFC 9001 §5.3).
#[derive(Clone, Copy)]
enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl Aead {
    fn of(suite: &Tls13CipherSuite) -> Result<Self, CryptoError> {
        match suite.common.suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => Ok(Self::Aes128Gcm),
            CipherSuite::TLS13_AES_256_GCM_SHA384 => Ok(Self::Aes256Gcm),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => Ok(Self::ChaCha20Poly1305),
            other => Err(CryptoError::UnsupportedSuite(other)),
        }
    }

    fn key_len(self) -> usize {
        match self {
            Self::Aes128Gcm => 16,
            Self::Aes256Gcm | Self::ChaCha20Poly1305 => 32,
        }
    }

    fn packet_alg(self) -> &'static backend::aead::Algorithm {
        match self {
            Self::Aes128Gcm => &backend::aead::AES_128_GCM,
            Self::Aes256Gcm => &backend::aead::AES_256_GCM,
            Self::ChaCha20Poly1305 => &backend::aead::CHACHA20_POLY1305,
        }
    }

    fn header_alg(self) -> &'static backend::aead::quic::Algorithm {
        match self {
            Self::Aes128Gcm => &backend::aead::quic::AES_128,
            Self::Aes256Gcm => &backend::aead::quic::AES_256,
            Self::ChaCha20Poly1305 => &backend::aead::quic::CHACHA20,
        }
    }

    /// RFC 9001 §6.6: packets one key may protect, and forgeries it may see.
    fn limits(self) -> (u64, u64) {
        match self {
            Self::Aes128Gcm | Self::Aes256Gcm => (1 << 23, 1 << 52),
            Self::ChaCha20Poly1305 => (u64::MAX, 1 << 36),
        }
    }
}

/// A payload key: the AEAD with the per-packet nonce of RFC 9001 §5.3.
pub struct OwnPacketKey {
    key: backend::aead::LessSafeKey,
    iv: [u8; 12],
    limits: (u64, u64),
}

impl OwnPacketKey {
    fn nonce(&self, packet_number: u64) -> backend::aead::Nonce {
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(packet_number.to_be_bytes()) {
            *n ^= p;
        }
        backend::aead::Nonce::assume_unique_for_key(nonce)
    }

    /// Seals a packet payload whose plaintext ends with `extra`, read where it lies instead
    /// of copied in first (RFC 9001 §5.3): `payload` is the plaintext's first `split` bytes,
    /// then room for `extra`, then room for the tag. `payload[..split]` is encrypted in place
    /// and `extra` straight into the room after it, then the tag goes last. A packet of stream
    /// data is sealed this way from the stream's buffer, without copying the data into the
    /// packet first.
    ///
    /// # Errors
    /// If `payload` is not `split + extra.len() + 16` bytes long, or the AEAD refuses.
    pub fn seal_split(
        &self,
        packet_number: u64,
        header: &[u8],
        payload: &mut [u8],
        split: usize,
        extra: &[u8],
    ) -> Result<(), CryptoError> {
        if split.checked_add(extra.len() + 16) != Some(payload.len()) {
            return Err(CryptoError::EncryptFailed);
        }
        #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
        {
            let (in_out, extra_out_and_tag) = payload.split_at_mut(split);
            self.key
                .seal_in_place_scatter(
                    self.nonce(packet_number),
                    backend::aead::Aad::from(header),
                    in_out,
                    extra,
                    extra_out_and_tag,
                )
                .map_err(|_| CryptoError::EncryptFailed)
        }
        // ring has no scattered seal: `extra` is copied in, then all is sealed in place.
        #[cfg(feature = "ring")]
        {
            let plain_len = split + extra.len();
            payload[split..plain_len].copy_from_slice(extra);
            let (plain, tag_out) = payload.split_at_mut(plain_len);
            let tag = self
                .key
                .seal_in_place_separate_tag(
                    self.nonce(packet_number),
                    backend::aead::Aad::from(header),
                    plain,
                )
                .map_err(|_| CryptoError::EncryptFailed)?;
            tag_out.copy_from_slice(tag.as_ref());
            Ok(())
        }
    }
}

impl PacketKey for OwnPacketKey {
    fn encrypt_in_place(
        &self,
        packet_number: u64,
        header: &[u8],
        payload: &mut [u8],
    ) -> Result<Tag, rustls::Error> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                self.nonce(packet_number),
                backend::aead::Aad::from(header),
                payload,
            )
            .map_err(|_| rustls::Error::EncryptError)?;
        Ok(Tag::from(tag.as_ref()))
    }

    fn decrypt_in_place<'a>(
        &self,
        packet_number: u64,
        header: &[u8],
        payload: &'a mut [u8],
    ) -> Result<&'a [u8], rustls::Error> {
        let plain = self
            .key
            .open_in_place(
                self.nonce(packet_number),
                backend::aead::Aad::from(header),
                payload,
            )
            .map_err(|_| rustls::Error::DecryptError)?;
        Ok(plain)
    }

    fn tag_len(&self) -> usize {
        16
    }

    fn confidentiality_limit(&self) -> u64 {
        self.limits.0
    }

    fn integrity_limit(&self) -> u64 {
        self.limits.1
    }
}

/// Header protection (RFC 9001 §5.4).
struct OwnHeaderKey(backend::aead::quic::HeaderProtectionKey);

impl OwnHeaderKey {
    fn xor(
        &self,
        sample: &[u8],
        first: &mut u8,
        packet_number: &mut [u8],
        masking: bool,
    ) -> Result<(), rustls::Error> {
        let mask = self
            .0
            .new_mask(sample)
            .map_err(|_| rustls::Error::General("header protection sample rejected".into()))?;
        // RFC 9001 §5.4.1: four bits of a long header's first byte, five of a short one's.
        let bits = if *first & 0x80 != 0 { 0x0f } else { 0x1f };
        if masking {
            let pn_len = usize::from(*first & 0x03) + 1;
            *first ^= mask[0] & bits;
            xor_pn(packet_number, &mask, pn_len);
        } else {
            *first ^= mask[0] & bits;
            let pn_len = usize::from(*first & 0x03) + 1;
            xor_pn(packet_number, &mask, pn_len);
        }
        Ok(())
    }
}

fn xor_pn(packet_number: &mut [u8], mask: &[u8; 5], pn_len: usize) {
    for (b, m) in packet_number.iter_mut().zip(&mask[1..]).take(pn_len) {
        *b ^= m;
    }
}

impl HeaderProtectionKey for OwnHeaderKey {
    fn encrypt_in_place(
        &self,
        sample: &[u8],
        first: &mut u8,
        packet_number: &mut [u8],
    ) -> Result<(), rustls::Error> {
        self.xor(sample, first, packet_number, true)
    }

    fn decrypt_in_place(
        &self,
        sample: &[u8],
        first: &mut u8,
        packet_number: &mut [u8],
    ) -> Result<(), rustls::Error> {
        self.xor(sample, first, packet_number, false)
    }

    fn sample_len(&self) -> usize {
        16
    }
}

fn packet_key(
    suite: &Tls13CipherSuite,
    aead: Aead,
    labels: &Labels,
    secret: &OkmBlock,
) -> Result<Box<OwnPacketKey>, CryptoError> {
    let mut key = [0u8; 32];
    let key = &mut key[..aead.key_len()];
    expand_label(suite, secret, labels.key, key);
    let mut iv = [0u8; 12];
    expand_label(suite, secret, labels.iv, &mut iv);
    let unbound = backend::aead::UnboundKey::new(aead.packet_alg(), key)
        .map_err(|_| CryptoError::UnsupportedSuite(suite.common.suite))?;
    key.fill(0);
    Ok(Box::new(OwnPacketKey {
        key: backend::aead::LessSafeKey::new(unbound),
        iv,
        limits: aead.limits(),
    }))
}

fn header_key(
    suite: &Tls13CipherSuite,
    aead: Aead,
    labels: &Labels,
    secret: &OkmBlock,
) -> Result<Box<dyn HeaderProtectionKey>, CryptoError> {
    let mut hp = [0u8; 32];
    let hp = &mut hp[..aead.key_len()];
    expand_label(suite, secret, labels.hp, hp);
    let header = backend::aead::quic::HeaderProtectionKey::new(aead.header_alg(), hp)
        .map_err(|_| CryptoError::UnsupportedSuite(suite.common.suite))?;
    hp.fill(0);
    Ok(Box::new(OwnHeaderKey(header)))
}

fn directional(
    suite: &Tls13CipherSuite,
    aead: Aead,
    labels: &Labels,
    secret: &OkmBlock,
) -> Result<DirectionalKeys, CryptoError> {
    Ok(DirectionalKeys {
        header: header_key(suite, aead, labels, secret)?,
        packet: packet_key(suite, aead, labels, secret)?,
    })
}

/// The traffic secrets of one direction pair, as TLS derived them.
#[derive(Clone)]
pub struct TrafficSecrets {
    /// The client's traffic secret.
    pub client: OkmBlock,
    /// The server's traffic secret.
    pub server: OkmBlock,
}

/// Packet keys for `side` from a pair of traffic secrets, with `version`'s labels.
///
/// # Errors
/// [`CryptoError::UnsupportedSuite`] for a suite other than the three QUIC uses,
/// [`CryptoError::UnsupportedVersion`] for a version without labels here.
pub fn keys(
    suite: &Tls13CipherSuite,
    version: Version,
    side: Side,
    secrets: &TrafficSecrets,
) -> Result<Keys, CryptoError> {
    let aead = Aead::of(suite)?;
    let labels = labels(version)?;
    let (local, remote) = match side {
        Side::Client => (&secrets.client, &secrets.server),
        Side::Server => (&secrets.server, &secrets.client),
    };
    Ok(Keys {
        local: directional(suite, aead, labels, local)?,
        remote: directional(suite, aead, labels, remote)?,
    })
}

/// The 1-RTT secrets after the current generation, for key updates (RFC 9001 §6.1) under
/// `version`'s `ku` label: the counterpart of `rustls::quic::Secrets`.
#[derive(Clone)]
pub struct VersionSecrets {
    suite: &'static Tls13CipherSuite,
    aead: Aead,
    labels: &'static Labels,
    side: Side,
    secrets: TrafficSecrets,
}

impl VersionSecrets {
    /// The secrets of the generation after `current` (the 1-RTT secrets TLS derived).
    ///
    /// # Errors
    /// As [`keys`].
    pub fn after(
        suite: &'static Tls13CipherSuite,
        version: Version,
        side: Side,
        current: &TrafficSecrets,
    ) -> Result<Self, CryptoError> {
        let mut s = Self {
            suite,
            aead: Aead::of(suite)?,
            labels: labels(version)?,
            side,
            secrets: current.clone(),
        };
        s.update();
        Ok(s)
    }

    fn update(&mut self) {
        let len = self.suite.common.hash_provider.output_len();
        for secret in [&mut self.secrets.client, &mut self.secrets.server] {
            let mut next = [0u8; OkmBlock::MAX_LEN];
            expand_label(self.suite, secret, self.labels.ku, &mut next[..len]);
            *secret = OkmBlock::new(&next[..len]);
            next.fill(0);
        }
    }

    /// The packet keys of the next generation; the secrets move one generation on.
    pub fn next_packet_keys(&mut self) -> PacketKeySet {
        let (local, remote) = match self.side {
            Side::Client => (&self.secrets.client, &self.secrets.server),
            Side::Server => (&self.secrets.server, &self.secrets.client),
        };
        // The suite and version were checked in `after`; key construction cannot fail here.
        let make = |s| {
            packet_key(self.suite, self.aead, self.labels, s)
                .unwrap_or_else(|_| unreachable!("suite checked when the secrets were made"))
        };
        let keys = PacketKeySet {
            local: make(local),
            remote: make(remote),
        };
        self.update();
        keys
    }
}

/// What an idle connection keeps in place of its 1-RTT keys: the secrets to expand them again
/// (RFC 9001 §5.1: AEAD key, IV and header-protection key all come from a traffic secret).
/// Header protection keys come from the first 1-RTT secrets and never change (§6); packet
/// keys come from the current generation's secrets, which a key update moves on (§6.1).
#[derive(Clone)]
pub struct KeySource {
    suite: &'static Tls13CipherSuite,
    aead: Aead,
    labels: &'static Labels,
    side: Side,
    /// The first 1-RTT secrets (header protection).
    first: TrafficSecrets,
    /// The current generation's secrets after a key update; `None` while it is the first
    /// (most connections never update, and this stays out of the idle footprint).
    current: Option<Box<TrafficSecrets>>,
}

impl KeySource {
    /// The source of the 1-RTT keys that `first` (the application traffic secrets TLS derived)
    /// expand to under `version`'s labels.
    ///
    /// # Errors
    /// As [`keys`].
    pub fn new(
        suite: &'static Tls13CipherSuite,
        version: Version,
        side: Side,
        first: TrafficSecrets,
    ) -> Result<Self, CryptoError> {
        Ok(Self {
            suite,
            aead: Aead::of(suite)?,
            labels: labels(version)?,
            side,
            first,
            current: None,
        })
    }

    /// Moves on to the next generation (a key update, RFC 9001 §6.1).
    pub fn update(&mut self) {
        let len = self.suite.common.hash_provider.output_len();
        let current = self
            .current
            .get_or_insert_with(|| Box::new(self.first.clone()));
        for secret in [&mut current.client, &mut current.server] {
            let mut next = [0u8; OkmBlock::MAX_LEN];
            expand_label(self.suite, secret, self.labels.ku, &mut next[..len]);
            *secret = OkmBlock::new(&next[..len]);
            next.fill(0);
        }
    }

    /// The current generation's packet key for what this side sends, as the concrete type
    /// that can seal a payload from two places ([`OwnPacketKey::seal_split`]).
    pub fn local_packet_key(&self) -> Box<OwnPacketKey> {
        let s = self.current.as_deref().unwrap_or(&self.first);
        self.packet_key(match self.side {
            Side::Client => &s.client,
            Side::Server => &s.server,
        })
    }

    fn packet_key(&self, secret: &OkmBlock) -> Box<OwnPacketKey> {
        // The suite and version were checked in `new`; key construction cannot fail here.
        packet_key(self.suite, self.aead, self.labels, secret)
            .unwrap_or_else(|_| unreachable!("suite checked when the source was made"))
    }

    fn header_key(&self, secret: &OkmBlock) -> Box<dyn HeaderProtectionKey> {
        header_key(self.suite, self.aead, self.labels, secret)
            .unwrap_or_else(|_| unreachable!("suite checked when the source was made"))
    }

    /// The current generation's keys, expanded again, with the packet key for what this side
    /// sends as [`KeySource::local_packet_key`] gives it.
    pub fn own_keys(&self) -> OwnKeys {
        let ordered = |s: &'_ TrafficSecrets| match self.side {
            Side::Client => (s.client.clone(), s.server.clone()),
            Side::Server => (s.server.clone(), s.client.clone()),
        };
        let (local_first, remote_first) = ordered(&self.first);
        let (local, remote) = ordered(self.current.as_deref().unwrap_or(&self.first));
        OwnKeys {
            local_packet: self.packet_key(&local),
            local_header: self.header_key(&local_first),
            remote: DirectionalKeys {
                header: self.header_key(&remote_first),
                packet: self.packet_key(&remote),
            },
        }
    }

    /// The current generation's keys, expanded again.
    pub fn keys(&self) -> Keys {
        let own = self.own_keys();
        Keys {
            local: DirectionalKeys {
                header: own.local_header,
                packet: own.local_packet,
            },
            remote: own.remote,
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the source out (connection hibernation): the suite, the version's labels, the
    /// side and the secrets.
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) {
        p.u64(u64::from(u16::from(self.suite.common.suite)));
        p.bool(std::ptr::eq(self.labels, &V2_LABELS));
        p.bool(self.side.is_server());
        let secrets = |p: &mut crate::pack::Packer, s: &TrafficSecrets| {
            p.bytes(s.client.as_ref());
            p.bytes(s.server.as_ref());
        };
        secrets(p, &self.first);
        p.bool(self.current.is_some());
        if let Some(c) = &self.current {
            secrets(p, c);
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`KeySource::pack`] wrote; the suite comes from `provider`.
    pub(crate) fn unpack(
        u: &mut crate::pack::Unpacker<'_>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Option<Self> {
        let id = CipherSuite::from(u.u16()?);
        let suite = provider.cipher_suites.iter().find_map(|s| match s {
            rustls::SupportedCipherSuite::Tls13(t) if t.common.suite == id => Some(*t),
            _ => None,
        })?;
        let labels = if u.bool()? { &V2_LABELS } else { &V1_LABELS };
        let side = if u.bool()? {
            Side::Server
        } else {
            Side::Client
        };
        let secrets = |u: &mut crate::pack::Unpacker<'_>| {
            Some(TrafficSecrets {
                client: OkmBlock::new(u.bytes()?),
                server: OkmBlock::new(u.bytes()?),
            })
        };
        let first = secrets(u)?;
        let current = if u.bool()? {
            Some(Box::new(secrets(u)?))
        } else {
            None
        };
        Some(Self {
            suite,
            aead: Aead::of(suite).ok()?,
            labels,
            side,
            first,
            current,
        })
    }

    /// The secrets of the generation after the current one (what a key update moves to), so
    /// that a connection can let its own copy go while it is idle.
    pub fn next_secrets(&self) -> VersionSecrets {
        let mut next = VersionSecrets {
            suite: self.suite,
            aead: self.aead,
            labels: self.labels,
            side: self.side,
            secrets: self.current.as_deref().unwrap_or(&self.first).clone(),
        };
        next.update();
        next
    }
}

/// A connection's current 1-RTT keys from its [`KeySource`], the packet key for what it
/// sends as the concrete type.
pub struct OwnKeys {
    /// The packet key for what this side sends.
    pub local_packet: Box<OwnPacketKey>,
    /// Header protection for what this side sends.
    pub local_header: Box<dyn HeaderProtectionKey>,
    /// The keys for what the peer sends.
    pub remote: DirectionalKeys,
}

/// Traffic secrets captured for one connection.
#[derive(Default)]
struct Captured {
    client_handshake: Option<OkmBlock>,
    server_handshake: Option<OkmBlock>,
    client_traffic: Option<OkmBlock>,
    server_traffic: Option<OkmBlock>,
}

/// At most this many connections wait for their secrets at once (each is a client in the
/// middle of a handshake that offered another version).
const MAX_PENDING: usize = 4096;

/// A rustls `KeyLog` that hands the traffic secrets of registered client connections to them
/// and passes every line on to the key log the user configured (for `SSLKEYLOGFILE`).
pub struct SecretCapture {
    inner: Arc<dyn KeyLog>,
    pending: Mutex<HashMap<[u8; 32], Captured>>,
}

impl std::fmt::Debug for SecretCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCapture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

const CLIENT_HANDSHAKE: &str = "CLIENT_HANDSHAKE_TRAFFIC_SECRET";
const SERVER_HANDSHAKE: &str = "SERVER_HANDSHAKE_TRAFFIC_SECRET";
const CLIENT_TRAFFIC: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_TRAFFIC: &str = "SERVER_TRAFFIC_SECRET_0";

impl SecretCapture {
    /// Wraps the user's key log.
    pub fn new(inner: Arc<dyn KeyLog>) -> Self {
        Self {
            inner,
            pending: Mutex::new(HashMap::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Captured>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts capturing the secrets of the connection whose ClientHello has `client_random`.
    /// Returns false (nothing captured) when too many connections are waiting.
    pub fn register(&self, client_random: [u8; 32]) -> bool {
        let mut pending = self.pending();
        if pending.len() >= MAX_PENDING {
            return false;
        }
        pending.insert(client_random, Captured::default());
        true
    }

    /// Stops capturing for `client_random` and forgets what was captured.
    pub fn forget(&self, client_random: &[u8; 32]) {
        self.pending().remove(client_random);
    }

    /// The handshake traffic secrets, once TLS has derived them.
    pub fn handshake(&self, client_random: &[u8; 32]) -> Option<TrafficSecrets> {
        let pending = self.pending();
        let c = pending.get(client_random)?;
        Some(TrafficSecrets {
            client: c.client_handshake.clone()?,
            server: c.server_handshake.clone()?,
        })
    }

    /// The first application traffic secrets, once TLS has derived them.
    pub fn traffic(&self, client_random: &[u8; 32]) -> Option<TrafficSecrets> {
        let pending = self.pending();
        let c = pending.get(client_random)?;
        Some(TrafficSecrets {
            client: c.client_traffic.clone()?,
            server: c.server_traffic.clone()?,
        })
    }
}

impl KeyLog for SecretCapture {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        if self.inner.will_log(label) {
            self.inner.log(label, client_random, secret);
        }
        let (Ok(random), true) = (
            <[u8; 32]>::try_from(client_random),
            secret.len() <= OkmBlock::MAX_LEN,
        ) else {
            return;
        };
        let mut pending = self.pending();
        let Some(c) = pending.get_mut(&random) else {
            return;
        };
        let slot = match label {
            CLIENT_HANDSHAKE => &mut c.client_handshake,
            SERVER_HANDSHAKE => &mut c.server_handshake,
            CLIENT_TRAFFIC => &mut c.client_traffic,
            SERVER_TRAFFIC => &mut c.server_traffic,
            _ => return,
        };
        *slot = Some(OkmBlock::new(secret));
    }

    fn will_log(&self, label: &str) -> bool {
        matches!(
            label,
            CLIENT_HANDSHAKE | SERVER_HANDSHAKE | CLIENT_TRAFFIC | SERVER_TRAFFIC
        ) || self.inner.will_log(label)
    }
}

/// A connection's registration with a [`SecretCapture`], dropped with it.
pub struct CaptureHandle {
    capture: Arc<SecretCapture>,
    client_random: [u8; 32],
}

impl std::fmt::Debug for CaptureHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureHandle").finish_non_exhaustive()
    }
}

impl CaptureHandle {
    /// Registers the connection whose ClientHello has `client_random`; `None` when the capture
    /// is full.
    pub fn register(capture: Arc<SecretCapture>, client_random: [u8; 32]) -> Option<Self> {
        capture.register(client_random).then_some(Self {
            capture,
            client_random,
        })
    }

    /// The handshake traffic secrets, once derived.
    pub fn handshake(&self) -> Option<TrafficSecrets> {
        self.capture.handshake(&self.client_random)
    }

    /// The first application traffic secrets, once derived.
    pub fn traffic(&self) -> Option<TrafficSecrets> {
        self.capture.traffic(&self.client_random)
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        self.capture.forget(&self.client_random);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(s: rustls::SupportedCipherSuite) -> &'static Tls13CipherSuite {
        s.tls13().unwrap()
    }

    /// With the v1 labels our keys must equal rustls' own: seal with one, open with the other.
    #[test]
    fn v1_keys_match_rustls() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        for s in [
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            let t = suite(s);
            let dcid = [7u8; 8];
            // rustls' Initial keys come from secrets we can reproduce: HKDF-Extract with the
            // v1 salt, then "client in" / "server in". Compare payload and header protection.
            let q = t.quic_suite().unwrap();
            let ours_from = |label: &[u8]| {
                let salt = [
                    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4,
                    0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
                ];
                let expander = t.hkdf_provider.extract_from_secret(Some(&salt), &dcid);
                let len = t.common.hash_provider.output_len();
                let mut out = [0u8; 64];
                let l = (len as u16).to_be_bytes();
                let ll = [(6 + label.len()) as u8];
                expander
                    .expand_slice(&[&l, &ll, b"tls13 ", label, &[0]], &mut out[..len])
                    .unwrap();
                OkmBlock::new(&out[..len])
            };
            let secrets = TrafficSecrets {
                client: ours_from(b"client in"),
                server: ours_from(b"server in"),
            };
            let ours = keys(t, Version::V1, Side::Client, &secrets).unwrap();
            let theirs = q.keys(&dcid, rustls::Side::Server, rustls::quic::Version::V1);
            let header = [0xc3u8, 1, 2, 3, 4];
            let mut payload = *b"a packet payload of some length";
            let tag = ours
                .local
                .packet
                .encrypt_in_place(42, &header, &mut payload)
                .unwrap();
            let mut sealed = payload.to_vec();
            sealed.extend_from_slice(tag.as_ref());
            let plain = theirs
                .remote
                .packet
                .decrypt_in_place(42, &header, &mut sealed)
                .unwrap();
            assert_eq!(plain, b"a packet payload of some length");
            // Header protection: ours masks, rustls unmasks.
            let sample = [9u8; 16];
            let (mut first, mut pn) = (0xc1u8, [0x12u8, 0x34, 0, 0]);
            ours.local
                .header
                .encrypt_in_place(&sample, &mut first, &mut pn[..2])
                .unwrap();
            assert_ne!((first, pn), (0xc1, [0x12, 0x34, 0, 0]));
            theirs
                .remote
                .header
                .decrypt_in_place(&sample, &mut first, &mut pn)
                .unwrap();
            assert_eq!((first, &pn[..2]), (0xc1, &[0x12u8, 0x34][..]));
        }
    }

    /// RFC 9369 Appendix A: the v2 client Initial key, IV and header protection key from the
    /// RFC's client initial secret, through our labels.
    #[test]
    fn v2_labels_match_the_rfc_vectors() {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        let t = suite(cs::TLS13_AES_128_GCM_SHA256);
        let secret = OkmBlock::new(
            &hex::decode("14ec9d6eb9fd7af83bf5a668bc17a7e283766aade7ecd0891f70f9ff7f4bf47b")
                .unwrap(),
        );
        let l = labels(Version::V2).unwrap();
        let mut key = [0u8; 16];
        expand_label(t, &secret, l.key, &mut key);
        assert_eq!(hex::encode(key), "8b1a0bc121284290a29e0971b5cd045d");
        let mut iv = [0u8; 12];
        expand_label(t, &secret, l.iv, &mut iv);
        assert_eq!(hex::encode(iv), "91f73e2351d8fa91660e909f");
        let mut hp = [0u8; 16];
        expand_label(t, &secret, l.hp, &mut hp);
        assert_eq!(hex::encode(hp), "45b95e15235d6f45a6b19cbcb0294ba9");
    }

    #[test]
    fn capture_keeps_only_registered_connections() {
        let capture = Arc::new(SecretCapture::new(Arc::new(rustls::KeyLogFile::new())));
        assert!(capture.will_log(CLIENT_HANDSHAKE));
        let handle = CaptureHandle::register(capture.clone(), [1; 32]).unwrap();
        capture.log(CLIENT_HANDSHAKE, &[1; 32], &[5; 32]);
        capture.log(SERVER_HANDSHAKE, &[1; 32], &[6; 32]);
        capture.log(CLIENT_HANDSHAKE, &[2; 32], &[7; 32]);
        let hs = handle.handshake().unwrap();
        assert_eq!(hs.client.as_ref(), &[5; 32]);
        assert_eq!(hs.server.as_ref(), &[6; 32]);
        assert!(handle.traffic().is_none());
        assert!(capture.handshake(&[2; 32]).is_none());
        drop(handle);
        assert!(capture.pending().is_empty());
    }
}
