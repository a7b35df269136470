//! Fuzz targets for every decoder of bytes that reach a node process or a
//! driver from a socket or a file: the protocol's messages (read line by
//! line, as peers send them), and the cluster file. Arbitrary input must
//! never panic; an encoding of arbitrary values decodes to them again.
//!
//! Inputs come from proptest (the suite runs 256 cases per target; a
//! longer run is `PROPTEST_CASES=1000000 cargo test --release -p
//! farm-cluster --test decoders_never_panic_and_round_trip`, see the
//! README).

use std::net::SocketAddr;

use farm_cluster::protocol::{
    encode_value, read_message, ClusterShape, FromNode0, Opening, Progress, ToDriver, ToNode0,
};
use farm_cluster::{ClusterFile, NodeEntry, StoreAddress};
use farm_core::FabricKind;
use proptest::collection::vec;
use proptest::prelude::*;

/// Reads every line of `bytes` as a `T`, as a peer's connection is read.
fn read_all<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
    let mut reader = bytes;
    while !reader.is_empty() {
        if read_message::<T>(&mut reader, "fuzz").is_err() && reader.is_empty() {
            break;
        }
    }
}

fn address() -> impl Strategy<Value = SocketAddr> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port)))
}

fn cluster_file() -> impl Strategy<Value = ClusterFile> {
    (
        any::<bool>(),
        "[a-z/]{1,20}",
        1usize..4,
        1usize..4,
        (1u64..32).prop_map(|m| m << 20),
        vec((address(), address()), 1..6),
        prop::option::of("[a-z0-9_]{1,8}"),
        prop::option::of(any::<u8>()),
    )
        .prop_map(
            |(verbs, dir, copies, regions_per_node, region_bytes, nodes, device, gid_index)| {
                let fabric = if verbs {
                    FabricKind::Verbs
                } else {
                    FabricKind::Shm
                };
                let copies = copies.min(nodes.len());
                ClusterFile {
                    fabric,
                    data_dir: format!("/{dir}").into(),
                    copies,
                    regions_per_node,
                    region_bytes,
                    device,
                    gid_index,
                    lease_ms: region_bytes % 1000 + 5,
                    config_store: if (region_bytes >> 20) % 2 == 0 {
                        StoreAddress::Embedded
                    } else {
                        StoreAddress::ZooKeeper {
                            servers: "127.0.0.1:2181,zk-2:2182".into(),
                            path: format!("/farm/cluster-{}", region_bytes >> 20),
                        }
                    },
                    nodes: nodes
                        .into_iter()
                        .enumerate()
                        .map(|(id, (bootstrap, verbs_address))| NodeEntry {
                            id,
                            bootstrap,
                            verbs: verbs.then_some(verbs_address),
                        })
                        .collect(),
                }
            },
        )
}

proptest! {
    #[test]
    fn messages_of_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        read_all::<Opening>(&bytes);
        read_all::<ToNode0>(&bytes);
        read_all::<FromNode0>(&bytes);
        read_all::<ToDriver>(&bytes);
    }

    /// Valid messages with random bytes overwritten: the JSON decoder and
    /// the field checks see near-misses, not only noise.
    #[test]
    fn damaged_messages_never_panic(
        file in cluster_file(),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let join = Opening::Join { protocol: 1, node: 1, shape: ClusterShape::of(&file) };
        let mut line = serde_json::to_vec(&join).unwrap();
        for (at, byte) in &damage {
            let at = at.index(line.len());
            line[at] = *byte;
        }
        line.push(b'\n');
        read_all::<Opening>(&line);
    }

    #[test]
    fn messages_round_trip(
        file in cluster_file(),
        round in "[a-z-]{1,12}",
        node in 0usize..64,
        text in ".{0,40}",
        numbers in vec(any::<u64>(), 0..8),
    ) {
        let shape = ClusterShape::of(&file);
        let messages: Vec<String> = vec![
            serde_json::to_string(&Opening::Join { protocol: 1, node, shape: shape.clone() }).unwrap(),
            serde_json::to_string(&Opening::Run { protocol: 1, service: text.clone(), request: encode_value(&numbers) }).unwrap(),
            serde_json::to_string(&ToNode0::Part { round: round.clone(), node, part: encode_value(&numbers) }).unwrap(),
            serde_json::to_string(&ToNode0::Failed { node, error: text.clone() }).unwrap(),
            serde_json::to_string(&FromNode0::Parts { round: round.clone(), parts: vec![encode_value(&numbers); 3] }).unwrap(),
            serde_json::to_string(&ToDriver::Progress(Progress { run: node, done: 1.5, total: 3.0, unit: text.clone(), rate: 2.0 })).unwrap(),
            serde_json::to_string(&ToDriver::Error { error: text.clone() }).unwrap(),
        ];
        for (index, line) in messages.iter().enumerate() {
            let mut bytes = line.as_bytes().to_vec();
            bytes.push(b'\n');
            let again = match index {
                0 | 1 => serde_json::to_string(&read_message::<Opening>(&mut &bytes[..], "fuzz").unwrap()),
                2 | 3 => serde_json::to_string(&read_message::<ToNode0>(&mut &bytes[..], "fuzz").unwrap()),
                4 => serde_json::to_string(&read_message::<FromNode0>(&mut &bytes[..], "fuzz").unwrap()),
                _ => serde_json::to_string(&read_message::<ToDriver>(&mut &bytes[..], "fuzz").unwrap()),
            }
            .unwrap();
            prop_assert_eq!(&again, line);
        }
        if let Ok(Opening::Join { shape: decoded, .. }) = serde_json::from_str::<Opening>(&messages[0]) {
            prop_assert_eq!(decoded, shape);
        }
    }

    #[test]
    fn cluster_files_of_arbitrary_text_never_panic(text in ".{0,300}") {
        let _ = ClusterFile::parse(&text);
    }

    /// Cluster-file-shaped text with random lines dropped or swapped.
    #[test]
    fn damaged_cluster_files_never_panic(file in cluster_file(), drop_line in any::<prop::sample::Index>(), junk in "[a-z_]{1,10} = [0-9\"a-z]{0,8}") {
        let text = file.to_toml();
        let mut lines: Vec<&str> = text.lines().collect();
        let at = drop_line.index(lines.len());
        lines[at] = &junk;
        let _ = ClusterFile::parse(&lines.join("\n"));
    }

    #[test]
    fn cluster_files_round_trip(file in cluster_file()) {
        prop_assume!(file.check().is_ok());
        prop_assert_eq!(ClusterFile::parse(&file.to_toml()).unwrap(), file);
    }
}

/// The embedded configuration store refuses a stored configuration that
/// decodes but that a node would crash on (an empty replica list, a member
/// past the node count), naming the file, instead of handing it on.
#[test]
fn a_broken_stored_configuration_is_refused_by_name() {
    use farm_cluster::membership::{ConfigStore, FileStore};
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path());
    let good = farm_core::config::Configuration::initial(3, 2, 1);
    let path = dir.path().join("configuration.json");
    std::fs::write(&path, serde_json::to_vec(&good).unwrap()).unwrap();
    assert_eq!(store.load().unwrap().map(|c| c.id), Some(1));
    for broken in [
        {
            let mut c = good.clone();
            c.regions[1].clear();
            c
        },
        {
            let mut c = good.clone();
            c.members.push(7);
            c
        },
    ] {
        std::fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
        let error = store.load().unwrap_err().to_string();
        assert!(
            error.contains("configuration.json") && error.contains("broken configuration"),
            "{error}"
        );
    }
}
