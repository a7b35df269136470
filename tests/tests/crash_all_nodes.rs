//! kill -9 of every node process mid-load, then a restart on the same data
//! directories, loses no acknowledged commit: every counter holds at least
//! the last value its client was told committed (and at most one more: the
//! commit that was in flight when the process died may or may not count).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODES: usize = 3;

fn start(config: &Path, mode: &str, work: &Path) -> Vec<Child> {
    (0..NODES)
        .map(|id| {
            Command::new(env!("CARGO_BIN_EXE_farm-crash-node"))
                .arg("--config")
                .arg(config)
                .args(["--id", &id.to_string(), mode])
                .arg(work)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect()
}

fn lines(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.parse().ok())
        .collect()
}

#[test]
fn kill_every_node_mid_load_then_restart_loses_no_acknowledged_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = farm_tests::shm_cluster_file(dir.path(), NODES, 4 << 20);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    for round in 0..2 {
        let mut nodes = start(&config, "--crash-load", &work);
        // Let every client get some commits acknowledged.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let acked: Vec<usize> = (0..NODES)
                .flat_map(|n| (0..2).map(move |t| (n, t)))
                .map(|(n, t)| lines(&work.join(format!("acks-{n}-{t}"))).len())
                .collect();
            if acked.iter().all(|count| *count >= 200 * (round + 1)) {
                break;
            }
            for node in &mut nodes {
                if let Some(status) = node.try_wait().unwrap() {
                    panic!("a node exited during the load: {status}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "load made no progress: {acked:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // kill -9, all at once.
        for node in &nodes {
            // SAFETY: kill(2) on our own children's pids.
            unsafe { libc::kill(node.id() as libc::pid_t, libc::SIGKILL) };
        }
        for node in &mut nodes {
            node.wait().unwrap();
        }

        // Restart on the same files; node 0 reads every counter.
        let mut nodes = start(&config, "--verify-counters", &work);
        for node in &mut nodes {
            let status = node.wait().unwrap();
            assert!(status.success(), "restarted node failed: {status}");
        }
        let mut checked = 0;
        for n in 0..NODES {
            for t in 0..2 {
                let acked = lines(&work.join(format!("acks-{n}-{t}")));
                let last = *acked.last().expect("acknowledged commits");
                let recovered = lines(&work.join(format!("recovered-{n}-{t}")))[0];
                assert!(
                    recovered >= last,
                    "round {round}: counter of client {n}-{t} lost acknowledged commits: {recovered} < {last}"
                );
                assert!(
                    recovered <= last + 1,
                    "round {round}: counter {n}-{t} is {recovered}, last acknowledged {last}"
                );
                checked += 1;
            }
        }
        eprintln!("round {round}: {checked} counters hold every acknowledged commit");
        // The next round restarts the load on the recovered cluster: the
        // counters continue from the recovered values.
        for n in 0..NODES {
            for t in 0..2 {
                let _ = std::fs::remove_file(work.join(format!("counter-{n}-{t}")));
            }
        }
    }
}
