//! `Txn::read_many_with` reads what a `Txn::read` of each address reads:
//! objects on other nodes (posted together, more than a batch per primary
//! too), objects on this node, an address given twice, objects this
//! transaction read or wrote before; every object it read is in the read
//! set (a change to any one fails validation), and a freed object is a
//! stale address, as for `read`.

use farm_core::{AbortReason, Addr, Cluster, Error, Outcome, TxnError};

/// Objects on each of nodes 0 and 1: more than one batch (64) per primary,
/// so some go out together and the rest one at a time.
const PER_NODE: usize = 80;

/// Reads `addrs` from node 2 with `read_many_with`: the values in
/// `addrs`' order (each handed over exactly once), and the transaction.
fn read_many(cluster: &Cluster, addrs: &[Addr]) -> (Vec<Vec<u8>>, farm_core::Txn) {
    let mut txn = cluster.node(2).begin().unwrap();
    let mut values: Vec<Option<Vec<u8>>> = vec![None; addrs.len()];
    txn.read_many_with(addrs, |index, value| {
        assert!(values[index].is_none(), "index {index} handed over twice");
        values[index] = Some(value.to_vec());
    })
    .unwrap();
    let values = values
        .into_iter()
        .enumerate()
        .map(|(index, value)| value.unwrap_or_else(|| panic!("index {index} never handed over")))
        .collect();
    (values, txn)
}

#[test]
fn read_many_reads_what_read_reads_and_validates_every_object() {
    let cluster = farm_core::testing::cluster(16 << 20);
    let on_0 = farm_core::testing::objects(&cluster, 0, PER_NODE);
    let on_1 = farm_core::testing::objects(&cluster, 1, PER_NODE);
    let on_2 = farm_core::testing::objects(&cluster, 2, 3);
    let mut all: Vec<Addr> = on_0.iter().chain(&on_1).chain(&on_2).copied().collect();
    all.push(on_1[5]);
    let expected: Vec<Vec<u8>> = all
        .iter()
        .map(|addr| cluster.node(2).run(|txn| txn.read(*addr)).unwrap())
        .collect();

    let (values, txn) = read_many(&cluster, &all);
    assert_eq!(values, expected);
    assert_eq!(txn.commit().unwrap(), Outcome::Committed);

    // Every object read is validated: a change to one read together, one
    // read alone past the batch, and one on this node each abort.
    for (changed, writer) in [(on_0[0], 1), (on_1[PER_NODE - 1], 0), (on_2[1], 0)] {
        let (_, txn) = read_many(&cluster, &all);
        cluster
            .node(writer)
            .run(|t| t.write(changed, b"changed"))
            .unwrap();
        assert_eq!(
            txn.commit().unwrap(),
            Outcome::Aborted(AbortReason::Validation),
            "a change to {changed} after it was read"
        );
    }

    // This transaction's own writes and earlier reads are what it sees.
    let mut txn = cluster.node(2).begin().unwrap();
    txn.write(on_0[3], b"mine").unwrap();
    let earlier = txn.read(on_1[4]).unwrap();
    let mut seen = vec![Vec::new(); 3];
    txn.read_many_with(&[on_0[3], on_1[4], on_0[4]], |index, value| {
        seen[index] = value.to_vec()
    })
    .unwrap();
    assert_eq!(seen[0], b"mine");
    assert_eq!(seen[1], earlier);
    assert_eq!(seen[2], cluster.node(0).run(|t| t.read(on_0[4])).unwrap());
    txn.abort();
}

#[test]
fn read_many_of_an_address_in_no_region_is_a_bad_address() {
    let cluster = farm_core::testing::cluster(16 << 20);
    let on_0 = farm_core::testing::objects(&cluster, 0, 2);
    let on_1 = farm_core::testing::objects(&cluster, 1, 2);
    let nowhere = Addr::new(999, on_0[0].class(), 1, on_0[0].offset());
    let all = [on_0[0], on_1[0], nowhere, on_0[1], on_1[1]];
    let mut txn = cluster.node(2).begin().unwrap();
    let result = txn.read_many_with(&all, |_, _| {});
    assert!(
        matches!(
            result,
            Err(TxnError::Failed(Error::BadAddress { addr, .. })) if addr == nowhere
        ),
        "{result:?}"
    );
}

#[test]
fn read_many_of_a_freed_object_is_a_stale_address() {
    let cluster = farm_core::testing::cluster(16 << 20);
    let on_0 = farm_core::testing::objects(&cluster, 0, 4);
    let on_1 = farm_core::testing::objects(&cluster, 1, 4);
    cluster.node(0).run(|txn| txn.free(on_1[2])).unwrap();
    let all: Vec<Addr> = on_0.iter().chain(&on_1).copied().collect();
    let mut txn = cluster.node(2).begin().unwrap();
    let result = txn.read_many_with(&all, |_, _| {});
    assert!(
        matches!(
            result,
            Err(TxnError::Failed(Error::StaleAddress { addr, .. })) if addr == on_1[2]
        ),
        "{result:?}"
    );
}
