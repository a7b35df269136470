//! `farm bench`: arguments for [`farm_benches::bench::command::run`]. With
//! no arguments: TATP on a three-node, three-copy in-process cluster over
//! shm, 10 s measured after a 2 s warm-up, a progress bar, then a table
//! (and JSON with --json).

use std::path::PathBuf;
use std::time::Duration;

use farm_benches::bench::command::{self, BenchOptions, Target};
use farm_benches::bench::config::WorkloadName;
use farm_benches::bench::ycsb::Distribution;

use crate::args::FabricArgs;
use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// tatp, smallbank, ycsb-a, ycsb-b, ycsb-c, ycsb-f or tpcc.
    #[arg(long, default_value = "tatp")]
    pub workload: WorkloadName,
    /// Nodes (default 3); a comma list sweeps (e.g. 1,2,3).
    #[arg(long, value_delimiter = ',')]
    pub nodes: Vec<usize>,
    /// Client threads per node; a comma list sweeps (e.g. 1,2,4). Default:
    /// on shm (in process or --processes) the node's share of this host's
    /// cores, at least 1; otherwise 2.
    #[arg(long, value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Transactions each client thread keeps in flight. Above 1 each
    /// client thread is a worker event loop running that many
    /// transactions as tasks, which pause where they wait (a LOCK answer,
    /// a READ's completion) and let the others run (farm_core::Worker).
    /// Default: 2 on shm (in process or --processes), otherwise 1.
    #[arg(long)]
    pub in_flight: Option<usize>,
    /// Transactions each node runs at once, whatever its client threads
    /// and tasks (`Node::set_max_in_flight`): a `begin` beyond it waits
    /// for one to end; 0: unbounded. Default: on shm (in process or
    /// --processes), what the default client set-up keeps in flight per
    /// node (its worker threads × 2); otherwise unbounded.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Replicas of every region (at most the number of nodes).
    #[arg(long, default_value_t = 3)]
    pub copies: usize,
    /// Population: 1 = 10,000 subscribers / accounts / records.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// TPC-C: warehouses on each node.
    #[arg(long, default_value_t = 1)]
    pub warehouses: usize,
    /// YCSB key distribution: zipfian or uniform.
    #[arg(long, default_value = "zipfian")]
    pub distribution: Distribution,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[command(flatten)]
    pub fabric: FabricArgs,
    /// Drive the `farm node` processes of this cluster file (started with
    /// `farm node --config FILE --id N`, on this host or on others) instead
    /// of running nodes in this process.
    #[arg(long, value_name = "FILE", conflicts_with = "processes")]
    pub cluster: Option<PathBuf>,
    /// With --cluster: afterwards, tell the node processes to finish and
    /// exit.
    #[arg(long, requires = "cluster")]
    pub stop_nodes: bool,
    /// Start one `farm node` process per node on this host (talking over
    /// shm, or verbs with --fabric verbs) and drive them.
    #[arg(long)]
    pub processes: bool,
    #[arg(long, default_value_t = 64 << 20)]
    pub region_bytes: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw latency CDFs (and, for a sweep, throughput against threads)
    /// into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// With --processes: kill (SIGKILL) node process NODE this many
    /// seconds into the measured time, and go on measuring (repeatable).
    /// The report gains `recovery`, one entry per kill.
    #[arg(long, value_name = "NODE@SECONDS")]
    pub kill: Vec<farm_benches::bench::command::Kill>,
    /// With --processes: stop (SIGSTOP) node process NODE this many seconds
    /// into the measured time for three lease times, then let it go on
    /// (SIGCONT): the others remove it while it lives, and it must stop
    /// serving and exit on its own (repeatable).
    #[arg(long, value_name = "NODE@SECONDS")]
    pub pause: Vec<farm_benches::bench::command::Kill>,
    /// With --processes: the lease time of the node processes' membership
    /// agents, in milliseconds (a node silent this long is removed).
    #[arg(long, default_value_t = farm_cluster::cluster_file::LEASE_MS_DEFAULT)]
    pub lease_ms: u64,
    /// With --processes: where the node processes agree on configurations:
    /// `embedded` (a file in their data directory) or
    /// `zk://host:port[,host:port...]/path` (ZooKeeper).
    #[arg(long, value_name = "ADDRESS", default_value = "embedded")]
    pub config_store: farm_cluster::StoreAddress,
    /// In process: how a coordinator waits for its LOCK answers. `spin`
    /// (spin, then yield) gives more throughput and a lower p99; `yield`
    /// (yield at once) a far tail (p99.9) of about 0.1 ms instead of 1–5
    /// ms on a host with fewer cores than threads, for 7–15% less
    /// throughput. See `farm_core::LockWait`.
    #[arg(long, value_name = "spin|yield", default_value = "spin")]
    pub lock_wait: farm_core::LockWait,
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("--{what}: {value} is not a number of seconds"))
}

pub fn run(args: Args) -> CommandResult {
    let target = match (&args.cluster, args.processes) {
        (Some(file), _) => Target::Cluster {
            file: file.clone(),
            stop_nodes: args.stop_nodes,
        },
        (None, true) => Target::Processes {
            program: std::env::current_exe()?,
        },
        (None, false) => Target::InProcess,
    };
    let nodes_max = args.nodes.iter().copied().max().unwrap_or(3);
    let (threads, in_flight) = command::default_clients(args.fabric.fabric, &target, nodes_max);
    let threads = if args.threads.is_empty() {
        vec![threads]
    } else {
        args.threads
    };
    let max_in_flight = args
        .max_in_flight
        .or_else(|| command::default_max_in_flight(args.fabric.fabric, &target, nodes_max))
        .filter(|&max| max > 0);
    let in_flight = args.in_flight.unwrap_or(in_flight);
    command::run(&BenchOptions {
        workload: args.workload,
        nodes: args.nodes,
        threads,
        in_flight,
        max_in_flight,
        copies: args.copies,
        scale: args.scale,
        warehouses_per_node: args.warehouses,
        distribution: args.distribution,
        duration: seconds(args.duration, "duration")?,
        warmup: seconds(args.warmup, "warmup")?,
        fabric: args.fabric.fabric,
        verbs: args.fabric.verbs.device(),
        target,
        region_bytes: args.region_bytes,
        json: args.json,
        plot: args.plot,
        quiet: args.quiet,
        kill: args
            .kill
            .into_iter()
            .chain(args.pause.into_iter().map(|mut pause| {
                pause.pause = true;
                pause
            }))
            .collect(),
        lease_ms: args.lease_ms,
        config_store: args.config_store,
        lock_wait: args.lock_wait,
    })?;
    Ok(())
}
