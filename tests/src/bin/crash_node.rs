//! `farm-crash-node`: one node process of the crash tests
//! (`tests/crash_all_nodes.rs`). With `--crash-load DIR` every client
//! thread increments a counter whose primary is the next node, appending
//! each acknowledged value to `DIR/acks-<node>-<thread>`, until the process
//! is killed. With `--verify-counters DIR`, after a restart, node 0 reads
//! every counter of `DIR/counter-*` and writes its value to
//! `DIR/recovered-<node>-<thread>`; then every node exits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use farm_cluster::{ClusterFile, NodeProcess};
use farm_core::{Addr, Faults};

#[derive(Parser)]
struct Args {
    /// The cluster file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// This node's id in the cluster file.
    #[arg(long)]
    id: usize,
    #[arg(long, value_name = "DIR", conflicts_with = "verify_counters")]
    crash_load: Option<PathBuf>,
    #[arg(long, value_name = "DIR")]
    verify_counters: Option<PathBuf>,
    /// Client threads of the load.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("farm-crash-node: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result {
    let file = ClusterFile::load(&args.config)?;
    let nodes = file.nodes.len();
    let process = NodeProcess::start(file, args.id, Faults::default())?;
    match (&args.crash_load, &args.verify_counters) {
        (Some(dir), _) => crash_load(process, dir, nodes, args.threads),
        (None, Some(dir)) => verify_counters(process, dir),
        (None, None) => Err("--crash-load or --verify-counters".into()),
    }
}

/// Writes `contents` to `path` atomically (a reader never sees half).
fn publish(path: &Path, contents: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)?;
    std::fs::rename(temporary, path)
}

fn crash_load(mut process: NodeProcess, dir: &Path, nodes: usize, threads: usize) -> Result {
    let id = process.id();
    let mut mine = Vec::new();
    for _ in 0..threads {
        mine.push(process.node().run(|txn| txn.alloc(&0u64.to_le_bytes()))?.0);
    }
    let parts: Vec<Vec<u64>> = process.exchange("counters", &mine)?;
    process.drain()?;
    process.exchange("counters-installed", &())?;
    // Thread t uses counter t of the next node: its primary is remote.
    let next = parts[(id + 1) % nodes].clone();
    let node = process.node();
    std::thread::scope(|scope| -> Result {
        let mut handles = Vec::new();
        for (thread, addr) in next.iter().enumerate() {
            let addr = Addr(*addr);
            handles.push(scope.spawn(move || -> std::result::Result<(), String> {
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

fn verify_counters(process: NodeProcess, dir: &Path) -> Result {
    if process.id() == 0 {
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
            let value: u64 = process.node().run(|txn| txn.read_pod(addr))?;
            publish(
                &dir.join(format!("recovered-{suffix}")),
                &format!("{value}\n"),
            )?;
        }
    }
    process.finish()?;
    Ok(())
}
