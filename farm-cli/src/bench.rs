//! `farm bench`: the main benchmark. With no arguments: TATP on a
//! three-node, three-copy in-process cluster over shm, 10 s measured after
//! a 2 s warm-up, a progress bar, then a table (and JSON with --json).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use farm_benches::bench::config::LoadOptions;
use farm_benches::bench::remote::BenchRequest;
use farm_benches::bench::site::Site;
use farm_benches::bench::ycsb::Distribution;
use farm_benches::bench::{self, BenchReport, RunOptions};
use farm_core::cluster_file::ClusterFile;
use farm_core::{Cluster, ClusterConfig};

use crate::check::{FabricName, LocalCluster};
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
    /// Nodes (default 3); a comma list sweeps (e.g. 1,2,3).
    #[arg(long, value_delimiter = ',')]
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
    /// TPC-C: warehouses on each node.
    #[arg(long, default_value_t = 1)]
    pub warehouses: usize,
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
    /// RDMA device for verbs (default: the first).
    #[arg(long)]
    pub device: Option<String>,
    /// GID index for verbs (default: the IPv4-mapped RoCE v2 GID).
    #[arg(long)]
    pub gid_index: Option<u8>,
    /// Drive the `farm node` processes of this cluster file (started with
    /// `farm node --config FILE --id N`, on this host or on others) instead
    /// of running nodes in this process.
    #[arg(long, value_name = "FILE", conflicts_with = "processes")]
    pub cluster: Option<PathBuf>,
    /// With --cluster: afterwards, tell the node processes to finish and
    /// exit.
    #[arg(long, requires = "cluster")]
    pub stop_nodes: bool,
    /// Start one `farm node` process per node on this host (talking over
    /// shm, or verbs with --fabric verbs) and drive them.
    #[arg(long)]
    pub processes: bool,
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
    let nodes_list = if args.nodes.is_empty() {
        vec![3]
    } else {
        args.nodes.clone()
    };
    if let Some(path) = &args.cluster {
        let file = ClusterFile::load(path)?;
        if !args.nodes.is_empty() && args.nodes != [file.nodes.len()] {
            return Err(format!(
                "{} has {} nodes; --nodes cannot change that",
                path.display(),
                file.nodes.len()
            )
            .into());
        }
        let result = drive(&args, &file, Duration::from_secs(20));
        if args.stop_nodes {
            let stopped = bench::remote::stop(file.nodes[0].bootstrap, Duration::from_secs(20));
            if result.is_ok() {
                stopped?;
            }
        }
        reports = result?;
    } else if args.processes {
        for &nodes in &nodes_list {
            reports.extend(run_processes(&args, nodes)?);
        }
    } else {
        for &nodes in &nodes_list {
            reports.extend(run_in_process(&args, nodes)?);
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

/// Sends the run to the cluster file's node 0 and prints what comes back.
fn drive(
    args: &Args,
    file: &ClusterFile,
    wait: Duration,
) -> Result<Vec<BenchReport>, Box<dyn std::error::Error>> {
    let request = BenchRequest {
        workload: args.workload.clone(),
        scale: args.scale,
        distribution: match args.distribution {
            KeyDistribution::Zipfian => "zipfian".into(),
            KeyDistribution::Uniform => "uniform".into(),
        },
        threads: args.threads.clone(),
        warmup_s: args.warmup,
        duration_s: args.duration,
        warehouses_per_node: args.warehouses,
    };
    request.check()?;
    if !args.quiet {
        eprintln!(
            "farm bench: driving {} node processes ({} fabric) through node 0 at {}",
            file.nodes.len(),
            file.fabric,
            file.nodes[0].bootstrap
        );
    }
    let reports = bench::remote::drive(file.nodes[0].bootstrap, &request, wait, args.quiet)?;
    for report in &reports {
        println!("{}\n", report.table());
    }
    Ok(reports)
}

/// Node processes that are killed when this goes out of scope.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `--processes`: writes a cluster file for `nodes` processes on this
/// host, starts them, drives them, stops them.
fn run_processes(
    args: &Args,
    nodes: usize,
) -> Result<Vec<BenchReport>, Box<dyn std::error::Error>> {
    let dir = tempfile::Builder::new().prefix("farm-bench-").tempdir()?;
    let (config, file) = LocalCluster {
        nodes,
        fabric: args.fabric,
        copies: args.copies.min(nodes),
        region_bytes: args.region_bytes,
        device: &args.device,
        gid_index: args.gid_index,
    }
    .write(dir.path())?;
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    for id in 0..nodes {
        children.0.push(
            std::process::Command::new(&exe)
                .arg("node")
                .arg("--config")
                .arg(&config)
                .arg("--id")
                .arg(id.to_string())
                .arg("--quiet")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()?,
        );
    }
    // The nodes start (and, over verbs, connect) before node 0 answers.
    let reports = drive(args, &file, farm_core::bootstrap::BOOTSTRAP_TIMEOUT)?;
    bench::remote::stop(file.nodes[0].bootstrap, Duration::from_secs(20))?;
    // They finish (drain their rings, meet once more) and exit; the rest
    // are killed when `children` goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    for child in &mut children.0 {
        while child.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(reports)
}

/// One in-process cluster of `nodes` nodes per thread count of the sweep.
fn run_in_process(
    args: &Args,
    nodes: usize,
) -> Result<Vec<BenchReport>, Box<dyn std::error::Error>> {
    let mut reports = Vec::new();
    for &threads in &args.threads {
        let copies = args.copies.min(nodes);
        let cluster = Cluster::start(ClusterConfig {
            nodes,
            copies,
            region_bytes: args.region_bytes,
            fabric: args.fabric.choice(&args.device, args.gid_index),
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
        let workload = bench::config::load_with(
            &Site::cluster(&cluster),
            &args.workload,
            &LoadOptions {
                scale: args.scale,
                distribution,
                warehouses_per_node: args.warehouses,
            },
        )?;
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
            args.fabric.name(),
            copies,
        )?;
        println!("{}\n", report.table());
        reports.push(report);
    }
    Ok(reports)
}
