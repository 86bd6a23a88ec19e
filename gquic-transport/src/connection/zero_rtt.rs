//! 0-RTT (RFC 9001 §4.6, RFC 9000 §7.4.1): early data on a resumed connection.
//!
//! A client resuming a TLS session whose ticket allows early data gets 0-RTT keys from rustls
//! before any packet is sent. Until the 1-RTT keys arrive it sends application data in 0-RTT
//! packets, obeying the server transport parameters remembered with the ticket. Once the
//! handshake says whether the server accepted it:
//!
//! - accepted: the 0-RTT packets stay in flight and are acknowledged like any other; the
//!   server's new parameters must not lower a remembered limit (§7.4.1);
//! - rejected: every 0-RTT packet counts as lost (RFC 9001 §4.6.2), so the stream data and
//!   control frames they carried go again in 1-RTT packets: nothing is lost for the
//!   application.
//!
//! A server accepts 0-RTT when rustls does (a fresh, single-use ticket from its session store;
//! see [`crate::ServerConfig::enable_0rtt`]), opens 0-RTT packets with the early keys, and
//! remembers which streams the client opened in them so an application can treat early
//! requests with care (they could be replays of a request the client made before, RFC 9001
//! §9.2).

use rustls::quic::DirectionalKeys;

use super::{Connection, SpaceId, TransportError};
use crate::error::TransportErrorCode;
use crate::wire::TransportParameters;
use crate::StreamId;

/// How many 0-RTT packets a server keeps while it waits for the ClientHello.
pub(super) const MAX_BUFFERED_0RTT: usize = 16;

/// How many streams opened in 0-RTT a server remembers (the client cannot open more than its
/// remembered stream limits allow before 1-RTT; this is a cap against a misbehaving one).
const MAX_EARLY_STREAMS: usize = 4096;

/// 0-RTT state of a connection.
#[derive(Default)]
pub(super) struct ZeroRtt {
    /// Client: seals 0-RTT packets until the 1-RTT keys arrive. Server: opens them until the
    /// first 1-RTT packet (RFC 9001 §4.9.3). Boxed: most connections never hold them.
    pub(super) keys: Option<Box<DirectionalKeys>>,
    /// Client: the server parameters remembered with the ticket, which 0-RTT data obeys.
    pub(super) remembered: Option<Box<TransportParameters>>,
    /// Client: whether any 0-RTT packet was sent.
    pub(super) sent: bool,
    /// Whether the server accepted 0-RTT, once the handshake has said.
    pub(super) accepted: Option<bool>,
    /// The rest, boxed while any of it is in use (most connections never use 0-RTT: 72
    /// bytes inline before).
    early: Option<Box<Early>>,
}

/// The parts of [`ZeroRtt`] a connection without 0-RTT never uses.
#[derive(Default)]
struct Early {
    /// Server: when the 0-RTT keys go (three PTOs after the first 1-RTT packet, RFC 9001
    /// §4.9.3).
    discard_at: Option<std::time::Instant>,
    /// Streams with data in 0-RTT packets (received on a server, sent on a client).
    streams: crate::fast_hash::FastSet<StreamId>,
    /// Server: 0-RTT packets that arrived before the ClientHello was processed (RFC 9001
    /// §4.7 allows buffering them), opened once the keys are known.
    packets: Vec<crate::wire::PartialDecode>,
}

impl ZeroRtt {
    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Writes the outcome out (connection hibernation); refuses while 0-RTT keys or state
    /// are held.
    pub(super) fn pack(&self, p: &mut crate::pack::Packer) -> crate::pack::Packed {
        p.require(self.keys.is_none() && self.remembered.is_none() && self.early.is_none())?;
        p.bool(self.sent);
        p.opt_u64(self.accepted.map(u64::from));
        Some(())
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    /// Reads back what [`ZeroRtt::pack`] wrote.
    pub(super) fn unpack(u: &mut crate::pack::Unpacker<'_>) -> Option<Self> {
        Some(Self {
            keys: None,
            remembered: None,
            sent: u.bool()?,
            accepted: match u.opt_u64()? {
                None => None,
                Some(0) => Some(false),
                Some(1) => Some(true),
                Some(_) => return None,
            },
            early: None,
        })
    }

    fn early_mut(&mut self) -> &mut Early {
        self.early.get_or_insert_with(Box::default)
    }

    /// Server: when the 0-RTT keys go.
    pub(super) fn discard_at(&self) -> Option<std::time::Instant> {
        self.early.as_ref()?.discard_at
    }

    /// Server: sets (or clears) when the 0-RTT keys go.
    pub(super) fn set_discard_at(&mut self, at: Option<std::time::Instant>) {
        if at.is_some() || self.early.is_some() {
            self.early_mut().discard_at = at;
        }
    }

    /// Server: how many 0-RTT packets wait for the ClientHello to be processed.
    pub(super) fn waiting_packets(&self) -> usize {
        self.early.as_ref().map_or(0, |e| e.packets.len())
    }

    /// Server: keeps a 0-RTT packet until the ClientHello is processed.
    pub(super) fn push_packet(&mut self, packet: crate::wire::PartialDecode) {
        self.early_mut().packets.push(packet);
    }

    /// Server: the 0-RTT packets that waited.
    pub(super) fn take_packets(&mut self) -> Vec<crate::wire::PartialDecode> {
        self.early
            .as_mut()
            .map(|e| std::mem::take(&mut e.packets))
            .unwrap_or_default()
    }

    fn note_stream(&mut self, id: StreamId) {
        let streams = &mut self.early_mut().streams;
        if streams.len() < MAX_EARLY_STREAMS {
            streams.insert(id);
        }
    }

    /// Idle diet: lets the boxed parts go once none is in use.
    pub(super) fn shrink(&mut self) {
        let unused =
            |e: &Early| e.discard_at.is_none() && e.streams.is_empty() && e.packets.is_empty();
        if self.early.as_deref().is_some_and(unused) {
            self.early = None;
        }
    }
}

/// RFC 9000 §7.4.1: the limits a server accepting 0-RTT must not lower.
fn lowered_limit(
    remembered: &TransportParameters,
    new: &TransportParameters,
) -> Option<&'static str> {
    let pairs = [
        (
            "active_connection_id_limit",
            remembered.active_connection_id_limit,
            new.active_connection_id_limit,
        ),
        (
            "initial_max_data",
            remembered.initial_max_data,
            new.initial_max_data,
        ),
        (
            "initial_max_stream_data_bidi_local",
            remembered.initial_max_stream_data_bidi_local,
            new.initial_max_stream_data_bidi_local,
        ),
        (
            "initial_max_stream_data_bidi_remote",
            remembered.initial_max_stream_data_bidi_remote,
            new.initial_max_stream_data_bidi_remote,
        ),
        (
            "initial_max_stream_data_uni",
            remembered.initial_max_stream_data_uni,
            new.initial_max_stream_data_uni,
        ),
        (
            "initial_max_streams_bidi",
            remembered.initial_max_streams_bidi,
            new.initial_max_streams_bidi,
        ),
        (
            "initial_max_streams_uni",
            remembered.initial_max_streams_uni,
            new.initial_max_streams_uni,
        ),
    ];
    pairs
        .into_iter()
        .find(|(_, old, new)| new < old)
        .map(|(name, _, _)| name)
}

impl Connection {
    /// Client, right after the ClientHello: takes the 0-RTT keys and remembered parameters if
    /// rustls is resuming a session that allows early data.
    pub(super) fn start_0rtt(&mut self) {
        let Some(keys) = self.tls.zero_rtt_keys() else {
            return;
        };
        let Some(raw) = self.tls.quic_transport_parameters() else {
            return;
        };
        // A ticket whose parameters no longer decode is not used for 0-RTT.
        let Ok(remembered) = TransportParameters::decode(self.side.peer(), raw) else {
            tracing::debug!("remembered transport parameters do not decode; no 0-RTT");
            return;
        };
        tracing::debug!("0-RTT keys available");
        // RFC 9000 §7.4.1: 0-RTT data obeys the remembered limits.
        self.streams.set_peer_params(&remembered);
        self.zero_rtt.remembered = Some(Box::new(remembered));
        self.zero_rtt.keys = Some(Box::new(keys));
    }

    /// Whether data written now goes out in 0-RTT packets: a client resuming a session that
    /// allows early data, before the handshake completes.
    pub fn is_0rtt(&self) -> bool {
        self.side.is_client() && self.zero_rtt.keys.is_some() && self.one_rtt.is_none()
    }

    /// Whether the TLS handshake resumed an earlier session (a ticket was accepted); `None`
    /// until it is known.
    pub fn is_resumed(&self) -> Option<bool> {
        self.tls
            .handshake_kind()
            .map(|k| k == rustls::HandshakeKind::Resumed)
    }

    /// Whether the server accepted 0-RTT: `None` until the handshake says (and for a client
    /// that had no 0-RTT keys, `Some(false)` once it completes).
    pub fn zero_rtt_accepted(&self) -> Option<bool> {
        self.zero_rtt.accepted
    }

    /// Whether stream `id` carried data in 0-RTT packets. Server: such a request could be a
    /// replay of one made on an earlier connection (RFC 9001 §9.2, RFC 8470): act on it only
    /// if that is harmless. Client: the data went out before the handshake completed (it
    /// reached the server in 0-RTT if [`Connection::zero_rtt_accepted`] says so and the
    /// packets were not lost).
    pub fn is_0rtt_stream(&self, id: StreamId) -> bool {
        self.zero_rtt
            .early
            .as_ref()
            .is_some_and(|e| e.streams.contains(&id))
    }

    /// Client: records a stream whose data goes in a 0-RTT packet.
    pub(super) fn note_0rtt_sent(&mut self, id: StreamId) {
        self.zero_rtt.note_stream(id);
    }

    /// Server: records a stream carried in a 0-RTT packet.
    pub(super) fn note_0rtt_stream(&mut self, id: StreamId) {
        if self.receiving_0rtt {
            self.zero_rtt.note_stream(id);
        }
    }

    /// Server, once the ClientHello is processed: rustls has decided about early data.
    pub(super) fn server_0rtt_decided(&mut self) {
        if self.side.is_client()
            || self.zero_rtt.accepted.is_some()
            || self.spaces[SpaceId::Handshake as usize].keys.is_none()
        {
            return;
        }
        let keys = self.tls.zero_rtt_keys();
        tracing::debug!(accepted = keys.is_some(), "0-RTT decision");
        self.zero_rtt.accepted = Some(keys.is_some());
        self.zero_rtt.keys = keys.map(Box::new);
        self.events.push_back(super::Event::HandshakeDataReady);
    }

    /// Client: forgets the 0-RTT packets in flight (rejected, or sent before a Retry) and
    /// queues their stream data and control frames to go again (RFC 9001 §4.6.2). They left
    /// no trace at the server, so congestion control ignores them.
    pub(super) fn resend_0rtt(&mut self) {
        for (_, packet) in self.spaces[SpaceId::Data as usize].sent.discard() {
            packet.info.forget_rate(&mut self.rate);
            for c in &packet.info.chunks {
                self.streams.on_chunk_lost(c);
            }
            let mut info = packet.info;
            for c in info.take_control() {
                self.streams.on_control_lost(c);
            }
        }
    }

    /// Client, once the 1-RTT keys and the server's new parameters are in: learn whether
    /// 0-RTT was accepted and act on it (RFC 9001 §4.6.2, RFC 9000 §7.4.1).
    pub(super) fn client_0rtt_outcome(&mut self) -> Result<(), TransportError> {
        if self.side.is_server() || self.zero_rtt.accepted.is_some() || self.one_rtt.is_none() {
            return Ok(());
        }
        let Some(remembered) = self.zero_rtt.remembered.take() else {
            self.zero_rtt.accepted = Some(false);
            return Ok(());
        };
        // RFC 9001 §4.9.3: a client with 1-RTT keys sends no more 0-RTT packets.
        self.zero_rtt.keys = None;
        let accepted = self.tls.is_early_data_accepted();
        self.zero_rtt.accepted = Some(accepted);
        let peer = self.peer_params();
        let lowered = peer
            .as_ref()
            .and_then(|new| lowered_limit(&remembered, new));
        tracing::debug!(accepted, sent = self.zero_rtt.sent, "0-RTT outcome");
        if accepted {
            if let Some(name) = lowered {
                return Err(TransportError::new(
                    TransportErrorCode::PROTOCOL_VIOLATION,
                    format!("the server accepted 0-RTT but lowered {name} (RFC 9000 §7.4.1)"),
                ));
            }
            return Ok(());
        }
        // Rejected: everything sent in 0-RTT is lost and goes again in 1-RTT packets
        // (RFC 9001 §4.6.2). It left no trace at the server, so congestion control ignores it.
        self.resend_0rtt();
        // The server may have lowered its limits (that can be why it rejected): what was sent
        // must fit the new ones to be sent again.
        let fits = peer.as_ref().is_none_or(|p| self.streams.sent_fits(p));
        if !fits {
            // Fail loudly rather than violate the new limits.
            return Err(TransportError::new(
                TransportErrorCode::INTERNAL_ERROR,
                format!(
                    "0-RTT was rejected and the server's new limits ({}) are below what the \
                     0-RTT data used; retry the requests on a new connection",
                    lowered.unwrap_or("flow control")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowered_limits_are_named() {
        let old = TransportParameters {
            initial_max_data: 100,
            initial_max_streams_bidi: 10,
            ..TransportParameters::default()
        };
        let mut new = old.clone();
        assert_eq!(lowered_limit(&old, &new), None);
        new.initial_max_data = 1000;
        assert_eq!(lowered_limit(&old, &new), None);
        new.initial_max_streams_bidi = 9;
        assert_eq!(lowered_limit(&old, &new), Some("initial_max_streams_bidi"));
    }
}
