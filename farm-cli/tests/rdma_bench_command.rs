//! `farm rdma-bench` in loopback over shm: every (op, size) row has its
//! latency and, unless `--latency-only`, its throughput; with
//! `--latency-only` the JSON rows carry no throughput fields and the
//! table shows "-" there. What a READ returns is checked against the
//! server's pattern by the benchmark itself (a mismatch fails the run).

use std::path::Path;
use std::process::Command;

fn rdma_bench(extra: &[&str], json: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args([
            "rdma-bench",
            "--ops",
            "read,write,cas",
            "--sizes",
            "8,64",
            "--iters",
            "100",
            "--warmup",
            "10",
            "--quiet",
            "--json",
        ])
        .arg(json)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "farm rdma-bench failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout).to_string();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    // read and write at two sizes, CAS once at 8 bytes.
    assert_eq!(rows.len(), 5, "rows: {rows:?}");
    for row in rows {
        assert_eq!(row["iterations"], 100, "{row}");
        let median = row["median_us"].as_f64().unwrap();
        assert!(median > 0.0, "{row}");
        assert!(row["min_us"].as_f64().unwrap() <= median, "{row}");
    }
    // The table has one line per row after its header.
    let lines = table
        .lines()
        .filter(|line| line.starts_with(" read") || line.starts_with(" write"))
        .count();
    assert_eq!(lines, 4, "{table}");
    report
}

#[test]
fn latency_and_throughput_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let report = rdma_bench(&[], &dir.path().join("both.json"));
    for row in report["rows"].as_array().unwrap() {
        assert!(row["ops_per_sec"].as_f64().unwrap() > 0.0, "{row}");
        assert!(
            row["throughput_iterations"].as_u64().unwrap() >= 100,
            "{row}"
        );
    }
}

#[test]
fn latency_only_skips_the_throughput_phase() {
    let dir = tempfile::tempdir().unwrap();
    let report = rdma_bench(&["--latency-only"], &dir.path().join("latency.json"));
    for row in report["rows"].as_array().unwrap() {
        for field in ["throughput_iterations", "ops_per_sec", "mb_per_sec"] {
            assert!(row.get(field).is_none(), "{field} in {row}");
        }
    }
    let notes = report["notes"].to_string();
    assert!(notes.contains("not measured"), "{notes}");
}
