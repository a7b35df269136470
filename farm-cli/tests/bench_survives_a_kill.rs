//! `farm bench --processes --nodes 4 --kill NODE@S`: a node process is
//! killed with SIGKILL mid-run, the others reconfigure around it (leases,
//! the configuration manager, the store; FaRM SOSP'15 §5) and go on. The
//! run must end well, the workload's consistency check must pass, commits
//! must go on after the kill, and the report must say how the cluster came
//! back (and `--plot` must mark the kill on the throughput timeline). Both
//! a plain node and the configuration manager (node 3, the last node, in
//! configuration 1) are killed.

use std::process::Command;

fn bench_with_kill(node: usize) {
    bench_with("--kill", node);
}

/// Runs a 4-node bench with `fault` (`--kill` or `--pause`) of `node` at
/// 1 s; returns the nodes' and the driver's stderr.
fn bench_with(fault: &str, node: usize) -> String {
    // One cluster at a time: four node processes each on a 2-core CI host
    // are load enough; more at once would make leases expire for load.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["bench", "--processes", "--nodes", "4", "--quiet"])
        .args(["--scale", "0.2", "--warmup", "0.5", "--duration", "3"])
        .args(["--region-bytes", "16777216", "--threads", "1"])
        // Shorter than the default (2 s), so the run sees the recovery.
        .args(["--lease-ms", "500"])
        .arg(fault)
        .arg(format!("{node}@1"))
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(dir.path().join("r.svg"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "farm bench failed:\n{stdout}\n{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        report["consistency"].as_str().unwrap().starts_with("ok"),
        "{}",
        report["consistency"]
    );
    let recovery = &report["recovery"][0];
    assert_eq!(recovery["node"], node, "{report:#}");
    let killed_ms = recovery["killed_at_s"].as_f64().unwrap() * 1000.0;
    for phase in ["suspected_ms", "new_config_ms", "active_ms"] {
        assert!(
            recovery[phase].as_f64().is_some_and(|ms| ms > 0.0),
            "{phase} missing: {recovery}\n{stderr}"
        );
    }
    let after: u64 = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| {
            pair[0].as_f64().unwrap() > killed_ms + recovery["active_ms"].as_f64().unwrap()
        })
        .map(|pair| pair[1].as_u64().unwrap())
        .sum();
    assert!(after > 0, "no commit after the cluster came back: {stderr}");
    // The plot marks the kill on the throughput timeline.
    let svg = std::fs::read_to_string(dir.path().join("r.svg")).unwrap();
    assert!(
        svg.contains(&format!("node {node} killed")),
        "no kill marked"
    );
    stderr.into_owned()
}

#[test]
fn a_paused_node_is_removed_and_exits_on_its_own() {
    // SIGSTOP for three lease times: removed while alive; after SIGCONT it
    // finds its lease gone and the stored configuration without it.
    let stderr = bench_with("--pause", 2);
    assert!(
        stderr.contains("farm node 2: removed from the cluster by configuration"),
        "{stderr}"
    );
}

#[test]
fn a_killed_node_is_reconfigured_around_and_the_run_goes_on() {
    bench_with_kill(2);
}

#[test]
fn a_killed_configuration_manager_is_replaced_and_the_run_goes_on() {
    bench_with_kill(3);
}

#[test]
fn node_0_cannot_be_killed_and_says_why() {
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["bench", "--processes", "--nodes", "3", "--kill", "0@1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("node 0 carries"), "{stderr}");
}
