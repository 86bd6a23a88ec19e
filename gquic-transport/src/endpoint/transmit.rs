//! The endpoint's transmit path: stateless responses first, then the connections' datagrams,
//! round robin, batched for segmentation offload.

use std::time::Instant;

use super::Endpoint;
use crate::connection::Transmit;

/// The most bytes one batch of datagrams holds: the largest UDP payload over IPv4
/// (65,535 less the IPv4 and UDP headers).
const MAX_BATCH_BYTES: usize = 65_507;

impl Endpoint {
    /// Whether every connection is closed and has sent its CONNECTION_CLOSE, or drained (see
    /// [`crate::connection::Connection::close_sent`]): once these datagrams are on the wire,
    /// the socket may close without waiting out the closing periods (RFC 9000 §10.2).
    pub fn closes_sent(&self) -> bool {
        self.connections.all_closes_sent()
    }

    /// Writes the next datagram to send into `buf`: stateless responses first, then the
    /// connections' datagrams, round robin.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.poll_transmit_batch(now, 1, buf)
    }

    /// Takes connection `idx` out of the send line: it was just asked and had nothing more.
    /// The entry itself goes if it is the last; one further in is skipped when reached.
    fn unmark_send_ready(&mut self, idx: usize) {
        if let Some(marked) = self.in_send_ready.get_mut(idx) {
            if std::mem::take(marked) && self.send_ready.back() == Some(&idx) {
                self.send_ready.pop_back();
            }
        }
    }

    /// The next datagram of a connection, round robin, with the connection's index.
    fn poll_connections(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(Transmit, usize)> {
        // Only the connections touched since they last had nothing to send: input, timers,
        // application calls and new connection IDs are what give a connection something
        // to send, and each of them marks it.
        while let Some(idx) = self.send_ready.pop_front() {
            // An entry whose mark was taken back (`unmark_send_ready`) is left behind.
            if !std::mem::take(&mut self.in_send_ready[idx]) {
                continue;
            }
            // A hibernating connection has nothing to send.
            let Some(conn) = self.connections.awake_mut(idx) else {
                continue;
            };
            let sent = conn.poll_transmit(now, buf);
            // Sending can raise application events (a stream's data all acknowledged
            // earlier, a datagram dropped, a key update).
            self.mark_touched(idx);
            if let Some(t) = sent {
                // It may have more: back in line behind the others (round robin).
                self.mark_send_ready(idx);
                self.process_events(idx);
                return Some((t, idx));
            }
            self.process_events(idx);
        }
        None
    }

    /// Writes up to `max_segments` datagrams for one destination into `buf`, back to back,
    /// every one as long as the first but the last, which may be shorter: what one UDP send
    /// with generic segmentation offload takes (Linux `UDP_SEGMENT`). The result's
    /// `segment_size` is `Some` when there is more than one datagram. With `max_segments` 1
    /// this is [`Endpoint::poll_transmit`].
    ///
    /// A datagram that the connection wrote but that cannot join the batch (another size,
    /// destination or ECN codepoint) is kept for the next call, so nothing is lost and the
    /// connection's order is kept.
    pub fn poll_transmit_batch(
        &mut self,
        now: Instant,
        max_segments: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let t = self.next_batch(now, max_segments, buf)?;
        self.stats.bytes_sent += t.size as u64;
        self.stats.datagrams_sent += match t.segment_size {
            Some(s) => t.size.div_ceil(s.max(1)) as u64,
            None => 1,
        };
        Some(t)
    }

    fn next_batch(
        &mut self,
        now: Instant,
        max_segments: usize,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        let (first, idx) = match self.held.take() {
            Some((t, idx)) => {
                std::mem::swap(buf, &mut self.held_buf);
                (t, Some(idx))
            }
            None => {
                if let Some(t) = self.poll_transmit_stateless(buf) {
                    return Some(t);
                }
                let (t, idx) = self.poll_connections(now, buf)?;
                (t, Some(idx))
            }
        };
        let segment = first.size;
        // The IPv4 UDP payload limit bounds a whole batch.
        let max_segments = max_segments.min(MAX_BATCH_BYTES / segment.max(1)).max(1);
        let Some(idx) = idx.filter(|_| max_segments > 1) else {
            return Some(first);
        };
        let mut count = 1;
        // Each further datagram is written straight after the previous one: the batch is
        // built in place, not copied together.
        while count < max_segments {
            let Some(conn) = self.connections.awake_mut(idx) else {
                break;
            };
            let at = buf.len();
            let Some(t) = conn.poll_transmit_appended(now, buf) else {
                // Nothing more now: out of the line until input, a timer or the application
                // marks it again, instead of being asked once more for nothing (before its
                // events: those may mark it).
                self.unmark_send_ready(idx);
                self.process_events(idx);
                break;
            };
            self.process_events(idx);
            if t.destination != first.destination
                || t.source != first.source
                || t.ecn != first.ecn
                || t.size > segment
            {
                // Sent first thing next time (at most one copy per batch).
                self.held_buf.clear();
                self.held_buf.extend_from_slice(&buf[at..]);
                buf.truncate(at);
                self.held = Some((t, idx));
                break;
            }
            count += 1;
            if t.size < segment {
                break;
            }
        }
        Some(Transmit {
            size: buf.len(),
            segment_size: (count > 1).then_some(segment),
            ..first
        })
    }

    /// A queued stateless response (Version Negotiation, Retry, stateless reset, a refusal)
    /// into `buf`.
    fn poll_transmit_stateless(&mut self, buf: &mut Vec<u8>) -> Option<Transmit> {
        let (destination, source, data) = self.responses.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&data);
        Some(Transmit {
            destination,
            source,
            size: data.len(),
            ecn: None,
            segment_size: None,
        })
    }
}
