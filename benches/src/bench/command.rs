//! `farm bench` as one call: run a workload on an in-process cluster, on
//! node processes this command starts (`--processes`), or on the node
//! processes of a cluster file (`--cluster`); print a table per run, a
//! sweep summary, the JSON report and the plot; fail when a consistency
//! check does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use farm_cluster::driver::{Driver, Event};
use farm_cluster::launcher::LocalCluster;
use farm_cluster::zookeeper::StoreAddress;
use farm_cluster::ClusterFile;
use farm_core::{Cluster, ClusterConfig, FabricKind, VerbsDevice};

use super::config::{load_with, LoadOptions, WorkloadName};
use super::service::BenchRequest;
use super::site::Site;
use super::ycsb::Distribution;
use super::{progress_bar, BenchReport, RunOptions};
use crate::error::{Error, Result};

/// Where the nodes run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every node in this process (the default).
    InProcess,
    /// One `farm node` process per node on this host, started from
    /// `program` and stopped afterwards.
    Processes { program: PathBuf },
    /// The `farm node` processes of a cluster file, started by someone
    /// else; `stop_nodes` asks them to exit afterwards.
    Cluster { file: PathBuf, stop_nodes: bool },
}

/// Everything `farm bench` takes.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub workload: WorkloadName,
    /// Node counts to sweep (in process and `--processes`).
    pub nodes: Vec<usize>,
    /// Client threads per node to sweep.
    pub threads: Vec<usize>,
    /// Transactions each client thread keeps in flight.
    pub in_flight: usize,
    /// Transactions each node runs at once (`None` or 0: unbounded).
    pub max_in_flight: Option<usize>,
    pub copies: usize,
    pub scale: f64,
    pub warehouses_per_node: usize,
    pub distribution: Distribution,
    pub duration: Duration,
    pub warmup: Duration,
    pub fabric: FabricKind,
    pub verbs: VerbsDevice,
    pub target: Target,
    pub region_bytes: u64,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub quiet: bool,
    /// Node processes to kill (SIGKILL) during the first measured run
    /// (`--processes` only).
    pub kill: Vec<Kill>,
    /// The lease time of `--processes` clusters, ms.
    pub lease_ms: u64,
    /// The configuration store of `--processes` clusters.
    pub config_store: StoreAddress,
    /// How coordinators wait for LOCK answers (in-process clusters).
    pub lock_wait: farm_core::LockWait,
}

/// `--kill NODE@SECONDS`: kill node process NODE that many seconds into
/// the measured time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kill {
    pub node: usize,
    pub at_s: f64,
    /// `--pause`: SIGSTOP instead, then SIGCONT after three lease times:
    /// the node is removed while it lives, and must stop on its own.
    pub pause: bool,
}

impl std::str::FromStr for Kill {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Kill, String> {
        let (node, at) = text
            .split_once('@')
            .ok_or_else(|| format!("{text:?}: expected NODE@SECONDS, like 2@3"))?;
        let node = node
            .parse()
            .map_err(|_| format!("{text:?}: {node:?} is not a node id"))?;
        let at_s: f64 = at
            .parse()
            .map_err(|_| format!("{text:?}: {at:?} is not a number of seconds"))?;
        if !(at_s.is_finite() && at_s >= 0.0) {
            return Err(format!("{text:?}: seconds must be 0 or more"));
        }
        Ok(Kill {
            node,
            at_s,
            pause: false,
        })
    }
}

/// Refuses kills that cannot be carried out.
fn check_kills(options: &BenchOptions) -> Result<()> {
    if options.kill.is_empty() {
        return Ok(());
    }
    if !matches!(options.target, Target::Processes { .. }) {
        return Err(Error::InvalidOptions(
            "--kill needs --processes (it kills node processes this command started)".into(),
        ));
    }
    for kill in &options.kill {
        if kill.node == 0 {
            return Err(Error::InvalidOptions(
                "--kill 0@…: node 0 carries this command's session with the cluster; kill another node".into(),
            ));
        }
        if let Some(&nodes) = node_counts(options).iter().find(|&&n| kill.node >= n) {
            return Err(Error::InvalidOptions(format!(
                "--kill {}@…: a cluster of {nodes} nodes has nodes 0 to {}",
                kill.node,
                nodes.saturating_sub(1)
            )));
        }
        if kill.at_s >= options.duration.as_secs_f64() {
            return Err(Error::InvalidOptions(format!(
                "--kill …@{}: after the measured time ({} s) ends",
                kill.at_s,
                options.duration.as_secs_f64()
            )));
        }
    }
    Ok(())
}

/// Runs `farm bench` as `options` say; returns the reports it printed.
///
/// # Errors
/// [`Error::InvalidOptions`], the engine's and the cluster's errors,
/// [`Error::Consistency`] when a run's consistency check failed (after the
/// reports were printed and written).
pub fn run(options: &BenchOptions) -> Result<Vec<BenchReport>> {
    check_kills(options)?;
    // The same bounds whichever way the nodes run (threads, in flight,
    // durations): a node process would refuse what this accepted.
    request(options).check().map_err(Error::InvalidOptions)?;
    let mut reports = Vec::new();
    match &options.target {
        Target::Cluster { file, stop_nodes } => {
            let cluster = ClusterFile::load(file)?;
            if !options.nodes.is_empty() && options.nodes != [cluster.nodes.len()] {
                return Err(Error::InvalidOptions(format!(
                    "{} has {} nodes; --nodes cannot change that",
                    file.display(),
                    cluster.nodes.len()
                )));
            }
            let driver = driver(cluster.nodes[0].bootstrap, Duration::from_secs(20), options);
            let result = drive(options, &driver, &cluster, &mut || true, &mut |_| {});
            if *stop_nodes {
                let stopped = driver.stop();
                if result.is_ok() {
                    stopped?;
                }
            }
            reports = result?;
        }
        Target::Processes { program } => {
            for &nodes in &node_counts(options) {
                reports.extend(run_processes(options, program, nodes)?);
            }
        }
        Target::InProcess => {
            for &nodes in &node_counts(options) {
                reports.extend(run_in_process(options, nodes)?);
            }
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
    if let Some(path) = &options.json {
        write_json(path, &reports)?;
    }
    if let Some(path) = &options.plot {
        super::plot::write_svg(path, &reports).map_err(|error| Error::Plot {
            path: path.clone(),
            error: error.to_string(),
        })?;
        eprintln!("farm bench: wrote {}", path.display());
    }
    if let Some(violated) = reports.iter().find(|r| !r.consistency.starts_with("ok")) {
        return Err(Error::Consistency(violated.consistency.clone()));
    }
    Ok(reports)
}

/// The client set-up `farm bench` uses when `--threads` and `--in-flight`
/// are not given, as (client threads per node, transactions in flight
/// each), for clusters of at most `nodes_max` nodes.
///
/// On shm, in process or with node processes on this host: the node's
/// share of this host's cores as worker threads (at least one), each with
/// two transactions in flight (issue 11: FaRM's one event loop per core).
/// Measured on the 2-core dev host, TATP, `--threads 1,2,4,8
/// --in-flight 2`: 1.05 M tx/s at one worker per node against 0.92 / 0.95
/// M for one / two plain threads per node, and less with more workers
/// than cores. Elsewhere (verbs, `--cluster`): two plain client threads,
/// one in flight, as before: in the soft-RoCE VM workers were 17–38%
/// slower than plain threads in the same boot (emulated CPUs that rxe's kernel work shares; see
/// the README), and a `--cluster` driver cannot see the nodes' cores.
pub fn default_clients(fabric: FabricKind, target: &Target, nodes_max: usize) -> (usize, usize) {
    let cluster = matches!(target, Target::Cluster { .. });
    if fabric == FabricKind::Shm && !cluster {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ((cores / nodes_max.max(1)).max(1), 2)
    } else {
        (2, 1)
    }
}

/// The bound on transactions each node runs at once that `farm bench`
/// sets when `--max-in-flight` is not given: on shm, in process or with
/// node processes on this host, what [`default_clients`] keeps in flight
/// per node (its worker threads × their transactions in flight), so that
/// more client threads add no work in flight beyond what the cores keep
/// busy; elsewhere none (over verbs a transaction waits for the network,
/// not for a core). Measured on the 2-core dev host, TATP, `--threads
/// 2,4,8 --duration 4`: 1,140,122 / 1,151,964 / 1,103,632 tx/s unbounded,
/// 1,274,920 / 1,244,734 / 1,252,593 at this bound (2 per node).
pub fn default_max_in_flight(
    fabric: FabricKind,
    target: &Target,
    nodes_max: usize,
) -> Option<usize> {
    let cluster = matches!(target, Target::Cluster { .. });
    if fabric == FabricKind::Shm && !cluster {
        let (threads, in_flight) = default_clients(fabric, target, nodes_max);
        Some(threads * in_flight)
    } else {
        None
    }
}

fn node_counts(options: &BenchOptions) -> Vec<usize> {
    if options.nodes.is_empty() {
        vec![3]
    } else {
        options.nodes.clone()
    }
}

/// Writes one report as JSON, or a sweep as `{"runs": [...]}`.
fn write_json(path: &Path, reports: &[BenchReport]) -> Result<()> {
    let json = if reports.len() == 1 {
        serde_json::to_string_pretty(&reports[0])
    } else {
        serde_json::to_string_pretty(&serde_json::json!({ "runs": reports }))
    }
    .expect("reports serialize");
    std::fs::write(path, json + "\n").map_err(|source| Error::WriteReport {
        path: path.to_path_buf(),
        source,
    })
}

fn request(options: &BenchOptions) -> BenchRequest {
    BenchRequest {
        workload: options.workload,
        scale: options.scale,
        distribution: options.distribution,
        threads: options.threads.clone(),
        warmup_s: options.warmup.as_secs_f64(),
        duration_s: options.duration.as_secs_f64(),
        warehouses_per_node: options.warehouses_per_node,
        in_flight: options.in_flight,
        max_in_flight: options.max_in_flight,
    }
}

fn driver(address: std::net::SocketAddr, wait: Duration, options: &BenchOptions) -> Driver {
    let request = request(options);
    // Loading a large population can take minutes; a dead node closes the
    // connection long before this.
    let runs = request.threads.len() as u64;
    Driver {
        address,
        wait,
        answer_within: Duration::from_secs(
            1800 + (request.warmup_s + request.duration_s) as u64 * runs,
        ),
    }
}

/// Sends the run to the cluster's node 0 and prints what comes back.
fn drive(
    options: &BenchOptions,
    driver: &Driver,
    cluster: &ClusterFile,
    alive: &mut dyn FnMut() -> bool,
    on_progress: &mut dyn FnMut(&farm_cluster::Progress),
) -> Result<Vec<BenchReport>> {
    let request = request(options);
    request.check().map_err(Error::InvalidOptions)?;
    if !options.quiet {
        eprintln!(
            "farm bench: driving {} node processes ({} fabric) through node 0 at {}",
            cluster.nodes.len(),
            cluster.fabric,
            driver.address
        );
    }
    let mut bar = false;
    let quiet = options.quiet;
    let mut on_event = |event: &Event| {
        if let Event::Progress(progress) = event {
            on_progress(progress);
        }
        if quiet {
            return;
        }
        match event {
            Event::Status(text) => {
                if bar {
                    eprintln!();
                    bar = false;
                }
                eprintln!("farm bench: {text}");
            }
            Event::Progress(progress) => {
                progress_bar(
                    progress.done,
                    progress.total,
                    &format!("node 0: {:>9.0} tx/s", progress.rate),
                );
                bar = true;
            }
        }
    };
    let result = driver.run_watched::<_, BenchReport>("bench", &request, &mut on_event, alive);
    if bar {
        eprintln!();
    }
    let reports = result?;
    for report in &reports {
        println!("{}\n", report.table());
    }
    Ok(reports)
}

/// `--processes`: starts `nodes` node processes on this host, drives them,
/// stops them.
fn run_processes(options: &BenchOptions, program: &Path, nodes: usize) -> Result<Vec<BenchReport>> {
    let launched = LocalCluster {
        nodes,
        fabric: options.fabric,
        copies: options.copies.min(nodes),
        region_bytes: options.region_bytes,
        verbs: options.verbs.clone(),
        lease_ms: options.lease_ms,
        config_store: options.config_store.clone(),
    }
    .launch_in_temporary_dir("farm-bench-", program, &|_| vec!["--quiet".into()])?;
    // The nodes start (and, over verbs, connect) before node 0 answers.
    let driver = driver(
        launched.node0(),
        farm_cluster::bootstrap::BOOTSTRAP_TIMEOUT,
        options,
    );
    let mut launched = launched;
    let file = launched.file().clone();
    let killer = Killer::start(
        &options.kill,
        &launched,
        Duration::from_millis(options.lease_ms * 3),
    );
    let result = drive(
        options,
        &driver,
        &file,
        &mut || launched.all_alive() || !options.kill.is_empty(),
        &mut |progress| killer.measuring(progress),
    );
    let killed = killer.finish();
    let mut reports = match result {
        Ok(reports) => reports,
        Err(Error::Cluster(error)) => return Err(Error::Cluster(launched.explain(error))),
        Err(error) => return Err(error),
    };
    if let Some(report) = reports.first_mut() {
        report.recovery = killed
            .iter()
            .map(|&(node, unix_ms)| super::Recovery::of(report, node, unix_ms))
            .collect();
        for recovery in &report.recovery {
            let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            println!(
                "killed node {} at {:.2} s: suspected after {} ms, new configuration {} ms, active {} ms, back to 80% throughput {} ms",
                recovery.node,
                recovery.killed_at_s,
                ms(recovery.suspected_ms),
                ms(recovery.new_config_ms),
                ms(recovery.active_ms),
                ms(recovery.back_to_80pct_ms)
            );
        }
    }
    driver.stop()?;
    // They finish (drain their rings, meet once more) and exit; the rest
    // are killed when `launched` goes.
    launched.wait(Duration::from_secs(30))?;
    Ok(reports)
}

/// Kills node processes on schedule once measuring began (learned from the
/// first progress report of the first run).
struct Killer {
    start: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Option<(usize, f64)>>>,
}

impl Killer {
    fn start(kills: &[Kill], launched: &farm_cluster::Launched, pause: Duration) -> Killer {
        let start = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = kills
            .iter()
            .filter_map(|kill| Some((*kill, launched.pid(kill.node)?)))
            .map(|(kill, pid)| {
                let (start, done) = (start.clone(), done.clone());
                std::thread::spawn(move || loop {
                    if done.load(std::sync::atomic::Ordering::Acquire) {
                        return None;
                    }
                    let begun = *start.lock().expect("kill clock lock");
                    if let Some(begun) = begun {
                        let at = begun + Duration::from_secs_f64(kill.at_s);
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                        let signal = if kill.pause {
                            libc::SIGSTOP
                        } else {
                            libc::SIGKILL
                        };
                        // SAFETY: a signal to a child this process started
                        // and has not reaped (the launcher reaps at the end).
                        unsafe { libc::kill(pid as libc::pid_t, signal) };
                        let killed = super::unix_ms_now();
                        if kill.pause {
                            eprintln!(
                                "farm bench: stopped node {} (pid {pid}) for {pause:?}",
                                kill.node
                            );
                            std::thread::sleep(pause);
                            // SAFETY: as above.
                            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
                        } else {
                            eprintln!("farm bench: killed node {} (pid {pid})", kill.node);
                        }
                        return Some((kill.node, killed));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                })
            })
            .collect();
        Killer {
            start,
            done,
            threads,
        }
    }

    fn measuring(&self, progress: &farm_cluster::Progress) {
        let mut start = self.start.lock().expect("kill clock lock");
        if progress.run == 0 && start.is_none() {
            // `done` comes from node 0 over the wire: a negative or absurd
            // figure leaves the clock unset (no panic), as one longer than
            // this host's uptime does.
            *start = Duration::try_from_secs_f64(progress.done)
                .ok()
                .and_then(|done| Instant::now().checked_sub(done));
        }
    }

    /// The kills made: (node, when, ms since the Unix epoch).
    fn finish(self) -> Vec<(usize, f64)> {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok().flatten())
            .collect()
    }
}

/// One in-process cluster of `nodes` nodes per thread count of the sweep.
fn run_in_process(options: &BenchOptions, nodes: usize) -> Result<Vec<BenchReport>> {
    let mut reports = Vec::new();
    for &threads in &options.threads {
        let copies = options.copies.min(nodes);
        let cluster = Cluster::start(ClusterConfig {
            nodes,
            copies,
            region_bytes: options.region_bytes,
            fabric: options.fabric,
            verbs: options.verbs.clone(),
            resident_regions: true,
            lock_wait: options.lock_wait,
            ..ClusterConfig::default()
        })?;
        let loading = Instant::now();
        if !options.quiet {
            eprintln!(
                "farm bench: loading {} (scale {}) on {nodes} nodes, {copies} copies …",
                options.workload, options.scale
            );
        }
        let site = Site::cluster(&cluster);
        let site = if options.quiet {
            site
        } else {
            site.with_progress(&super::config::load_progress_bar)
        };
        let workload = load_with(
            &site,
            options.workload,
            &LoadOptions {
                scale: options.scale,
                distribution: options.distribution,
                warehouses_per_node: options.warehouses_per_node,
            },
        )?;
        let load_s = loading.elapsed().as_secs_f64();
        if !options.quiet {
            eprintln!();
        }
        if !options.quiet {
            eprintln!(
                "farm bench: loaded in {load_s:.1} s; warm-up {} s, then {} s with {} client threads per node, {} transactions in flight each",
                options.warmup.as_secs_f64(),
                options.duration.as_secs_f64(),
                threads,
                options.in_flight
            );
        }
        let report = super::run(
            &cluster,
            workload.as_ref(),
            &RunOptions {
                threads_per_node: threads,
                in_flight: options.in_flight,
                max_in_flight: options.max_in_flight,
                warmup: options.warmup,
                duration: options.duration,
                progress: !options.quiet,
            },
            options.fabric,
            copies,
        )?;
        let report = BenchReport {
            load_s: Some(load_s),
            ..report
        };
        println!("{}\n", report.table());
        reports.push(report);
    }
    Ok(reports)
}
