//! Every `farm bench` workload, run briefly on a three-node, three-copy shm
//! cluster with contention, keeps its own consistency conditions (TATP's
//! foreign keys and index, SmallBank's money, YCSB's well-formed records).

use std::time::Duration;

use farm_benches::bench::config::{load, WorkloadName};
use farm_benches::bench::site::Site;
use farm_benches::bench::ycsb::Distribution;
use farm_benches::bench::{run, RunOptions};
use farm_core::FabricKind;

#[test]
fn every_workload_stays_consistent() {
    every_workload_stays_consistent_with(2, 1);
}

/// The same with each client thread a worker keeping three transactions
/// in flight as tasks (farm_core::Worker).
#[test]
fn every_workload_stays_consistent_on_workers() {
    every_workload_stays_consistent_with(1, 3);
}

fn every_workload_stays_consistent_with(threads_per_node: usize, in_flight: usize) {
    for name in WorkloadName::ALL {
        let cluster = farm_core::testing::cluster(16 << 20);
        // A small population: more conflicts per transaction.
        let workload = load(&Site::cluster(&cluster), name, 0.02, Distribution::Zipfian).unwrap();
        let report = run(
            &cluster,
            workload.as_ref(),
            &RunOptions {
                threads_per_node,
                in_flight,
                max_in_flight: None,
                warmup: Duration::from_millis(100),
                duration: Duration::from_millis(700),
                progress: false,
            },
            FabricKind::Shm,
            3,
        )
        .unwrap();
        eprintln!(
            "{name}: {} committed, {} aborted; {}",
            report.committed, report.aborted, report.consistency
        );
        assert!(report.committed > 0, "{name} made no progress");
        assert!(
            report.consistency.starts_with("ok"),
            "{name}: {}",
            report.consistency
        );
        let json = serde_json::to_value(&report).unwrap();
        for field in ["workload", "throughput_tps", "committed", "aborted"] {
            assert!(json.get(field).is_some(), "JSON lacks {field}");
        }
        for field in ["p50", "p99", "p999"] {
            assert!(
                json["latency_us"].get(field).is_some(),
                "JSON lacks latency_us.{field}"
            );
        }
    }
}

/// The SmallBank check can fail: with primaries granting LOCK without
/// locking (an injected protocol fault), concurrent transfers lose updates
/// and the money no longer adds up.
#[test]
fn smallbank_check_catches_lost_updates() {
    let cluster = farm_core::testing::cluster(16 << 20);
    // Load correctly (a commit without locks returns before its objects
    // are installed, so loading under the fault would read half-made
    // tables), then break the protocol for the run.
    let workload = load(
        &Site::cluster(&cluster),
        WorkloadName::Smallbank,
        0.002,
        Distribution::Uniform,
    )
    .unwrap();
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    cluster.set_faults(farm_core::Faults {
        skip_lock: true,
        ..farm_core::Faults::default()
    });
    let report = run(
        &cluster,
        workload.as_ref(),
        &RunOptions {
            threads_per_node: 2,
            in_flight: 1,
            max_in_flight: None,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(700),
            progress: false,
        },
        FabricKind::Shm,
        3,
    )
    .unwrap();
    assert!(
        report.consistency.starts_with("VIOLATED"),
        "{}",
        report.consistency
    );
}

/// `--plot` draws a labelled latency CDF with one line per transaction type.
#[test]
fn plot_has_labelled_axes_and_every_type() {
    let cluster = farm_core::testing::cluster(16 << 20);
    let workload = load(
        &Site::cluster(&cluster),
        WorkloadName::Tatp,
        0.01,
        Distribution::Zipfian,
    )
    .unwrap();
    let report = run(
        &cluster,
        workload.as_ref(),
        &RunOptions {
            threads_per_node: 1,
            in_flight: 1,
            max_in_flight: None,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(300),
            progress: false,
        },
        FabricKind::Shm,
        3,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tatp.svg");
    farm_benches::bench::plot::write_svg(&path, &[report]).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    for text in [
        "latency [µs]",
        "transactions at or below [%]",
        "get-subscriber-data",
        "update-location",
    ] {
        assert!(svg.contains(text), "the plot lacks {text:?}");
    }
}

/// TPC-C with several warehouses per node: all of them are loaded and pass
/// the spec's consistency checks after a run.
#[test]
fn tpcc_with_several_warehouses_per_node_stays_consistent() {
    let cluster = farm_core::testing::cluster(32 << 20);
    let workload = farm_benches::bench::config::load_with(
        &Site::cluster(&cluster),
        WorkloadName::Tpcc,
        &farm_benches::bench::config::LoadOptions {
            scale: 0.02,
            distribution: Distribution::Uniform,
            warehouses_per_node: 3,
        },
    )
    .unwrap();
    let report = run(
        &cluster,
        workload.as_ref(),
        &RunOptions {
            threads_per_node: 2,
            in_flight: 1,
            max_in_flight: None,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(700),
            progress: false,
        },
        FabricKind::Shm,
        3,
    )
    .unwrap();
    eprintln!("{}", report.consistency);
    assert!(report.committed > 0);
    assert!(
        report.consistency.starts_with("ok") && report.consistency.contains("for 9 warehouses"),
        "{}",
        report.consistency
    );
}
