//! Commit latency of FaRM's smallest read-write transaction: read one
//! object, write another (both on other nodes, so every phase crosses the
//! fabric), on a three-node, three-copy in-process cluster. Reports
//! latency percentiles from an hdrhistogram and the mean time of each
//! commit phase.

use std::time::{Duration, Instant};

use farm_core::{Addr, Cluster, ClusterConfig, FabricKind, Outcome, PhaseTimes, VerbsDevice};
use hdrhistogram::Histogram;
use serde::Serialize;

/// `farm commit-lat`: measures, prints the table and the JSON line, and
/// writes the JSON to `json` when given.
///
/// # Errors
/// The engine's; [`crate::Error::WriteReport`] when the JSON cannot be
/// written.
pub fn main(options: &Options, json: Option<&std::path::Path>) -> crate::error::Result<()> {
    eprintln!(
        "farm commit-lat: {} warm-up and {} measured transactions …",
        options.warmup, options.iterations
    );
    let report = run(options)?;
    println!("{}", report.table());
    let line = serde_json::to_string(&report).expect("a report serializes");
    if let Some(path) = json {
        std::fs::write(path, format!("{line}\n")).map_err(|source| crate::Error::WriteReport {
            path: path.to_path_buf(),
            source,
        })?;
    }
    println!("{line}");
    Ok(())
}

#[derive(Clone, Debug)]
pub struct Options {
    pub fabric: FabricKind,
    pub verbs: VerbsDevice,
    pub iterations: u64,
    pub warmup: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub fabric: FabricKind,
    pub iterations: u64,
    pub aborted: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    /// Mean time of each commit phase, µs.
    pub lock_us: f64,
    pub validate_us: f64,
    pub commit_backup_us: f64,
    pub commit_primary_us: f64,
    /// Median of each phase, µs: lock, validate, commit-backup,
    /// commit-primary, and the rest (execution's READ, the write's
    /// buffering, commit bookkeeping).
    pub lock_p50_us: f64,
    pub validate_p50_us: f64,
    pub commit_backup_p50_us: f64,
    pub commit_primary_p50_us: f64,
    pub rest_p50_us: f64,
}

/// The transaction: coordinator node 0 reads `read` (primary on node 1) and
/// writes `write` (primary on node 2, backups on nodes 0 and 1).
pub struct OneReadOneWrite {
    pub cluster: Cluster,
    pub read: Addr,
    pub write: Addr,
}

impl OneReadOneWrite {
    pub fn start(fabric: FabricKind, verbs: VerbsDevice) -> farm_core::Result<OneReadOneWrite> {
        let cluster = Cluster::start(ClusterConfig {
            region_bytes: 4 << 20,
            fabric,
            verbs,
            ..ClusterConfig::default()
        })?;
        let read = cluster.node(1).run(|txn| txn.alloc(&0u64.to_le_bytes()))?;
        let write = cluster.node(2).run(|txn| txn.alloc(&0u64.to_le_bytes()))?;
        cluster.quiesce(Duration::from_secs(30))?;
        Ok(OneReadOneWrite {
            cluster,
            read,
            write,
        })
    }

    /// One transaction; its outcome and phase times.
    pub fn once(&self, value: u64) -> farm_core::Result<(Outcome, PhaseTimes)> {
        let mut txn = self.cluster.node(0).begin()?;
        let step = (|| {
            let seen: u64 = txn.read_pod(self.read)?;
            txn.write_pod(self.write, &(seen + value))
        })();
        if step.is_err() {
            txn.abort();
            return Ok((
                Outcome::Aborted(farm_core::AbortReason::ReadConflict),
                PhaseTimes::default(),
            ));
        }
        txn.commit_timed()
    }
}

pub fn run(options: &Options) -> farm_core::Result<Report> {
    let bench = OneReadOneWrite::start(options.fabric, options.verbs.clone())?;
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds");
    let mut aborted = 0;
    let mut sums = [0u64; 4];
    let mut phase_histograms: Vec<Histogram<u64>> = (0..5)
        .map(|_| Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"))
        .collect();
    for i in 0..options.warmup.saturating_add(options.iterations) {
        let started = Instant::now();
        let (outcome, phases) = bench.once(i)?;
        let elapsed = started.elapsed().as_nanos() as u64;
        if i < options.warmup {
            continue;
        }
        if outcome != Outcome::Committed {
            aborted += 1;
            continue;
        }
        histogram.record(elapsed.max(1)).expect("in bounds");
        sums[0] += phases.lock_ns;
        sums[1] += phases.validate_ns;
        sums[2] += phases.commit_backup_ns;
        sums[3] += phases.commit_primary_ns;
        let parts = [
            phases.lock_ns,
            phases.validate_ns,
            phases.commit_backup_ns,
            phases.commit_primary_ns,
        ];
        let rest = elapsed.saturating_sub(parts.iter().sum());
        for (histogram, ns) in phase_histograms
            .iter_mut()
            .zip(parts.into_iter().chain([rest]))
        {
            histogram.record(ns.max(1)).expect("in bounds");
        }
    }
    let median = |i: usize| phase_histograms[i].value_at_quantile(0.50) as f64 / 1000.0;
    let us = |ns: u64| ns as f64 / 1000.0;
    let committed = histogram.len().max(1);
    Ok(Report {
        fabric: options.fabric,
        iterations: options.iterations,
        aborted,
        p50_us: us(histogram.value_at_quantile(0.50)),
        p90_us: us(histogram.value_at_quantile(0.90)),
        p99_us: us(histogram.value_at_quantile(0.99)),
        p999_us: us(histogram.value_at_quantile(0.999)),
        min_us: us(histogram.min()),
        max_us: us(histogram.max()),
        lock_us: us(sums[0] / committed),
        validate_us: us(sums[1] / committed),
        commit_backup_us: us(sums[2] / committed),
        commit_primary_us: us(sums[3] / committed),
        lock_p50_us: median(0),
        validate_p50_us: median(1),
        commit_backup_p50_us: median(2),
        commit_primary_p50_us: median(3),
        rest_p50_us: median(4),
    })
}

impl Report {
    pub fn table(&self) -> String {
        format!(
            "1-read-1-write commit latency, {} fabric, 3 nodes, 3 copies, in one process\n\
             {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n\
             {:>10} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n\
             phases (mean µs): lock {:.2}, validate {:.2}, commit-backup {:.2}, commit-primary {:.2}\n\
             phases (median µs): lock {:.2}, validate {:.2}, commit-backup {:.2}, commit-primary {:.2}, the rest {:.2}",
            self.fabric,
            "iterations",
            "aborted",
            "min[us]",
            "p50[us]",
            "p90[us]",
            "p99[us]",
            "p99.9[us]",
            "max[us]",
            self.iterations,
            self.aborted,
            self.min_us,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.lock_us,
            self.validate_us,
            self.commit_backup_us,
            self.commit_primary_us,
            self.lock_p50_us,
            self.validate_p50_us,
            self.commit_backup_p50_us,
            self.commit_primary_p50_us,
            self.rest_p50_us,
        )
    }
}
