//! `farm`, the command line of farm-rs: a dispatcher over subcommands, each
//! in its own module with its clap arguments and one library call.

mod args;
mod bench;
mod check;
mod commit_lat;
mod node;
mod plot;
mod rdma_bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "farm",
    version,
    about = "farm-rs: FaRM-style transactions over RDMA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Microbenchmark the fabric (READ, WRITE, CAS, FAA latency and
    /// throughput), like perftest's ib_*_lat.
    RdmaBench(rdma_bench::Args),
    /// Run a randomized transactional workload, record its history and
    /// check it for strict serializability.
    Check(check::Args),
    /// Run one node of a cluster described by a cluster file.
    Node(node::Args),
    /// Latency of a 1-read-1-write commit on a 3-node, 3-copy cluster.
    CommitLat(commit_lat::Args),
    /// Run FaRM's workloads (TATP by default) and report throughput and
    /// latency.
    Bench(bench::Args),
    /// Draw latency CDFs and throughput against threads (SVG) from the
    /// JSON reports of `farm bench --json`.
    Plot(plot::Args),
}

/// What every subcommand returns; `main` prints the error.
type CommandResult = Result<(), Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: CommandResult = match cli.command {
        Command::RdmaBench(args) => rdma_bench::run(args),
        Command::Check(args) => check::run(args),
        Command::Node(args) => node::run(args),
        Command::CommitLat(args) => commit_lat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Plot(args) => plot::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("farm: {error}");
            ExitCode::FAILURE
        }
    }
}
