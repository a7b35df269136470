//! `farm check` as one call: run the check workload on an in-process
//! cluster or on node processes this command starts, check the history
//! for strict serializability, print the table and the JSON line, and fail
//! on any anomaly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use farm_cluster::driver::{Driver, Event};
use farm_cluster::launcher::LocalCluster;
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
}

/// Runs `farm check` as `options` say and returns its report.
///
/// # Errors
/// [`Error::Anomalies`] when the history is not strictly serializable
/// (after the report was printed and written); the engine's and the
/// cluster's errors.
pub fn run(options: &CheckOptions) -> Result<Report, Error> {
    let processes = options.processes.is_some() || options.fabric == FabricKind::Verbs;
    let threads = options.workload.threads * options.nodes;
    eprintln!(
        "farm check: {} transactions, {} nodes ({}), {} copies, {} fabric, {threads} client threads",
        options.workload.txns,
        options.nodes,
        if processes { "separate processes" } else { "in this process" },
        options.copies,
        options.fabric,
    );
    let started = Instant::now();
    let (history, aborted) = if processes {
        let program = options.processes.as_ref().ok_or_else(|| {
            Error::InvalidOptions("the verbs fabric runs node processes: name the program".into())
        })?;
        run_processes(options, program)?
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
    let report = check(&history);
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
    Ok(report)
}

/// Starts one node process per node, has them run the check service, and
/// returns the merged history.
fn run_processes(
    options: &CheckOptions,
    program: &std::path::Path,
) -> Result<(History, AbortCounts), Error> {
    let launched = LocalCluster {
        nodes: options.nodes,
        fabric: options.fabric,
        copies: options.copies,
        region_bytes: options.region_bytes,
        verbs: options.verbs.clone(),
        lease_ms: farm_cluster::cluster_file::LEASE_MS_DEFAULT,
    }
    .launch_in_temporary_dir("farm-check-", program, &|_| vec!["--quiet".into()])?;
    let driver = Driver {
        address: launched.node0(),
        wait: farm_cluster::bootstrap::BOOTSTRAP_TIMEOUT,
        answer_within: Duration::from_secs(24 * 3600),
    };
    let request = CheckRequest {
        workload: options.workload.clone(),
        fault: options.fault,
    };
    request.check().map_err(Error::InvalidOptions)?;
    let mut on_event = |event: &Event| match event {
        Event::Status(text) => eprintln!("check: {text}"),
        Event::Progress(progress) => eprintln!(
            "check: node 0: {:.0}/{:.0} transactions ({:.0} tx/s)",
            progress.done, progress.total, progress.rate
        ),
    };
    let mut launched = launched;
    let outputs: Vec<CheckOutput> = driver
        .run_watched("check", &request, &mut on_event, &mut || {
            launched.all_alive()
        })
        .map_err(|error| launched.explain(error))?;
    driver.stop()?;
    launched.wait(Duration::from_secs(30))?;
    let mut all = CheckOutput::default();
    for output in outputs {
        all.txns.extend(output.txns);
        all.aborted.merge(&output.aborted);
    }
    let history = History::try_new(all.txns).map_err(Error::History)?;
    Ok((history, all.aborted))
}
