//! `farm rdma-bench`: arguments for [`farm_benches::rdma_bench::main`],
//! which does the work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use farm_benches::rdma_bench::{self, Mode, OpKind, Options, VerbsOptions};

use crate::args::FabricArgs;
use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The fabric to measure.
    #[command(flatten)]
    fabric: FabricArgs,

    /// Run only the server (node 1), until its client is done. Verbs:
    /// accepts handshakes on --listen (default 0.0.0.0:18515).
    #[arg(long, conflicts_with_all = ["connect", "client"])]
    server: bool,

    /// Run only the client (node 0) of a verbs server accepting handshakes
    /// at ADDR (host:port).
    #[arg(long, value_name = "ADDR")]
    connect: Option<SocketAddr>,

    /// Run only the client (node 0); for shm, with the server's --shm-dir.
    #[arg(long)]
    client: bool,

    /// Verbs: where this node accepts handshakes.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Shm: the cluster directory both processes share (loopback: a
    /// temporary directory if not given).
    #[arg(long, value_name = "DIR")]
    shm_dir: Option<PathBuf>,

    /// Verbs: the device port.
    #[arg(long, default_value_t = 1)]
    ib_port: u8,

    /// Operations to measure, comma-separated: read, write, cas, faa (and
    /// write-ack: a signaled WRITE until its acknowledgement).
    #[arg(long, value_delimiter = ',', default_value = "read,write,cas,faa")]
    ops: Vec<OpKind>,

    /// Request sizes in bytes, comma-separated powers of two from 8 to 4096
    /// (atomics are always 8 bytes). Default: all of them.
    #[arg(long, short = 's', value_delimiter = ',')]
    sizes: Vec<u32>,

    /// Measured iterations per (operation, size), latency and throughput.
    #[arg(long, short = 'n', default_value_t = rdma_bench::ITERATIONS_DEFAULT)]
    iters: u64,

    /// Iterations before measuring.
    #[arg(long, default_value_t = rdma_bench::WARMUP_ITERATIONS_DEFAULT)]
    warmup: u64,

    /// Latency only: skip the throughput phase (as ib_read_lat and
    /// ib_write_lat measure); the JSON rows then have no throughput fields.
    #[arg(long)]
    latency_only: bool,

    /// Throughput phase: requests per posted batch (only the last signaled).
    #[arg(long, default_value_t = rdma_bench::BATCH_REQUESTS_DEFAULT)]
    batch: usize,

    /// Throughput phase: batches posted back to back before one wait.
    #[arg(long, default_value_t = rdma_bench::WINDOW_BATCHES_DEFAULT)]
    window_batches: usize,

    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Seconds a client keeps trying to reach its server.
    #[arg(long, default_value_t = 30)]
    connect_timeout_s: u64,

    /// Seconds a server waits for its client's next command before giving up.
    #[arg(long, default_value_t = 300)]
    idle_timeout_s: u64,

    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub fn run(args: Args) -> CommandResult {
    let mode = if args.server {
        Mode::Server {
            listen: args.listen,
        }
    } else if args.connect.is_some() || args.client {
        Mode::Client {
            server: args.connect,
            listen: args.listen,
        }
    } else {
        Mode::Loopback
    };
    rdma_bench::main(
        &Options {
            fabric: args.fabric.fabric,
            mode,
            shm_dir: args.shm_dir,
            verbs: VerbsOptions {
                device: args.fabric.verbs.device,
                gid_index: args.fabric.verbs.gid_index,
                port: args.ib_port,
            },
            ops: args.ops,
            sizes_bytes: if args.sizes.is_empty() {
                rdma_bench::default_sizes_bytes()
            } else {
                args.sizes
            },
            iterations: args.iters,
            warmup_iterations: args.warmup,
            batch_requests: args.batch,
            window_batches: args.window_batches,
            connect_timeout: Duration::from_secs(args.connect_timeout_s),
            idle_timeout: Duration::from_secs(args.idle_timeout_s),
            progress: !args.quiet,
            latency_only: args.latency_only,
        },
        args.json.as_deref(),
    )?;
    Ok(())
}
