//! Criterion benchmarks of the shm fabric's request path: two nodes of one
//! process, the client's requests run on the calling thread at `post`.
//!
//! Kept short (about 10 s in all): `cargo bench -p farm-benches --bench
//! fabric_shm`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rdma_transport::shm::{ShmConfig, ShmFabric};
use rdma_transport::{Access, Backing, Endpoint, Fabric, MemoryRegion, NodeId, Op, RemoteAddr};

const TIMEOUT: Duration = Duration::from_secs(10);
const BATCH_REQUESTS: u64 = 16;
const REGION_BYTES: u64 = 64 * 1024;

/// A client node connected to a server node; both live as long as this.
struct Pair {
    // Field order is drop order: endpoint and memory before the fabrics.
    endpoint: Box<dyn Endpoint>,
    local: Arc<MemoryRegion>,
    target: Arc<MemoryRegion>,
    _client: ShmFabric,
    _server: ShmFabric,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Pair {
        let dir = tempfile::tempdir().expect("temporary directory");
        let open = |node| {
            ShmFabric::open(ShmConfig {
                dir: dir.path().to_path_buf(),
                node: NodeId(node),
            })
            .expect("open shm node")
        };
        let (client, server) = (open(0), open(1));
        let target = server
            .register(Backing::Anonymous { len: REGION_BYTES }, Access::ALL)
            .expect("register server memory");
        let local = client
            .register(
                Backing::Anonymous { len: REGION_BYTES },
                Access::LOCAL_WRITE,
            )
            .expect("register client memory");
        let endpoint = client.connect(NodeId(1)).expect("connect");
        Pair {
            endpoint,
            local,
            target,
            _client: client,
            _server: server,
            _dir: dir,
        }
    }

    fn remote(&self, offset: u64) -> RemoteAddr {
        RemoteAddr {
            node: NodeId(1),
            key: self.target.rkey(),
            offset,
        }
    }

    fn read(&self, offset: u64, bytes: u32) -> Op {
        Op::Read {
            local: self.local.slice(offset, bytes).expect("local slice"),
            remote: self.remote(offset),
        }
    }
}

fn fabric_shm(c: &mut Criterion) {
    let mut pair = Pair::new();
    let mut group = c.benchmark_group("shm");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);

    for bytes in [8u32, 4096] {
        let read = [pair.read(0, bytes)];
        group.throughput(Throughput::Bytes(u64::from(bytes)));
        group.bench_function(format!("read_{bytes}b"), |b| {
            b.iter(|| pair.endpoint.execute(&read, TIMEOUT).expect("READ"))
        });
    }

    let write = [Op::Write {
        local: pair.local.slice(0, 8).expect("local slice"),
        remote: pair.remote(0),
    }];
    group.throughput(Throughput::Bytes(8));
    group.bench_function("write_8b", |b| {
        b.iter(|| pair.endpoint.execute(&write, TIMEOUT).expect("WRITE"))
    });

    // Each CAS succeeds: it swaps the value the previous one installed.
    let mut expected = 0u64;
    let cas_local = pair.local.slice(0, 8).expect("local slice");
    let cas_remote = pair.remote(0);
    pair.target
        .atomic_u64(0)
        .expect("aligned word")
        .store(0, std::sync::atomic::Ordering::Release);
    group.throughput(Throughput::Elements(1));
    group.bench_function("cas", |b| {
        b.iter_batched(
            || {
                let op = Op::CompareSwap {
                    local: cas_local.clone(),
                    remote: cas_remote,
                    expected,
                    swap: expected + 1,
                };
                expected += 1;
                op
            },
            |op| pair.endpoint.execute(&[op], TIMEOUT).expect("CAS"),
            BatchSize::SmallInput,
        )
    });

    let batch: Vec<Op> = (0..BATCH_REQUESTS).map(|i| pair.read(i * 8, 8)).collect();
    group.throughput(Throughput::Elements(BATCH_REQUESTS));
    group.bench_function("read_8b_batch_16", |b| {
        b.iter(|| pair.endpoint.execute(&batch, TIMEOUT).expect("batch"))
    });
    group.finish();
}

criterion_group!(benches, fabric_shm);
criterion_main!(benches);
