//! `farm plot`: arguments for [`farm_benches::bench::plot::plot_files`],
//! which draws the latency CDFs and, for several runs, throughput against
//! client threads from JSON reports `farm bench --json` wrote.

use std::path::PathBuf;

use crate::CommandResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON reports of `farm bench --json`.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, short)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> CommandResult {
    farm_benches::bench::plot::plot_files(&args.reports, &args.out)?;
    Ok(())
}
