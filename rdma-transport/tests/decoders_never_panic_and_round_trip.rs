//! Fuzz targets for the fabric's decoders of bytes from peers: the verbs
//! control channel's frames (`wire`) and the shm fabric's registration
//! files (`shm::Meta`). Arbitrary input must never panic; an encoding of
//! arbitrary values decodes to them again; damaged frames are refused.
//!
//! Inputs come from proptest (256 cases per target in the suite; a longer
//! run is `PROPTEST_CASES=1000000 cargo test --release -p rdma-transport
//! --test decoders_never_panic_and_round_trip`, see the README).

use std::path::PathBuf;

use proptest::collection::vec;
use proptest::prelude::*;
use rdma_transport::op::RemoteRegion;
use rdma_transport::shm::Meta;
use rdma_transport::wire::{Message, QpInfo};
use rdma_transport::{Access, NodeId};

fn qp() -> impl Strategy<Value = QpInfo> {
    (
        any::<u16>(),
        any::<u32>(),
        any::<u32>(),
        any::<u16>(),
        any::<[u8; 16]>(),
        any::<u8>(),
    )
        .prop_map(|(node, qpn, psn, lid, gid, mtu)| QpInfo {
            node: NodeId(node),
            qpn,
            psn,
            lid,
            gid,
            mtu,
        })
}

fn regions() -> impl Strategy<Value = Vec<RemoteRegion>> {
    vec(
        (any::<u32>(), any::<u64>(), any::<u64>(), 0u8..16).prop_map(|(key, addr, len, bits)| {
            RemoteRegion {
                key,
                addr,
                len,
                access: Access::from_bits(bits).expect("four flags"),
            }
        }),
        0..20,
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        qp().prop_map(Message::Connect),
        (qp(), regions()).prop_map(|(qp, regions)| Message::Accept { qp, regions }),
        Just(Message::QueryRegions),
        regions().prop_map(Message::Regions),
        ".{0,100}".prop_map(Message::Refuse),
    ]
}

proptest! {
    #[test]
    fn wire_frames_of_arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1024)) {
        let _ = Message::decode(&bytes);
        let _ = Message::read_from(&mut &bytes[..]);
    }

    #[test]
    fn wire_frames_round_trip_and_damage_is_refused(
        message in message(),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let frame = message.encode();
        prop_assert_eq!(Message::decode(&frame).unwrap(), message);
        let mut damaged = frame.clone();
        for (at, byte) in &damage {
            let at = at.index(damaged.len());
            damaged[at] = *byte;
        }
        if damaged != frame {
            prop_assert!(Message::decode(&damaged).is_err(), "a damaged frame passed");
        }
        let _ = Message::decode(&frame[..frame.len() / 2]);
    }

    #[test]
    fn shm_meta_files_never_panic_and_round_trip(
        bytes in vec(any::<u8>(), 0..200),
        valid: bool,
        len: u64,
        bits in 0u8..16,
        path in "/[a-z/.-]{0,60}",
    ) {
        let _ = Meta::decode(&bytes);
        let meta = Meta {
            valid,
            len,
            access: Access::from_bits(bits).expect("four flags"),
            path: PathBuf::from(path),
        };
        let encoded = meta.encode().unwrap();
        prop_assert_eq!(Meta::decode(&encoded).unwrap(), meta);
        let _ = Meta::decode(&encoded[..encoded.len() / 2]);
    }
}
