//! TLS handshake steps run apart from the connection.
//!
//! The expensive part of a handshake is TLS reading the peer's flight (RFC 9001 §4.1.3):
//! key exchange, certificate and signature checks, a few hundred microseconds per connection.
//! Done inside the endpoint, every connection's step runs one after the other under whatever
//! serializes the endpoint (the runtime's lock and its one driver). With offload on
//! ([`Connection::set_tls_offload`]), a connection that has handshake data for TLS hands its
//! TLS session out as a [`TlsJob`] instead: the job runs anywhere (another worker thread), and
//! [`Connection::finish_tls_job`] takes the session back and goes on exactly as if TLS had read
//! the data in place.
//!
//! Meanwhile the connection keeps working without TLS: it acknowledges, retransmits, times
//! out. CRYPTO data waits in its stream. Packets it cannot open yet because the keys TLS is
//! deriving are not there (the Handshake packets coalesced behind the server's Initial, say)
//! are held, a few, and opened once the job is back (RFC 9001 §5.7 allows buffering packets
//! that arrive before their keys).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;

use super::tls_state::Tls;
use super::{Connection, EndpointEvent, SpaceId, State};
use crate::connection::EcnCodepoint;
use crate::wire::packet::PartialDecode;

/// Packets held at most while TLS is out; more are dropped (the peer retransmits them).
const MAX_HELD: usize = 32;

/// Job ids: unique in the process, so a job never goes back to another connection that
/// reused the slot of the one it came from.
static NEXT_JOB: AtomicU64 = AtomicU64::new(1);

/// A connection's side of TLS offload: boxed while the handshake runs with offload on, then
/// let go (an idle connection does not carry it).
#[derive(Debug, Default)]
pub(super) struct Offload {
    /// The job out, by id.
    out: Option<u64>,
    /// A step waiting to be taken: the space whose CRYPTO data TLS reads, and a server's
    /// ClientHello (already taken from its stream, RFC 9368 §2.3).
    ready: Option<(SpaceId, Option<Vec<u8>>)>,
    /// Packets that came without their keys while TLS was busy, with their ECN codepoints.
    held: Vec<(PartialDecode, Option<EcnCodepoint>)>,
}

/// A TLS step taken out of a connection ([`Connection::take_tls_job`]): its TLS session and
/// the handshake data to read. [`TlsJob::run`] it anywhere, then give it back with
/// [`Connection::finish_tls_job`] (through the endpoint:
/// [`crate::endpoint::Endpoint::finish_tls_job`]). A job that is dropped instead leaves its
/// connection without TLS: the handshake then times out.
#[derive(Debug)]
pub struct TlsJob {
    id: u64,
    space: SpaceId,
    tls: Tls,
    input: Vec<Bytes>,
    result: Option<Result<(), rustls::Error>>,
}

impl TlsJob {
    /// TLS reads the data: the expensive part (key exchange, certificate checks, signatures).
    /// Running it twice does nothing more.
    pub fn run(&mut self) {
        if self.result.is_some() {
            return;
        }
        let mut result = Ok(());
        for data in &self.input {
            if let Err(e) = self.tls.read_hs(data) {
                result = Err(e);
                break;
            }
        }
        self.result = Some(result);
    }

    /// How many bytes of handshake data TLS reads in this step.
    pub fn len(&self) -> usize {
        self.input.iter().map(Bytes::len).sum()
    }

    /// Whether the step has no data (never so for a job a connection hands out).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Connection {
    fn offload(&self) -> Option<&Offload> {
        self.extras()?.offload.as_deref()
    }

    fn offload_mut(&mut self) -> Option<&mut Offload> {
        self.extras.as_mut()?.offload.as_deref_mut()
    }

    /// Hands the TLS steps of the handshake out as [`TlsJob`]s (see
    /// [`Connection::take_tls_job`]) instead of running them in
    /// [`Connection::handle_datagram`]. An endpoint sets it on the connections it adopts and
    /// accepts when its own offload is on; set before the first datagram.
    pub fn set_tls_offload(&mut self, enabled: bool) {
        if self.state != State::Handshake || enabled == self.offload().is_some() {
            return;
        }
        if enabled {
            self.extras_mut().offload = Some(Box::default());
        } else if let Some(e) = self.extras.as_mut() {
            e.offload = None;
        }
    }

    /// Whether TLS is away in a job or one waits to be taken: CRYPTO data then stays in its
    /// stream, and packets without keys are held.
    pub(crate) fn tls_busy(&self) -> bool {
        self.offload()
            .is_some_and(|o| o.out.is_some() || o.ready.is_some())
    }

    /// Whether a TLS step should go out as a job rather than run here: offload on, the
    /// handshake under way (later TLS messages, session tickets, are cheap) and the session
    /// here.
    pub(super) fn offloads_tls(&self) -> bool {
        self.offload().is_some()
            && self.state == State::Handshake
            && matches!(self.tls, Tls::Live(_))
    }

    fn drop_offload(&mut self) {
        if let Some(e) = self.extras.as_mut() {
            e.offload = None;
        }
    }

    /// Marks a TLS step of `space` as ready to be taken, with a server's ClientHello.
    pub(super) fn tls_step_ready(&mut self, space: SpaceId, hello: Option<Vec<u8>>) {
        if let Some(o) = self.offload_mut() {
            o.ready = Some((space, hello));
            self.cids.push_event(EndpointEvent::TlsReady);
        }
    }

    /// Holds a packet that came without its keys while TLS is busy; `false` if it cannot be
    /// held (TLS not busy, or too many held), for the caller to drop it.
    pub(super) fn hold_packet(&mut self, partial: PartialDecode) -> bool {
        let ecn = self.incoming_ecn;
        let busy = self.tls_busy();
        match self.offload_mut() {
            Some(o) if busy && o.held.len() < MAX_HELD => {
                o.held.push((partial, ecn));
                true
            }
            _ => false,
        }
    }

    /// The TLS step waiting, if any: the connection's TLS session and the CRYPTO data that
    /// is in (all of it, so that a whole flight goes in one step).
    pub fn take_tls_job(&mut self) -> Option<TlsJob> {
        if !matches!(self.tls, Tls::Live(_)) {
            return None;
        }
        let o = self.offload_mut().filter(|o| o.out.is_none())?;
        let (space, hello) = o.ready.take()?;
        let mut input: Vec<Bytes> = hello.into_iter().map(Bytes::from).collect();
        if !self.spaces[space as usize].discarded {
            while let Some(data) = self.spaces[space as usize]
                .crypto_if_held()
                .and_then(|c| c.recv.read(usize::MAX))
            {
                input.push(data);
            }
        }
        if input.is_empty() {
            return None;
        }
        let id = NEXT_JOB.fetch_add(1, Ordering::Relaxed);
        if let Some(o) = self.offload_mut() {
            o.out = Some(id);
        }
        // Live, as checked above.
        let tls = self.tls.take_out()?;
        tracing::trace!(parent: &self.span, job = id, ?space, "TLS step handed out");
        Some(TlsJob {
            id,
            space,
            tls,
            input,
            result: None,
        })
    }

    /// Takes the TLS session back from `job` (run or not: one not run runs here) and goes on
    /// as if TLS had read the data in place: new keys, the handshake's progress, the packets
    /// held meanwhile. A job that is not this connection's is dropped.
    pub fn finish_tls_job(&mut self, now: Instant, mut job: TlsJob) {
        let Some(o) = self.offload_mut().filter(|o| o.out == Some(job.id)) else {
            return;
        };
        o.out = None;
        let held = std::mem::take(&mut o.held);
        job.run();
        self.tls = job.tls;
        let span = self.span.clone();
        let _guard = span.enter();
        // Closed meanwhile (by the application, the peer or a timer): nothing goes on.
        if self.state != State::Handshake {
            self.drop_offload();
            return;
        }
        let result = match job.result {
            Some(Err(e)) => Err(self.tls_error(&e)),
            _ => self.after_tls(now, job.space),
        };
        // CRYPTO data that came while TLS was out (the next step may go out at once).
        let result = result.and_then(|()| {
            for space in SpaceId::ALL {
                if self.tls_busy() {
                    break;
                }
                let waiting = !self.spaces[space as usize].discarded
                    && self.spaces[space as usize]
                        .crypto()
                        .is_some_and(|c| c.recv.has_readable());
                if waiting {
                    self.read_crypto(now, space)?;
                }
            }
            Ok(())
        });
        if let Err(error) = result {
            self.drop_offload();
            self.close_with_error(now, error);
            return;
        }
        // Packets held for keys TLS has now derived (or held again, if the next step is out).
        // They came from the connection's address (others are not held).
        self.incoming_path = None;
        self.datagram_tail = None;
        if !self.replay_packets(now, held) {
            return;
        }
        self.after_packets(now);
        // The handshake is through: offload has nothing more to do for this connection.
        if self.state != State::Handshake
            && !self.tls_busy()
            && self.offload().is_some_and(|o| o.held.is_empty())
        {
            self.drop_offload();
        }
    }
}
