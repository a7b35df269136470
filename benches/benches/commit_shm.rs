//! Criterion: FaRM's 1-read-1-write commit on the shm fabric (three nodes,
//! three copies, one process; the read and the write are on other nodes).

use criterion::{criterion_group, criterion_main, Criterion};
use farm_benches::commit_lat::OneReadOneWrite;
use farm_core::{FabricKind, VerbsDevice};

fn commit(c: &mut Criterion) {
    let bench = OneReadOneWrite::start(FabricKind::Shm, VerbsDevice::default()).expect("cluster");
    let mut value = 0u64;
    c.bench_function("commit 1 read 1 write, shm, 3 copies", |b| {
        b.iter(|| {
            value += 1;
            bench.once(value).expect("commit")
        })
    });
}

criterion_group!(benches, commit);
criterion_main!(benches);
