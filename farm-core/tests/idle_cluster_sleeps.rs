//! Three nodes in one process on a 2-core machine must not burn the CPU
//! when idle: server threads spin briefly, then block on the doorbell.

use std::time::Duration;

fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; zero is a valid initial value.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[test]
fn idle_cluster_uses_little_cpu() {
    let cluster = farm_core::testing::cluster(2 << 20);
    // Some work first, so that contexts and rings exist.
    let addr = cluster
        .node(0)
        .run(|txn| txn.alloc(&1u64.to_le_bytes()))
        .unwrap();
    for node in cluster.nodes() {
        node.run(|txn| txn.write_pod(addr, &2u64)).unwrap();
    }
    cluster.quiesce(Duration::from_secs(10)).unwrap();
    let before = cpu_time();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_time() - before;
    eprintln!("3 idle nodes used {used:?} of CPU in 2 s");
    // Busy-polling servers would use ~2 s (two cores); a sleeping cluster
    // uses a few milliseconds.
    assert!(
        used < Duration::from_millis(300),
        "idle cluster used {used:?} of CPU in 2 s"
    );
}
