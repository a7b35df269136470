//! A perftest-like microbenchmark of the fabric: latency and throughput of
//! one-sided READ, WRITE, compare-and-swap and fetch-and-add between two
//! nodes, over shm or verbs.
//!
//! Two nodes take part: the client (node 0) issues every request, the
//! server (node 1) owns the memory they target. They run either in one
//! process ([`Mode::Loopback`], the server on a thread) or in two
//! ([`Mode::Server`] and [`Mode::Client`], on one host or two). The server
//! takes part only in the WRITE ping-pong; see [`control`] for the buffer
//! layout and the commands the client sends it.
//!
//! How each number is measured, and how it compares with perftest:
//!
//! * READ, CAS, FAA latency: one request's round trip, posted and its
//!   completion polled, like `ib_read_lat` and `ib_atomic_lat`.
//! * WRITE latency: `ib_write_lat`'s ping-pong. The client WRITEs into the
//!   server's memory, the server polls its memory for the new value and
//!   WRITEs back, the client polls its own memory; a sample is half the
//!   round trip.
//! * Samples are taken as perftest takes them: a timestamp before each
//!   post, a sample is the gap to the next one; timestamps are the CPU's
//!   time-stamp counter where there is one ([`clock`]).
//! * `t_median` is the median of all samples (an hdrhistogram with ns units
//!   and 4 significant digits). perftest's `t_typical` is also a median, of
//!   its sorted samples less the 2 largest; with thousands of samples the two
//!   agree to the histogram's precision.
//! * Throughput: a window of `window_batches` batches of `batch_requests`
//!   requests (each batch one chain, only its last request signaled) is
//!   posted back to back, then one `Endpoint::wait` drains it, since `wait`
//!   waits for everything posted; then the next window. This is coarser
//!   than perftest's `_bw` tests, which refill the send queue as each
//!   completion arrives.
//!
//! This module measures the fabric only; it may not depend on farm-core.

mod client;
pub mod clock;
pub mod control;
mod node;
pub mod report;
mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rdma_transport::limits::{BATCH_WR_COUNT_MAX, WR_OUTSTANDING_MAX};
use rdma_transport::{FabricKind, NodeId};
use serde::Serialize;

use self::client::{Client, Window};
use self::control::{Request, SLOT_BYTES, SLOT_COUNT};
use self::node::{BenchNode, NodeConfig};
use self::report::{host_name, Report, Row};
use crate::error::{Error, Result};

pub const CLIENT_NODE: NodeId = NodeId(0);
pub const SERVER_NODE: NodeId = NodeId(1);
/// perftest's default port, for a verbs server without `--listen`.
pub const DEFAULT_PORT: u16 = 18515;
pub const SIZE_BYTES_MIN: u32 = 8;
pub const SIZE_BYTES_MAX: u32 = SLOT_BYTES as u32;
pub const ITERATIONS_DEFAULT: u64 = 5000;
pub const WARMUP_ITERATIONS_DEFAULT: u64 = 500;
pub const BATCH_REQUESTS_DEFAULT: usize = 16;
pub const WINDOW_BATCHES_DEFAULT: usize = 4;

/// A one-sided operation the benchmark measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Read,
    Write,
    Cas,
    Faa,
    /// A signaled WRITE until its completion (the responder's ack): what
    /// a commit's COMMIT-BACKUP and COMMIT-PRIMARY wait for. Not in the
    /// default set (perftest has no counterpart).
    WriteAck,
}

impl OpKind {
    pub const ALL: [OpKind; 4] = [OpKind::Read, OpKind::Write, OpKind::Cas, OpKind::Faa];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Write => "write",
            OpKind::Cas => "cas",
            OpKind::Faa => "faa",
            OpKind::WriteAck => "write-ack",
        }
    }

    /// Atomics move 8 bytes, whatever sizes were asked for.
    pub fn is_atomic(self) -> bool {
        matches!(self, OpKind::Cas | OpKind::Faa)
    }

    /// How the latency test measures it.
    fn latency_method(self) -> &'static str {
        match self {
            OpKind::Write => "ping_pong_half_round_trip",
            _ => "round_trip",
        }
    }

    /// What a latency sample is divided by: a ping-pong sample holds two
    /// one-way trips.
    fn round_trip_divisor(self) -> f64 {
        match self {
            OpKind::Write => 2.0,
            _ => 1.0,
        }
    }
}

impl FromStr for OpKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<OpKind> {
        OpKind::ALL
            .into_iter()
            .chain([OpKind::WriteAck])
            .find(|op| op.name() == name.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::InvalidOptions(format!(
                    "unknown operation {name:?}: expected read, write, cas, faa or write-ack"
                ))
            })
    }
}

/// The verbs device to use; `None` fields take [`rdma_transport::verbs`]'s
/// defaults (the first device, the IPv4-mapped RoCE v2 GID).
#[derive(Clone, Debug)]
pub struct VerbsOptions {
    pub device: Option<String>,
    pub gid_index: Option<u8>,
    pub port: u8,
}

impl Default for VerbsOptions {
    fn default() -> Self {
        VerbsOptions {
            device: None,
            gid_index: None,
            port: 1,
        }
    }
}

/// Which node(s) this process runs.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Both nodes in this process: the client on the calling thread, the
    /// server on another (verbs: both on one device, listening on
    /// 127.0.0.1).
    Loopback,
    /// The server only, until its client is done. Verbs: handshakes are
    /// accepted on `listen` (default `0.0.0.0:18515`).
    Server { listen: Option<SocketAddr> },
    /// The client only. Verbs: the server accepts handshakes at `server`;
    /// this node accepts the server's on `listen` (default: an ephemeral
    /// port on the address that routes to the server).
    Client {
        server: Option<SocketAddr>,
        listen: Option<SocketAddr>,
    },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub fabric: FabricKind,
    pub mode: Mode,
    /// The shm cluster directory; loopback uses a temporary one if `None`,
    /// two processes must name the same one.
    pub shm_dir: Option<PathBuf>,
    pub verbs: VerbsOptions,
    pub ops: Vec<OpKind>,
    pub sizes_bytes: Vec<u32>,
    pub iterations: u64,
    pub warmup_iterations: u64,
    pub batch_requests: usize,
    pub window_batches: usize,
    /// How long connecting to the server may take (it may start later).
    pub connect_timeout: Duration,
    /// How long a server waits for its client's next command.
    pub idle_timeout: Duration,
    /// Progress lines on stderr.
    pub progress: bool,
    /// Measure latency only, no throughput phase (as `ib_read_lat` and
    /// `ib_write_lat` do): for profiling the latency path alone.
    pub latency_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fabric: FabricKind::Shm,
            mode: Mode::Loopback,
            shm_dir: None,
            verbs: VerbsOptions::default(),
            ops: vec![OpKind::Read, OpKind::Write, OpKind::Cas, OpKind::Faa],
            sizes_bytes: default_sizes_bytes(),
            iterations: ITERATIONS_DEFAULT,
            warmup_iterations: WARMUP_ITERATIONS_DEFAULT,
            batch_requests: BATCH_REQUESTS_DEFAULT,
            window_batches: WINDOW_BATCHES_DEFAULT,
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            progress: true,
            latency_only: false,
        }
    }
}

/// 8 B to 4 KiB, the powers of two.
pub fn default_sizes_bytes() -> Vec<u32> {
    (SIZE_BYTES_MIN.trailing_zeros()..=SIZE_BYTES_MAX.trailing_zeros())
        .map(|shift| 1 << shift)
        .collect()
}

impl Options {
    fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidOptions(message));
        if self.iterations == 0 {
            return invalid("--iters must be at least 1".to_string());
        }
        if self.ops.is_empty() || self.sizes_bytes.is_empty() {
            return invalid("no operation or no size to measure".to_string());
        }
        if let Some(bytes) = self.sizes_bytes.iter().find(|bytes| {
            !bytes.is_power_of_two() || !(SIZE_BYTES_MIN..=SIZE_BYTES_MAX).contains(bytes)
        }) {
            return invalid(format!(
                "size {bytes}: sizes are powers of two from {SIZE_BYTES_MIN} to {SIZE_BYTES_MAX} bytes"
            ));
        }
        let window_requests = self.batch_requests.saturating_mul(self.window_batches);
        if self.batch_requests == 0
            || self.batch_requests > BATCH_WR_COUNT_MAX
            || self.window_batches == 0
            || window_requests > SLOT_COUNT as usize
            || window_requests > WR_OUTSTANDING_MAX
        {
            return invalid(format!(
                "a window of {} × {} requests: batches hold 1 to {BATCH_WR_COUNT_MAX}, a window at most {SLOT_COUNT}",
                self.window_batches, self.batch_requests
            ));
        }
        let two_process_shm = self.fabric == FabricKind::Shm
            && !matches!(self.mode, Mode::Loopback)
            && self.shm_dir.is_none();
        if two_process_shm {
            return invalid(
                "two shm processes need the same --shm-dir DIR (server and client)".to_string(),
            );
        }
        if self.fabric == FabricKind::Verbs
            && matches!(self.mode, Mode::Client { server: None, .. })
        {
            return invalid("a verbs client needs --connect ADDR".to_string());
        }
        Ok(())
    }

    /// The (op, size) pairs to measure, in order; atomics once, at 8 bytes.
    fn tests(&self) -> Vec<(OpKind, u32)> {
        let mut tests = Vec::new();
        for &op in &self.ops {
            if op.is_atomic() {
                tests.push((op, 8));
            } else {
                tests.extend(self.sizes_bytes.iter().map(|&bytes| (op, bytes)));
            }
        }
        tests.dedup();
        tests
    }
}

/// `farm rdma-bench`: runs the benchmark, prints the table on the client's
/// side and writes it as JSON to `json` when given.
///
/// # Errors
/// As [`run`]; [`Error::WriteReport`] when the JSON cannot be written.
pub fn main(options: &Options, json: Option<&std::path::Path>) -> Result<()> {
    if let Some(report) = run(options)? {
        print!("{}", report.table());
        if let Some(path) = json {
            report.write_json(path)?;
        }
    }
    Ok(())
}

/// Runs the benchmark. Returns the report on the client's side (loopback
/// or [`Mode::Client`]), `None` on a server.
///
/// # Errors
/// [`Error::InvalidOptions`]; the fabric's errors, each naming the step.
pub fn run(options: &Options) -> Result<Option<Report>> {
    options.validate()?;
    let loopback_listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    match &options.mode {
        Mode::Server { listen } => {
            let listen = listen.unwrap_or(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                DEFAULT_PORT,
            ));
            // Validated: shm names one; verbs does not use it.
            let shm_dir = options.shm_dir.clone().unwrap_or_default();
            let node = open_node(options, SERVER_NODE, &shm_dir, listen)?;
            eprintln!(
                "rdma-bench server: node {SERVER_NODE} on {}{}; waiting for a client",
                node.device(),
                node.listen_address()
                    .map(|address| format!(", handshakes on {address}"))
                    .unwrap_or_default()
            );
            server::serve(node, options.idle_timeout, options.progress)?;
            eprintln!("rdma-bench server: the client is done");
            Ok(None)
        }
        Mode::Client { server, listen } => {
            // Validated: shm names one; verbs does not use it.
            let shm_dir = options.shm_dir.clone().unwrap_or_default();
            let listen = match (listen, server) {
                (Some(listen), _) => *listen,
                (None, Some(server)) => SocketAddr::new(unspecified_like(server.ip()), 0),
                (None, None) => loopback_listen,
            };
            let node = open_node(options, CLIENT_NODE, &shm_dir, listen)?;
            if let Some(server) = server {
                node.set_peer(SERVER_NODE, *server);
            }
            let advertised = match (node.listen_address(), server) {
                (Some(listen), Some(server)) => Some(advertised_address(listen, *server)),
                (listen, _) => listen,
            };
            let client = Client::start(node, advertised, options.connect_timeout)?;
            measure(options, client, "two processes").map(Some)
        }
        Mode::Loopback => {
            let temporary;
            let shm_dir = match &options.shm_dir {
                Some(dir) => dir.clone(),
                None => {
                    temporary = tempfile::Builder::new()
                        .prefix("farm-rdma-bench-")
                        .tempdir()
                        .map_err(|source| Error::ShmDirectory { source })?;
                    temporary.path().to_path_buf()
                }
            };
            let server_node = open_node(options, SERVER_NODE, &shm_dir, loopback_listen)?;
            let client_node = open_node(options, CLIENT_NODE, &shm_dir, loopback_listen)?;
            if let Some(address) = server_node.listen_address() {
                client_node.set_peer(SERVER_NODE, address);
            }
            let idle_timeout = options.idle_timeout;
            let server = std::thread::Builder::new()
                .name("rdma-bench-server".to_string())
                .spawn(move || server::serve(server_node, idle_timeout, false))
                .map_err(|source| Error::SpawnServer { source })?;
            // On an error the server thread is left behind: it gives up
            // within `idle_timeout`, or dies with the process.
            let advertised = client_node.listen_address();
            let client = Client::start(client_node, advertised, options.connect_timeout)?;
            let report = measure(options, client, "loopback (both nodes in one process)")?;
            server.join().map_err(|_| Error::ServerPanicked)??;
            Ok(Some(report))
        }
    }
}

fn open_node(
    options: &Options,
    node: NodeId,
    shm_dir: &std::path::Path,
    listen: SocketAddr,
) -> Result<BenchNode> {
    BenchNode::open(NodeConfig {
        kind: options.fabric,
        node,
        shm_dir,
        verbs: &options.verbs,
        listen,
    })
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// The address the server can reach `listen` at: `listen` itself unless it
/// is a wildcard, else the local address the kernel routes to `server` from
/// (a connected UDP socket sends nothing).
fn advertised_address(listen: SocketAddr, server: SocketAddr) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let routed = UdpSocket::bind(SocketAddr::new(unspecified_like(server.ip()), 0))
        .and_then(|socket| {
            socket.connect(server)?;
            socket.local_addr()
        })
        .map(|local| local.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(routed, listen.port())
}

/// Runs every (op, size) test, then tells the server it is done.
fn measure(options: &Options, mut client: Client, mode: &str) -> Result<Report> {
    let tests = options.tests();
    let window = Window {
        batch_requests: options.batch_requests,
        batches: options.window_batches,
    };
    let mut rows = Vec::with_capacity(tests.len());
    for (index, &(op, bytes)) in tests.iter().enumerate() {
        if options.progress {
            eprintln!(
                "rdma-bench: [{}/{}] {} {bytes} B: {} + {} latency rounds{}",
                index + 1,
                tests.len(),
                op.name(),
                options.warmup_iterations,
                options.iterations,
                if options.latency_only {
                    ""
                } else {
                    ", then throughput"
                }
            );
        }
        let recorder = client.latency(op, bytes, options.warmup_iterations, options.iterations)?;
        let latency = recorder.summary(op.round_trip_divisor());
        let throughput = if options.latency_only {
            None
        } else {
            Some(client.throughput(
                op,
                bytes,
                options.warmup_iterations,
                options.iterations,
                window,
            )?)
        };
        let ops_per_sec = throughput.as_ref().map(|throughput| {
            throughput.requests as f64 / throughput.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
        });
        rows.push(Row {
            op: op.name().to_string(),
            bytes,
            iterations: recorder.count(),
            latency_method: op.latency_method().to_string(),
            min_us: latency.min_us,
            median_us: latency.median_us,
            p99_us: latency.p99_us,
            p999_us: latency.p999_us,
            max_us: latency.max_us,
            avg_us: latency.avg_us,
            throughput_iterations: throughput.map(|throughput| throughput.requests),
            ops_per_sec,
            mb_per_sec: ops_per_sec.map(|ops| ops * f64::from(bytes) / 1e6),
        });
    }
    client.request(Request::Done)?;
    let device = client.node().device().to_string();
    Ok(Report {
        fabric: options.fabric,
        device,
        host: host_name(),
        nproc: std::thread::available_parallelism().map_or(1, |count| count.get()),
        mode: mode.to_string(),
        warmup_iterations: options.warmup_iterations,
        batch_requests: options.batch_requests,
        window_batches: options.window_batches,
        notes: vec![
            "latency: read/cas/faa = one request's round trip (like ib_read_lat, ib_atomic_lat); \
             write = ping-pong round trip / 2 (like ib_write_lat)"
                .to_string(),
            "t_median: median of all samples (hdrhistogram, ns, 4 significant digits); \
             perftest's t_typical is the median of its samples less the 2 largest"
                .to_string(),
            if options.latency_only {
                "throughput: not measured (--latency-only)".to_string()
            } else {
                format!(
                    "throughput: windows of {} batches x {} requests (last of each batch signaled), \
                     posted back to back, drained by one wait; MB/s = 10^6 B/s",
                    options.window_batches, options.batch_requests
                )
            },
        ],
        rows,
    })
}
