//! Latency samples, and the perftest-style table and JSON they end up in.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::{Error, Result};

/// The longest sample the histogram holds.
const SAMPLE_NS_MAX: u64 = 60_000_000_000;
/// 4 significant digits: a 50 µs sample is kept to within 5 ns.
const SIGNIFICANT_DIGITS: u8 = 4;

/// Latency samples in nanoseconds, with the exact extremes and sum beside
/// the histogram (whose buckets round them).
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

/// A [`LatencyRecorder`]'s summary, in microseconds, already divided by the
/// test's round-trip factor.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencySummary {
    pub min_us: f64,
    pub median_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub avg_us: f64,
}

impl LatencyRecorder {
    pub fn new() -> LatencyRecorder {
        LatencyRecorder {
            histogram: Histogram::new_with_bounds(1, SAMPLE_NS_MAX, SIGNIFICANT_DIGITS)
                .expect("valid histogram bounds"),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    pub fn record(&mut self, sample: Duration) {
        let sample_ns = u64::try_from(sample.as_nanos())
            .unwrap_or(u64::MAX)
            .clamp(1, SAMPLE_NS_MAX);
        self.histogram
            .record(sample_ns)
            .expect("the sample was clamped into the histogram's range");
        self.count += 1;
        self.sum_ns += u128::from(sample_ns);
        self.min_ns = self.min_ns.min(sample_ns);
        self.max_ns = self.max_ns.max(sample_ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Every value divided by `divisor` (2 for a ping-pong, whose samples
    /// are round trips, as `ib_write_lat` reports half of them).
    pub fn summary(&self, divisor: f64) -> LatencySummary {
        assert!(self.count > 0, "a summary needs samples");
        let us = |ns: u64| ns as f64 / 1000.0 / divisor;
        LatencySummary {
            min_us: us(self.min_ns),
            median_us: us(self.histogram.value_at_quantile(0.5)),
            p99_us: us(self.histogram.value_at_quantile(0.99)),
            p999_us: us(self.histogram.value_at_quantile(0.999)),
            max_us: us(self.max_ns),
            avg_us: self.sum_ns as f64 / self.count as f64 / 1000.0 / divisor,
        }
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder::new()
    }
}

/// One (op, size) line.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub op: String,
    pub bytes: u32,
    /// Latency samples.
    pub iterations: u64,
    /// `round_trip` (READ, atomics: one request's round trip, like
    /// `ib_read_lat`/`ib_atomic_lat`) or `ping_pong_half_round_trip` (WRITE,
    /// like `ib_write_lat`).
    pub latency_method: String,
    pub min_us: f64,
    pub median_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub avg_us: f64,
    /// Requests of the throughput phase (absent with
    /// [`super::Options::latency_only`], as are the next two).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput_iterations: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops_per_sec: Option<f64>,
    /// 10^6 bytes per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_per_sec: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub fabric: rdma_transport::FabricKind,
    pub device: String,
    pub host: String,
    pub nproc: usize,
    /// `loopback` or `two processes`.
    pub mode: String,
    pub warmup_iterations: u64,
    /// Requests posted per batch (one chain, only the last signaled).
    pub batch_requests: usize,
    /// Batches posted back to back before one wait drains them all.
    pub window_batches: usize,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn title(&self) -> String {
        format!(
            "farm rdma-bench: fabric {}, device {}, host {} (nproc {}), {}",
            self.fabric, self.device, self.host, self.nproc, self.mode
        )
    }

    /// The perftest-style table: a title naming fabric, device and
    /// machine, the notes, then one line per (op, size).
    pub fn table(&self) -> String {
        let rule = "-".repeat(153);
        let mut out = String::new();
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(out, "{}", self.title());
        for note in &self.notes {
            let _ = writeln!(out, "# {note}");
        }
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(
            out,
            " {:<9} {:>7} {:>12} {:>12} {:>15} {:>12} {:>14} {:>12} {:>12} {:>14} {:>12}",
            "op",
            "#bytes",
            "#iterations",
            "t_min[usec]",
            "t_median[usec]",
            "t_p99[usec]",
            "t_p99.9[usec]",
            "t_max[usec]",
            "t_avg[usec]",
            "ops/s",
            "MB/s"
        );
        for row in &self.rows {
            // "-" where the throughput phase did not run.
            let ops = row
                .ops_per_sec
                .map_or_else(|| "-".to_string(), |ops| format!("{ops:.0}"));
            let mb = row
                .mb_per_sec
                .map_or_else(|| "-".to_string(), |mb| format!("{mb:.2}"));
            let _ = writeln!(
                out,
                " {:<9} {:>7} {:>12} {:>12.3} {:>15.3} {:>12.3} {:>14.3} {:>12.3} {:>12.3} {:>14} {:>12}",
                row.op,
                row.bytes,
                row.iterations,
                row.min_us,
                row.median_us,
                row.p99_us,
                row.p999_us,
                row.max_us,
                row.avg_us,
                ops,
                mb
            );
        }
        let _ = writeln!(out, "{rule}");
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let error = |source| Error::WriteReport {
            path: path.to_path_buf(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| error(e.into()))?;
        text.push('\n');
        std::fs::write(path, text).map_err(error)
    }
}

/// This machine's name, for report titles.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_divides_by_the_round_trip_factor() {
        let mut recorder = LatencyRecorder::new();
        for ns in [1000u64, 2000, 3000, 4000, 100_000] {
            recorder.record(Duration::from_nanos(ns));
        }
        let whole = recorder.summary(1.0);
        assert_eq!(whole.min_us, 1.0);
        assert_eq!(whole.median_us, 3.0);
        assert_eq!(whole.max_us, 100.0);
        assert_eq!(whole.avg_us, 22.0);
        let half = recorder.summary(2.0);
        assert_eq!(half.median_us, 1.5);
        assert_eq!(half.max_us, 50.0);
    }
}
