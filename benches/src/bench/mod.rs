//! `farm bench`: FaRM's workloads on an in-process cluster, with latency
//! histograms per transaction type, aborts by reason and a per-phase
//! breakdown of commits.
//!
//! Each client thread runs transactions back to back on its node (thread t
//! on node t % nodes); an aborted transaction counts as an abort and the
//! thread moves on to a new random transaction (no retry), as FaRM's
//! benchmarks count. Latency is from begin to the commit's answer.

pub mod command;
pub mod config;
pub mod plot;
pub mod service;
pub mod site;
pub mod smallbank;
pub mod tatp;
pub mod tpcc;
pub mod ycsb;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use farm_core::{AbortCounts, AbortReason, Cluster, FabricKind, Node, Outcome, PhaseTimes};

use self::config::WorkloadName;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A small, fast generator (xorshift64*): workloads draw many numbers.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// Uniform in `0..100`.
    pub fn percent(&mut self) -> u64 {
        self.next_u64() % 100
    }
}

/// One transaction attempt, as a workload reports it.
pub struct Attempt {
    /// Index into the workload's `types()`.
    pub kind: usize,
    pub outcome: Outcome,
    pub phases: PhaseTimes,
}

/// A benchmark workload: populate, run one random transaction, check.
pub trait Workload: Send + Sync {
    fn name(&self) -> WorkloadName;
    /// Transaction type names, in the order `Attempt::kind` indexes them.
    fn types(&self) -> &'static [&'static str];
    /// Runs one random transaction from `node` (no retry).
    fn run_one(&self, node: &Node, rng: &mut Rng) -> farm_core::Result<Attempt>;
    /// What this process's clients did that the check needs to know
    /// (SmallBank's net money in and out); `check` gets every process's.
    fn tally(&self) -> i64 {
        0
    }
    /// Checks the workload's own consistency conditions afterwards, with
    /// transactions from `node` (node 0); the text says what was checked.
    fn check(&self, node: &Node, tallies: &[i64]) -> farm_core::Result<Result<String, String>>;
    /// How far the check running now is: (rows or keys checked, of how
    /// many), for a progress bar; `None` for a workload that does not say.
    fn check_progress(&self) -> Option<CheckProgress> {
        None
    }
    /// The part of the check that concerns the rows node `index` of `of`
    /// owns, made with transactions from that node (its reads are local),
    /// for [`Workload::check_merge`] to put together; `None`, the default,
    /// for a workload that checks as a whole only ([`Workload::check`]).
    ///
    /// # Errors
    /// The engine's.
    fn check_part(
        &self,
        _node: &Node,
        _index: usize,
        _of: usize,
    ) -> farm_core::Result<Option<serde_json::Value>> {
        Ok(None)
    }
    /// Puts every node's [`Workload::check_part`] together (node order);
    /// the text as [`Workload::check`]'s.
    ///
    /// # Errors
    /// What is violated, in words.
    fn check_merge(
        &self,
        _parts: &[serde_json::Value],
        _tallies: &[i64],
    ) -> Result<String, String> {
        Err("this workload checks as a whole only".into())
    }
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub threads_per_node: usize,
    /// Transactions each client thread keeps in flight: above 1, the
    /// thread is a [`farm_core::Worker`] running that many clients as
    /// tasks.
    pub in_flight: usize,
    /// Transactions each node runs at once, set on the nodes for the run
    /// ([`farm_core::Node::set_max_in_flight`]); `None` or 0: unbounded.
    pub max_in_flight: Option<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    pub progress: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            min: us(histogram.min()),
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TypeReport {
    pub name: String,
    pub committed: u64,
    pub aborted: u64,
    pub latency_us: Latency,
    /// (latency µs, percentile) points of the latency CDF.
    pub cdf_us: Vec<(f64, f64)>,
}

const CDF_PERCENTILES: [f64; 17] = [
    0.0, 1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9,
    99.99,
];

fn cdf(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    CDF_PERCENTILES
        .iter()
        .map(|p| (histogram.value_at_percentile(*p).max(1) as f64 / 1000.0, *p))
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Phases {
    pub lock: f64,
    pub validate: f64,
    pub commit_backup: f64,
    pub commit_primary: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub workload: WorkloadName,
    pub fabric: FabricKind,
    pub nodes: usize,
    pub copies: usize,
    pub threads: usize,
    /// Transactions each client thread kept in flight (`--in-flight`;
    /// above 1 each thread was a worker running that many as tasks).
    #[serde(default = "one")]
    pub in_flight: usize,
    /// The bound on transactions each node ran at once
    /// (`--max-in-flight`); absent when unbounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    pub host: String,
    pub cpus: usize,
    pub duration_s: f64,
    pub throughput_tps: f64,
    pub committed: u64,
    pub aborted: u64,
    pub aborted_by_reason: AbortCounts,
    /// Committed transactions of every type.
    pub latency_us: Latency,
    pub cdf_us: Vec<(f64, f64)>,
    pub types: Vec<TypeReport>,
    /// Mean time of each commit phase over committed read-write
    /// transactions, µs (execution is the rest of the latency).
    pub phases_us: Phases,
    pub consistency: String,
    /// A name for plots that put runs of different origins side by side
    /// (`farm plot` uses the file's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// When measuring began (node 0's clock), ms since the Unix epoch.
    #[serde(default)]
    pub started_unix_ms: f64,
    /// How long loading the workload took, seconds (in-process runs; a
    /// `--cluster` run that finds its workload loaded already has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_s: Option<f64>,
    /// Commits in each millisecond of the measured time: `[ms, committed]`.
    #[serde(default)]
    pub timeline: Vec<(u64, u64)>,
    /// Configuration changes during the run, as their managers saw them.
    #[serde(default)]
    pub events: Vec<farm_cluster::membership::Event>,
    /// One entry per node killed during the run (`farm bench --kill`).
    #[serde(default)]
    pub recovery: Vec<Recovery>,
    /// Object copies read per transaction attempt (committed or aborted)
    /// while measuring: one-sided READs plus reads of a node's own
    /// memory. A TATP lookup of a small value costs one.
    #[serde(default)]
    pub object_reads_per_txn: f64,
    /// Of those, one-sided READs through the fabric, per attempt.
    #[serde(default)]
    pub remote_reads_per_txn: f64,
}

/// How the cluster came back from one kill (FaRM SOSP'15 §6.4), in
/// milliseconds after the kill; `None` where it did not happen within the
/// run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub node: usize,
    /// Seconds after measuring began.
    pub killed_at_s: f64,
    /// The configuration manager suspected the node.
    pub suspected_ms: Option<f64>,
    /// The next configuration was in the store.
    pub new_config_ms: Option<f64>,
    /// Every member resumed (NEW-CONFIG-COMMIT).
    pub active_ms: Option<f64>,
    /// Throughput over the last 10 ms was back to 80% of the second
    /// before the kill.
    pub back_to_80pct_ms: Option<f64>,
}

impl Recovery {
    /// What `report` shows of a kill of `node` at `killed_unix_ms`.
    pub fn of(report: &BenchReport, node: usize, killed_unix_ms: f64) -> Recovery {
        let after = |what: &str| {
            report
                .events
                .iter()
                .filter(|e| {
                    e.what == what && e.nodes.contains(&node) && e.unix_ms >= killed_unix_ms - 1.0
                })
                .map(|e| e.unix_ms - killed_unix_ms)
                .reduce(f64::min)
        };
        let kill_ms = (killed_unix_ms - report.started_unix_ms).max(0.0) as u64;
        let rate = |from: u64, to: u64| -> f64 {
            let sum: u64 = report
                .timeline
                .iter()
                .filter(|(ms, _)| *ms >= from && *ms < to)
                .map(|(_, c)| c)
                .sum();
            sum as f64 / (to.saturating_sub(from)).max(1) as f64
        };
        let before = rate(kill_ms.saturating_sub(1000), kill_ms);
        let end = report.timeline.last().map(|(ms, _)| *ms + 1).unwrap_or(0);
        let back = (kill_ms + 10..=end)
            .find(|&t| before > 0.0 && rate(t - 10, t) >= 0.8 * before)
            .map(|t| (t - kill_ms) as f64);
        Recovery {
            node,
            killed_at_s: (killed_unix_ms - report.started_unix_ms) / 1000.0,
            suspected_ms: after("suspected"),
            new_config_ms: after("new-config"),
            active_ms: after("active"),
            back_to_80pct_ms: back,
        }
    }
}

/// What the client threads of one process measured: counts by type and
/// abort reason, latency histograms, commit-phase sums. Processes of a
/// multi-process cluster send theirs to node 0, which merges them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Measured {
    pub threads: usize,
    committed: Vec<u64>,
    aborted: Vec<u64>,
    reasons: AbortCounts,
    #[serde(with = "histograms_as_counts")]
    histograms: Vec<Histogram<u64>>,
    phases: [u64; 4],
    phase_count: u64,
    /// When measuring began, in milliseconds since the Unix epoch (this
    /// process's clock).
    #[serde(default)]
    pub started_unix_ms: f64,
    /// Commits in each millisecond since `started_unix_ms`.
    #[serde(default)]
    pub timeline: Vec<u64>,
    /// Object copies this process's client threads read for transactions
    /// while measuring ([`farm_core::thread_reads`]), and of those,
    /// one-sided READs through the fabric.
    #[serde(default)]
    pub object_reads: u64,
    #[serde(default)]
    pub remote_reads: u64,
}

/// Histograms travel as their (value, count) pairs.
mod histograms_as_counts {
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        histograms: &[Histogram<u64>],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let counts: Vec<Vec<(u64, u64)>> = histograms
            .iter()
            .map(|h| {
                h.iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect()
            })
            .collect();
        counts.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Histogram<u64>>, D::Error> {
        let counts = Vec::<Vec<(u64, u64)>>::deserialize(deserializer)?;
        counts
            .into_iter()
            .map(|pairs| {
                let mut histogram = super::histogram();
                for (value, count) in pairs {
                    histogram
                        .record_n(value, count)
                        .map_err(serde::de::Error::custom)?;
                }
                Ok(histogram)
            })
            .collect()
    }
}

impl Measured {
    fn new(types: usize, threads: usize) -> Measured {
        Measured {
            threads,
            committed: vec![0; types],
            aborted: vec![0; types],
            reasons: AbortCounts::default(),
            histograms: (0..types).map(|_| histogram()).collect(),
            phases: [0; 4],
            phase_count: 0,
            started_unix_ms: 0.0,
            timeline: Vec::new(),
            object_reads: 0,
            remote_reads: 0,
        }
    }

    /// Counts one commit in millisecond `ms` of the timeline.
    fn count_at(&mut self, ms: usize) {
        if self.timeline.len() <= ms {
            self.timeline.resize(ms + 1, 0);
        }
        self.timeline[ms] += 1;
    }

    /// Adds `other`'s timeline, lined up by the clocks' start times.
    fn merge_timeline(&mut self, other: &Measured) {
        if other.timeline.is_empty() {
            return;
        }
        if self.timeline.is_empty() && self.started_unix_ms == 0.0 {
            self.started_unix_ms = other.started_unix_ms;
        }
        let offset = (other.started_unix_ms - self.started_unix_ms).round() as i64;
        for (ms, &count) in other.timeline.iter().enumerate() {
            let Ok(at) = usize::try_from(ms as i64 + offset) else {
                continue;
            };
            if self.timeline.len() <= at {
                self.timeline.resize(at + 1, 0);
            }
            self.timeline[at] += count;
        }
    }

    /// Adds `other`'s counts (another thread's, another process's).
    ///
    /// # Errors
    /// [`farm_core::Error::Peer`] when `other` is of another workload or
    /// its histograms do not fit (it came from another process).
    pub fn merge(&mut self, other: &Measured) -> farm_core::Result<()> {
        if other.committed.len() != self.committed.len() {
            return Err(farm_core::Error::Peer(format!(
                "measurements of different workloads ({} and {} transaction types)",
                self.committed.len(),
                other.committed.len()
            )));
        }
        self.threads += other.threads;
        for kind in 0..self.committed.len() {
            self.committed[kind] += other.committed[kind];
            self.aborted[kind] += other.aborted[kind];
            self.histograms[kind]
                .add(&other.histograms[kind])
                .map_err(|e| farm_core::Error::Peer(format!("a histogram does not fit: {e}")))?;
        }
        self.reasons.merge(&other.reasons);
        for i in 0..4 {
            self.phases[i] += other.phases[i];
        }
        self.phase_count += other.phase_count;
        self.object_reads += other.object_reads;
        self.remote_reads += other.remote_reads;
        self.merge_timeline(other);
        Ok(())
    }

    /// Counts `attempt` (its latency goes through a [`Recorder`]).
    fn count(&mut self, attempt: &Attempt) {
        match attempt.outcome {
            Outcome::Committed => {
                self.committed[attempt.kind] += 1;
                let p = attempt.phases;
                if p.lock_ns > 0 {
                    self.phases[0] += p.lock_ns;
                    self.phases[1] += p.validate_ns;
                    self.phases[2] += p.commit_backup_ns;
                    self.phases[3] += p.commit_primary_ns;
                    self.phase_count += 1;
                }
            }
            Outcome::Aborted(reason) => {
                self.aborted[attempt.kind] += 1;
                self.reasons.add(reason, 1);
            }
        }
    }
}

/// What one client thread records while it measures, shared by its tasks
/// (a worker runs one at a time, and none pauses while recording): the
/// counts in a [`Measured`], the latencies first in 32-bit histograms.
///
/// One set of histograms per thread instead of one per task, at half the
/// bytes: each holds about 28,000 counters (1 ns to 60 s at three
/// significant digits), and with a set per task, `farm bench --threads 8`
/// (TATP: 7 types, 48 tasks) spread its records over 336 of them. On the
/// 2-vCPU dev host a scratch build that recorded no latencies at all ran
/// `--threads 2` 4.4% faster (median of five interleaved runs each); this
/// form against a set per task, 13 interleaved pairs of 3 s runs: +1.3%
/// at `--threads 2`, +0.8% at `--threads 8` (both within the runs'
/// spread), and 51 MB less resident memory at `--threads 8`.
struct Recorder {
    measured: Measured,
    latencies: Vec<Histogram<u32>>,
}

impl Recorder {
    /// A histogram's counts move into the [`Measured`] when this many
    /// latencies are in it, long before any counter could saturate.
    const FLUSH_AT: u64 = 1 << 31;

    fn new(types: usize) -> Recorder {
        Recorder {
            measured: Measured::new(types, 1),
            latencies: (0..types).map(|_| latency_histogram()).collect(),
        }
    }

    fn count(&mut self, attempt: &Attempt, elapsed_ns: u64) {
        if attempt.outcome == Outcome::Committed {
            let latencies = &mut self.latencies[attempt.kind];
            // A latency above the highest trackable value (60 s) counts
            // as that.
            latencies.saturating_record(elapsed_ns.max(1));
            if latencies.len() >= Self::FLUSH_AT {
                self.flush(attempt.kind);
            }
        }
        self.measured.count(attempt);
    }

    fn flush(&mut self, kind: usize) {
        let latencies = &mut self.latencies[kind];
        let into = &mut self.measured.histograms[kind];
        // Same bounds: each bucket's value lands in the same bucket.
        for bucket in latencies.iter_recorded() {
            into.saturating_record_n(
                bucket.value_iterated_to(),
                u64::from(bucket.count_at_value()),
            );
        }
        latencies.reset();
    }

    /// Everything recorded, as one thread's [`Measured`].
    fn finish(mut self) -> Measured {
        for kind in 0..self.latencies.len() {
            self.flush(kind);
        }
        self.measured
    }
}

fn latency_histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

fn histogram() -> Histogram<u64> {
    latency_histogram()
}

/// How far a consistency check is: `done` of `total` (what they count,
/// in `unit`'s words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckProgress {
    pub done: u64,
    pub total: u64,
    pub unit: &'static str,
}

/// A workload's check counter: [`Workload::check_progress`] reads it.
#[derive(Debug, Default)]
pub struct CheckCounter {
    done: AtomicU64,
    total: AtomicU64,
}

impl CheckCounter {
    /// A check of `total` begins.
    pub fn begin(&self, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add(&self, done: u64) {
        self.done.fetch_add(done, Ordering::Relaxed);
    }

    pub fn progress(&self, unit: &'static str) -> Option<CheckProgress> {
        Some(CheckProgress {
            done: self.done.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            unit,
        })
    }
}

/// Runs `check`, drawing a progress bar on stderr from `workload`'s
/// [`Workload::check_progress`] about five times a second when `show`.
fn with_check_progress<R: Send>(
    workload: &dyn Workload,
    show: bool,
    check: impl FnOnce() -> R + Send,
) -> R {
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let finished = &finished;
        if show {
            scope.spawn(move || {
                while !finished.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(200));
                    if let Some(p) = workload.check_progress() {
                        let filled =
                            (p.done * 30).checked_div(p.total).unwrap_or(0).min(30) as usize;
                        eprint!(
                            "\r[{}{}] {}/{} {} checked",
                            "#".repeat(filled),
                            " ".repeat(30 - filled),
                            p.done,
                            p.total,
                            p.unit
                        );
                    }
                }
            });
        }
        let result = check();
        finished.store(true, Ordering::Release);
        result
    })
}

/// Prints a progress bar on stderr: `elapsed` of `total` seconds, `rate`.
pub fn progress_bar(elapsed: f64, total: f64, rate: &str) {
    let filled = (((elapsed / total) * 30.0) as usize).min(30);
    eprint!(
        "\r[{}{}] {:>5.1}/{:.0} s {rate}",
        "#".repeat(filled),
        " ".repeat(30 - filled),
        elapsed,
        total,
    );
}

/// Runs `workload` from `options.threads_per_node` client threads on each
/// of `nodes` (the nodes of this process) for the warm-up and then the
/// measured time; `progress(elapsed s, transactions per second)` is called
/// about once a second while measuring.
pub fn measure(
    nodes: &[&Node],
    workload: &dyn Workload,
    options: &RunOptions,
    progress: &mut dyn FnMut(f64, f64),
) -> farm_core::Result<Measured> {
    let threads = options.threads_per_node * nodes.len();
    let in_flight = options.in_flight;
    let bound = options.max_in_flight.and_then(std::num::NonZeroUsize::new);
    for node in nodes {
        node.set_max_in_flight(bound);
    }
    // Unbounded again when the run ends, however it ends.
    struct Unbound<'a, 'n>(&'a [&'n Node]);
    impl Drop for Unbound<'_, '_> {
        fn drop(&mut self) {
            for node in self.0 {
                node.set_max_in_flight(None);
            }
        }
    }
    let _unbound = Unbound(nodes);
    let types = workload.types().len();
    let measuring = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    // Committed transactions, one counter per client thread, each on a
    // cache line of its own: a counter shared by every thread cost 1.6%
    // of TATP's default run in its cache-line transfers (perf).
    let done: Vec<ThreadCount> = (0..threads).map(|_| ThreadCount::default()).collect();
    // The timeline's clock: milliseconds since `base`, less `offset_ms`
    // (when measuring began). The clients read the TSC through `quanta`
    // (a calibrated counter read, no vDSO call): two reads per
    // transaction were 2% of TATP's default run as `Instant::now()`
    // (perf), and in the soft-RoCE VM, whose clocksource is the HPET,
    // each was a system call.
    let base = quanta::Instant::now();
    let offset_ms = AtomicU64::new(0);
    let mut started_unix_ms = 0.0;
    std::thread::scope(|scope| -> farm_core::Result<Measured> {
        let mut handles = Vec::new();
        for thread in 0..threads {
            let node = nodes[thread % nodes.len()];
            let (measuring, stop, offset_ms) = (&measuring, &stop, &offset_ms);
            let done = &done[thread].0;
            handles.push(scope.spawn(move || -> farm_core::Result<Measured> {
                // Between transactions this thread serves its node's rings.
                let _poller = node.poller();
                // The thread's reads when it first saw the measured time
                // begin (the counters are per thread, shared by its tasks).
                let reads_before = std::cell::Cell::new(None);
                let recorder = std::cell::RefCell::new(Recorder::new(types));
                let client = |task: usize| -> farm_core::Result<()> {
                    let seed = ((node.id() * 1000 + thread) * 64 + task) as u64 + 1;
                    let mut rng = Rng::new(seed);
                    while !stop.load(Ordering::Relaxed) {
                        let begun = quanta::Instant::now();
                        let attempt = workload.run_one(node, &mut rng)?;
                        let now = quanta::Instant::now();
                        let elapsed = now.duration_since(begun).as_nanos() as u64;
                        node.poll();
                        // Acquire: pairs with the Release that set `offset_ms`.
                        if measuring.load(Ordering::Acquire) {
                            // The reads of the attempts measured.
                            if reads_before.get().is_none() {
                                reads_before.set(Some(farm_core::thread_reads()));
                            }
                            if attempt.outcome == Outcome::Committed {
                                done.fetch_add(1, Ordering::Relaxed);
                                let ms = now.duration_since(base).as_millis() as u64;
                                let ms = ms.saturating_sub(offset_ms.load(Ordering::Relaxed));
                                recorder.borrow_mut().measured.count_at(ms as usize);
                            }
                            recorder.borrow_mut().count(&attempt, elapsed);
                        }
                    }
                    Ok(())
                };
                if in_flight <= 1 {
                    client(0)?;
                } else {
                    // One worker: `in_flight` clients on this thread, each
                    // a task that pauses at its waits (farm_core::worker).
                    for part in farm_core::Worker::new(node, in_flight).run(client)? {
                        part?;
                    }
                }
                let mut stats = recorder.into_inner().finish();
                if let Some(before) = reads_before.get() {
                    let after = farm_core::thread_reads();
                    stats.object_reads = after.objects - before.objects;
                    stats.remote_reads = after.remote - before.remote;
                }
                Ok(stats)
            }));
        }
        // This thread: warm-up, measured time, progress.
        {
            let warmed = Instant::now() + options.warmup;
            while Instant::now() < warmed && handles.iter().all(|h| !h.is_finished()) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let measured = Instant::now();
            offset_ms.store(
                quanta::Instant::now().duration_since(base).as_millis() as u64,
                Ordering::Relaxed,
            );
            measuring.store(true, Ordering::Release);
            started_unix_ms = unix_ms_now();
            let mut last = Instant::now();
            while measured.elapsed() < options.duration && handles.iter().all(|h| !h.is_finished())
            {
                std::thread::sleep(Duration::from_millis(20));
                if last.elapsed() >= Duration::from_secs(1) {
                    last = Instant::now();
                    let elapsed = measured.elapsed().as_secs_f64();
                    let committed: u64 = done.iter().map(|d| d.0.load(Ordering::Relaxed)).sum();
                    progress(elapsed, committed as f64 / elapsed);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let mut all = Measured::new(types, 0);
        all.started_unix_ms = started_unix_ms;
        for handle in handles {
            let mut part = handle.join().expect("bench thread panicked")?;
            // Threads share this process's clock.
            part.started_unix_ms = started_unix_ms;
            all.merge(&part)?;
        }
        Ok(all)
    })
}

/// A per-thread counter alone on its cache line (128 bytes: two lines,
/// for the adjacent-line prefetcher).
#[derive(Default)]
#[repr(align(128))]
struct ThreadCount(AtomicU64);

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// What a report says about where it ran.
pub struct RunShape {
    pub fabric: FabricKind,
    pub nodes: usize,
    pub copies: usize,
    pub duration: Duration,
    /// Transactions in flight per client thread.
    pub in_flight: usize,
    /// The bound on transactions each node ran at once (`None` or 0:
    /// unbounded).
    pub max_in_flight: Option<usize>,
}

/// The report of a run: `measured` merged over every process,
/// `consistency` what the workload's check said.
pub fn report(
    workload: &dyn Workload,
    measured: &Measured,
    consistency: Result<String, String>,
    shape: &RunShape,
) -> BenchReport {
    let types = workload.types();
    let duration = shape.duration.as_secs_f64();
    let mut all = histogram();
    let mut type_reports = Vec::new();
    for (kind, name) in types.iter().enumerate() {
        let histogram = &measured.histograms[kind];
        all.add(histogram).expect("same bounds");
        type_reports.push(TypeReport {
            name: name.to_string(),
            committed: measured.committed[kind],
            aborted: measured.aborted[kind],
            latency_us: Latency::of(histogram),
            cdf_us: cdf(histogram),
        });
    }
    let committed: u64 = measured.committed.iter().sum();
    let aborted: u64 = measured.aborted.iter().sum();
    let mean = |ns: u64| ns as f64 / measured.phase_count.max(1) as f64 / 1000.0;
    BenchReport {
        workload: workload.name(),
        fabric: shape.fabric,
        nodes: shape.nodes,
        copies: shape.copies,
        threads: measured.threads,
        in_flight: shape.in_flight,
        max_in_flight: shape.max_in_flight.filter(|&max| max > 0),
        host: hostname(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        duration_s: duration,
        throughput_tps: committed as f64 / duration,
        committed,
        aborted,
        aborted_by_reason: measured.reasons,
        latency_us: Latency::of(&all),
        cdf_us: cdf(&all),
        types: type_reports,
        phases_us: Phases {
            lock: mean(measured.phases[0]),
            validate: mean(measured.phases[1]),
            commit_backup: mean(measured.phases[2]),
            commit_primary: mean(measured.phases[3]),
        },
        consistency: match consistency {
            Ok(text) => format!("ok: {text}"),
            Err(text) => format!("VIOLATED: {text}"),
        },
        label: None,
        started_unix_ms: measured.started_unix_ms,
        load_s: None,
        timeline: measured
            .timeline
            .iter()
            .enumerate()
            .map(|(ms, count)| (ms as u64, *count))
            .collect(),
        events: Vec::new(),
        recovery: Vec::new(),
        object_reads_per_txn: measured.object_reads as f64 / (committed + aborted).max(1) as f64,
        remote_reads_per_txn: measured.remote_reads as f64 / (committed + aborted).max(1) as f64,
    }
}

/// Runs `workload` on every node of the in-process `cluster` for the
/// warm-up and then the measured time, then checks it.
pub fn run(
    cluster: &Cluster,
    workload: &dyn Workload,
    options: &RunOptions,
    fabric: FabricKind,
    copies: usize,
) -> farm_core::Result<BenchReport> {
    let nodes: Vec<&Node> = cluster.nodes().iter().collect();
    let total = options.duration.as_secs_f64();
    let measured = measure(&nodes, workload, options, &mut |elapsed, rate| {
        if options.progress {
            progress_bar(elapsed, total, &format!("{rate:>10.0} tx/s"));
        }
    })?;
    if options.progress {
        eprintln!();
    }
    let checking = std::time::Instant::now();
    let consistency = with_check_progress(workload, options.progress, || {
        workload.check(cluster.node(0), &[workload.tally()])
    })?;
    if options.progress {
        eprintln!(
            "\nchecked consistency in {:.1} s",
            checking.elapsed().as_secs_f64()
        );
    }
    Ok(report(
        workload,
        &measured,
        consistency,
        &RunShape {
            fabric,
            nodes: nodes.len(),
            copies,
            duration: options.duration,
            in_flight: options.in_flight,
            max_in_flight: options.max_in_flight,
        },
    ))
}

fn one() -> usize {
    1
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

impl BenchReport {
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "farm bench: {} on {} fabric, {} nodes, {} copies, {} client threads × {} in flight{}, host {} ({} CPUs), {:.1} s measured",
            self.workload,
            self.fabric,
            self.nodes,
            self.copies,
            self.threads,
            self.in_flight,
            self.max_in_flight
                .map(|max| format!(" (at most {max} per node)"))
                .unwrap_or_default(),
            self.host,
            self.cpus,
            self.duration_s
        );
        let _ = writeln!(
            out,
            "throughput {:.0} tx/s; committed {}, aborted {} (lock {}, validate {}, read {}, requested by the workload {})",
            self.throughput_tps,
            self.committed,
            self.aborted,
            self.aborted_by_reason.get(AbortReason::LockConflict),
            self.aborted_by_reason.get(AbortReason::Validation),
            self.aborted_by_reason.get(AbortReason::ReadConflict),
            self.aborted_by_reason.get(AbortReason::Requested)
        );
        let _ = writeln!(
            out,
            "{:<26} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
            "type",
            "committed",
            "aborted",
            "min[us]",
            "p50[us]",
            "p90[us]",
            "p99[us]",
            "p99.9[us]",
            "max[us]"
        );
        let row = |out: &mut String, name: &str, c: u64, a: u64, l: &Latency| {
            let _ = writeln!(
                out,
                "{:<26} {:>10} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.1} {:>10.1}",
                name, c, a, l.min, l.p50, l.p90, l.p99, l.p999, l.max
            );
        };
        for t in &self.types {
            row(&mut out, &t.name, t.committed, t.aborted, &t.latency_us);
        }
        row(
            &mut out,
            "all",
            self.committed,
            self.aborted,
            &self.latency_us,
        );
        let _ = writeln!(
            out,
            "commit phases (mean µs, read-write commits): lock {:.1}, validate {:.1}, commit-backup {:.1}, commit-primary {:.1}",
            self.phases_us.lock, self.phases_us.validate, self.phases_us.commit_backup, self.phases_us.commit_primary
        );
        let _ = writeln!(
            out,
            "object reads per transaction: {:.2} ({:.2} one-sided READs through the fabric)",
            self.object_reads_per_txn, self.remote_reads_per_txn
        );
        let _ = write!(out, "consistency: {}", self.consistency);
        out
    }
}

/// Commits `txn`, returning the attempt, or the abort a conflict caused.
pub fn finish(
    kind: usize,
    txn: farm_core::Txn,
    body: Result<(), farm_core::TxnError>,
) -> farm_core::Result<Attempt> {
    match body {
        Ok(()) => {
            let (outcome, phases) = txn.commit_timed()?;
            Ok(Attempt {
                kind,
                outcome,
                phases,
            })
        }
        Err(farm_core::TxnError::Conflict(reason)) => {
            txn.abort();
            Ok(Attempt {
                kind,
                outcome: Outcome::Aborted(reason),
                phases: PhaseTimes::default(),
            })
        }
        Err(farm_core::TxnError::Failed(error)) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(kind: usize) -> Attempt {
        Attempt {
            kind,
            outcome: Outcome::Committed,
            phases: PhaseTimes::default(),
        }
    }

    /// A thread's [`Recorder`] hands over the same latencies as one 64-bit
    /// histogram recording them directly would hold, whether its 32-bit
    /// histograms moved over mid-way or only at the end, and counts
    /// commits and aborts by type.
    #[test]
    fn recorder_keeps_every_latency_across_flushes() {
        let mut rng = Rng::new(7);
        let mut recorder = Recorder::new(2);
        let mut direct = [histogram(), histogram()];
        for i in 0..20_000u64 {
            let kind = (i % 2) as usize;
            // 100 ns to about 1 s, and one beyond the 60 s bound.
            let ns = if i == 777 {
                120_000_000_000
            } else {
                100 + rng.next_u64() % (1 << (7 + i % 24))
            };
            recorder.count(&committed(kind), ns);
            direct[kind].saturating_record(ns);
            if i == 9_999 {
                recorder.flush(0);
            }
        }
        recorder.count(
            &Attempt {
                kind: 1,
                outcome: Outcome::Aborted(AbortReason::LockConflict),
                phases: PhaseTimes::default(),
            },
            5,
        );
        let measured = recorder.finish();
        assert_eq!(measured.threads, 1);
        assert_eq!(measured.committed, vec![10_000, 10_000]);
        assert_eq!(measured.aborted, vec![0, 1]);
        for (kind, direct) in direct.iter().enumerate() {
            let got = &measured.histograms[kind];
            assert_eq!(got.len(), direct.len());
            assert_eq!(got.max(), direct.max());
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                assert_eq!(
                    got.value_at_quantile(q),
                    direct.value_at_quantile(q),
                    "type {kind}, quantile {q}"
                );
            }
        }
    }
}
