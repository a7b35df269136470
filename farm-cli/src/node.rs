//! `farm node`: arguments for [`farm_cluster::serve::run_node`], one node
//! of a multi-process or multi-host cluster as the cluster file describes
//! it, serving the benchmarks and the checker to drivers (`farm bench
//! --cluster`, `farm check --processes`).

use std::path::PathBuf;

use farm_benches::bench::service::BenchService;
use farm_check::service::CheckService;

use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster file (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// This node's id in the cluster file.
    #[arg(long)]
    pub id: usize,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> CommandResult {
    farm_cluster::serve::run_node(
        &args.config,
        args.id,
        &[&BenchService::default(), &CheckService],
        args.quiet,
    )?;
    Ok(())
}
