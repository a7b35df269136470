//! The fabric conformance suite: one body per property, run against every
//! backend (`shm` always; `verbs` with the `verbs` feature, on a machine with
//! an RDMA device, e.g. inside `soft-roce-setup/vm/run.sh`).
//!
//! Two-process cases re-run this test binary as a child process
//! (`child_process_entry`), which opens its own fabric node and either
//! hammers the parent's memory with atomics or serves memory until killed.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_transport::shm::{ShmConfig, ShmFabric};
use rdma_transport::{
    Access, Backing, CompletionStatus, Endpoint, Error, Fabric, MemoryRegion, NodeId, Op,
    RemoteAddr,
};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Shm,
    #[cfg_attr(not(feature = "verbs"), allow(dead_code))]
    Verbs,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Shm => "shm",
            Backend::Verbs => "verbs",
        }
    }

    fn parse(name: &str) -> Backend {
        match name {
            "shm" => Backend::Shm,
            "verbs" => Backend::Verbs,
            other => panic!("unknown backend {other}"),
        }
    }
}

/// Opens one node. For verbs, `peers` says where the others listen; the
/// node's own handshake address is returned.
fn open_node(
    backend: Backend,
    node: u16,
    dir: &Path,
    peers: &[(NodeId, SocketAddr)],
) -> (Arc<dyn Fabric>, Option<SocketAddr>) {
    match backend {
        Backend::Shm => {
            let fabric = ShmFabric::open(ShmConfig {
                dir: dir.to_path_buf(),
                node: NodeId(node),
            })
            .expect("open shm node");
            (Arc::new(fabric), None)
        }
        Backend::Verbs => open_verbs(node, peers),
    }
}

#[cfg(feature = "verbs")]
fn open_verbs(node: u16, peers: &[(NodeId, SocketAddr)]) -> (Arc<dyn Fabric>, Option<SocketAddr>) {
    use rdma_transport::verbs::{VerbsConfig, VerbsFabric};
    let fabric = VerbsFabric::open(VerbsConfig {
        node: NodeId(node),
        device: std::env::var("FARM_VERBS_DEVICE").ok(),
        port: 1,
        gid_index: std::env::var("FARM_VERBS_GID_INDEX")
            .ok()
            .map(|v| v.parse().expect("gid index")),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: peers.to_vec(),
    })
    .unwrap_or_else(|error| {
        panic!("open verbs node {node}: {error} (run under soft-roce-setup/vm/run.sh)")
    });
    let address = fabric.listen_address();
    (Arc::new(fabric), Some(address))
}

#[cfg(not(feature = "verbs"))]
fn open_verbs(_: u16, _: &[(NodeId, SocketAddr)]) -> (Arc<dyn Fabric>, Option<SocketAddr>) {
    unreachable!("verbs tests are compiled only with the verbs feature")
}

#[cfg(feature = "verbs")]
fn set_peer(fabric: &Arc<dyn Fabric>, backend: Backend, node: u16, address: Option<SocketAddr>) {
    if backend == Backend::Verbs {
        // The fabric was made by open_verbs just above; the downcast is by
        // construction. set_peer lives on the concrete type only.
        let fabric = Arc::as_ptr(fabric) as *const rdma_transport::verbs::VerbsFabric;
        // SAFETY: open_node returned an Arc<VerbsFabric> for Backend::Verbs.
        unsafe { &*fabric }.set_peer(NodeId(node), address.expect("verbs nodes listen"));
    }
}

#[cfg(not(feature = "verbs"))]
fn set_peer(_: &Arc<dyn Fabric>, _: Backend, _: u16, _: Option<SocketAddr>) {}

/// `count` connected nodes in this process.
struct Cluster {
    nodes: Vec<Arc<dyn Fabric>>,
    _dir: tempfile::TempDir,
}

fn cluster(backend: Backend, count: u16) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for node in 0..count {
        let (fabric, address) = open_node(backend, node, dir.path(), &[]);
        nodes.push(fabric);
        addresses.push(address);
    }
    for fabric in &nodes {
        for (node, address) in addresses.iter().enumerate() {
            set_peer(fabric, backend, node as u16, *address);
        }
    }
    Cluster { nodes, _dir: dir }
}

fn memory(fabric: &Arc<dyn Fabric>, len: u64, access: Access) -> Arc<MemoryRegion> {
    fabric.register(Backing::Anonymous { len }, access).unwrap()
}

fn at(node: u16, mr: &MemoryRegion, offset: u64) -> RemoteAddr {
    RemoteAddr {
        node: NodeId(node),
        key: mr.rkey(),
        offset,
    }
}

fn read_u64(mr: &MemoryRegion, offset: u64) -> u64 {
    mr.atomic_u64(offset).unwrap().load(Ordering::Acquire)
}

// ---------------------------------------------------------------- bodies

fn read_write_round_trip(backend: Backend) {
    let cluster = cluster(backend, 2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let target = memory(b, 8192, Access::ALL);
    let local = memory(a, 8192, Access::LOCAL_WRITE);
    let mut endpoint = a.connect(NodeId(1)).unwrap();
    let listed = endpoint.remote_regions().unwrap();
    assert_eq!(
        listed.len(),
        1,
        "only remotely accessible memory is listed: {listed:?}"
    );
    assert_eq!(
        (listed[0].key, listed[0].len, listed[0].access),
        (target.rkey(), 8192, Access::ALL)
    );
    for (offset, len) in [(0u64, 8u32), (13, 1), (64, 100), (4000, 4096)] {
        let pattern: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(offset as u8))
            .collect();
        local.write(0, &pattern).unwrap();
        let op = Op::Write {
            local: local.slice(0, len).unwrap(),
            remote: at(1, &target, offset),
        };
        endpoint.execute(&[op], TIMEOUT).unwrap();
        let mut seen = vec![0u8; len as usize];
        target.read(offset, &mut seen).unwrap();
        assert_eq!(seen, pattern, "WRITE of {len} B at {offset} landed");
        let op = Op::Read {
            local: local.slice(4096, len).unwrap(),
            remote: at(1, &target, offset),
        };
        endpoint.execute(&[op], TIMEOUT).unwrap();
        let mut back = vec![0u8; len as usize];
        local.read(4096, &mut back).unwrap();
        assert_eq!(
            back, pattern,
            "READ of {len} B at {offset} returned the bytes"
        );
    }
}

fn atomics_return_old_values(backend: Backend) {
    let cluster = cluster(backend, 2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let target = memory(b, 64, Access::ALL);
    let local = memory(a, 64, Access::LOCAL_WRITE);
    target.atomic_u64(8).unwrap().store(41, Ordering::Release);
    let mut endpoint = a.connect(NodeId(1)).unwrap();
    let cas = |expected, swap| Op::CompareSwap {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &target, 8),
        expected,
        swap,
    };
    endpoint.execute(&[cas(41, 42)], TIMEOUT).unwrap();
    assert_eq!(
        read_u64(&local, 0),
        41,
        "successful CAS returns the old value"
    );
    assert_eq!(read_u64(&target, 8), 42);
    endpoint.execute(&[cas(41, 99)], TIMEOUT).unwrap();
    assert_eq!(
        read_u64(&local, 0),
        42,
        "failed CAS returns the current value"
    );
    assert_eq!(read_u64(&target, 8), 42, "failed CAS changes nothing");
    let faa = Op::FetchAdd {
        local: local.slice(8, 8).unwrap(),
        remote: at(1, &target, 8),
        add: 1000,
    };
    endpoint.execute(&[faa], TIMEOUT).unwrap();
    assert_eq!(read_u64(&local, 8), 42);
    assert_eq!(read_u64(&target, 8), 1042);
    let wrap = Op::FetchAdd {
        local: local.slice(8, 8).unwrap(),
        remote: at(1, &target, 8),
        add: u64::MAX,
    };
    endpoint.execute(&[wrap], TIMEOUT).unwrap();
    assert_eq!(read_u64(&target, 8), 1041, "fetch-and-add wraps");
}

fn batch_completes_every_request(backend: Backend) {
    let cluster = cluster(backend, 2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let target = memory(b, 64 * 64, Access::ALL);
    let local = memory(a, 2 * 64 * 64, Access::LOCAL_WRITE);
    for i in 0..64u64 {
        local.write(i * 64, &[i as u8 + 1; 64]).unwrap();
    }
    let mut endpoint = a.connect(NodeId(1)).unwrap();
    let writes: Vec<Op> = (0..64u64)
        .map(|i| Op::Write {
            local: local.slice(i * 64, 64).unwrap(),
            remote: at(1, &target, i * 64),
        })
        .collect();
    endpoint.post(&writes).unwrap();
    assert!(endpoint.outstanding() <= 64);
    endpoint.wait(TIMEOUT).unwrap();
    assert_eq!(endpoint.outstanding(), 0);
    // Reads in one batch after the writes: each must see its write.
    let reads: Vec<Op> = (0..64u64)
        .map(|i| Op::Read {
            local: local.slice(4096 + i * 64, 64).unwrap(),
            remote: at(1, &target, i * 64),
        })
        .collect();
    endpoint.execute(&reads, TIMEOUT).unwrap();
    for i in 0..64u64 {
        let mut seen = [0u8; 64];
        local.read(4096 + i * 64, &mut seen).unwrap();
        assert_eq!(
            seen,
            [i as u8 + 1; 64],
            "request {i} of the batch completed"
        );
    }
    let too_many: Vec<Op> = (0..65u64)
        .map(|i| Op::Read {
            local: local.slice(i * 8, 8).unwrap(),
            remote: at(1, &target, 0),
        })
        .collect();
    assert!(matches!(
        endpoint.post(&too_many),
        Err(Error::BatchTooLarge { count: 65, .. })
    ));
}

/// CAS-increments `count` times; returns the values it replaced.
fn cas_increments(
    endpoint: &mut dyn Endpoint,
    local: &Arc<MemoryRegion>,
    remote: RemoteAddr,
    count: usize,
) -> Vec<u64> {
    let mut won = Vec::with_capacity(count);
    let mut guess = 0;
    while won.len() < count {
        let op = Op::CompareSwap {
            local: local.slice(0, 8).unwrap(),
            remote,
            expected: guess,
            swap: guess + 1,
        };
        endpoint.execute(&[op], TIMEOUT).unwrap();
        let old = read_u64(local, 0);
        if old == guess {
            won.push(old);
            guess += 1;
        } else {
            guess = old;
        }
    }
    won
}

fn fetch_adds(
    endpoint: &mut dyn Endpoint,
    local: &Arc<MemoryRegion>,
    remote: RemoteAddr,
    count: usize,
) {
    for _ in 0..count {
        let op = Op::FetchAdd {
            local: local.slice(8, 8).unwrap(),
            remote,
            add: 1,
        };
        endpoint.execute(&[op], TIMEOUT).unwrap();
    }
}

fn assert_each_increment_once(won: impl IntoIterator<Item = u64>, total: u64, what: &str) {
    let mut seen = BTreeSet::new();
    for value in won {
        assert!(
            seen.insert(value),
            "{what}: CAS from {value} succeeded twice"
        );
    }
    assert_eq!(
        seen.len() as u64,
        total,
        "{what}: every increment landed exactly once"
    );
    assert_eq!(seen.last().copied(), Some(total - 1));
}

fn concurrent_atomics_from_threads(backend: Backend) {
    let cluster = cluster(backend, 3);
    let target = memory(&cluster.nodes[0], 64, Access::ALL);
    let per_thread = 500;
    let threads = 4;
    let results: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let node = &cluster.nodes[1 + t % 2];
                let target = &target;
                scope.spawn(move || {
                    let local = memory(node, 64, Access::LOCAL_WRITE);
                    let mut endpoint = node.connect(NodeId(0)).unwrap();
                    let won =
                        cas_increments(endpoint.as_mut(), &local, at(0, target, 0), per_thread);
                    fetch_adds(endpoint.as_mut(), &local, at(0, target, 8), per_thread);
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = (per_thread * threads) as u64;
    assert_eq!(read_u64(&target, 0), total);
    assert_eq!(
        read_u64(&target, 8),
        total,
        "every fetch-and-add landed once"
    );
    assert_each_increment_once(results.into_iter().flatten(), total, "threads");
}

fn spawn_child(
    backend: Backend,
    role: &str,
    dir: &Path,
    parent: Option<SocketAddr>,
    extra: &[(&str, String)],
) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FARM_CONFORMANCE_CHILD", role)
        .env("FARM_CONFORMANCE_BACKEND", backend.name())
        .env("FARM_CONFORMANCE_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(parent) = parent {
        command.env("FARM_CONFORMANCE_PARENT", parent.to_string());
    }
    for (key, value) in extra {
        command.env(key, value);
    }
    command.spawn().expect("spawn child process")
}

/// Lines the child printed that start with `prefix`, until it exits.
fn child_lines(child: &mut Child, prefix: &str) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| marked(&line, prefix))
        .collect()
}

/// The text after `marker` in `line`. libtest prints "test NAME ... " before
/// the child's first line, so markers are searched, not stripped.
fn marked(line: &str, marker: &str) -> Option<String> {
    line.find(marker)
        .map(|at| line[at + marker.len()..].to_string())
}

fn concurrent_atomics_from_two_processes(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (parent, address) = open_node(backend, 0, dir.path(), &[]);
    let target = memory(&parent, 64, Access::ALL);
    let per_process = 1000;
    let mut child = spawn_child(
        backend,
        "hammer",
        dir.path(),
        address,
        &[
            ("FARM_CONFORMANCE_KEY", target.rkey().to_string()),
            ("FARM_CONFORMANCE_COUNT", per_process.to_string()),
        ],
    );
    // The parent increments through its own fabric too (a second node of
    // this process), at the same time as the child.
    let (helper, helper_address) = open_node(backend, 2, dir.path(), &[]);
    set_peer(&helper, backend, 0, address);
    let _ = helper_address;
    let local = memory(&helper, 64, Access::LOCAL_WRITE);
    let mut endpoint = helper.connect(NodeId(0)).unwrap();
    let mut won = cas_increments(endpoint.as_mut(), &local, at(0, &target, 0), per_process);
    fetch_adds(endpoint.as_mut(), &local, at(0, &target, 8), per_process);
    let child_won: Vec<u64> = child_lines(&mut child, "@@won ")
        .iter()
        .map(|value| value.parse().unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "child process failed: {status}");
    assert_eq!(
        child_won.len(),
        per_process,
        "the child reported all its increments"
    );
    won.extend(child_won);
    let total = 2 * per_process as u64;
    assert_eq!(read_u64(&target, 0), total);
    assert_eq!(
        read_u64(&target, 8),
        total,
        "every fetch-and-add of both processes landed once"
    );
    assert_each_increment_once(won, total, "two processes");
}

fn permission_errors(backend: Backend) {
    let cluster = cluster(backend, 2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let read_only = memory(b, 64, Access::REMOTE_READ);
    let no_atomic = memory(b, 64, Access::REMOTE_READ | Access::REMOTE_WRITE);
    let local = memory(a, 64, Access::LOCAL_WRITE);
    let local_read_only = memory(a, 64, Access::NONE);
    let mut endpoint = a.connect(NodeId(1)).unwrap();
    let cas = Op::CompareSwap {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &no_atomic, 0),
        expected: 0,
        swap: 1,
    };
    assert!(
        matches!(endpoint.post(&[cas]), Err(Error::RemotePermission { needed, .. }) if needed == Access::REMOTE_ATOMIC),
        "CAS on memory registered without remote-atomic is refused"
    );
    let write = Op::Write {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &read_only, 0),
    };
    assert!(matches!(
        endpoint.post(&[write]),
        Err(Error::RemotePermission { .. })
    ));
    let read_into_read_only = Op::Read {
        local: local_read_only.slice(0, 8).unwrap(),
        remote: at(1, &read_only, 0),
    };
    assert!(matches!(
        endpoint.post(&[read_into_read_only]),
        Err(Error::LocalPermission { .. })
    ));
    // Nothing was posted: the endpoint still works.
    let read = Op::Read {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &read_only, 0),
    };
    endpoint.execute(&[read], TIMEOUT).unwrap();
    assert_eq!(no_atomic.atomic_u64(0).unwrap().load(Ordering::Acquire), 0);
}

fn bad_addresses_rejected_before_posting(backend: Backend) {
    let cluster = cluster(backend, 3);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let target = memory(b, 4096, Access::ALL);
    let local = memory(a, 4096, Access::LOCAL_WRITE);
    let mut endpoint = a.connect(NodeId(1)).unwrap();
    let read = |remote| Op::Read {
        local: local.slice(0, 16).unwrap(),
        remote,
    };
    assert!(matches!(
        endpoint.post(&[read(at(1, &target, 4090))]),
        Err(Error::RemoteOutOfRange {
            region_len: 4096,
            ..
        })
    ));
    assert!(matches!(
        endpoint.post(&[read(at(1, &target, u64::MAX - 4))]),
        Err(Error::RemoteOutOfRange { .. })
    ));
    let unknown = RemoteAddr {
        node: NodeId(1),
        key: target.rkey() ^ 0x5a5a_0000,
        offset: 0,
    };
    assert!(matches!(
        endpoint.post(&[read(unknown)]),
        Err(Error::UnknownRemoteKey { .. })
    ));
    assert!(matches!(
        endpoint.post(&[read(at(2, &target, 0))]),
        Err(Error::WrongPeer { .. })
    ));
    let misaligned = Op::FetchAdd {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &target, 12),
        add: 1,
    };
    assert!(matches!(
        endpoint.post(&[misaligned]),
        Err(Error::Misaligned { offset: 12, .. })
    ));
    assert!(
        local.slice(4090, 16).is_err(),
        "a local slice past the end is refused"
    );
    // A bad request anywhere in a batch stops the whole batch.
    let good = Op::Write {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &target, 0),
    };
    local.write(0, &7u64.to_le_bytes()).unwrap();
    assert!(endpoint
        .post(&[good.clone(), read(at(1, &target, 4095))])
        .is_err());
    assert_eq!(
        read_u64(&target, 0),
        0,
        "no request of a rejected batch ran"
    );
    endpoint.execute(&[good], TIMEOUT).unwrap();
    assert_eq!(read_u64(&target, 0), 7, "the endpoint still works");
}

fn notification_wakes_receiver(backend: Backend) {
    let cluster = cluster(backend, 2);
    let (a, b) = (cluster.nodes[0].clone(), cluster.nodes[1].clone());
    let target = memory(&b, 64, Access::ALL);
    let local = memory(&a, 64, Access::LOCAL_WRITE);
    // Idle: the wait times out and reports nothing.
    let start = Instant::now();
    assert_eq!(b.wait_notified(Duration::from_millis(100)).unwrap(), 0);
    assert!(start.elapsed() >= Duration::from_millis(90));
    let waiter = {
        let (b, target) = (b.clone(), target.clone());
        std::thread::spawn(move || {
            let mut woken = 0;
            let deadline = Instant::now() + TIMEOUT;
            while woken == 0 && Instant::now() < deadline {
                woken = b.wait_notified(TIMEOUT).unwrap();
            }
            (woken, read_u64(&target, 0))
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    local.write(0, &0xfeedu64.to_le_bytes()).unwrap();
    let mut endpoint = a.connect(NodeId(1)).unwrap();
    let op = Op::WriteNotify {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &target, 0),
    };
    endpoint.execute(&[op], TIMEOUT).unwrap();
    let (woken, seen) = waiter.join().unwrap();
    assert!(woken >= 1, "the receiver woke");
    assert_eq!(seen, 0xfeed, "the data was there when it woke");
    // A notification while nobody waits is kept for the next wait.
    let op = Op::WriteNotify {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &target, 0),
    };
    endpoint.execute(&[op], TIMEOUT).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut woken = 0;
    while woken == 0 && Instant::now() < deadline {
        woken = b.wait_notified(Duration::from_millis(100)).unwrap();
    }
    assert!(
        woken >= 1,
        "a notification sent before the wait is not lost"
    );
}

fn peer_that_disappears_gives_error_in_bounded_time(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (parent, address) = open_node(backend, 0, dir.path(), &[]);
    let mut child = spawn_child(backend, "serve", dir.path(), address, &[]);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| marked(&line, "@@ready "))
        .expect("child reported ready");
    let mut fields = ready.split_whitespace();
    let key: u32 = fields.next().unwrap().parse().unwrap();
    let child_address: Option<SocketAddr> = fields.next().and_then(|a| a.parse().ok());
    set_peer(&parent, backend, 1, child_address);
    let local = memory(&parent, 64, Access::LOCAL_WRITE);
    let mut endpoint = parent.connect(NodeId(1)).unwrap();
    let remote = RemoteAddr {
        node: NodeId(1),
        key,
        offset: 0,
    };
    let read = || Op::Read {
        local: local.slice(0, 8).unwrap(),
        remote,
    };
    endpoint.execute(&[read()], TIMEOUT).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let bound = Duration::from_secs(15);
    let error = loop {
        match endpoint.execute(&[read()], Duration::from_secs(5)) {
            Ok(()) => {
                assert!(
                    killed.elapsed() < bound,
                    "operations kept succeeding after the peer died"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => break error,
        }
    };
    let waited = killed.elapsed();
    assert!(waited < bound, "error took {waited:?}");
    assert!(
        matches!(
            error,
            Error::PeerUnreachable { .. } | Error::Completion { .. } | Error::Timeout { .. }
        ),
        "unexpected error {error}"
    );
    eprintln!(
        "{}: dead peer reported after {waited:?}: {error}",
        backend.name()
    );
    if backend == Backend::Verbs {
        // Regression: with a retry count of 7, which soft-RoCE takes to
        // mean "for ever", a request to a dead peer never completed, and
        // only the caller's own timeout ended the wait (10 s for every
        // write to a dead node during recovery). The queue pair itself
        // must report the peer: "retry exceeded" well within the wait.
        assert!(
            matches!(
                error,
                Error::Completion {
                    status: CompletionStatus::RETRY_EXCEEDED,
                    ..
                }
            ),
            "verbs: the queue pair did not report the dead peer itself: {error}"
        );
    }
    assert!(matches!(
        endpoint.execute(&[read()], TIMEOUT),
        Err(Error::EndpointBroken { .. })
    ));
}

/// The child side of the two-process tests. It does nothing in a normal
/// run (it is ignored, and checks the variable besides).
#[test]
#[ignore = "entry point of child processes"]
fn child_process_entry() {
    let Ok(role) = std::env::var("FARM_CONFORMANCE_CHILD") else {
        return;
    };
    let backend = Backend::parse(&std::env::var("FARM_CONFORMANCE_BACKEND").unwrap());
    let dir = std::path::PathBuf::from(std::env::var("FARM_CONFORMANCE_DIR").unwrap());
    let parent: Option<SocketAddr> = std::env::var("FARM_CONFORMANCE_PARENT")
        .ok()
        .map(|a| a.parse().unwrap());
    let peers: Vec<(NodeId, SocketAddr)> = parent.map(|a| (NodeId(0), a)).into_iter().collect();
    let (fabric, address) = open_node(backend, 1, &dir, &peers);
    match role.as_str() {
        "hammer" => {
            let key: u32 = std::env::var("FARM_CONFORMANCE_KEY")
                .unwrap()
                .parse()
                .unwrap();
            let count: usize = std::env::var("FARM_CONFORMANCE_COUNT")
                .unwrap()
                .parse()
                .unwrap();
            let local = memory(&fabric, 64, Access::LOCAL_WRITE);
            let mut endpoint = fabric.connect(NodeId(0)).unwrap();
            let word = |offset| RemoteAddr {
                node: NodeId(0),
                key,
                offset,
            };
            let won = cas_increments(endpoint.as_mut(), &local, word(0), count);
            fetch_adds(endpoint.as_mut(), &local, word(8), count);
            for value in won {
                println!("@@won {value}");
            }
        }
        "serve" => {
            let served = memory(&fabric, 4096, Access::ALL);
            let address = address.map(|a| a.to_string()).unwrap_or_default();
            println!("@@ready {} {address}", served.rkey());
            let stop = AtomicBool::new(false);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown child role {other}"),
    }
}

// ---------------------------------------------------- shm-only properties

/// The shm fabric must not be more atomic than RDMA: a READ longer than 8
/// bytes that races a WRITE can return a torn copy. The engine has to cope
/// with that (FaRM's per-cache-line versions), so the fabric must not hide it.
#[test]
fn shm_read_racing_write_can_tear() {
    let cluster = cluster(Backend::Shm, 2);
    let target = memory(&cluster.nodes[1], 4096, Access::ALL);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut value = 0u8;
            while !stop.load(Ordering::Relaxed) {
                value = value.wrapping_add(1);
                target.write(0, &[value; 4096]).unwrap();
            }
        })
    };
    let local = memory(&cluster.nodes[0], 4096, Access::LOCAL_WRITE);
    let mut endpoint = cluster.nodes[0].connect(NodeId(1)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut torn = 0;
    let mut reads = 0;
    while torn == 0 && Instant::now() < deadline {
        let op = Op::Read {
            local: local.slice(0, 4096).unwrap(),
            remote: at(1, &target, 0),
        };
        endpoint.execute(&[op], TIMEOUT).unwrap();
        reads += 1;
        let mut copy = [0u8; 4096];
        local.read(0, &mut copy).unwrap();
        if copy.iter().any(|b| *b != copy[0]) {
            torn += 1;
            // Tearing happens only between words: each 8-byte word is whole.
            for word in copy.chunks(8) {
                assert!(
                    word.iter().all(|b| *b == word[0]),
                    "an 8-byte word was torn"
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(torn > 0, "no torn copy in {reads} racing reads");
}

#[test]
fn shm_deregistered_memory_is_unreachable() {
    let cluster = cluster(Backend::Shm, 2);
    let target = memory(&cluster.nodes[1], 64, Access::ALL);
    let local = memory(&cluster.nodes[0], 64, Access::LOCAL_WRITE);
    let mut endpoint = cluster.nodes[0].connect(NodeId(1)).unwrap();
    let remote = at(1, &target, 0);
    let read = || Op::Read {
        local: local.slice(0, 8).unwrap(),
        remote,
    };
    endpoint.execute(&[read()], TIMEOUT).unwrap();
    drop(target);
    assert!(matches!(
        endpoint.post(&[read()]),
        Err(Error::UnknownRemoteKey { .. })
    ));
}

#[test]
fn shm_node_cannot_run_twice() {
    let dir = tempfile::tempdir().unwrap();
    let config = ShmConfig {
        dir: dir.path().to_path_buf(),
        node: NodeId(4),
    };
    let first = ShmFabric::open(config.clone()).unwrap();
    assert!(
        ShmFabric::open(config.clone()).is_err(),
        "a second node 4 is refused"
    );
    drop(first);
    ShmFabric::open(config).expect("node 4 can start again once the first is gone");
}

/// Two shm nodes, node 1 with 4 KiB of memory backed by the file at
/// `path`: the cluster and that registration.
fn file_backed_on_node_1(path: &std::path::Path) -> (Cluster, Arc<MemoryRegion>) {
    let cluster = cluster(Backend::Shm, 2);
    let target = cluster.nodes[1]
        .register(
            Backing::File {
                path: path.to_path_buf(),
                len: 4096,
            },
            Access::ALL,
        )
        .unwrap();
    (cluster, target)
}

#[test]
fn shm_file_backed_memory_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    {
        let (cluster, target) = file_backed_on_node_1(&path);
        let local = memory(&cluster.nodes[0], 64, Access::LOCAL_WRITE);
        local.write(0, b"survives").unwrap();
        let mut endpoint = cluster.nodes[0].connect(NodeId(1)).unwrap();
        let op = Op::Write {
            local: local.slice(0, 8).unwrap(),
            remote: at(1, &target, 100),
        };
        endpoint.execute(&[op], TIMEOUT).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[100..108], b"survives");
    let wrong_size = ShmFabric::open(ShmConfig {
        dir: dir.path().join("c"),
        node: NodeId(0),
    })
    .unwrap()
    .register(Backing::File { path, len: 8192 }, Access::ALL);
    assert!(
        wrong_size.is_err(),
        "a file of another size is not silently resized"
    );
}

/// A peer's memory file shorter than its registration says is an error
/// when the memory is first addressed, not a SIGBUS when it is touched
/// (regression: the mapping took the length from the peer's `.meta` file
/// without comparing it to the data file).
#[test]
fn shm_peer_memory_shorter_than_registered_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let (cluster, target) = file_backed_on_node_1(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let local = memory(&cluster.nodes[0], 64, Access::LOCAL_WRITE);
    let mut endpoint = cluster.nodes[0].connect(NodeId(1)).unwrap();
    let read = Op::Read {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &target, 4000),
    };
    match endpoint.post(&[read]) {
        Err(Error::File { source, .. }) => {
            assert!(source.to_string().contains("4096"), "{source}")
        }
        other => panic!("a truncated peer file: {other:?}"),
    }
}

// ------------------------------------------------------ instantiation

macro_rules! conformance {
    ($module:ident, $backend:expr) => {
        mod $module {
            use super::*;
            #[test]
            fn read_write_round_trip() {
                super::read_write_round_trip($backend)
            }
            #[test]
            fn atomics_return_old_values() {
                super::atomics_return_old_values($backend)
            }
            #[test]
            fn batch_completes_every_request() {
                super::batch_completes_every_request($backend)
            }
            #[test]
            fn concurrent_atomics_from_threads() {
                super::concurrent_atomics_from_threads($backend)
            }
            #[test]
            fn concurrent_atomics_from_two_processes() {
                super::concurrent_atomics_from_two_processes($backend)
            }
            #[test]
            fn permission_errors() {
                super::permission_errors($backend)
            }
            #[test]
            fn bad_addresses_rejected_before_posting() {
                super::bad_addresses_rejected_before_posting($backend)
            }
            #[test]
            fn notification_wakes_receiver() {
                super::notification_wakes_receiver($backend)
            }
            #[test]
            fn peer_that_disappears_gives_error_in_bounded_time() {
                super::peer_that_disappears_gives_error_in_bounded_time($backend)
            }
        }
    };
}

conformance!(shm, Backend::Shm);
#[cfg(feature = "verbs")]
conformance!(verbs, Backend::Verbs);

// ---------------------------------------------------- verbs-only properties

/// A garbled or foreign peer on the handshake port gets a clear error, not a
/// hang or a panic, and does not disturb the listener.
#[cfg(feature = "verbs")]
#[test]
fn verbs_foreign_peer_gets_clear_error() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    // A "peer" that answers the handshake with an HTTP response.
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let impostor_address = impostor.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = impostor.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = stream.read(&mut buf);
        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let (fabric, address) = open_node(Backend::Verbs, 0, Path::new("/nonexistent"), &[]);
    set_peer(&fabric, Backend::Verbs, 1, Some(impostor_address));
    let start = Instant::now();
    let error = fabric
        .connect(NodeId(1))
        .err()
        .expect("connecting to an impostor fails");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "the error came in bounded time"
    );
    assert!(
        error.to_string().contains("not a farm node"),
        "clear error: {error}"
    );
    server.join().unwrap();

    // Garbage sent to our listener: it refuses with a message and stays up.
    let mut garbage = TcpStream::connect(address.unwrap()).unwrap();
    garbage
        .write_all(b"\x00\x01\x02 definitely not a farm frame")
        .unwrap();
    let mut answer = Vec::new();
    garbage
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let _ = garbage.read_to_end(&mut answer);
    let refusal =
        rdma_transport::wire::Message::decode(&answer).expect("the listener answers with a frame");
    assert!(
        matches!(refusal, rdma_transport::wire::Message::Refuse(ref why) if why.contains("not a farm node")),
        "{refusal:?}"
    );
    // A wrong node id: the listener is node 0, we ask for node 1 there.
    let (other, _) = open_node(Backend::Verbs, 2, Path::new("/nonexistent"), &[]);
    set_peer(&other, Backend::Verbs, 1, address);
    let error = other
        .connect(NodeId(1))
        .err()
        .expect("wrong node id is refused");
    assert!(error.to_string().contains("is node 0"), "{error}");
    // The listener still serves real peers.
    set_peer(&other, Backend::Verbs, 0, address);
    let target = memory(&fabric, 64, Access::ALL);
    let local = memory(&other, 64, Access::LOCAL_WRITE);
    let mut endpoint = other.connect(NodeId(0)).unwrap();
    let op = Op::FetchAdd {
        local: local.slice(0, 8).unwrap(),
        remote: at(0, &target, 0),
        add: 5,
    };
    endpoint.execute(&[op], TIMEOUT).unwrap();
    assert_eq!(read_u64(&target, 0), 5);
}

/// Memory registered after the connection was made is found by asking the
/// peer again over the control channel.
#[cfg(feature = "verbs")]
#[test]
fn verbs_late_registration_is_found() {
    let cluster = cluster(Backend::Verbs, 2);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut endpoint = a.connect(NodeId(1)).unwrap();
    let late = memory(b, 64, Access::ALL);
    late.write(0, b"latecome").unwrap();
    let listed = endpoint.remote_regions().unwrap();
    assert!(listed
        .iter()
        .any(|r| r.key == late.rkey() && r.len == 64 && r.access == Access::ALL));
    let local = memory(a, 64, Access::LOCAL_WRITE);
    let op = Op::Read {
        local: local.slice(0, 8).unwrap(),
        remote: at(1, &late, 0),
    };
    endpoint.execute(&[op], TIMEOUT).unwrap();
    let mut seen = [0u8; 8];
    local.read(0, &mut seen).unwrap();
    assert_eq!(&seen, b"latecome");
}
