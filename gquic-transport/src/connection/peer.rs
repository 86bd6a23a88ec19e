//! The peer's transport parameters (RFC 9000 §18.2), kept small for the connection's whole
//! life: the few values read while packets flow, and the rest as the peer encoded it.

use crate::wire::TransportParameters;
use crate::Side;

/// The peer's transport parameters once received and validated.
///
/// A decoded [`TransportParameters`] is 296 bytes, most of them handshake-only (connection IDs
/// to check, a preferred address); an idle connection pays for what it keeps, so the values
/// used on the hot path are copied out and the whole set stays in its encoded form (usually
/// under 100 bytes), decoded again on request ([`super::Connection::peer_params`]).
#[derive(Debug)]
pub(super) struct PeerParams {
    /// RFC 9000 §18.2 ack_delay_exponent (at most 20, checked when received).
    pub(super) ack_delay_exponent: u8,
    /// max_ack_delay, in milliseconds (below 2^14, checked when received).
    pub(super) max_ack_delay: u64,
    pub(super) max_udp_payload_size: u64,
    pub(super) active_connection_id_limit: u64,
    /// RFC 9221 §3: `None` when the peer does not take DATAGRAM frames.
    pub(super) max_datagram_frame_size: Option<u64>,
    /// Who sent them (how they decode: some parameters are server-only).
    sender: Side,
    /// The parameters as the peer encoded them.
    encoded: Box<[u8]>,
}

impl PeerParams {
    /// Keeps `params`, which `encoded` (sent by `sender`) decoded to.
    pub(super) fn new(params: &TransportParameters, sender: Side, encoded: &[u8]) -> Self {
        Self {
            ack_delay_exponent: params.ack_delay_exponent.min(20) as u8,
            max_ack_delay: params.max_ack_delay,
            max_udp_payload_size: params.max_udp_payload_size,
            active_connection_id_limit: params.active_connection_id_limit,
            max_datagram_frame_size: params.max_datagram_frame_size,
            sender,
            encoded: encoded.into(),
        }
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the parameters out (connection hibernation): as the peer encoded them.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) {
        p.bool(self.sender.is_server());
        p.bytes(&self.encoded);
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`PeerParams::pack`] wrote, decoding the values kept at hand again.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        let sender = if u.bool()? {
            Side::Server
        } else {
            Side::Client
        };
        let encoded = u.bytes()?;
        let params = TransportParameters::decode(sender, encoded).ok()?;
        Some(Self::new(&params, sender, encoded))
    }

    /// The whole set, decoded again.
    pub(super) fn decode(&self) -> Option<TransportParameters> {
        // They decoded once already: this cannot fail, and `None` stands for it if it did.
        TransportParameters::decode(self.sender, &self.encoded).ok()
    }
}
