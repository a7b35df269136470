//! `farm check` as one call: run the check workload on an in-process
//! cluster or on node processes this command starts, check the history
//! for strict serializability, print the table and the JSON line, and fail
//! on any anomaly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use farm_cluster::driver::{Driver, Event};
use farm_cluster::launcher::LocalCluster;
use farm_cluster::zookeeper::StoreAddress;
use farm_core::{AbortCounts, Cluster, ClusterConfig, FabricKind, Fault, Faults, VerbsDevice};

use crate::service::{CheckOutput, CheckRequest};
use crate::workload::{self, WorkloadOptions};
use crate::{check, History, Report};

/// Everything `farm check` takes.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub nodes: usize,
    pub copies: usize,
    pub fabric: FabricKind,
    pub verbs: VerbsDevice,
    /// Start one node process per node from this `farm` program (always so
    /// over verbs).
    pub processes: Option<PathBuf>,
    pub region_bytes: u64,
    pub fault: Option<Fault>,
    /// `txns` for the whole cluster, `threads` per node.
    pub workload: WorkloadOptions,
    /// Also write the JSON line here.
    pub json: Option<PathBuf>,
    /// The configuration store of the node processes (`processes` only).
    pub config_store: StoreAddress,
    /// Faults among the node processes during the workload (`processes`
    /// only).
    pub nemesis: Option<Nemesis>,
    /// The node processes' lease time, milliseconds (the cluster file's
    /// `lease_ms`).
    pub lease_ms: u64,
    /// Kills a nemesis makes (on shm each killed node is restarted and
    /// rejoins before the next; elsewhere at most `min(nodes - 2, copies
    /// - 1)`).
    pub kills: usize,
}

/// What `--nemesis` does to the node processes while the workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    /// `kill -9` node processes one after another (`kills` of them), the
    /// configuration manager among them, each once the configuration
    /// without the one before is stored. On shm each killed node is then
    /// restarted and rejoins (see [`farm_cluster::process::rejoin`]) before
    /// the next kill. Over verbs nodes are not restarted, so it kills only
    /// as many as the cluster survives: each change needs a majority of
    /// the configuration it replaces and a replica of every region, so at
    /// most `min(nodes - 2, copies - 1)`. Node 0, which carries the
    /// driver's connection, is spared.
    Kill,
}

impl std::str::FromStr for Nemesis {
    type Err = String;
    fn from_str(text: &str) -> Result<Nemesis, String> {
        match text {
            "kill" => Ok(Nemesis::Kill),
            other => Err(format!("no nemesis {other:?}: the one there is, is `kill`")),
        }
    }
}

/// Why `farm check` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] farm_core::Error),
    #[error(transparent)]
    Cluster(#[from] farm_cluster::Error),
    #[error("{0}")]
    InvalidOptions(String),
    /// The nodes sent a history that cannot be.
    #[error("the nodes sent an impossible history: {0}")]
    History(String),
    #[error("cannot write {path}: {source}")]
    WriteReport {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} anomalies found")]
    Anomalies(usize),
    /// Acknowledged commits whose effect was missing afterwards.
    #[error("{0} acknowledged appends were lost")]
    LostAcks(usize),
}

/// Runs `farm check` as `options` say and returns its report.
///
/// # Errors
/// [`Error::Anomalies`] when the history is not strictly serializable
/// (after the report was printed and written); the engine's and the
/// cluster's errors.
pub fn run(options: &CheckOptions) -> Result<Report, Error> {
    options.workload.check().map_err(Error::InvalidOptions)?;
    let processes = options.processes.is_some() || options.fabric == FabricKind::Verbs;
    let threads = options.workload.threads * options.nodes;
    eprintln!(
        "farm check: {} transactions, {} nodes ({}), {} copies, {} fabric, {threads} client threads × {} in flight",
        options.workload.txns,
        options.nodes,
        if processes { "separate processes" } else { "in this process" },
        options.copies,
        options.fabric,
        options.workload.in_flight.max(1),
    );
    let started = Instant::now();
    if options.nemesis.is_some() && !processes {
        return Err(Error::InvalidOptions(
            "--nemesis kills node processes: add --processes".into(),
        ));
    }
    let mut killed = Vec::new();
    let mut lost_acks = None;
    let (history, aborted) = if processes {
        let program = options.processes.as_ref().ok_or_else(|| {
            Error::InvalidOptions("the verbs fabric runs node processes: name the program".into())
        })?;
        let run = run_processes(options, program)?;
        killed = run.killed;
        lost_acks = run.lost_acks;
        (run.history, run.aborted)
    } else {
        let cluster = Cluster::start(ClusterConfig {
            nodes: options.nodes,
            copies: options.copies,
            region_bytes: options.region_bytes,
            faults: Faults::from(options.fault),
            fabric: options.fabric,
            verbs: options.verbs.clone(),
            ..ClusterConfig::default()
        })?;
        let result = workload::run(
            &cluster,
            &WorkloadOptions {
                threads,
                progress: true,
                ..options.workload.clone()
            },
        )?;
        (result.history, result.aborted_by_reason)
    };
    let run_time = started.elapsed();
    eprintln!("farm check: checking {} transactions …", history.len());
    let mut report = check(&history);
    report.killed = killed;
    report.lost_acks = lost_acks;
    println!("{}", report.table());
    println!(
        "workload: {:.1} s, {:.0} tx/s; aborts by reason: {aborted}",
        run_time.as_secs_f64(),
        report.txns as f64 / run_time.as_secs_f64(),
    );
    if let Some(path) = &options.json {
        std::fs::write(path, report.json_line() + "\n").map_err(|source| Error::WriteReport {
            path: path.clone(),
            source,
        })?;
    }
    println!("{}", report.json_line());
    if !report.anomalies.is_empty() {
        return Err(Error::Anomalies(report.anomalies.len()));
    }
    if let Some(lost) = report.lost_acks.filter(|lost| *lost > 0) {
        return Err(Error::LostAcks(lost));
    }
    Ok(report)
}

/// What a run on node processes gives.
struct ProcessRun {
    history: History,
    aborted: AbortCounts,
    killed: Vec<crate::Killed>,
    lost_acks: Option<usize>,
}

/// Acknowledged appends (of committed transactions) that `final_read`
/// lacks.
fn count_lost_acks(history: &History, final_read: &[(u64, Vec<u64>)]) -> usize {
    let lists: std::collections::HashMap<u64, &Vec<u64>> = final_read
        .iter()
        .map(|(key, elements)| (*key, elements))
        .collect();
    history
        .txns()
        .iter()
        .filter(|txn| txn.outcome == crate::Outcome::Committed)
        .flat_map(|txn| txn.ops.iter())
        .filter(|op| match op {
            crate::MicroOp::Append { key, element } => {
                !lists.get(key).is_some_and(|list| list.contains(element))
            }
            _ => false,
        })
        .count()
}

/// The nemesis's thread: once the clients started, kills node processes
/// one after another (see [`Nemesis::Kill`]), each after the store shows
/// the configuration without the one before, and on shm restarts each
/// killed node and waits until it rejoined before the next kill.
struct Killer {
    started: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<crate::Killed>>>,
}

type Shared<T> = std::sync::Arc<std::sync::Mutex<T>>;

impl Killer {
    fn start(
        options: &CheckOptions,
        launched: Shared<farm_cluster::Launched>,
        store: std::sync::Arc<dyn farm_cluster::membership::ConfigStore>,
    ) -> Killer {
        let started = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Killed nodes rejoin on shm; elsewhere each kill is for good, and
        // the cluster survives only so many.
        let restarts = options.fabric == FabricKind::Shm;
        let kills = if restarts {
            options.kills
        } else {
            options
                .kills
                .min(options.nodes.saturating_sub(2))
                .min(options.copies.saturating_sub(1))
        };
        // The kill schedule follows --seed (xorshift64* of the seed itself,
        // not the workload's `Rng`: CI's verbs step depends on `--seed 1`
        // killing the CM first; see the README).
        let mut seed = options.workload.seed ^ 0x6E65_6D65_7369_7321;
        let mut random = move || {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let manager_first = random().is_multiple_of(2);
        let (s, d) = (started.clone(), done.clone());
        let done_now = move || d.load(std::sync::atomic::Ordering::Acquire);
        let thread = std::thread::spawn(move || {
            let mut killed = Vec::new();
            let begun = loop {
                if done_now() {
                    return killed;
                }
                if let Some(begun) = *s.lock().expect("nemesis lock") {
                    break begun;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            std::thread::sleep(Duration::from_millis(100));
            // Waits until the stored configuration is a later one than `id`
            // in which `node` is (or is not) a member; false when the run
            // ends first.
            let wait_for = |id: u32, node: usize, member: bool| loop {
                if done_now() {
                    return false;
                }
                if let Ok(Some(now)) = store.load() {
                    if now.id > id && now.is_member(node) == member {
                        return true;
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            for k in 0..kills {
                let Ok(Some(config)) = store.load() else {
                    eprintln!("check: nemesis: cannot read the configuration store; no more kills");
                    break;
                };
                let kill_manager = (k == 0) == manager_first && config.manager != 0;
                let mut candidates: Vec<usize> = config
                    .members
                    .iter()
                    .copied()
                    .filter(|&n| n != 0 && (n == config.manager) == kill_manager)
                    .collect();
                if candidates.is_empty() {
                    candidates = config.members.iter().copied().filter(|&n| n != 0).collect();
                }
                if candidates.is_empty() || done_now() {
                    break;
                }
                let node = candidates[random() as usize % candidates.len()];
                if !launched.lock().expect("launched lock").kill(node) {
                    eprintln!("check: nemesis: node {node} does not run; no more kills");
                    break;
                }
                let at_s = begun.elapsed().as_secs_f64();
                eprintln!(
                    "check: nemesis: killed node {node}{} at {at_s:.2} s, configuration {}",
                    if node == config.manager {
                        ", the configuration manager"
                    } else {
                        ""
                    },
                    config.id
                );
                killed.push(crate::Killed {
                    node,
                    at_s,
                    manager: node == config.manager,
                    configuration: config.id,
                });
                if !wait_for(config.id, node, false) {
                    break;
                }
                if restarts {
                    let removed = store.load().ok().flatten().map_or(config.id, |c| c.id);
                    let old_contact = store.contact(node).ok().flatten();
                    // The launcher reaps the dead process first.
                    let restarted = launched
                        .lock()
                        .expect("launched lock")
                        .restart(node, &["--quiet".to_string()]);
                    if let Err(error) = restarted {
                        eprintln!("check: nemesis: cannot restart node {node}: {error}");
                        break;
                    }
                    eprintln!("check: nemesis: restarted node {node}");
                    if !wait_for(removed, node, true) {
                        break;
                    }
                    // Its agent starts (and publishes where it listens)
                    // once its copies are made: the next kill waits for
                    // that, so that a majority can still be found.
                    loop {
                        if done_now() {
                            return killed;
                        }
                        let contact = store.contact(node).ok().flatten();
                        if contact.is_some() && contact != old_contact {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
            killed
        });
        Killer {
            started,
            done,
            thread: Some(thread),
        }
    }

    fn clients_started(&self) {
        let mut started = self.started.lock().expect("nemesis lock");
        if started.is_none() {
            *started = Some(Instant::now());
        }
    }

    /// No more kills: the clients are done.
    fn stop(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
    }

    fn finish(mut self) -> Vec<crate::Killed> {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        self.thread
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

/// Starts one node process per node, has them run the check service, and
/// returns the merged history.
fn run_processes(options: &CheckOptions, program: &std::path::Path) -> Result<ProcessRun, Error> {
    let launched = LocalCluster {
        nodes: options.nodes,
        fabric: options.fabric,
        copies: options.copies,
        region_bytes: options.region_bytes,
        verbs: options.verbs.clone(),
        lease_ms: options.lease_ms,
        config_store: options.config_store.clone(),
    }
    .launch_in_temporary_dir("farm-check-", program, &|_| vec!["--quiet".into()])?;
    let driver = Driver {
        address: launched.node0(),
        wait: farm_cluster::bootstrap::BOOTSTRAP_TIMEOUT,
        answer_within: Duration::from_secs(24 * 3600),
    };
    let file = launched.file().clone();
    let journal = options.nemesis.map(|_| file.data_dir.clone());
    if let Some(dir) = &journal {
        std::fs::create_dir_all(dir).map_err(|source| Error::WriteReport {
            path: dir.clone(),
            source,
        })?;
    }
    let request = CheckRequest {
        workload: WorkloadOptions {
            survive_failures: options.nemesis.is_some(),
            ..options.workload.clone()
        },
        fault: options.fault,
        journal: journal.clone(),
    };
    request.check().map_err(Error::InvalidOptions)?;
    let launched = std::sync::Arc::new(std::sync::Mutex::new(launched));
    let killer = match options.nemesis {
        Some(Nemesis::Kill) => Some(Killer::start(
            options,
            launched.clone(),
            farm_cluster::zookeeper::open_store(&file.config_store, &file.data_dir)?,
        )),
        None => None,
    };
    let mut on_event = |event: &Event| match event {
        Event::Status(text) => {
            if let Some(killer) = &killer {
                match text.as_str() {
                    "clients started" => killer.clients_started(),
                    "reading every list" | "gathering the histories at node 0" => killer.stop(),
                    _ => {}
                }
            }
            eprintln!("check: {text}");
        }
        Event::Progress(progress) => eprintln!(
            "check: node 0: {:.0}/{:.0} transactions ({:.0} tx/s)",
            progress.done, progress.total, progress.rate
        ),
    };
    let nemesis = options.nemesis.is_some();
    let result: Result<Vec<CheckOutput>, farm_cluster::Error> =
        driver.run_watched("check", &request, &mut on_event, &mut || {
            nemesis || launched.lock().expect("launched lock").all_alive()
        });
    let killed = killer.map(Killer::finish).unwrap_or_default();
    let mut launched = std::sync::Arc::try_unwrap(launched)
        .map_err(|_| Error::InvalidOptions("the nemesis still holds the cluster".into()))?
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let outputs = result.map_err(|error| launched.explain(error))?;
    let mut all = CheckOutput::default();
    for output in outputs {
        all.txns.extend(output.txns);
        all.aborted.merge(&output.aborted);
        if output.final_read.is_some() {
            all.final_read = output.final_read;
        }
    }
    if let Some(dir) = &journal {
        // Every node's journal, the killed ones' too: a kill leaves its
        // last commits pending, and those are unknown.
        let end_ns = crate::history::host_monotonic_ns();
        all.txns.clear();
        for id in 0..options.nodes {
            let path = crate::service::journal_path(dir, id);
            all.txns
                .extend(crate::history::read_journal(&path, end_ns).map_err(Error::History)?);
        }
    }
    // The journals live in the cluster's temporary directory, gone with
    // `launched`.
    driver.stop()?;
    // Nodes that rejoined serve outside the driver's session: they do not
    // stop with it.
    for kill in &killed {
        launched.kill(kill.node);
    }
    launched.wait(Duration::from_secs(30))?;
    let history = History::try_new(all.txns).map_err(Error::History)?;
    let lost_acks = all
        .final_read
        .as_deref()
        .map(|lists| count_lost_acks(&history, lists));
    Ok(ProcessRun {
        history,
        aborted: all.aborted,
        killed,
        lost_acks,
    })
}
