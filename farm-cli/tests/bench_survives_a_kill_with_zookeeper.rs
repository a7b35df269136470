//! `farm bench --processes --nodes 4 --kill 2@S --config-store zk://…`:
//! the node processes agree on configurations through a real ZooKeeper
//! server (started on loopback by `LocalZooKeeper`) instead of the embedded
//! file store. A killed node is reconfigured around as with the embedded
//! store: the run ends well, the workload's consistency check passes,
//! commits go on after the kill, and the configuration in ZooKeeper is a
//! later one without the killed node.

use std::process::Command;

use farm_cluster::membership::ConfigStore;
use farm_cluster::zookeeper::{LocalZooKeeper, ZooKeeperStore};

#[test]
fn a_killed_node_is_reconfigured_around_through_zookeeper() {
    const KILLED: usize = 2;
    let zookeeper = LocalZooKeeper::start().expect("start a ZooKeeper server");
    let address = zookeeper.address("/farm-test/bench-kill");
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["bench", "--processes", "--nodes", "4", "--quiet"])
        .args(["--scale", "0.2", "--warmup", "0.5", "--duration", "3"])
        .args(["--region-bytes", "16777216", "--threads", "1"])
        // Shorter than the default (2 s), so the run sees the recovery.
        .args(["--lease-ms", "500"])
        .args(["--config-store", &address])
        .arg("--kill")
        .arg(format!("{KILLED}@1"))
        .arg("--json")
        .arg(&json)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "farm bench failed:\n{}\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let consistency = report["consistency"].as_str().unwrap_or_default();
    assert!(consistency.starts_with("ok"), "{consistency}");
    let recovery = &report["recovery"][0];
    assert_eq!(recovery["node"], KILLED, "{report:#}");
    let active_ms = recovery["active_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no active_ms: {recovery}\n{stderr}"));
    let back_ms = recovery["killed_at_s"].as_f64().unwrap() * 1000.0 + active_ms;
    let committed_after: u64 = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0].as_f64().unwrap() > back_ms)
        .map(|pair| pair[1].as_u64().unwrap())
        .sum();
    assert!(
        committed_after > 0,
        "no commit after the cluster came back: {stderr}"
    );
    // The change went through ZooKeeper: the znode holds it.
    let stored = ZooKeeperStore::open(&address)
        .unwrap()
        .load()
        .unwrap()
        .expect("a configuration in ZooKeeper");
    assert!(
        stored.id >= 2 && !stored.members.contains(&KILLED),
        "ZooKeeper holds configuration {} with members {:?}\n{stderr}",
        stored.id,
        stored.members
    );
}
