//! `farm bench` on node processes: the `bench` service that `farm node`
//! serves ([`BenchService`], a [`farm_cluster::Service`]) and the request a
//! driver sends it ([`BenchRequest`]).
//!
//! Each node loads its share of the workload (see [`super::site`]); for
//! every thread count of the request the nodes meet, run their client
//! threads for the warm-up and the measured time, and send what they
//! measured to node 0, which merges it, runs the workload's check and
//! hands the driver one [`BenchReport`] per thread count.
//!
//! The loaded workload stays in memory between requests: a request for the
//! same workload, scale and distribution reuses it (its rows, as the last
//! run left them, still satisfy its checks); another workload is loaded
//! next to it, so size `region_bytes` for every workload you will run.

use std::sync::Mutex;
use std::time::Duration;

use farm_cluster::{Progress, Service, ServiceSite};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::config::{load_with, LoadOptions, WorkloadName};
use super::site::{Rounds, Site};
use super::ycsb::Distribution;
use super::{measure, report, Measured, RunOptions, RunShape, Workload};

/// What a driver asks the cluster to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchRequest {
    pub workload: WorkloadName,
    pub scale: f64,
    /// YCSB's key distribution.
    pub distribution: Distribution,
    /// Client threads per node; one run for each.
    pub threads: Vec<usize>,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// TPC-C's warehouses on each node.
    #[serde(default = "one")]
    pub warehouses_per_node: usize,
    /// Transactions each client thread keeps in flight (1: a plain
    /// thread; more: a worker, see `farm_core::worker`).
    #[serde(default = "one")]
    pub in_flight: usize,
    /// Transactions each node runs at once (`None` or 0: unbounded).
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

fn one() -> usize {
    1
}

impl BenchRequest {
    /// Node 0 (and the driver) check a request before any node acts on it.
    ///
    /// # Errors
    /// The first field out of range, in words.
    pub fn check(&self) -> Result<(), String> {
        if self.threads.is_empty() || self.threads.iter().any(|t| *t == 0 || *t > 256) {
            return Err("threads: 1 to 256 per node".into());
        }
        let seconds = |s: f64| s.is_finite() && (0.0..=86_400.0).contains(&s);
        if !seconds(self.warmup_s) || !seconds(self.duration_s) || self.duration_s == 0.0 {
            return Err("warm-up and duration: seconds, duration above 0".into());
        }
        let most_threads = self.threads.iter().copied().max().unwrap_or(1);
        if self.in_flight == 0
            || most_threads.saturating_mul(self.in_flight) > farm_core::limits::CONTEXTS_MAX
        {
            return Err(format!(
                "in-flight: at least 1, and threads × in-flight at most {} per node (farm_core::limits::CONTEXTS_MAX)",
                farm_core::limits::CONTEXTS_MAX
            ));
        }
        if !(1..=1024).contains(&self.warehouses_per_node) {
            return Err("warehouses: 1 to 1024 per node".into());
        }
        if !(self.scale.is_finite() && self.scale > 0.0 && self.scale <= 10_000.0) {
            return Err("scale: above 0, at most 10,000".into());
        }
        Ok(())
    }

    /// What identifies a loaded population.
    fn population(&self) -> (WorkloadName, u64, Distribution, usize) {
        (
            self.workload,
            self.scale.to_bits(),
            self.distribution,
            self.warehouses_per_node,
        )
    }
}

/// What a node process sends node 0 after a run.
#[derive(Serialize, Deserialize)]
struct Part {
    measured: Measured,
    tally: i64,
    /// The configuration changes this node managed.
    events: Vec<farm_cluster::membership::Event>,
    /// Its part of the consistency check ([`Workload::check_part`]).
    #[serde(default)]
    check_part: Option<serde_json::Value>,
}

type Loaded = (
    (WorkloadName, u64, Distribution, usize),
    Box<dyn Workload + Send>,
);

/// The `bench` service of a node process; keeps the last loaded workload.
#[derive(Default)]
pub struct BenchService {
    loaded: Mutex<Option<Loaded>>,
}

/// A service's rounds, for [`Site`].
struct SiteRounds<'a, 'b>(&'a ServiceSite<'b>);

impl Rounds for SiteRounds<'_, '_> {
    fn exchange(
        &self,
        round: &str,
        part: serde_json::Value,
    ) -> farm_core::Result<Vec<serde_json::Value>> {
        self.0
            .exchange(round, &part)
            .map_err(|error| farm_core::Error::Peer(error.to_string()))
    }
}

impl Service for BenchService {
    fn name(&self) -> &'static str {
        "bench"
    }

    fn check(&self, request: &RawValue) -> Result<(), String> {
        let request: BenchRequest =
            serde_json::from_str(request.get()).map_err(|e| format!("not a bench request: {e}"))?;
        request.check()
    }

    fn run(&self, site: &ServiceSite<'_>, request: &RawValue) -> farm_cluster::Result<()> {
        let request: BenchRequest =
            farm_cluster::protocol::decode_value(request, "node 0", "bench request")?;
        request
            .check()
            .map_err(|error| farm_cluster::Error::Service {
                service: "bench".into(),
                error,
            })?;
        let id = site.id();
        let nodes = site.nodes();
        let file = site.file();
        let copies = file.copies.min(nodes);
        let node = site.node().clone();
        let rounds = SiteRounds(site);
        let workload_site = Site::process(&node, nodes, &rounds);
        let mut loaded = self.loaded.lock().expect("loaded workload lock");
        if loaded.as_ref().map(|(key, _)| *key) != Some(request.population()) {
            site.status(&format!(
                "loading {} (scale {}) on {nodes} nodes",
                request.workload, request.scale
            ));
            let workload = load_with(
                &workload_site,
                request.workload,
                &LoadOptions {
                    scale: request.scale,
                    distribution: request.distribution,
                    warehouses_per_node: request.warehouses_per_node,
                },
            )?;
            *loaded = Some((request.population(), workload));
        }
        let workload = loaded.as_ref().expect("just loaded").1.as_ref();
        for (run, &threads) in request.threads.iter().enumerate() {
            workload_site.barrier("bench-start")?;
            let options = RunOptions {
                threads_per_node: threads,
                in_flight: request.in_flight,
                max_in_flight: request.max_in_flight,
                warmup: Duration::from_secs_f64(request.warmup_s),
                duration: Duration::from_secs_f64(request.duration_s),
                progress: false,
            };
            let measured = measure(&[&node], workload, &options, &mut |elapsed, rate| {
                site.progress(Progress {
                    run,
                    done: elapsed,
                    total: request.duration_s,
                    unit: "s".into(),
                    rate,
                });
            })?;
            // Each node checks the rows it owns, where they are local (a
            // workload that checks as a whole leaves it to node 0).
            workload_site.barrier("bench-ran")?;
            let check_part = workload.check_part(&node, id, nodes)?;
            let parts = site.exchange(
                "bench-measured",
                &Part {
                    measured,
                    tally: workload.tally(),
                    events: site.membership_events(),
                    check_part,
                },
            )?;
            if id == 0 {
                let mut tallies = Vec::new();
                let mut events = Vec::new();
                let mut all: Option<Measured> = None;
                // Every node's part, or (a node died, or the workload
                // checks as a whole) none: node 0 checks everything.
                let check_parts: Option<Vec<serde_json::Value>> = (parts.len() == nodes)
                    .then(|| parts.iter().map(|p| p.check_part.clone()).collect())
                    .flatten();
                for part in parts {
                    tallies.push(part.tally);
                    events.extend(part.events);
                    match &mut all {
                        None => all = Some(part.measured),
                        Some(all) => all.merge(&part.measured)?,
                    }
                }
                let all = all.expect("node 0's own part");
                site.status("checking");
                let consistency = match &check_parts {
                    Some(check_parts) => workload.check_merge(check_parts, &tallies),
                    None => workload.check(&node, &tallies)?,
                };
                let mut report = report(
                    workload,
                    &all,
                    consistency,
                    &RunShape {
                        fabric: file.fabric,
                        nodes,
                        copies,
                        duration: options.duration,
                        in_flight: options.in_flight,
                        max_in_flight: options.max_in_flight,
                    },
                );
                events.sort_by(|a, b| a.unix_ms.total_cmp(&b.unix_ms));
                report.events = events;
                site.output(&report);
            }
            // Nobody runs again before node 0's check is done.
            workload_site.barrier("bench-checked")?;
        }
        Ok(())
    }
}
