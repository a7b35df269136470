//! `farm check`: arguments for [`farm_check::command::run`], which runs a
//! randomized transactional workload, records its history, and checks it
//! for strict serializability.

use std::path::PathBuf;

use farm_check::command::{self, CheckOptions};
use farm_check::workload::WorkloadOptions;
use farm_core::{FabricKind, Fault};

use crate::args::FabricArgs;
use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Replicas of every region (primary + backups).
    #[arg(long, default_value_t = 3)]
    pub copies: usize,
    /// Transactions in all.
    #[arg(long, default_value_t = 20_000)]
    pub txns: u64,
    #[command(flatten)]
    pub fabric: FabricArgs,
    /// Run each node as its own `farm node` process (always so for verbs).
    #[arg(long)]
    pub processes: bool,
    #[arg(long, default_value_t = 16 << 20)]
    pub region_bytes: u64,
    /// Inject a protocol fault, to see the checker fail: skip-validation,
    /// skip-lock, or abort-in-recovery (with --nemesis kill).
    #[arg(long)]
    pub fault: Option<Fault>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Client threads per node.
    #[arg(long, default_value_t = 2)]
    pub threads_per_node: usize,
    /// Transactions each client thread keeps in flight: above 1 the thread
    /// is a worker running that many clients as tasks (farm_core::Worker),
    /// each with its own history.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Register objects.
    #[arg(long, default_value_t = 64)]
    pub registers: usize,
    /// Append-only list objects.
    #[arg(long, default_value_t = 32)]
    pub lists: usize,
    /// Micro-operations per transaction: 1 to this many.
    #[arg(long, default_value_t = 4)]
    pub ops_max: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// With --processes: where the node processes agree on configurations:
    /// `embedded` (a file in their data directory) or
    /// `zk://host:port[,host:port...]/path` (ZooKeeper).
    #[arg(long, value_name = "ADDRESS", default_value = "embedded")]
    pub config_store: farm_cluster::StoreAddress,
    /// With --processes: `kill` kills node processes one after another
    /// during the workload (the configuration manager among them; node 0
    /// is spared), restarts each (shm) so that it rejoins, and counts
    /// acknowledged appends lost.
    #[arg(long, value_name = "NEMESIS")]
    pub nemesis: Option<command::Nemesis>,
    /// With --processes: the nodes' lease time in milliseconds (how long a
    /// dead node goes unnoticed); default 2000, or 500 with --nemesis (so
    /// that kills fit in a workload of seconds).
    #[arg(long)]
    pub lease_ms: Option<u64>,
    /// With --nemesis kill: how many kills (on shm each killed node is
    /// restarted and rejoins before the next; over verbs, without
    /// restarts, at most min(nodes - 2, copies - 1)).
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
}

/// The lease of `farm check --nemesis` unless `--lease-ms` says: a kill
/// is noticed after about a lease, and three of them should fit in a
/// workload of a few seconds.
pub const NEMESIS_LEASE_MS_DEFAULT: u64 = 500;

pub fn run(args: Args) -> CommandResult {
    let processes = args.processes || args.fabric.fabric == FabricKind::Verbs;
    command::run(&CheckOptions {
        nodes: args.nodes,
        copies: args.copies,
        fabric: args.fabric.fabric,
        verbs: args.fabric.verbs.device(),
        processes: if processes {
            Some(std::env::current_exe()?)
        } else {
            None
        },
        region_bytes: args.region_bytes,
        fault: args.fault,
        workload: WorkloadOptions {
            txns: args.txns,
            threads: args.threads_per_node,
            in_flight: args.in_flight,
            registers: args.registers,
            lists: args.lists,
            ops_max: args.ops_max,
            seed: args.seed,
            progress: true,
            survive_failures: args.nemesis.is_some(),
        },
        json: args.json,
        config_store: args.config_store,
        nemesis: args.nemesis,
        lease_ms: args.lease_ms.unwrap_or(if args.nemesis.is_some() {
            NEMESIS_LEASE_MS_DEFAULT
        } else {
            farm_cluster::cluster_file::LEASE_MS_DEFAULT
        }),
        kills: args.kills,
    })?;
    Ok(())
}
