//! A deterministic simulated network for driving endpoints without sockets (feature
//! `testing`).
//!
//! [`Network`] moves datagrams between [`Endpoint`]s on a virtual clock, with latency, jitter
//! (and so reordering), loss, duplication, corruption, an MTU and a bandwidth limit, all drawn
//! from one seeded generator: the same seed replays the same run. Tests print the seed when
//! they fail (see [`Network::seed`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::connection::EcnCodepoint;
use crate::endpoint::{ConnectionHandle, Endpoint};

/// How the simulated path treats datagrams (the same both ways).
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// One-way delay.
    pub latency: Duration,
    /// Extra random delay, uniformly up to this (reorders datagrams).
    pub jitter: Duration,
    /// Probability a datagram is lost.
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability one byte of a datagram is flipped.
    pub corrupt: f64,
    /// Datagrams larger than this are dropped.
    pub mtu: usize,
    /// Bytes per second per direction; 0 is unlimited.
    pub bandwidth: u64,
    /// Bytes the bottleneck queue holds (with a `bandwidth`): a datagram arriving at a full
    /// queue is dropped (drop-tail). 0 is unlimited.
    pub buffer: usize,
    /// An ECN-marking queue (with a `bandwidth`): ECN-capable datagrams that find more than
    /// this many bytes queued are marked CE (RFC 3168). 0 never marks.
    pub ecn_ce_above: usize,
    /// The link clears ECN codepoints (a "bleaching" middlebox).
    pub ecn_bleach: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            mtu: 1500,
            bandwidth: 0,
            buffer: 0,
            ecn_ce_above: 0,
            ecn_bleach: false,
        }
    }
}

/// What the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Datagrams handed to the network.
    pub sent: u64,
    /// Datagrams delivered (duplicates count twice).
    pub delivered: u64,
    /// Datagrams dropped by loss, MTU or a full queue.
    pub dropped: u64,
    /// Of those, datagrams dropped by a full bottleneck queue.
    pub queue_drops: u64,
    /// Datagrams marked CE by the queue.
    pub ce_marked: u64,
    /// Datagrams corrupted.
    pub corrupted: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Batches of more than one datagram the endpoints wrote.
    pub batches: u64,
    /// Datagrams in those batches.
    pub batched: u64,
    /// Handshake TLS steps the endpoints handed out ([`Network::set_tls_offload`]).
    pub tls_jobs: u64,
}

/// An xorshift64* generator: fast, deterministic, good enough for simulation.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A float in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct InFlight {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    to: usize,
    data: Vec<u8>,
    ecn: Option<EcnCodepoint>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A simulated network of endpoints. See the module documentation.
pub struct Network {
    now: Instant,
    seed: u64,
    rng: Rng,
    /// The link settings, changeable between steps.
    pub link: LinkConfig,
    nodes: Vec<(SocketAddr, Endpoint)>,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// When each node's outgoing link is free again (bandwidth).
    busy_until: Vec<Instant>,
    /// Old addresses that still reach a node (NAT mappings, [`Network::nat_rebind`]).
    aliases: Vec<(SocketAddr, usize)>,
    seq: u64,
    buf: Vec<u8>,
    /// The most datagrams an endpoint writes per batch
    /// ([`Endpoint::poll_transmit_batch`]); 64 by default, as with Linux segmentation
    /// offload, so every simulated test exercises batches.
    pub batch_segments: usize,
    stats: NetworkStats,
    /// Every datagram sent, with its sender's address, while capturing.
    captured: Option<Vec<(SocketAddr, Vec<u8>)>>,
    /// How long a handshake TLS step takes when handed out ([`Network::set_tls_offload`]);
    /// `None`: the endpoints run TLS in place.
    tls_offload: Option<Duration>,
    /// TLS steps out, with when each comes back and its node.
    tls_jobs: Vec<(Instant, usize, ConnectionHandle, crate::connection::TlsJob)>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.seed)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Network {
    /// An empty network starting at `start`, with randomness from `seed`.
    pub fn new(start: Instant, seed: u64, link: LinkConfig) -> Self {
        Self {
            now: start,
            seed,
            rng: Rng::new(seed),
            link,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            busy_until: Vec::new(),
            aliases: Vec::new(),
            seq: 0,
            buf: Vec::with_capacity(65536),
            batch_segments: 64,
            stats: NetworkStats::default(),
            captured: None,
            tls_offload: Some(Duration::ZERO),
            tls_jobs: Vec::new(),
        }
    }

    /// Whether the endpoints hand their handshake TLS steps out
    /// ([`Endpoint::set_tls_offload`]), as the runtime does on several threads, and how long
    /// each step takes in virtual time; `None` runs TLS in place. On by default with no delay:
    /// a step comes back after the datagrams of its instant are handled (so packets that
    /// came coalesced behind the one that started it wait for its keys). Affects endpoints
    /// added later too.
    pub fn set_tls_offload(&mut self, delay: Option<Duration>) {
        self.tls_offload = delay;
        for (_, ep) in &mut self.nodes {
            ep.set_tls_offload(delay.is_some());
        }
    }

    /// Starts keeping a copy of every datagram sent from now on (before loss or corruption),
    /// for [`Network::take_captured`].
    pub fn capture(&mut self) {
        self.captured.get_or_insert_with(Vec::new);
    }

    /// The datagrams captured so far, with their senders' addresses.
    pub fn take_captured(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        self.captured
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// The seed this run replays from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }

    /// Adds an endpoint at `addr`; returns its index.
    pub fn add(&mut self, addr: SocketAddr, mut endpoint: Endpoint) -> usize {
        endpoint.set_tls_offload(self.tls_offload.is_some());
        self.nodes.push((addr, endpoint));
        self.busy_until.push(self.now);
        self.nodes.len() - 1
    }

    /// An endpoint by index.
    pub fn endpoint(&mut self, node: usize) -> &mut Endpoint {
        &mut self.nodes[node].1
    }

    /// The address of a node.
    pub fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].0
    }

    /// Gives a node another address: its datagrams come from there from now on, and
    /// datagrams to it must be sent there. With [`Endpoint::local_address_changed`] this is
    /// the node moving; datagrams to the old address are lost.
    pub fn set_addr(&mut self, node: usize, addr: SocketAddr) {
        self.aliases.retain(|(a, _)| *a != addr);
        self.nodes[node].0 = addr;
    }

    /// A NAT in front of a node maps it to a new address, without the node knowing: its
    /// datagrams come from `addr` from now on, and datagrams to the old address still reach
    /// it (the old mapping has not expired yet).
    pub fn nat_rebind(&mut self, node: usize, addr: SocketAddr) {
        let old = self.nodes[node].0;
        self.set_addr(node, addr);
        self.aliases.push((old, node));
    }

    fn transmit_all(&mut self) {
        for from in 0..self.nodes.len() {
            loop {
                let now = self.now;
                let (addr, ep) = &mut self.nodes[from];
                let addr = *addr;
                let Some(t) = ep.poll_transmit_batch(now, self.batch_segments, &mut self.buf)
                else {
                    break;
                };
                let Some(to) = self.route(t.destination) else {
                    self.stats.sent += t.datagrams() as u64;
                    self.stats.dropped += t.datagrams() as u64;
                    continue;
                };
                // A batch is cut into its datagrams as a segmentation-offload send is.
                let stride = t.segment_size.unwrap_or(t.size);
                if t.segment_size.is_some() {
                    assert!(
                        t.datagrams() <= self.batch_segments && t.size <= 65_507,
                        "a batch beyond the limits: {t:?}"
                    );
                    self.stats.batches += 1;
                    self.stats.batched += t.datagrams() as u64;
                }
                let batch = std::mem::take(&mut self.buf);
                for one in batch[..t.size].chunks(stride.max(1)) {
                    let data = one.to_vec();
                    self.stats.sent += 1;
                    if let Some(c) = self.captured.as_mut() {
                        c.push((addr, data.clone()));
                    }
                    self.enqueue(from, addr, to, data, t.ecn);
                }
                self.buf = batch;
            }
        }
    }

    /// The node an address reaches.
    fn route(&self, destination: SocketAddr) -> Option<usize> {
        self.nodes
            .iter()
            .position(|(a, _)| *a == destination)
            .or_else(|| {
                self.aliases
                    .iter()
                    .find(|(a, _)| *a == destination)
                    .map(|(_, n)| *n)
            })
    }

    fn enqueue(
        &mut self,
        from_node: usize,
        from: SocketAddr,
        to: usize,
        mut data: Vec<u8>,
        mut ecn: Option<EcnCodepoint>,
    ) {
        let link = self.link.clone();
        if data.len() > link.mtu || self.rng.unit() < link.loss {
            self.stats.dropped += 1;
            return;
        }
        // Serialization at the link's bandwidth, then propagation.
        let mut depart = self.now;
        if link.bandwidth > 0 {
            let start = self.busy_until[from_node].max(self.now);
            let queued = (start - self.now).as_secs_f64() * link.bandwidth as f64;
            if link.buffer > 0 && queued as usize + data.len() > link.buffer {
                self.stats.dropped += 1;
                self.stats.queue_drops += 1;
                return;
            }
            if link.ecn_ce_above > 0 && ecn.is_some() && queued as usize > link.ecn_ce_above {
                ecn = Some(EcnCodepoint::Ce);
                self.stats.ce_marked += 1;
            }
            let tx = Duration::from_secs_f64(data.len() as f64 / link.bandwidth as f64);
            self.busy_until[from_node] = start + tx;
            depart = start + tx;
        }
        if link.ecn_bleach {
            ecn = None;
        }
        if self.rng.unit() < link.corrupt && !data.is_empty() {
            let i = (self.rng.next_u64() as usize) % data.len();
            data[i] ^= 1 << (self.rng.next_u64() % 8);
            self.stats.corrupted += 1;
        }
        let copies = if self.rng.unit() < link.duplicate {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at = depart + link.latency + link.jitter.mul_f64(self.rng.unit());
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                at,
                seq: self.seq,
                from,
                to,
                data: data.clone(),
                ecn,
            }));
        }
    }

    /// Sends what every endpoint has, then advances to the next delivery or timer (at most to
    /// `limit`) and handles it. Returns `false` when nothing is left to happen before `limit`.
    pub fn step(&mut self, limit: Instant) -> bool {
        self.transmit_all();
        let next_delivery = self.queue.peek().map(|Reverse(d)| d.at);
        let next_timer = self
            .nodes
            .iter()
            .filter_map(|(_, ep)| ep.poll_timeout())
            .min();
        let next_job = self.tls_jobs.iter().map(|j| j.0).min();
        let Some(next) = [next_delivery, next_timer, next_job]
            .into_iter()
            .flatten()
            .min()
        else {
            self.now = self.now.max(limit);
            return false;
        };
        if next > limit {
            self.now = self.now.max(limit);
            return false;
        }
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|Reverse(d)| d.at <= self.now) {
            let Some(Reverse(d)) = self.queue.pop() else {
                break;
            };
            self.stats.delivered += 1;
            let now = self.now;
            self.nodes[d.to]
                .1
                .handle_datagram_ecn(now, d.from, d.ecn, BytesMut::from(&d.data[..]));
        }
        let now = self.now;
        // TLS steps due back (after the datagrams of this instant).
        let mut i = 0;
        while i < self.tls_jobs.len() {
            if self.tls_jobs[i].0 <= now {
                let (_, node, h, mut job) = self.tls_jobs.swap_remove(i);
                job.run();
                self.nodes[node].1.finish_tls_job(now, h, job);
            } else {
                i += 1;
            }
        }
        for (_, ep) in &mut self.nodes {
            if ep.poll_timeout().is_some_and(|t| t <= now) {
                ep.handle_timeout(now);
            }
        }
        // TLS steps handed out now (also by connections that started before offload was
        // turned off).
        let delay = self.tls_offload.unwrap_or_default();
        for (node, (_, ep)) in self.nodes.iter_mut().enumerate() {
            while let Some((h, job)) = ep.poll_tls_job() {
                self.stats.tls_jobs += 1;
                self.tls_jobs.push((now + delay, node, h, job));
            }
        }
        self.transmit_all();
        true
    }

    /// Runs until `done` returns true (checked after every step) or `max` of virtual time
    /// passes; returns whether `done` became true.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&mut Network) -> bool) -> bool {
        let limit = self.now + max;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(limit) && self.now >= limit {
                return done(self);
            }
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod zero_rtt_tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod congestion_tests;

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod hibernate_tests;
#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests take one real Instant as their time origin.
mod migration_tests;
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod version_tests;
