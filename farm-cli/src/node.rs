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
    /// Crash-test load: every client thread increments a counter whose
    /// primary is the next node, appending each acknowledged value to
    /// DIR/acks-<node>-<thread>, until the process is killed.
    #[arg(long, value_name = "DIR")]
    pub crash_load: Option<PathBuf>,
    /// After a restart: read every counter of DIR/counter-* and write its
    /// value to DIR/recovered-<node>-<thread> (node 0), then exit.
    #[arg(long, value_name = "DIR")]
    pub verify_counters: Option<PathBuf>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

pub fn run(args: Args) -> CommandResult {
    let file = ClusterFile::load(&args.config)?;
    let nodes = file.nodes.len();
    let mut process = NodeProcess::start(file, args.id, faults(args.fault))?;
    if let Some(dir) = &args.crash_load {
        return crash_load(process, dir, nodes, args.workload.threads_per_node);
    }
    if let Some(dir) = &args.verify_counters {
        return verify_counters(process, dir);
    }
    let Some(txns) = args.check_txns else {
        if !args.quiet {
            eprintln!(
                "farm node {}: serving ({} nodes); drive it with `farm bench --cluster {}`, stop it with a signal",
                args.id,
                nodes,
                args.config.display()
            );
        }
        farm_benches::bench::remote::serve(&mut process, args.quiet)?;
        process.finish()?;
        return Ok(());
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

/// Writes `contents` to `path` atomically (a reader never sees half).
fn publish(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)?;
    std::fs::rename(temporary, path)
}

fn crash_load(
    mut process: NodeProcess,
    dir: &std::path::Path,
    nodes: usize,
    threads: usize,
) -> CommandResult {
    use std::io::Write;
    let id = process.node.id();
    let mut mine = Vec::new();
    for _ in 0..threads {
        mine.push(process.node.run(|txn| txn.alloc(&0u64.to_le_bytes()))?.0);
    }
    let parts = process.exchange("counters", json!(mine))?;
    process.drain()?;
    process.exchange("counters-installed", serde_json::Value::Null)?;
    // Thread t uses counter t of the next node: its primary is remote.
    let next = parts[(id + 1) % nodes]
        .as_array()
        .ok_or("malformed counters round")?
        .clone();
    let node = &process.node;
    std::thread::scope(|scope| -> CommandResult {
        let mut handles = Vec::new();
        for (thread, addr) in next.iter().enumerate() {
            let addr = Addr(addr.as_u64().ok_or("malformed counter address")?);
            handles.push(scope.spawn(move || -> Result<(), String> {
                let text = |e: &dyn std::fmt::Display| e.to_string();
                publish(
                    &dir.join(format!("counter-{id}-{thread}")),
                    &format!("{}\n", addr.0),
                )
                .map_err(|e| text(&e))?;
                let mut acks = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("acks-{id}-{thread}")))
                    .map_err(|e| text(&e))?;
                loop {
                    let value = node
                        .run(|txn| {
                            let value: u64 = txn.read_pod(addr)?;
                            txn.write_pod(addr, &(value + 1))?;
                            Ok(value + 1)
                        })
                        .map_err(|e| text(&e))?;
                    // Only now is the commit acknowledged to this client.
                    acks.write_all(format!("{value}\n").as_bytes())
                        .map_err(|e| text(&e))?;
                }
            }));
        }
        for handle in handles {
            handle.join().map_err(|_| "crash-load thread panicked")??;
        }
        Ok(())
    })
}

fn verify_counters(process: NodeProcess, dir: &std::path::Path) -> CommandResult {
    if process.node.id() == 0 {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(suffix) = name.strip_prefix("counter-") else {
                continue;
            };
            if suffix.ends_with(".tmp") {
                continue;
            }
            let addr = Addr(std::fs::read_to_string(&path)?.trim().parse()?);
            let value: u64 = process.node.run(|txn| txn.read_pod(addr))?;
            publish(
                &dir.join(format!("recovered-{suffix}")),
                &format!("{value}\n"),
            )?;
        }
    }
    process.finish()?;
    Ok(())
}
