//! What the bulk scenario's processes share: the settings both stacks use, the certificate
//! files, CPU time from getrusage, and the one-line report a child prints to its parent.

use std::path::Path;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Stream receive window both stacks use (fixed: no autotuning, so both run the same window).
pub(crate) const STREAM_WINDOW: u64 = 16 << 20;
/// Connection receive window both stacks use.
pub(crate) const CONN_WINDOW: u64 = 32 << 20;
/// Send buffer both stacks use.
pub(crate) const SEND_WINDOW: u64 = 32 << 20;
/// Size of the chunk the client writes repeatedly (one allocation, cloned as `Bytes`).
pub(crate) const CHUNK: usize = 1 << 20;
/// Chunks a bulk receiver takes per read call on both stacks (`read_chunks`: one call, and
/// one lock of the connection, for up to this many received packets' data).
pub(crate) const READ_SLOTS: usize = 32;

/// The most concurrent bidirectional streams either stack allows (`streams` scenario).
pub(crate) const MAX_STREAMS: u64 = 128;
/// Streams in flight at once in the `streams` scenario.
pub(crate) const CONCURRENT_STREAMS: usize = 100;
/// Bytes each stream of the `streams` scenario carries each way.
pub(crate) const SMALL: usize = 100;
/// Handshakes in flight at once in the `handshakes` scenario.
pub(crate) const CONCURRENT_HANDSHAKES: usize = 64;
/// Round trips before the `latency` scenario starts counting.
pub(crate) const LATENCY_WARM_UP: u64 = 200;

/// Takes one unit of work from a shared count; false when none is left.
pub(crate) fn take_one(left: &std::sync::atomic::AtomicU64) -> bool {
    use std::sync::atomic::Ordering;
    left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

/// The 50th and 99th percentiles of `samples`, in microseconds.
pub(crate) fn percentiles(samples: &mut [Duration]) -> Option<(f64, f64)> {
    if samples.is_empty() {
        return None;
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    Some((at(0.50), at(0.99)))
}

/// The UDP receive and send buffer size GQUIC's runtime asks for on its sockets
/// (`gquic_transport::runtime`): the quinn side's sockets get the same, where quinn would
/// keep the kernel default (about 208 KiB), so the comparison is of the stacks, not of a
/// socket option.
pub(crate) const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// User plus system CPU time of this process so far (getrusage(RUSAGE_SELF)).
pub(crate) fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct we pass, which is plain old data and zeroed.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The certificate chain and key written by the parent process.
pub(crate) fn load_cert(dir: &Path) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .expect("cert.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert.pem");
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key.pem");
    (chain, key)
}

/// The rustls configurations both stacks use: same provider (GQUIC's default: aws-lc-rs' key
/// exchange with ring's cipher suites, AES-128-GCM first), TLS 1.3 only, same certificate,
/// ALPN "bench".
pub(crate) fn tls_configs(dir: &Path) -> (rustls::ServerConfig, rustls::ClientConfig) {
    tls_configs_for(dir, true)
}

/// [`tls_configs`], with TLS session resumption on (`resume`: the rustls defaults, in-memory
/// caches on both sides) or off (no tickets, no client cache: every handshake is full).
pub(crate) fn tls_configs_for(
    dir: &Path,
    resume: bool,
) -> (rustls::ServerConfig, rustls::ClientConfig) {
    let (mut server, mut client) = tls_base(dir);
    if resume {
        client.resumption =
            rustls::client::Resumption::store(std::sync::Arc::new(CountingTickets::default()));
    } else {
        server.send_tls13_tickets = 0;
        server.session_storage = std::sync::Arc::new(rustls::server::NoServerSessionStorage {});
        client.resumption = rustls::client::Resumption::disabled();
    }
    (server, client)
}

/// Tickets the client presented (handshakes that tried to resume), counted by
/// [`CountingTickets`].
pub(crate) static TICKETS_TAKEN: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);
/// Handshakes that found no ticket to present.
pub(crate) static TICKETS_MISSED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// Zeroes [`TICKETS_TAKEN`] and [`TICKETS_MISSED`] (after the warm-up connections).
pub(crate) fn reset_ticket_counts() {
    TICKETS_TAKEN.store(0, std::sync::atomic::Ordering::Relaxed);
    TICKETS_MISSED.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// Fails unless at least 90% of `count` handshakes presented a ticket: otherwise the resumed
/// figure would be a full handshake's. (The warm-up connections leave a ticket for each of the
/// first concurrent handshakes.)
pub(crate) fn check_resumed(count: u64) -> Result<(), BoxError> {
    let taken = TICKETS_TAKEN.load(std::sync::atomic::Ordering::Relaxed);
    let missed = TICKETS_MISSED.load(std::sync::atomic::Ordering::Relaxed);
    if taken * 10 < count * 9 {
        return Err(format!(
            "only {taken} of {count} handshakes presented a session ticket ({missed} found none)"
        )
        .into());
    }
    eprintln!("tickets presented: {taken} of {}", taken + missed);
    Ok(())
}

/// A client session cache that counts the TLS 1.3 tickets handshakes take. Unlike rustls'
/// `ClientSessionMemoryCache`, which keeps 8 tickets per server, it keeps up to 1024: with 64
/// handshakes at a time, tickets arrive and are taken in bursts, and 8 would leave most
/// handshakes of a burst without one.
#[derive(Debug, Default)]
struct CountingTickets {
    /// Key-exchange hints and TLS 1.2 sessions (unused: TLS 1.3 only).
    other: std::sync::Mutex<Option<rustls::NamedGroup>>,
    tickets: std::sync::Mutex<std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>>,
}

impl rustls::client::ClientSessionStore for CountingTickets {
    fn set_kx_hint(&self, _: rustls::pki_types::ServerName<'static>, g: rustls::NamedGroup) {
        *self.other.lock().expect("lock") = Some(g);
    }
    fn kx_hint(&self, _: &rustls::pki_types::ServerName<'_>) -> Option<rustls::NamedGroup> {
        *self.other.lock().expect("lock")
    }
    fn set_tls12_session(
        &self,
        _: rustls::pki_types::ServerName<'static>,
        _: rustls::client::Tls12ClientSessionValue,
    ) {
    }
    fn tls12_session(
        &self,
        _: &rustls::pki_types::ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        None
    }
    fn remove_tls12_session(&self, _: &rustls::pki_types::ServerName<'static>) {}
    fn insert_tls13_ticket(
        &self,
        _: rustls::pki_types::ServerName<'static>,
        v: rustls::client::Tls13ClientSessionValue,
    ) {
        let mut t = self.tickets.lock().expect("lock");
        if t.len() == 1024 {
            t.pop_front();
        }
        t.push_back(v);
    }
    fn take_tls13_ticket(
        &self,
        _: &rustls::pki_types::ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        // The newest first, as rustls' cache does.
        let t = self.tickets.lock().expect("lock").pop_back();
        let counter = if t.is_some() {
            &TICKETS_TAKEN
        } else {
            &TICKETS_MISSED
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t
    }
}

fn tls_base(dir: &Path) -> (rustls::ServerConfig, rustls::ClientConfig) {
    // GQUIC's default: aws-lc-rs' key exchange with ring's cipher suites,
    // TLS_AES_128_GCM_SHA256 first (see `gquic_transport::crypto::default_provider`); quinn
    // gets the very same.
    let provider = std::sync::Arc::new(gquic_transport::crypto::default_provider());
    let (chain, key) = load_cert(dir);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(chain[0].clone()).expect("root");
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate");
    server.alpn_protocols = vec![b"bench".to_vec()];
    server.max_early_data_size = 0;
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"bench".to_vec()];
    (server, client)
}

/// User plus system CPU time of the calling thread so far (getrusage(RUSAGE_THREAD)).
pub(crate) fn thread_cpu_time() -> Duration {
    // SAFETY: as in `cpu_time`.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// How the stacks' tasks are scheduled in a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// Server and client each on a current-thread runtime of its own thread: CPU time is
    /// measured per side.
    CurrentThread,
    /// Server and client on one multi-thread runtime with two workers: CPU time is the
    /// process's.
    MultiThread,
    /// As [`Flavour::CurrentThread`], but each side's work runs as a task spawned on its
    /// runtime (the shape of a server's per-connection work), not as the runtime's `block_on`
    /// future. A current-thread runtime whose `block_on` future another task wakes (a QUIC
    /// stack's driver task handing it data) polls its I/O driver once more, without
    /// blocking, before it polls that future: one more `epoll_wait` per wake-up, which a
    /// spawned task, queued and run in the same tick, does not cost.
    CurrentThreadTasks,
}

impl Flavour {
    /// The name on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavour::CurrentThread => "ct",
            Flavour::MultiThread => "mt",
            Flavour::CurrentThreadTasks => "ctt",
        }
    }

    /// Parses [`Flavour::name`].
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "ct" => Some(Flavour::CurrentThread),
            "mt" => Some(Flavour::MultiThread),
            "ctt" => Some(Flavour::CurrentThreadTasks),
            _ => None,
        }
    }
}

/// What a client run reports to [`run_pair`]: the measured interval and packets lost.
pub(crate) struct ClientRun {
    /// Units of work done (bytes, requests, streams...).
    pub(crate) units: u64,
    /// Wall-clock time of the measured part.
    pub(crate) wall: Duration,
    /// Packets the stack declared lost.
    pub(crate) lost: u64,
    /// Each round trip's time (latency runs; empty in the others): [`Outcome::percentiles`].
    pub(crate) round_trips: Vec<Duration>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs one server and one client in `flavour`: `server` gets a channel for its address and
/// serves until the client is done; `client` connects to that address. CPU time is taken
/// around both (per thread with [`Flavour::CurrentThread`]).
pub(crate) fn run_pair<SF, SFut, CF, CFut>(
    flavour: Flavour,
    server: SF,
    client: CF,
) -> Result<Outcome, BoxError>
where
    SF: FnOnce(std::sync::mpsc::Sender<std::net::SocketAddr>) -> SFut + Send + 'static,
    SFut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
    CF: FnOnce(std::net::SocketAddr) -> CFut,
    CFut: std::future::Future<Output = Result<ClientRun, BoxError>> + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    match flavour {
        Flavour::CurrentThread | Flavour::CurrentThreadTasks => {
            let tasks = flavour == Flavour::CurrentThreadTasks;
            let srv = std::thread::spawn(move || -> Result<Duration, String> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                let cpu0 = thread_cpu_time();
                if tasks {
                    rt.block_on(async move { tokio::spawn(server(addr_tx)).await })
                        .map_err(|e| e.to_string())?
                } else {
                    rt.block_on(server(addr_tx))
                }
                .map_err(|e| e.to_string())?;
                Ok(thread_cpu_time() - cpu0)
            });
            let addr = addr_rx.recv().map_err(|_| "the server did not start")?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let cpu0 = thread_cpu_time();
            let mut run = if tasks {
                rt.block_on(async move { tokio::spawn(client(addr)).await })??
            } else {
                rt.block_on(client(addr))?
            };
            let client_cpu = thread_cpu_time() - cpu0;
            drop(rt);
            let server_cpu = srv.join().map_err(|_| "the server panicked")??;
            Ok(Outcome {
                bytes: run.units,
                wall: run.wall,
                cpu: client_cpu + server_cpu,
                client_cpu: Some(client_cpu),
                server_cpu: Some(server_cpu),
                lost: run.lost,
                percentiles: percentiles(&mut run.round_trips),
            })
        }
        Flavour::MultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let cpu0 = cpu_time();
            let mut run = rt.block_on(async move {
                let srv = tokio::spawn(server(addr_tx));
                let addr = addr_rx.recv().map_err(|_| "the server did not start")?;
                let run = client(addr).await?;
                srv.await.map_err(|e| e.to_string())??;
                Ok::<_, BoxError>(run)
            })?;
            let cpu = cpu_time() - cpu0;
            Ok(Outcome {
                bytes: run.units,
                wall: run.wall,
                cpu,
                client_cpu: None,
                server_cpu: None,
                lost: run.lost,
                percentiles: percentiles(&mut run.round_trips),
            })
        }
    }
}

/// One measured run, as a child prints it:
/// `RESULT <units> <wall s> <cpu s> <client cpu s|-> <server cpu s|-> <lost>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    /// Bytes moved.
    pub(crate) bytes: u64,
    /// Wall-clock time from opening the stream to the server's acknowledgement.
    pub(crate) wall: Duration,
    /// CPU time of client and server.
    pub(crate) cpu: Duration,
    /// The client's share, when it was measured apart.
    pub(crate) client_cpu: Option<Duration>,
    /// The server's share, when it was measured apart.
    pub(crate) server_cpu: Option<Duration>,
    /// Packets the sender declared lost.
    pub(crate) lost: u64,
    /// Round-trip p50 and p99 in microseconds (`latency`).
    pub(crate) percentiles: Option<(f64, f64)>,
}

impl Outcome {
    /// The line a child prints.
    pub(crate) fn line(&self) -> String {
        let side =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.6}", d.as_secs_f64()));
        let pct = self
            .percentiles
            .map_or("- -".to_owned(), |(a, b)| format!("{a:.3} {b:.3}"));
        format!(
            "RESULT {} {:.6} {:.6} {} {} {} {pct}",
            self.bytes,
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            side(self.client_cpu),
            side(self.server_cpu),
            self.lost
        )
    }

    /// Parses [`Outcome::line`].
    pub(crate) fn parse(output: &str) -> Option<Self> {
        let line = output.lines().find(|l| l.starts_with("RESULT "))?;
        let mut f = line.split_whitespace().skip(1);
        let side = |s: &str| s.parse().ok().map(Duration::from_secs_f64);
        Some(Self {
            bytes: f.next()?.parse().ok()?,
            wall: Duration::from_secs_f64(f.next()?.parse().ok()?),
            cpu: Duration::from_secs_f64(f.next()?.parse().ok()?),
            client_cpu: side(f.next()?),
            server_cpu: side(f.next()?),
            lost: f.next()?.parse().ok()?,
            percentiles: match (f.next(), f.next()) {
                (Some(a), Some(b)) => a.parse().ok().zip(b.parse().ok()),
                _ => None,
            },
        })
    }

    /// Gigabits per second.
    pub(crate) fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.wall.as_secs_f64() / 1e9
    }

    /// CPU-seconds per gigabyte (10^9 bytes), client and server together.
    pub(crate) fn cpu_per_gb(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.bytes as f64 / 1e9)
    }
}

/// Median, minimum and maximum of some runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Spread {
    /// Of `values` (not empty).
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }

    /// The ratios `a[i] / b[i]` of runs made side by side (interleaved rounds), as a spread:
    /// a slow or fast period of the machine moves both runs of a round, and their ratio
    /// less than the ratio of two medians taken over the whole series. `None` without a
    /// complete pair.
    pub(crate) fn of_pairs(a: &[f64], b: &[f64]) -> Option<Self> {
        Self::of(
            a.iter()
                .zip(b)
                .filter(|(_, &y)| y > 0.0)
                .map(|(x, y)| x / y),
        )
    }

    /// `median (min-max)` with `prec` decimals.
    pub(crate) fn show(&self, prec: usize) -> String {
        format!(
            "{:.prec$} ({:.prec$}-{:.prec$})",
            self.median, self.min, self.max
        )
    }
}

/// The reference for `latency`: `count` one-byte round trips over plain UDP sockets, with the
/// same runtimes and threads as the stacks' runs.
pub(crate) fn udp_pingpong(count: u64, flavour: Flavour) -> Result<Outcome, BoxError> {
    let outcome = run_pair(
        flavour,
        move |addr_tx| async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            addr_tx.send(socket.local_addr()?)?;
            let mut buf = [0u8; 16];
            loop {
                let (n, from) = socket.recv_from(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                socket.send_to(&buf[..n], from).await?;
            }
        },
        move |addr| async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
            socket.connect(addr).await?;
            let mut buf = [7u8; 16];
            let mut round_trips = Vec::with_capacity(count as usize);
            let t0 = std::time::Instant::now();
            for i in 0..count + LATENCY_WARM_UP {
                let t = std::time::Instant::now();
                socket.send(&buf[..1]).await?;
                socket.recv(&mut buf).await?;
                if i >= LATENCY_WARM_UP {
                    round_trips.push(t.elapsed());
                }
            }
            let wall = t0.elapsed();
            // An empty datagram ends the server.
            socket.send(&[]).await?;
            Ok(ClientRun {
                units: count,
                wall,
                lost: 0,
                round_trips,
            })
        },
    )?;
    Ok(outcome)
}

/// Live heap bytes of this process (the counting allocator below), counted since
/// [`COUNTING`] was set.
pub(crate) static HEAP_LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Whether the allocator counts: only `idle` server children do (from [`idle_baseline`]). A
/// counter every allocation and free of every thread adds to is one cache line that the
/// client's and the server's threads take from each other on each call: in the timed
/// scenarios it cost both stacks (gquic and quinn alike) several percent of their CPU.
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Adds `delta` to [`HEAP_LIVE`] while counting.
#[inline]
fn count(delta: i64) {
    if COUNTING.load(std::sync::atomic::Ordering::Relaxed) {
        HEAP_LIVE.fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The system allocator, counting live bytes for the `idle` scenario.
pub(crate) struct CountingAlloc;

// SAFETY: every call goes to the system allocator unchanged; only a counter is kept.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count(-(layout.size() as i64));
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Resident set size of this process in bytes (/proc/self/statm).
pub(crate) fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Bytes the C allocator (glibc malloc) has handed out and not had back: Rust's allocations
/// (the system allocator is malloc) and C libraries' own, such as aws-lc's key contexts,
/// which the counting allocator never sees.
pub(crate) fn malloc_in_use() -> i64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let m = unsafe { libc::mallinfo2() };
        (m.uordblks + m.hblkhd) as i64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        0
    }
}

/// A server child's starting point for [`idle_line`]: (Rust heap, malloc in use, RSS). Starts
/// the heap count: the growth [`idle_line`] reports is what is allocated less what is freed
/// from here on, the same whether counting started here or at the process's start.
pub(crate) fn idle_baseline() -> (i64, i64, u64) {
    COUNTING.store(true, std::sync::atomic::Ordering::SeqCst);
    (
        HEAP_LIVE.load(std::sync::atomic::Ordering::Relaxed),
        malloc_in_use(),
        rss(),
    )
}

/// What an `idle` server child reports: growth per connection held of the Rust heap (the
/// counting allocator), of all malloc'd memory (Rust and C) and of RSS.
pub(crate) fn idle_line(connections: u64, (heap0, malloc0, rss0): (i64, i64, u64)) -> String {
    let heap = HEAP_LIVE.load(std::sync::atomic::Ordering::Relaxed) - heap0;
    let malloc = malloc_in_use() - malloc0;
    let rss = rss().saturating_sub(rss0);
    let per = |v: f64| v / connections as f64;
    format!(
        "IDLE {connections} {:.1} {:.1} {:.1}",
        per(heap as f64),
        per(rss as f64),
        per(malloc as f64)
    )
}

/// What [`parse_idle`] reads: bytes per connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleFigures {
    /// Rust heap (the counting allocator).
    pub(crate) heap: f64,
    /// Resident set size.
    pub(crate) rss: f64,
    /// Everything malloc'd, C libraries included.
    pub(crate) malloc: f64,
}

/// Parses [`idle_line`].
pub(crate) fn parse_idle(output: &str) -> Option<IdleFigures> {
    let line = output.lines().find(|l| l.starts_with("IDLE "))?;
    let mut f = line.split_whitespace().skip(2);
    Some(IdleFigures {
        heap: f.next()?.parse().ok()?,
        rss: f.next()?.parse().ok()?,
        malloc: f.next()?.parse().ok()?,
    })
}

/// How long idle connections of the `idle` scenario stay open without traffic.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The certificate directory the parent wrote for this run (`GQUIC_BENCH_CERTS`), written on
/// first use.
pub(crate) fn cert_dir() -> String {
    if let Ok(d) = std::env::var("GQUIC_BENCH_CERTS") {
        return d;
    }
    let dir = std::env::temp_dir().join(format!("gquic-bench-idle-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(cert) = rcgen::generate_simple_self_signed(vec!["localhost".into()]) {
        let _ = std::fs::write(dir.join("cert.pem"), cert.cert.pem());
        let _ = std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem());
    }
    let d = dir.display().to_string();
    // Children inherit it.
    std::env::set_var("GQUIC_BENCH_CERTS", &d);
    d
}

/// Tells the parent where a server listens (`ADDR <addr>` on stdout).
pub(crate) fn announce(addr: std::net::SocketAddr) {
    use std::io::Write;
    println!("ADDR {addr}");
    let _ = std::io::stdout().flush();
}

/// Waits for the parent's line on stdin (or its end).
pub(crate) async fn wait_for_parent() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::Spread;

    /// Paired ratios are taken round by round: a series where both stacks slow down together
    /// keeps its ratio, which the ratio of the two medians does not.
    #[test]
    fn paired_ratios_follow_the_rounds() {
        let gquic = [12.0, 6.0, 12.0, 6.0, 6.0];
        let quinn = [10.0, 5.0, 10.0, 5.0, 7.5];
        let p = Spread::of_pairs(&gquic, &quinn).unwrap();
        assert!((p.median - 1.2).abs() < 1e-9, "{}", p.median);
        assert!((p.min - 0.8).abs() < 1e-9 && (p.max - 1.2).abs() < 1e-9);
        let medians = Spread::of(gquic).unwrap().median / Spread::of(quinn).unwrap().median;
        assert!((medians - 0.8).abs() < 1e-9, "{medians}");
        // A round without its quinn run (or with a zero) is left out, not divided by.
        let p = Spread::of_pairs(&[1.0, 2.0], &[0.0]).is_none();
        assert!(p);
    }
}
