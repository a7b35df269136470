//! A node whose cluster file disagrees with node 0's is refused at
//! start-up, and the error names the field and both values: on the
//! joining node, on node 0 and at the driver. (Regression: three `farm
//! node`s, node 1 started with `copies = 2` and the others with `copies =
//! 3`: start-up accepted it, node 2 later panicked with "every replica is
//! registered", and the driver reported only "bootstrap with node 2:
//! connection closed".)

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path, id: usize) -> Node {
    Node(
        farm_tests::node_command(env!("CARGO_BIN_EXE_farm"), config, id)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Waits for `node` to exit; returns its success and what it said.
fn exit_of(node: &mut Node) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = node.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the node did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    node.0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.success(), stderr)
}

/// Node `odd` runs with a file that differs from the others' by `change`;
/// returns what the odd node, node 0 and a driver said.
fn run_with_one_odd_file(
    odd: usize,
    change: impl Fn(&mut farm_cluster::ClusterFile),
) -> [String; 3] {
    let dir = tempfile::tempdir().unwrap();
    let (config, mut file) = farm_tests::shm_cluster_file(dir.path(), 3, 8 << 20);
    change(&mut file);
    let odd_config = dir.path().join("odd.toml");
    file.write(&odd_config).unwrap();
    let mut node_0 = start(&config, 0);
    let mut others: Vec<Node> = (1..3)
        .map(|id| start(if id == odd { &odd_config } else { &config }, id))
        .collect();
    let (ok, odd_said) = exit_of(&mut others[odd - 1]);
    assert!(!ok, "the node with the odd file started: {odd_said}");
    let driver = Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(["bench", "--quiet", "--duration", "0.5", "--cluster"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!driver.status.success());
    let driver_said = String::from_utf8_lossy(&driver.stderr).into_owned();
    let _ = node_0.0.kill();
    let (_, node_0_said) = exit_of(&mut node_0);
    drop(others);
    [odd_said, node_0_said, driver_said]
}

#[test]
fn node_1_with_two_copies_is_refused_naming_copies() {
    let said = run_with_one_odd_file(1, |file| file.copies = 2);
    for (who, text) in ["node 1", "node 0", "the driver"].iter().zip(&said) {
        assert!(
            text.contains("copies = 2") && text.contains("copies = 3"),
            "{who} does not name the field and both values: {text}"
        );
    }
    eprintln!("{}", said.join("\n"));
}

/// A variant: another field, on another node.
#[test]
fn node_2_with_other_region_bytes_is_refused_naming_region_bytes() {
    let said = run_with_one_odd_file(2, |file| file.region_bytes = 4 << 20);
    for (who, text) in ["node 2", "node 0", "the driver"].iter().zip(&said) {
        assert!(
            text.contains("region_bytes = 4194304") && text.contains("region_bytes = 8388608"),
            "{who} does not name the field and both values: {text}"
        );
    }
}
