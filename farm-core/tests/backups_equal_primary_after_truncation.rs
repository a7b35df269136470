//! After every commit is truncated, each backup's region file holds the
//! same bytes as its primary's: backups applied every committed write,
//! in any order, and the allocator's slab table travelled too.

use std::time::Duration;

use farm_core::{Addr, Cluster};

#[test]
fn region_bytes_match_after_truncation() {
    let cluster = farm_core::testing::cluster(2 << 20);
    let mut objects: Vec<Addr> = Vec::new();
    for i in 0..60usize {
        let node = cluster.node(i % 3);
        let size = 100 + (i * 37) % 900;
        objects.push(node.run(|txn| txn.alloc(&vec![i as u8; size])).unwrap());
    }
    std::thread::scope(|scope| {
        for t in 0..3usize {
            let cluster = &cluster;
            let objects = &objects;
            scope.spawn(move || {
                let node = cluster.node(t);
                for round in 0..150usize {
                    let a = objects[(round * 7 + t) % objects.len()];
                    let b = objects[(round * 13 + 5 * t) % objects.len()];
                    node.run(|txn| {
                        let value = txn.read(a)?;
                        txn.write(b, &value[..value.len().min(40 + round % 20)])?;
                        Ok(())
                    })
                    .unwrap();
                }
            });
        }
    });
    // Frees too: the slot's next incarnation must reach the backups.
    for addr in objects.iter().step_by(5) {
        cluster.node(1).run(|txn| txn.free(*addr)).unwrap();
    }
    cluster.quiesce(Duration::from_secs(30)).unwrap();
    let placement = cluster.node(0).placement();
    for region in 0..placement.regions() as u16 {
        let primary = placement.primary(region);
        let primary_bytes = read_all(&cluster, primary, region);
        for backup in placement.backups(region) {
            let backup_bytes = read_all(&cluster, backup, region);
            let first_difference = primary_bytes
                .iter()
                .zip(&backup_bytes)
                .position(|(a, b)| a != b);
            if let Some(at) = first_difference {
                let table = 64 + (at - 65536) / 65536;
                let class = primary_bytes[table] as usize - 1;
                let slot = [64usize, 128, 256, 512, 1024, 2048, 4096][class];
                let start = at - ((at - 65536) % 65536) % slot;
                eprintln!("class {class} slot at {start}");
                eprintln!("primary {:?}", &primary_bytes[start..start + slot.min(128)]);
                eprintln!("backup  {:?}", &backup_bytes[start..start + slot.min(128)]);
                eprintln!(
                    "primary footer {:?}",
                    &primary_bytes[start + slot - 8..start + slot]
                );
                eprintln!(
                    "backup footer {:?}",
                    &backup_bytes[start + slot - 8..start + slot]
                );
            }
            assert_eq!(
                first_difference, None,
                "region {region}: backup on node {backup} differs from primary on node {primary}"
            );
        }
    }
}

fn read_all(cluster: &Cluster, node: usize, region: u16) -> Vec<u8> {
    let mr = farm_core::testing::replica(cluster.node(node), region).unwrap();
    let mut bytes = vec![0u8; mr.len() as usize];
    mr.read(0, &mut bytes).unwrap();
    bytes
}
