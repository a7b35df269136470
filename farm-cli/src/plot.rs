//! `farm plot`: draws the latency CDFs and, for several runs, throughput
//! against client threads from JSON reports `farm bench --json` wrote (one
//! run, or a sweep's `{"runs": [...]}`), e.g. runs of `--cluster` on
//! different days or machines side by side.

use std::path::PathBuf;

use farm_benches::bench::{self, BenchReport};

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
    let mut reports: Vec<BenchReport> = Vec::new();
    for path in &args.reports {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
        let runs = match value.get("runs") {
            Some(runs) => runs.clone(),
            None => serde_json::Value::Array(vec![value]),
        };
        let mut parsed: Vec<BenchReport> = serde_json::from_value(runs).map_err(|e| {
            format!(
                "{} is not a `farm bench --json` report: {e}",
                path.display()
            )
        })?;
        if args.reports.len() > 1 {
            // Runs from different files: tell them apart by the file's name.
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for report in &mut parsed {
                report.label.get_or_insert_with(|| name.clone());
            }
        }
        reports.extend(parsed);
    }
    if reports.is_empty() {
        return Err("the reports hold no runs".into());
    }
    bench::plot::write_svg(&args.out, &reports)?;
    eprintln!(
        "farm plot: {} runs into {}",
        reports.len(),
        args.out.display()
    );
    Ok(())
}
