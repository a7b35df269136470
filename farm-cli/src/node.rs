//! `farm node`: one node of a multi-process or multi-host cluster, as the
//! cluster file describes it. With `--check-txns` it also runs its share of
//! `farm check`'s workload and writes its history.

use std::path::PathBuf;

use farm_check::history::Recorder;
use farm_check::workload;
use farm_core::{Addr, ClusterFile, NodeProcess};
use serde_json::json;

use crate::check::{faults, Fault, NodeHistory, WorkloadArgs};
use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// This node's id in the cluster file.
    #[arg(long)]
    pub id: usize,
    /// Run this many transactions of the check workload, then exit.
    #[arg(long)]
    pub check_txns: Option<u64>,
    /// Where to write this node's history (with --check-txns).
    #[arg(long)]
    pub history_out: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub fault: Option<Fault>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

pub fn run(args: Args) -> CommandResult {
    let file = ClusterFile::load(&args.config)?;
    let nodes = file.nodes.len();
    let mut process = NodeProcess::start(file, args.id, faults(args.fault))?;
    let Some(txns) = args.check_txns else {
        eprintln!(
            "farm node {}: serving ({} nodes); stop with a signal",
            args.id, nodes
        );
        loop {
            std::thread::park();
        }
    };
    let options = args
        .workload
        .options(txns, args.workload.threads_per_node, !args.quiet);
    // Each node allocates the keys it owns; everyone learns every address.
    let owned = workload::allocate_keys(&process.node, nodes, &options)?;
    let parts = process.exchange(
        "keys",
        json!(owned
            .iter()
            .map(|(k, a)| [*k as u64, a.0])
            .collect::<Vec<_>>()),
    )?;
    let mut keyed: Vec<(u64, Addr)> = Vec::new();
    for part in parts {
        for pair in part.as_array().ok_or("malformed keys round")? {
            let key = pair[0].as_u64().ok_or("malformed key")?;
            let addr = pair[1].as_u64().ok_or("malformed address")?;
            keyed.push((key, Addr(addr)));
        }
    }
    keyed.sort_unstable();
    let addrs: Vec<Addr> = keyed.into_iter().map(|(_, addr)| addr).collect();
    // Allocations installed everywhere before any client starts.
    process.drain()?;
    process.exchange("installed", serde_json::Value::Null)?;
    let recorder = Recorder::for_process(args.id as u32 * 1000);
    let (_, aborted) = workload::run_clients(&[&process.node], &addrs, &options, &recorder)?;
    let history = NodeHistory {
        txns: recorder.history().txns().to_vec(),
        aborted: aborted.iter().map(|(_, n)| *n).collect(),
    };
    if let Some(path) = &args.history_out {
        std::fs::write(path, serde_json::to_vec(&history)?)?;
    }
    process.finish()?;
    Ok(())
}
