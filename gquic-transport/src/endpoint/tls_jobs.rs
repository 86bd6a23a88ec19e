//! Handshake TLS steps handed out of the endpoint's connections to run elsewhere (see
//! `connection::tls_job`).

use std::time::Instant;

use super::{ConnectionHandle, Endpoint};
use crate::connection::{Connection, TlsJob};

impl Endpoint {
    /// With `true`, connections adopted or accepted from now on hand the TLS steps of their
    /// handshakes out as jobs ([`Endpoint::poll_tls_job`]) instead of running them while
    /// handling datagrams, so that a multi-threaded runtime runs many handshakes' key
    /// exchanges and signature checks in parallel. Whoever drives the endpoint must then
    /// run the jobs and give them back ([`Endpoint::finish_tls_job`]).
    pub fn set_tls_offload(&mut self, enabled: bool) {
        self.tls_offload = enabled;
    }

    /// The next TLS step a connection hands out, with the connection's handle: run it
    /// ([`TlsJob::run`], on any thread), then give it back with
    /// [`Endpoint::finish_tls_job`].
    pub fn poll_tls_job(&mut self) -> Option<(ConnectionHandle, TlsJob)> {
        while let Some(idx) = self.tls_ready.pop_front() {
            let job = self
                .connections
                .awake_mut(idx)
                .and_then(Connection::take_tls_job);
            if let Some(job) = job {
                self.stats.tls_jobs += 1;
                return Some((ConnectionHandle(idx), job));
            }
        }
        None
    }

    /// Gives a TLS step back to its connection ([`Connection::finish_tls_job`]), which goes
    /// on with its handshake. A connection that is gone (or asleep) drops it.
    pub fn finish_tls_job(&mut self, now: Instant, handle: ConnectionHandle, job: TlsJob) {
        let idx = handle.0;
        if let Some(conn) = self.connections.awake_mut(idx) {
            conn.finish_tls_job(now, job);
            self.mark_send_ready(idx);
            self.process_events(idx);
        }
    }
}
