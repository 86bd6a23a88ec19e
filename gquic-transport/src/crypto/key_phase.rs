//! 1-RTT key generations and key update (RFC 9001 §6), with the AEAD limits of §6.6.
//!
//! [`KeyPhase`] owns the current packet keys, the next generation (derived ahead of time, so a
//! peer-initiated update costs nothing on the receive path) and the previous generation's
//! receive key (kept so that reordered packets from before an update still decrypt, until the
//! connection calls [`KeyPhase::discard_previous`] about three PTOs later, §6.5). Header
//! protection keys never change (§6).

use rustls::quic::{HeaderProtectionKey, Keys, PacketKey, PacketKeySet, Secrets};

use crate::error::TransportErrorCode;

/// Why a key-phase operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyUpdateError {
    /// RFC 9001 §6.1: an endpoint must not initiate a further update before a packet sent in
    /// the current phase has been acknowledged.
    #[error("the previous key update is not yet confirmed by an acknowledgment")]
    NotConfirmed,
    /// RFC 9001 §6.6: the confidentiality or integrity limit of the AEAD was reached.
    #[error("AEAD usage limit reached")]
    LimitReached,
    /// RFC 9001 §6.1: no key update before the handshake is confirmed (or after the
    /// connection closed); try again once it is established.
    #[error("the handshake is not confirmed yet: key updates start after it")]
    HandshakeNotConfirmed,
}

impl KeyUpdateError {
    /// The transport error to close with if the condition is the peer's doing.
    pub fn code(self) -> TransportErrorCode {
        match self {
            Self::NotConfirmed | Self::HandshakeNotConfirmed => {
                TransportErrorCode::KEY_UPDATE_ERROR
            }
            Self::LimitReached => TransportErrorCode::AEAD_LIMIT_REACHED,
        }
    }
}

/// Which generation of receive keys to try for a packet (RFC 9001 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKey {
    /// The current generation.
    Current,
    /// The generation before the last update (a reordered, older packet).
    Previous,
    /// The next generation: the peer has initiated a key update. Call
    /// [`KeyPhase::on_packet_received`] once the packet authenticates.
    Next,
}

/// Where the next generations of 1-RTT keys come from.
#[derive(Clone)]
pub enum NextSecrets {
    /// The secrets rustls hands over with `KeyChange::OneRtt` (the version the TLS connection
    /// was created with).
    Rustls(Secrets),
    /// Secrets expanded with the labels of a version a server switched us to (RFC 9368 §2.3).
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    Version(super::version_keys::VersionSecrets),
}

impl NextSecrets {
    fn next_packet_keys(&mut self) -> PacketKeySet {
        match self {
            Self::Rustls(s) => s.next_packet_keys(),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            Self::Version(s) => s.next_packet_keys(),
        }
    }
}

impl From<Secrets> for NextSecrets {
    fn from(s: Secrets) -> Self {
        Self::Rustls(s)
    }
}

/// The 1-RTT key state of one connection.
pub struct KeyPhase {
    /// The next generation's secrets; let go while asleep with a `source`, which gives them
    /// again ([`KeyPhase::secrets_mut`]).
    secrets: Option<Box<NextSecrets>>,
    /// The Key Phase bit of the current generation.
    phase: bool,
    local: LocalKey,
    remote: Box<dyn PacketKey>,
    /// The next generation's keys, derived ahead from a copy of `secrets` (RFC 9001 §6.3
    /// recommends deriving ahead, so that a packet of the next phase takes no longer to
    /// open); `None` after [`KeyPhase::hibernate`] until needed again.
    next: Option<PacketKeySet>,
    previous_remote: Option<Box<dyn PacketKey>>,
    local_header: Box<dyn HeaderProtectionKey>,
    remote_header: Box<dyn HeaderProtectionKey>,
    /// Lowest packet number received in the current phase (RFC 9001 §6.5).
    first_received_pn: Option<u64>,
    /// Lowest packet number sent in the current phase; an ACK at or above it confirms the
    /// update (§6.1).
    first_sent_pn: Option<u64>,
    confirmed: bool,
    /// Whether a packet under the current keys carried an ACK for a packet received in the
    /// current phase (RFC 9001 §6.2: before that, another update by the peer is an error).
    acked_in_phase: bool,
    /// Packets encrypted with the current local key (§6.6 confidentiality limit).
    encrypted: u64,
    /// Packets that failed authentication over the whole connection (§6.6 integrity limit).
    failed: u64,
    /// Our own limit on packets per key, below the AEAD's, to update automatically.
    update_interval: u64,
    /// Key updates so far, by either side.
    generation: u64,
    /// Where the current keys can be expanded from again, when the connection has it.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    source: Option<Box<super::version_keys::KeySource>>,
    /// Whether the four current keys are dropped ([`KeyPhase::hibernate`]) until
    /// [`KeyPhase::wake`].
    asleep: bool,
    /// Whether `source` was checked against the keys in use.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    source_checked: bool,
}

/// The packet key for what we send: the one TLS gave, or the same key expanded from the
/// connection's key source as the type that seals a payload from two places
/// ([`KeyPhase::split_sealer`]).
enum LocalKey {
    Tls(Box<dyn PacketKey>),
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    Own(Box<super::version_keys::OwnPacketKey>),
}

impl LocalKey {
    fn as_dyn(&self) -> &dyn PacketKey {
        match self {
            LocalKey::Tls(k) => k.as_ref(),
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            LocalKey::Own(k) => k.as_ref(),
        }
    }
}

/// Stands in for a dropped key while a connection hibernates: refuses every operation (the
/// connection wakes its keys before any packet is sealed or opened). Zero-sized, so boxing it
/// allocates nothing. Only a connection with a key source (a crypto backend) sleeps.
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
struct Asleep;

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
impl PacketKey for Asleep {
    fn encrypt_in_place(
        &self,
        _: u64,
        _: &[u8],
        _: &mut [u8],
    ) -> Result<rustls::quic::Tag, rustls::Error> {
        Err(rustls::Error::EncryptError)
    }

    fn decrypt_in_place<'a>(
        &self,
        _: u64,
        _: &[u8],
        _: &'a mut [u8],
    ) -> Result<&'a [u8], rustls::Error> {
        Err(rustls::Error::DecryptError)
    }

    fn tag_len(&self) -> usize {
        16
    }

    fn confidentiality_limit(&self) -> u64 {
        u64::MAX
    }

    fn integrity_limit(&self) -> u64 {
        u64::MAX
    }
}

#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
impl HeaderProtectionKey for Asleep {
    fn encrypt_in_place(&self, _: &[u8], _: &mut u8, _: &mut [u8]) -> Result<(), rustls::Error> {
        Err(rustls::Error::EncryptError)
    }

    fn decrypt_in_place(&self, _: &[u8], _: &mut u8, _: &mut [u8]) -> Result<(), rustls::Error> {
        Err(rustls::Error::DecryptError)
    }

    fn sample_len(&self) -> usize {
        16
    }
}

/// Whether two packet keys seal a probe payload to the same ciphertext and tag.
#[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
fn same_seal(a: &dyn PacketKey, b: &dyn PacketKey) -> bool {
    fn seal(key: &dyn PacketKey) -> Option<[u8; 48]> {
        let mut out = [0x5au8; 48];
        let (payload, tag) = out.split_at_mut(32);
        let t = key.encrypt_in_place(0x1234, b"probe", payload).ok()?;
        let n = t.as_ref().len().min(tag.len());
        tag[..n].copy_from_slice(&t.as_ref()[..n]);
        Some(out)
    }
    seal(a).is_some_and(|x| Some(x) == seal(b))
}

impl std::fmt::Debug for KeyPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPhase")
            .field("phase", &self.phase)
            .field("confirmed", &self.confirmed)
            .field("encrypted", &self.encrypted)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl KeyPhase {
    /// Takes the 1-RTT keys and secrets rustls hands over with `KeyChange::OneRtt` (or the
    /// same, derived for a negotiated version).
    ///
    /// `update_interval` is how many packets may be sent with one key before
    /// [`KeyPhase::should_update`] asks for an update; it is capped below the AEAD's
    /// confidentiality limit.
    pub fn new(keys: Keys, next: impl Into<NextSecrets>, update_interval: u64) -> Self {
        let next = next.into();
        let next_keys = next.clone().next_packet_keys();
        let limit = keys.local.packet.confidentiality_limit();
        Self {
            secrets: Some(Box::new(next)),
            phase: false,
            local: LocalKey::Tls(keys.local.packet),
            remote: keys.remote.packet,
            next: Some(next_keys),
            previous_remote: None,
            local_header: keys.local.header,
            remote_header: keys.remote.header,
            first_received_pn: None,
            first_sent_pn: None,
            confirmed: true,
            acked_in_phase: false,
            encrypted: 0,
            failed: 0,
            update_interval: update_interval.min(limit.saturating_sub(limit / 8)).max(1),
            generation: 0,
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            source: None,
            asleep: false,
            #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
            source_checked: false,
        }
    }

    /// Whether `keys` protect exactly as the current keys do: the same ciphertext and tag for
    /// a probe payload in both directions, the same header-protection masks.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    fn same_keys(&self, keys: &Keys) -> bool {
        fn mask(key: &dyn HeaderProtectionKey) -> Option<[u8; 5]> {
            let sample = [0xa5u8; 16];
            let mut first = 0x40u8;
            let mut pn = [0u8; 4];
            key.encrypt_in_place(&sample, &mut first, &mut pn).ok()?;
            Some([first, pn[0], pn[1], pn[2], pn[3]])
        }
        let packets = [
            (self.local.as_dyn(), keys.local.packet.as_ref()),
            (self.remote.as_ref(), keys.remote.packet.as_ref()),
        ];
        let headers = [
            (self.local_header.as_ref(), keys.local.header.as_ref()),
            (self.remote_header.as_ref(), keys.remote.header.as_ref()),
        ];
        packets.iter().all(|(a, b)| same_seal(*a, *b))
            && headers
                .iter()
                .all(|(a, b)| mask(*a).is_some_and(|x| Some(x) == mask(*b)))
    }

    /// Where the current generation's keys can be expanded from again: with it,
    /// [`KeyPhase::hibernate`] also drops the current keys. Give it right after
    /// [`KeyPhase::new`], with the secrets the keys came from.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub fn set_source(&mut self, mut source: Box<super::version_keys::KeySource>) {
        for _ in 0..self.generation {
            source.update();
        }
        self.source = Some(source);
        if !self.asleep {
            let tls = std::mem::replace(&mut self.local, LocalKey::Tls(Box::new(Asleep)));
            self.local = match tls {
                LocalKey::Tls(k) => self.prefer_own(k),
                own => own,
            };
        }
    }

    /// How many key updates happened, initiated by either side.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the previous generation's receive key is still kept.
    pub fn has_previous(&self) -> bool {
        self.previous_remote.is_some()
    }

    /// The Key Phase bit to send.
    pub fn phase(&self) -> bool {
        self.phase
    }

    /// The key to encrypt the next packet with.
    pub fn local_key(&self) -> &dyn PacketKey {
        self.local.as_dyn()
    }

    /// The key to encrypt the next packet with, when it can seal a payload from two places
    /// ([`super::version_keys::OwnPacketKey::seal_split`]): once the connection's key source
    /// was found to give the very key TLS gave.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub fn split_sealer(&self) -> Option<&super::version_keys::OwnPacketKey> {
        match &self.local {
            LocalKey::Own(k) => Some(k),
            LocalKey::Tls(_) => None,
        }
    }

    /// Whether [`KeyPhase::split_sealer`] gives a key that seals without copying first (with
    /// aws-lc-rs as the crate's only crypto library; ring's seals a copy).
    pub fn seals_split(&self) -> bool {
        #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
        return matches!(self.local, LocalKey::Own(_));
        #[cfg(not(all(feature = "aws-lc-rs", not(feature = "ring"))))]
        false
    }

    /// The local key `tls` gave, or the same one from the key source when the source gives
    /// the very key (a probe payload seals to the same bytes under both) and the source's key
    /// seals from two places without a copy ([`KeyPhase::seals_split`]). With ring, whose
    /// seal copies first just as the path for TLS's key does, `tls` is kept: deriving the key
    /// again and probing both would cost every handshake and key update for nothing.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    fn prefer_own(&self, tls: Box<dyn PacketKey>) -> LocalKey {
        if cfg!(feature = "ring") {
            return LocalKey::Tls(tls);
        }
        let Some(source) = self.source.as_ref() else {
            return LocalKey::Tls(tls);
        };
        let own = source.local_packet_key();
        if same_seal(own.as_ref(), tls.as_ref()) {
            LocalKey::Own(own)
        } else {
            LocalKey::Tls(tls)
        }
    }

    /// Header protection for packets we send.
    pub fn local_header_key(&self) -> &dyn HeaderProtectionKey {
        self.local_header.as_ref()
    }

    /// Header protection for packets we receive.
    pub fn remote_header_key(&self) -> &dyn HeaderProtectionKey {
        self.remote_header.as_ref()
    }

    /// Records that packet `pn` was encrypted with [`KeyPhase::local_key`].
    ///
    /// # Errors
    /// [`KeyUpdateError::LimitReached`] once the confidentiality limit is hit: RFC 9001 §6.6
    /// requires the connection to stop using the key (close, or update first).
    pub fn on_packet_sent(&mut self, pn: u64) -> Result<(), KeyUpdateError> {
        self.first_sent_pn.get_or_insert(pn);
        self.encrypted += 1;
        if self.encrypted >= self.local.as_dyn().confidentiality_limit() {
            return Err(KeyUpdateError::LimitReached);
        }
        Ok(())
    }

    /// Whether enough packets went out under this key that the connection should update now.
    pub fn should_update(&self) -> bool {
        self.confirmed && self.encrypted >= self.update_interval
    }

    /// Which key to try for a received packet with Key Phase bit `phase` and (recovered) packet
    /// number `pn` (RFC 9001 §6.3, §6.5).
    #[inline]
    pub fn remote_key_for(&mut self, phase: bool, pn: u64) -> Option<(RemoteKey, &dyn PacketKey)> {
        if phase == self.phase {
            return Some((RemoteKey::Current, self.remote.as_ref()));
        }
        match (self.first_received_pn, self.previous_remote.is_some()) {
            (Some(first), _) if pn < first => self
                .previous_remote
                .as_deref()
                .map(|k| (RemoteKey::Previous, k)),
            // We updated and the peer has not answered in the new phase yet: the packet was
            // sent before it saw our update (it cannot update again before answering, §6.2).
            (None, true) => self
                .previous_remote
                .as_deref()
                .map(|k| (RemoteKey::Previous, k)),
            _ => {
                if self.next.is_none() {
                    self.next = Some(self.secrets_mut().clone().next_packet_keys());
                }
                self.next
                    .as_ref()
                    .map(|n| (RemoteKey::Next, n.remote.as_ref()))
            }
        }
    }

    /// Idle-connection diet: drops the next generation's keys (derived again from the
    /// secrets when a packet of the next phase arrives or the connection updates). With a
    /// [`KeyPhase::set_source`], and no previous generation kept, the current packet and
    /// header protection keys go too, until [`KeyPhase::wake`] expands them again.
    pub fn hibernate(&mut self) {
        self.next = None;
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        if self.source.is_some() && self.previous_remote.is_none() && !self.asleep {
            if !self.source_checked {
                // The secrets came through the TLS key log, keyed by the ClientHello's random,
                // which a peer chooses: only a source that gives the very keys in use is
                // trusted to replace them.
                self.source_checked = true;
                let same = self
                    .source
                    .as_ref()
                    .is_some_and(|source| self.same_keys(&source.keys()));
                if !same {
                    tracing::debug!("captured 1-RTT secrets do not match the keys; kept awake");
                    self.source = None;
                    return;
                }
            }
            self.local = LocalKey::Tls(Box::new(Asleep));
            self.remote = Box::new(Asleep);
            self.local_header = Box::new(Asleep);
            self.remote_header = Box::new(Asleep);
            // The source gives the next secrets again too (`secrets_mut`): 224 bytes.
            self.secrets = None;
            self.asleep = true;
        }
    }

    /// Expands the current keys again after [`KeyPhase::hibernate`]; returns whether they were
    /// asleep. Call before sealing or opening a packet.
    #[inline]
    pub fn wake(&mut self) -> bool {
        if !self.asleep {
            return false;
        }
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        if let Some(source) = self.source.as_ref() {
            // The source was checked against the keys in use before they went to sleep.
            let keys = source.own_keys();
            self.local = LocalKey::Own(keys.local_packet);
            self.remote = keys.remote.packet;
            self.local_header = keys.local_header;
            self.remote_header = keys.remote.header;
        }
        self.asleep = false;
        true
    }

    /// Writes an asleep key phase out (connection hibernation): its counters and the source
    /// of its keys. Refuses while any key is held (awake, or the previous generation's).
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(crate) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(
            self.asleep
                && self.source_checked
                && self.secrets.is_none()
                && self.next.is_none()
                && self.previous_remote.is_none(),
        )?;
        let source = self.source.as_ref()?;
        p.bool(self.phase);
        p.opt_u64(self.first_received_pn);
        p.opt_u64(self.first_sent_pn);
        p.bool(self.confirmed);
        p.bool(self.acked_in_phase);
        p.u64(self.encrypted);
        p.u64(self.failed);
        p.u64(self.update_interval);
        p.u64(self.generation);
        source.pack(p);
        Some(())
    }

    /// Reads back what [`KeyPhase::pack`] wrote: an asleep key phase, whose keys
    /// [`KeyPhase::wake`] expands from the source.
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    pub(crate) fn unpack(
        u: &mut crate::pack::Unpacker<'_>,
        provider: &rustls::crypto::CryptoProvider,
    ) -> Option<Self> {
        Some(Self {
            secrets: None,
            phase: u.bool()?,
            local: LocalKey::Tls(Box::new(Asleep)),
            remote: Box::new(Asleep),
            next: None,
            previous_remote: None,
            local_header: Box::new(Asleep),
            remote_header: Box::new(Asleep),
            first_received_pn: u.opt_u64()?,
            first_sent_pn: u.opt_u64()?,
            confirmed: u.bool()?,
            acked_in_phase: u.bool()?,
            encrypted: u.u64()?,
            failed: u.u64()?,
            update_interval: u.u64()?,
            generation: u.u64()?,
            source: Some(Box::new(super::version_keys::KeySource::unpack(
                u, provider,
            )?)),
            asleep: true,
            source_checked: true,
        })
    }

    /// Whether the next generation's keys are dropped ([`KeyPhase::hibernate`]).
    pub fn is_hibernating(&self) -> bool {
        self.next.is_none()
    }

    /// Whether the current keys are dropped too, until [`KeyPhase::wake`].
    pub fn is_asleep(&self) -> bool {
        self.asleep
    }

    /// Records that packet `pn` authenticated with the key of `which`.
    ///
    /// # Errors
    /// [`KeyUpdateError::NotConfirmed`] (KEY_UPDATE_ERROR) if the peer updates again before our
    /// previous update was confirmed (RFC 9001 §6.2 allows treating this as an error).
    #[inline]
    pub fn on_packet_received(&mut self, which: RemoteKey, pn: u64) -> Result<(), KeyUpdateError> {
        match which {
            RemoteKey::Current => {
                let first = self.first_received_pn.get_or_insert(pn);
                *first = (*first).min(pn);
            }
            RemoteKey::Previous => {}
            RemoteKey::Next => {
                // RFC 9001 §6.2: a second update before we sent, under the current keys, an
                // acknowledgment for a packet of the current phase is an error (and so is one
                // before our own last update was acknowledged).
                if !self.confirmed && !self.acked_in_phase {
                    return Err(KeyUpdateError::NotConfirmed);
                }
                // RFC 9001 §6.2: the peer updated; follow, and update our send keys too.
                self.rotate();
                self.first_received_pn = Some(pn);
            }
        }
        Ok(())
    }

    /// Records a packet that failed authentication under 1-RTT keys.
    ///
    /// # Errors
    /// [`KeyUpdateError::LimitReached`] once the integrity limit is hit (RFC 9001 §6.6:
    /// close with AEAD_LIMIT_REACHED).
    pub fn on_decrypt_failure(&mut self) -> Result<(), KeyUpdateError> {
        self.failed += 1;
        if self.failed >= self.remote.integrity_limit() {
            return Err(KeyUpdateError::LimitReached);
        }
        Ok(())
    }

    /// Records that a packet under the current keys carries an ACK frame whose largest
    /// acknowledged packet number is `largest`.
    pub fn on_ack_sent(&mut self, largest: u64) {
        if self.first_received_pn.is_some_and(|first| largest >= first) {
            self.acked_in_phase = true;
        }
    }

    /// Records that the peer acknowledged packet `pn`; acknowledging a packet sent in the
    /// current phase confirms the last update (RFC 9001 §6.1). Returns whether `pn` went out
    /// under the current keys, so was a 1-RTT packet (0-RTT packets, in the same packet
    /// number space, all come before the first 1-RTT one).
    pub fn on_ack(&mut self, pn: u64) -> bool {
        let current = self.first_sent_pn.is_some_and(|first| pn >= first);
        if current {
            self.confirmed = true;
        }
        current
    }

    /// Initiates a key update (RFC 9001 §6.1): the next packet goes out under new keys with the
    /// Key Phase bit flipped.
    ///
    /// # Errors
    /// [`KeyUpdateError::NotConfirmed`] if the previous update is not yet acknowledged.
    pub fn initiate_update(&mut self) -> Result<(), KeyUpdateError> {
        if !self.confirmed {
            return Err(KeyUpdateError::NotConfirmed);
        }
        self.rotate();
        self.first_received_pn = None;
        Ok(())
    }

    /// Forgets the previous generation's receive key (RFC 9001 §6.5, after about 3 PTO).
    pub fn discard_previous(&mut self) {
        self.previous_remote = None;
    }

    /// The next generation's secrets, given again by the source if they were let go.
    fn secrets_mut(&mut self) -> &mut NextSecrets {
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        if let (None, Some(source)) = (&self.secrets, &self.source) {
            self.secrets = Some(Box::new(NextSecrets::Version(source.next_secrets())));
        }
        match &mut self.secrets {
            Some(s) => s,
            // `hibernate` lets them go only with a source, which stays from then on.
            None => unreachable!("1-RTT secrets let go without a source to give them again"),
        }
    }

    fn rotate(&mut self) {
        self.wake();
        // Given again from the source before the source moves on.
        self.secrets_mut();
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        if let Some(source) = self.source.as_mut() {
            source.update();
        }
        // `secrets` moves on to the new generation; `next` is derived from a copy, so that
        // dropping it (hibernation) loses nothing.
        let secrets = self.secrets_mut();
        let derived = secrets.next_packet_keys();
        let after = secrets.clone().next_packet_keys();
        let next = self.next.take().unwrap_or(derived);
        self.next = Some(after);
        #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
        {
            self.local = self.prefer_own(next.local);
        }
        #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
        {
            self.local = LocalKey::Tls(next.local);
        }
        self.previous_remote = Some(std::mem::replace(&mut self.remote, next.remote));
        self.phase = !self.phase;
        self.first_sent_pn = None;
        self.confirmed = false;
        self.acked_in_phase = false;
        self.encrypted = 0;
        self.generation += 1;
    }
}
