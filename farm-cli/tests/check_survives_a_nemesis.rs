//! `farm check --processes --nodes 4 --nemesis kill`: node processes are
//! killed with SIGKILL while the workload runs (the configuration manager
//! among them), the survivors reconfigure around them, and the whole
//! history (the killed nodes' too, from their journals) is strictly
//! serializable with no acknowledged append lost; each killed node is
//! restarted and rejoins, taking its replicas again. Once with the
//! embedded configuration store, once with a real ZooKeeper server, once
//! with each node's clients as tasks on a worker.

use std::process::Command;
use std::sync::Mutex;

use farm_cluster::zookeeper::LocalZooKeeper;

/// One four-node cluster at a time: leases on a 2-core host.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn check_with_nemesis(extra: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["check", "--processes", "--nodes", "4", "--txns", "100000"])
        .args(["--nemesis", "kill"])
        .args(extra)
        .output()
        .expect("run farm check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "farm check --nemesis kill {extra:?} failed:\n{stdout}\n{stderr}"
    );
    let last = stdout.lines().last().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}\n{stderr}"));
    assert_eq!(json["valid"], true, "{json}");
    assert_eq!(json["lost_acks"], 0, "{json}");
    // Each killed node is restarted and rejoins before the next kill, so
    // a four-node cluster survives three kills and more.
    assert!(json["kills"].as_u64().unwrap_or(0) >= 3, "{json}\n{stderr}");
    let killed = json["killed"].as_array().expect("killed is a list");
    assert!(
        killed.iter().any(|k| k["manager"] == true),
        "the configuration manager was not among the killed: {json}"
    );
    assert!(
        killed.iter().all(|k| k["node"] != 0),
        "node 0 carries the driver and is spared: {json}"
    );
    json
}

#[test]
fn killed_nodes_lose_nothing_with_the_embedded_store() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    check_with_nemesis(&["--seed", "2"]);
}

#[test]
fn killed_nodes_lose_nothing_with_zookeeper() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zookeeper = LocalZooKeeper::start().expect("start a ZooKeeper server");
    let address = zookeeper.address("/farm-test/check-nemesis");
    check_with_nemesis(&["--seed", "3", "--config-store", &address]);
}

/// The same with each node's clients as tasks on one worker thread, three
/// in flight (`farm_core::Worker`): a task that waits for the gate or for
/// recovery's decision must not hold up its worker's other tasks.
#[test]
fn killed_nodes_lose_nothing_with_clients_on_workers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    check_with_nemesis(&["--seed", "4", "--threads-per-node", "1", "--in-flight", "3"]);
}
