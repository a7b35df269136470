//! `farm commit-lat`: latency of a 1-read-1-write commit (p50, p99, …) on
//! a three-node, three-copy cluster in this process, per fabric.

use std::path::PathBuf;

use farm_benches::commit_lat::{self, Options};

use crate::check::FabricName;
use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value = "shm")]
    pub fabric: FabricName,
    #[arg(long, default_value_t = 5000)]
    pub iterations: u64,
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// RDMA device for verbs (default: the first).
    #[arg(long)]
    pub device: Option<String>,
    /// GID index for verbs (default: the IPv4-mapped RoCE v2 GID).
    #[arg(long)]
    pub gid_index: Option<u8>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: Args) -> CommandResult {
    let fabric = args.fabric.choice(&args.device, args.gid_index);
    eprintln!(
        "farm commit-lat: {} warm-up and {} measured transactions …",
        args.warmup, args.iterations
    );
    let report = commit_lat::run(&Options {
        fabric,
        iterations: args.iterations,
        warmup: args.warmup,
    })?;
    println!("{}", report.table());
    let json = serde_json::to_string(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{json}\n"))?;
    }
    println!("{json}");
    Ok(())
}
