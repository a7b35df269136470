//! `farm check`: run a randomized transactional workload, record its
//! history, and check it for strict serializability. The nodes run in this
//! process, or (`--processes`, and always with `--fabric verbs`) each as a
//! `farm node` process of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use farm_check::workload::{self, WorkloadOptions};
use farm_check::{check, History, Report};
use farm_core::cluster_file::{ClusterFile, NodeEntry};
use farm_core::{Cluster, ClusterConfig, FabricChoice, Faults};

use crate::CommandResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FabricName {
    Shm,
    Verbs,
}

impl FabricName {
    /// The name a cluster file and a report use.
    pub fn name(self) -> &'static str {
        match self {
            FabricName::Shm => "shm",
            FabricName::Verbs => "verbs",
        }
    }

    /// The engine's fabric choice (`device` and `gid_index`: verbs only).
    pub fn choice(self, device: &Option<String>, gid_index: Option<u8>) -> FabricChoice {
        match self {
            FabricName::Shm => FabricChoice::Shm,
            FabricName::Verbs => FabricChoice::Verbs {
                device: device.clone(),
                gid_index,
            },
        }
    }
}

/// What a cluster of node processes on this host looks like.
pub struct LocalCluster<'a> {
    pub nodes: usize,
    pub fabric: FabricName,
    pub copies: usize,
    pub region_bytes: u64,
    pub device: &'a Option<String>,
    pub gid_index: Option<u8>,
}

impl LocalCluster<'_> {
    /// Writes DIR/cluster.toml for it: loopback ports, data in DIR/data.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, ClusterFile), Box<dyn std::error::Error>> {
        let verbs = self.fabric == FabricName::Verbs;
        let mut nodes = Vec::new();
        for id in 0..self.nodes {
            nodes.push(NodeEntry {
                id,
                bootstrap: free_port()?,
                verbs: verbs.then(free_port).transpose()?,
            });
        }
        let file = ClusterFile {
            fabric: self.fabric.name().into(),
            data_dir: dir.join("data"),
            copies: self.copies,
            regions_per_node: 1,
            region_bytes: self.region_bytes,
            device: self.device.clone(),
            gid_index: self.gid_index,
            nodes,
        };
        file.check()?;
        let config = dir.join("cluster.toml");
        std::fs::write(&config, file.to_toml())?;
        Ok((config, file))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// The coordinator skips VALIDATE.
    SkipValidation,
    /// Primaries grant LOCK without locking.
    SkipLock,
}

pub fn faults(fault: Option<Fault>) -> Faults {
    Faults {
        skip_validation: fault == Some(Fault::SkipValidation),
        skip_lock: fault == Some(Fault::SkipLock),
    }
}

/// The workload's shape, shared by `farm check` and `farm node --check-*`.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkloadArgs {
    /// Client threads per node (default: 2).
    #[arg(long, default_value_t = 2)]
    pub threads_per_node: usize,
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
}

impl WorkloadArgs {
    pub fn options(&self, txns: u64, threads: usize, progress: bool) -> WorkloadOptions {
        WorkloadOptions {
            txns,
            threads,
            registers: self.registers,
            lists: self.lists,
            ops_max: self.ops_max,
            seed: self.seed,
            progress,
        }
    }
}

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
    #[arg(long, value_enum, default_value = "shm")]
    pub fabric: FabricName,
    /// Run each node as its own `farm node` process (always so for verbs).
    #[arg(long)]
    pub processes: bool,
    /// RDMA device for verbs (default: the first).
    #[arg(long)]
    pub device: Option<String>,
    /// GID index for verbs (default: the IPv4-mapped RoCE v2 GID).
    #[arg(long)]
    pub gid_index: Option<u8>,
    #[arg(long, default_value_t = 16 << 20)]
    pub region_bytes: u64,
    /// Inject a protocol fault, to see the checker fail.
    #[arg(long, value_enum)]
    pub fault: Option<Fault>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

pub fn run(args: Args) -> CommandResult {
    let processes = args.processes || args.fabric == FabricName::Verbs;
    let threads = args.workload.threads_per_node * args.nodes;
    eprintln!(
        "farm check: {} transactions, {} nodes ({}), {} copies, {} fabric, {threads} client threads",
        args.txns,
        args.nodes,
        if processes { "separate processes" } else { "in this process" },
        args.copies,
        args.fabric.name(),
    );
    let started = Instant::now();
    let (history, aborted_by_reason) = if processes {
        run_processes(&args)?
    } else {
        let cluster = Cluster::start(ClusterConfig {
            nodes: args.nodes,
            copies: args.copies,
            region_bytes: args.region_bytes,
            faults: faults(args.fault),
            fabric: args.fabric.choice(&args.device, args.gid_index),
            ..ClusterConfig::default()
        })?;
        let result = workload::run(&cluster, &args.workload.options(args.txns, threads, true))?;
        (result.history, result.aborted_by_reason)
    };
    let run_time = started.elapsed();
    eprintln!("farm check: checking {} transactions …", history.len());
    let report = check(&history);
    print_report(&report, &aborted_by_reason, run_time);
    if let Some(path) = &args.json {
        std::fs::write(path, report.json_line() + "\n")?;
    }
    println!("{}", report.json_line());
    if !report.anomalies.is_empty() {
        return Err(format!("{} anomalies found", report.anomalies.len()).into());
    }
    Ok(())
}

fn print_report(report: &Report, aborted_by_reason: &[(&str, u64)], run_time: Duration) {
    println!("{}", report.table());
    let reasons: Vec<String> = aborted_by_reason
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    println!(
        "workload: {:.1} s, {:.0} tx/s; aborts by reason: {}",
        run_time.as_secs_f64(),
        report.txns as f64 / run_time.as_secs_f64(),
        reasons.join(", ")
    );
}

/// Aborts by reason name.
type AbortCounts = Vec<(&'static str, u64)>;

fn free_port() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts one `farm node` per node with a share of the workload, waits for
/// them, and merges their histories.
fn run_processes(args: &Args) -> Result<(History, AbortCounts), Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new().prefix("farm-check-").tempdir()?;
    let (config, _) = LocalCluster {
        nodes: args.nodes,
        fabric: args.fabric,
        copies: args.copies,
        region_bytes: args.region_bytes,
        device: &args.device,
        gid_index: args.gid_index,
    }
    .write(dir.path())?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for id in 0..args.nodes {
        let share =
            args.txns / args.nodes as u64 + u64::from((id as u64) < args.txns % args.nodes as u64);
        let mut command = Command::new(&exe);
        command
            .arg("node")
            .arg("--config")
            .arg(&config)
            .arg("--id")
            .arg(id.to_string())
            .arg("--check-txns")
            .arg(share.to_string())
            .arg("--history-out")
            .arg(history_path(dir.path(), id))
            .arg("--threads-per-node")
            .arg(args.workload.threads_per_node.to_string())
            .arg("--registers")
            .arg(args.workload.registers.to_string())
            .arg("--lists")
            .arg(args.workload.lists.to_string())
            .arg("--ops-max")
            .arg(args.workload.ops_max.to_string())
            .arg("--seed")
            .arg(args.workload.seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if id != 0 {
            // One progress line is enough.
            command.arg("--quiet");
        }
        if let Some(fault) = args.fault {
            command.arg("--fault").arg(match fault {
                Fault::SkipValidation => "skip-validation",
                Fault::SkipLock => "skip-lock",
            });
        }
        children.push((id, command.spawn()?));
    }
    let mut failed = Vec::new();
    for (id, mut child) in children {
        let status = child.wait()?;
        if !status.success() {
            failed.push(format!("node {id}: {status}"));
        }
    }
    if !failed.is_empty() {
        return Err(format!("node processes failed: {}", failed.join(", ")).into());
    }
    let mut parts = Vec::new();
    let mut aborts = vec![("lock", 0u64), ("validate", 0), ("read", 0)];
    for id in 0..args.nodes {
        let text = std::fs::read_to_string(history_path(dir.path(), id))?;
        let part: NodeHistory = serde_json::from_str(&text)?;
        for (slot, (_, count)) in aborts.iter_mut().enumerate() {
            *count += part.aborted.get(slot).copied().unwrap_or(0);
        }
        parts.push(History::new(part.txns));
    }
    Ok((History::merge(parts), aborts))
}

fn history_path(dir: &Path, id: usize) -> PathBuf {
    dir.join(format!("history-{id}.json"))
}

/// What a node process of a check writes: its transactions and its aborts
/// (lock, validate, read).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct NodeHistory {
    pub txns: Vec<farm_check::history::Txn>,
    pub aborted: Vec<u64>,
}
