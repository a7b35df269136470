//! A node or a driver that speaks another version of the protocol is
//! refused with an error that names both versions; the cluster goes on
//! waiting for the right node (a peer from another build must never be
//! half-understood).

use std::io::BufReader;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use farm_cluster::bootstrap::Bootstrap;
use farm_cluster::protocol::{
    read_message, write_message, ClusterShape, FromNode0, Opening, ToDriver, PROTOCOL_VERSION,
};
use farm_cluster::NodeEntry;
use farm_core::FabricKind;

fn shape(node_0: SocketAddr) -> ClusterShape {
    ClusterShape {
        fabric: FabricKind::Shm,
        copies: 2,
        regions_per_node: 1,
        region_bytes: 1 << 20,
        nodes: vec![
            NodeEntry {
                id: 0,
                bootstrap: node_0,
                verbs: None,
            },
            NodeEntry {
                id: 1,
                bootstrap: "127.0.0.1:1".parse().unwrap(),
                verbs: None,
            },
        ],
    }
}

fn say(address: SocketAddr, opening: &Opening) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write_message(&mut stream, opening, "node 0").unwrap();
    BufReader::new(stream)
}

#[test]
fn a_node_and_a_driver_of_another_version_are_refused_naming_both() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let shape = shape(address);
    let node_0 = {
        let shape = shape.clone();
        std::thread::spawn(move || Bootstrap::join(0, &shape, Some(listener)).map(|_| ()))
    };
    // A node of another build.
    let mut reader = say(
        address,
        &Opening::Join {
            protocol: PROTOCOL_VERSION + 1,
            node: 1,
            shape: shape.clone(),
        },
    );
    match read_message::<FromNode0>(&mut reader, "node 0").unwrap() {
        FromNode0::Refused { error } => {
            let (theirs, ours) = (PROTOCOL_VERSION + 1, PROTOCOL_VERSION);
            assert!(
                error.contains(&format!("version {theirs}"))
                    && error.contains(&format!("speaks {ours}")),
                "{error}"
            );
        }
        other => panic!("a node of another version got {other:?}"),
    }
    // A driver while the nodes cannot start learns why.
    let mut reader = say(
        address,
        &Opening::Stop {
            protocol: PROTOCOL_VERSION,
        },
    );
    match read_message::<ToDriver>(&mut reader, "node 0").unwrap() {
        ToDriver::Error { error } => assert!(error.contains("protocol version"), "{error}"),
        other => panic!("a driver got {other:?}"),
    }
    // The right node is still admitted.
    let _node_1 = say(
        address,
        &Opening::Join {
            protocol: PROTOCOL_VERSION,
            node: 1,
            shape,
        },
    );
    node_0.join().unwrap().unwrap();
}
