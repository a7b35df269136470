//! `farm commit-lat`: arguments for [`farm_benches::commit_lat::main`],
//! the latency of a 1-read-1-write commit (p50, p99, …) on a three-node,
//! three-copy cluster in this process, per fabric.

use std::path::PathBuf;

use farm_benches::commit_lat::{self, Options};

use crate::args::FabricArgs;
use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub fabric: FabricArgs,
    #[arg(long, default_value_t = 5000)]
    pub iterations: u64,
    #[arg(long, default_value_t = 500)]
    pub warmup: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: Args) -> CommandResult {
    commit_lat::main(
        &Options {
            fabric: args.fabric.fabric,
            verbs: args.fabric.verbs.device(),
            iterations: args.iterations,
            warmup: args.warmup,
        },
        args.json.as_deref(),
    )?;
    Ok(())
}
