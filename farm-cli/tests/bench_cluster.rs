//! `farm bench --cluster`: three `farm node` processes (shm between
//! processes) driven by `farm bench`. Every workload's check runs on the
//! merged result; a driver that speaks garbage gets an error and the nodes
//! keep serving; a node killed for real makes the next request fail with
//! an error instead of hanging.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const NODES: usize = 3;

struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bench(config: &Path, workload: &str, json: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["bench", "--cluster"])
        .arg(config)
        .args(["--workload", workload, "--scale", "0.05"])
        .args(["--warmup", "0.2", "--duration", "1", "--quiet", "--json"])
        .arg(json)
        .output()
        .unwrap()
}

fn start(config: &Path) -> Nodes {
    Nodes(
        (0..NODES)
            .map(|id| {
                farm_tests::node_command(env!("CARGO_BIN_EXE_farm"), config, id)
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}

#[test]
fn bench_drives_node_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (config, file) = farm_tests::shm_cluster_file(dir.path(), NODES, 32 << 20);
    let mut nodes = start(&config);
    for workload in ["smallbank", "tatp", "tpcc", "ycsb-f"] {
        let json = dir.path().join(format!("{workload}.json"));
        let output = bench(&config, workload, &json);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{workload}: {stderr}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        eprintln!(
            "{workload}: {} tx/s, {}",
            report["throughput_tps"], report["consistency"]
        );
        assert_eq!(report["workload"], workload);
        assert_eq!(report["nodes"], 3);
        assert_eq!(
            report["threads"], 6,
            "2 client threads in each of 3 processes"
        );
        assert!(report["committed"].as_u64().unwrap() > 0, "{workload}");
        assert!(report["latency_us"]["p99"].as_f64().unwrap() > 0.0);
        assert!(
            report["consistency"].as_str().unwrap().starts_with("ok"),
            "{workload}: {}",
            report["consistency"]
        );
    }

    // Garbage from a would-be driver: an error line, and nothing else.
    let mut garbage = std::net::TcpStream::connect(file.nodes[0].bootstrap).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    garbage.write_all(b"\x00\x01 not json at all\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&garbage).read_line(&mut answer).unwrap();
    assert!(answer.contains("error"), "answer to garbage: {answer}");
    drop(garbage);
    let json = dir.path().join("again.json");
    let output = bench(&config, "smallbank", &json);
    assert!(
        output.status.success(),
        "after garbage: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Node 2 dies: the next request fails, with an error, in bounded time.
    nodes.0[2].kill().unwrap();
    nodes.0[2].wait().unwrap();
    let started = Instant::now();
    let output = bench(&config, "smallbank", &json);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a run without node 2 succeeded");
    assert!(
        stderr.contains("node 2") || stderr.contains("failed"),
        "unclear error: {stderr}"
    );
    eprintln!("without node 2: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// `--stop-nodes`: after the run every node process finishes and exits 0.
#[test]
fn stop_nodes_ends_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = farm_tests::shm_cluster_file(dir.path(), NODES, 16 << 20);
    let mut nodes = start(&config);
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["bench", "--cluster"])
        .arg(&config)
        .args(["--workload", "ycsb-b", "--scale", "0.05", "--warmup", "0"])
        .args(["--duration", "0.5", "--quiet", "--stop-nodes"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for (id, child) in nodes.0.iter_mut().enumerate() {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "node {id} did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "node {id} exited with {status}");
    }
}

/// A node whose region fills up while loading gives up; the driver's
/// error names the cause (not only "connection closed").
#[test]
fn a_full_region_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = farm_tests::shm_cluster_file(dir.path(), NODES, 2 << 20);
    let _nodes = start(&config);
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["bench", "--cluster"])
        .arg(&config)
        .args(["--workload", "tatp", "--scale", "1", "--quiet"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stderr}");
    assert!(!output.status.success());
    assert!(stderr.contains("no free slot"), "unclear error: {stderr}");
}
