//! `farm bench`: the main benchmark. With no arguments: TATP on a
//! three-node, three-copy in-process cluster over shm, 10 s measured after
//! a 2 s warm-up, a progress bar, then a table (and JSON with --json).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use farm_benches::bench::ycsb::Distribution;
use farm_benches::bench::{self, RunOptions};
use farm_core::{Cluster, ClusterConfig, FabricChoice};

use crate::check::FabricName;
use crate::CommandResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyDistribution {
    Zipfian,
    Uniform,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// tatp, smallbank, ycsb-a, ycsb-b, ycsb-c, ycsb-f or tpcc.
    #[arg(long, default_value = "tatp")]
    pub workload: String,
    /// Nodes; a comma list sweeps (e.g. 1,2,3).
    #[arg(long, default_value = "3", value_delimiter = ',')]
    pub nodes: Vec<usize>,
    /// Client threads per node; a comma list sweeps (e.g. 1,2,4).
    #[arg(long, default_value = "2", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Replicas of every region (at most the number of nodes).
    #[arg(long, default_value_t = 3)]
    pub copies: usize,
    /// Population: 1 = 10,000 subscribers / accounts / records.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// YCSB key distribution.
    #[arg(long, value_enum, default_value = "zipfian")]
    pub distribution: KeyDistribution,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[arg(long, value_enum, default_value = "shm")]
    pub fabric: FabricName,
    #[arg(long, default_value_t = 64 << 20)]
    pub region_bytes: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw latency CDFs (and, for a sweep, throughput against threads)
    /// into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> CommandResult {
    let mut reports = Vec::new();
    for &nodes in &args.nodes {
        for &threads in &args.threads {
            let copies = args.copies.min(nodes);
            let cluster = Cluster::start(ClusterConfig {
                nodes,
                copies,
                region_bytes: args.region_bytes,
                fabric: match args.fabric {
                    FabricName::Shm => FabricChoice::Shm,
                    FabricName::Verbs => FabricChoice::Verbs {
                        device: None,
                        gid_index: None,
                    },
                },
                ..ClusterConfig::default()
            })?;
            let loading = Instant::now();
            if !args.quiet {
                eprintln!(
                    "farm bench: loading {} (scale {}) on {nodes} nodes, {copies} copies …",
                    args.workload, args.scale
                );
            }
            let distribution = match args.distribution {
                KeyDistribution::Zipfian => Distribution::Zipfian,
                KeyDistribution::Uniform => Distribution::Uniform,
            };
            let workload = bench::config::load(&cluster, &args.workload, args.scale, distribution)?;
            if !args.quiet {
                eprintln!(
                    "farm bench: loaded in {:.1} s; warm-up {} s, then {} s with {} threads per node",
                    loading.elapsed().as_secs_f64(),
                    args.warmup,
                    args.duration,
                    threads
                );
            }
            let report = bench::run(
                &cluster,
                workload.as_ref(),
                &RunOptions {
                    threads_per_node: threads,
                    warmup: Duration::from_secs_f64(args.warmup),
                    duration: Duration::from_secs_f64(args.duration),
                    progress: !args.quiet,
                },
                match args.fabric {
                    FabricName::Shm => "shm",
                    FabricName::Verbs => "verbs",
                },
                copies,
            )?;
            println!("{}\n", report.table());
            reports.push(report);
        }
    }
    if reports.len() > 1 {
        println!(
            "{:<8} {:>8} {:>14} {:>10} {:>10}",
            "nodes", "threads", "throughput", "p50[us]", "p99[us]"
        );
        for r in &reports {
            println!(
                "{:<8} {:>8} {:>14.0} {:>10.1} {:>10.1}",
                r.nodes, r.threads, r.throughput_tps, r.latency_us.p50, r.latency_us.p99
            );
        }
    }
    if let Some(path) = &args.json {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&serde_json::json!({ "runs": reports }))?
        };
        std::fs::write(path, json + "\n")?;
    }
    if let Some(path) = &args.plot {
        bench::plot::write_svg(path, &reports)?;
        eprintln!("farm bench: wrote {}", path.display());
    }
    let violated: Vec<_> = reports
        .iter()
        .filter(|r| !r.consistency.starts_with("ok"))
        .collect();
    if !violated.is_empty() {
        return Err(format!("consistency check failed: {}", violated[0].consistency).into());
    }
    Ok(())
}
