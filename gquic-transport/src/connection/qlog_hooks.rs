//! The connection's qlog hooks (draft-ietf-quic-qlog-quic-events): starting a trace, the
//! close, recovery metrics and dropped packets. Packet events are logged where packets are
//! sent and received.

use std::time::{Duration, Instant};

use super::{CloseFrame, Connection, ConnectionError, SpaceId};
use crate::wire::ConnectionId;

impl Connection {
    /// Writes this connection's events to `out` from now on, as a qlog JSON-SEQ trace (see
    /// [`crate::qlog`]). Endpoints do this on their own for every connection when they have
    /// a [`crate::endpoint::EndpointConfig::qlog_dir`].
    #[cfg(feature = "qlog")]
    pub fn set_qlog(&mut self, out: Box<dyn std::io::Write + Send>, now: Instant) {
        let stream = crate::qlog::QlogStream::new(out, now, self.side, &self.original_dst_cid);
        self.start_qlog(stream, now);
    }

    /// Installs `stream` and logs the start: the 4-tuple as known here and the keys that
    /// exist already.
    #[cfg_attr(not(feature = "qlog"), allow(dead_code))]
    pub(crate) fn start_qlog(&mut self, mut stream: crate::qlog::QlogStream, now: Instant) {
        stream.connection_started(now, None, &self.local_cid, self.remote, &self.cids.remote());
        if self.spaces[SpaceId::Initial as usize].keys.is_some() {
            stream.key_updated(now, "client_initial_secret", None, "tls");
            stream.key_updated(now, "server_initial_secret", None, "tls");
        }
        if self.zero_rtt.keys.is_some() {
            stream.key_updated(now, "client_0rtt_secret", None, "tls");
        }
        self.qlog.set(stream);
    }

    /// The ODCID a qlog file of this connection is named after.
    #[cfg_attr(not(feature = "qlog"), allow(dead_code))]
    pub(crate) fn original_dst_cid(&self) -> &ConnectionId {
        &self.original_dst_cid
    }

    /// qlog: the connection ended with `error`.
    pub(super) fn qlog_closed(&mut self, now: Instant, error: &ConnectionError) {
        if let Some(q) = self.qlog.on() {
            let app = match self.close.as_deref() {
                Some(CloseFrame::Application { code, reason }) => {
                    Some((code.into_inner(), &reason[..]))
                }
                _ => None,
            };
            q.connection_closed(now, error, app);
        }
    }

    /// qlog: the connection entered `state` (`connection_state_updated`, see [`crate::qlog`]).
    pub(super) fn qlog_state(&mut self, now: Instant, state: &'static str) {
        if let Some(q) = self.qlog.on() {
            q.state_updated(now, state);
        }
    }

    /// qlog: recovery metrics and the congestion controller's state, when they changed.
    #[inline]
    pub(super) fn qlog_recovery(&mut self, now: Instant) {
        if !self.qlog.enabled() {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let has_sample = self.rtt.has_sample();
        let m = crate::qlog::Metrics {
            min_rtt: if has_sample { ms(self.rtt.min()) } else { 0.0 },
            smoothed_rtt: ms(self.rtt.smoothed()),
            latest_rtt: if has_sample {
                ms(self.rtt.latest())
            } else {
                0.0
            },
            rtt_variance: ms(self.rtt.var()),
            pto_count: self.pto_count,
            congestion_window: self.cc.window(),
            bytes_in_flight: self.bytes_in_flight(),
            ssthresh: self.cc.ssthresh(),
        };
        let state = self.cc.state();
        if let Some(q) = self.qlog.on() {
            q.recovery(now, m, state);
            q.flush_if_due(now);
        }
    }

    /// Counts a dropped packet and logs it (qlog `packet_dropped`, with the trigger category
    /// of draft-ietf-quic-qlog-quic-events §6.7).
    pub(super) fn on_dropped(
        &mut self,
        now: Instant,
        packet_type: Option<&'static str>,
        pn: Option<u64>,
        trigger: &'static str,
    ) {
        self.stats.packets_dropped += 1;
        if let Some(q) = self.qlog.on() {
            q.packet_dropped(now, packet_type, pn, trigger);
        }
    }

    /// How long the handshake took, from the connection's creation to its completion (the
    /// server's Finished for a client, the client's Finished for a server); `None` before.
    pub fn handshake_duration(&self) -> Option<Duration> {
        self.handshake_duration
    }
}
