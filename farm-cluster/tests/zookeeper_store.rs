//! The ZooKeeper configuration store against a real ZooKeeper server
//! (Debian's `zookeeper` package, started on loopback by
//! `LocalZooKeeper`): compare-and-swap is exactly the embedded store's
//! (two would-be configuration managers racing from c to c + 1: exactly
//! one wins), garbage in the znode and a dead server are errors that name
//! them, within the call timeout, never a hang.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use farm_cluster::membership::ConfigStore;
use farm_cluster::zookeeper::{LocalZooKeeper, StoreAddress, ZooKeeperStore, CALL_TIMEOUT};
use farm_core::config::Configuration;

fn first() -> Configuration {
    Configuration::initial(4, 3, 1)
}

/// Configuration `id` of `base`'s shape, managed by `manager` (so that two
/// of the same id differ).
fn numbered(base: &Configuration, id: u32, manager: usize) -> Configuration {
    Configuration {
        id,
        manager,
        ..base.clone()
    }
}

fn server() -> LocalZooKeeper {
    LocalZooKeeper::start().expect("start a ZooKeeper server")
}

#[test]
fn compare_and_swap_from_none_creates_once() {
    let zookeeper = server();
    let store = ZooKeeperStore::open(&zookeeper.address("/farm/create")).unwrap();
    assert_eq!(store.load().unwrap(), None, "a new store holds nothing");
    let c1 = first();
    assert!(store.compare_and_swap(None, &c1).unwrap());
    assert_eq!(store.load().unwrap(), Some(c1.clone()));
    // A second creation finds the first.
    let other = numbered(&c1, 1, 0);
    assert!(!store.compare_and_swap(None, &other).unwrap());
    assert_eq!(store.load().unwrap(), Some(c1));
}

#[test]
fn compare_and_swap_stores_only_from_the_expected_configuration() {
    let zookeeper = server();
    let store = ZooKeeperStore::open(&zookeeper.address("/farm/swap")).unwrap();
    let c1 = first();
    let c2 = numbered(&c1, 2, 2);
    // Nothing stored yet: no configuration is the expected one.
    assert!(!store.compare_and_swap(Some(1), &c2).unwrap());
    assert_eq!(store.load().unwrap(), None);
    assert!(store.compare_and_swap(None, &c1).unwrap());
    for wrong in [Some(0), Some(2), Some(7), None] {
        assert!(
            !store.compare_and_swap(wrong, &c2).unwrap(),
            "swapped from {wrong:?} while the store holds 1"
        );
        assert_eq!(
            store.load().unwrap(),
            Some(c1.clone()),
            "changed by {wrong:?}"
        );
    }
    assert!(store.compare_and_swap(Some(1), &c2).unwrap());
    assert_eq!(store.load().unwrap(), Some(c2.clone()));
    // A second store (another node's) sees the same.
    let again = ZooKeeperStore::open(&zookeeper.address("/farm/swap")).unwrap();
    assert_eq!(again.load().unwrap(), Some(c2));
}

#[test]
fn of_two_racing_managers_exactly_one_moves_the_configuration() {
    const ROUNDS: u32 = 20;
    let zookeeper = server();
    let address = zookeeper.address("/farm/race");
    // Two would-be managers, each with its own store and session, as two
    // node processes have.
    let stores = [
        Arc::new(ZooKeeperStore::open(&address).unwrap()),
        Arc::new(ZooKeeperStore::open(&address).unwrap()),
    ];
    let base = first();
    stores[0].reset(&base).unwrap();
    for current in 1..=ROUNDS {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(manager, store)| {
                let store = Arc::clone(store);
                let barrier = Arc::clone(&barrier);
                let next = numbered(&base, current + 1, manager);
                std::thread::spawn(move || {
                    barrier.wait();
                    store.compare_and_swap(Some(current), &next).unwrap()
                })
            })
            .collect();
        let won: Vec<bool> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {current}: {won:?}"
        );
        let winner = won.iter().position(|w| *w).unwrap();
        assert_eq!(
            stores[1 - winner].load().unwrap(),
            Some(numbered(&base, current + 1, winner)),
            "round {current}: the store holds the winner's configuration"
        );
    }
}

#[test]
fn reset_replaces_whatever_was_stored() {
    let zookeeper = server();
    // A path whose parents do not exist yet: reset makes them.
    let store = ZooKeeperStore::open(&zookeeper.address("/farm/a/b/reset")).unwrap();
    let c1 = first();
    store.reset(&c1).unwrap();
    assert_eq!(store.load().unwrap(), Some(c1.clone()));
    let c5 = numbered(&c1, 5, 1);
    assert!(store.compare_and_swap(Some(1), &c5).unwrap());
    store.reset(&c1).unwrap();
    assert_eq!(store.load().unwrap(), Some(c1));
}

#[test]
fn garbage_in_the_znode_is_an_error_naming_it() {
    let zookeeper = server();
    let store = ZooKeeperStore::open(&zookeeper.address("/farm/garbage")).unwrap();
    store.reset(&first()).unwrap();
    // Written by someone else, straight through a ZooKeeper client.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = zookeeper_client::Client::connect(&zookeeper.servers())
            .await
            .unwrap();
        client
            .set_data(store.znode(), b"{\"id\": \"not a configuration", None)
            .await
            .unwrap();
    });
    let error = store.load().unwrap_err().to_string();
    assert!(
        error.contains("/farm/garbage/configuration") && error.contains(&zookeeper.servers()),
        "{error}"
    );
    let error = store
        .compare_and_swap(Some(1), &first())
        .unwrap_err()
        .to_string();
    assert!(error.contains("/farm/garbage/configuration"), "{error}");
}

#[test]
fn a_dead_server_is_an_error_within_the_timeout() {
    let zookeeper = server();
    let servers = zookeeper.servers();
    let store = ZooKeeperStore::open(&zookeeper.address("/farm/dead")).unwrap();
    store.reset(&first()).unwrap();
    drop(zookeeper);
    let limit = CALL_TIMEOUT + Duration::from_secs(2);
    // With the session that lost its server, then connecting anew.
    let started = Instant::now();
    let error = store.load().unwrap_err().to_string();
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert!(error.contains(&servers), "{error}");
    let started = Instant::now();
    let error = store
        .compare_and_swap(Some(1), &first())
        .unwrap_err()
        .to_string();
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert!(error.contains(&servers), "{error}");
}

#[test]
fn addresses_are_parsed_and_bad_ones_named() {
    assert_eq!(StoreAddress::parse("embedded"), Ok(StoreAddress::Embedded));
    assert_eq!(
        StoreAddress::parse("zk://127.0.0.1:2181/farm/cluster-a"),
        Ok(StoreAddress::ZooKeeper {
            servers: "127.0.0.1:2181".into(),
            path: "/farm/cluster-a".into(),
        })
    );
    assert_eq!(
        "zk://zk-1:2181,zk-2:2181,10.0.0.3:2182/farm".parse::<StoreAddress>(),
        Ok(StoreAddress::ZooKeeper {
            servers: "zk-1:2181,zk-2:2181,10.0.0.3:2182".into(),
            path: "/farm".into(),
        })
    );
    let cases = [
        ("", "\"embedded\" or"),
        ("file", "\"embedded\" or"),
        ("http://127.0.0.1:2181/farm", "\"embedded\" or"),
        ("zk://127.0.0.1:2181", "no znode path"),
        ("zk:///farm", "names no server"),
        ("zk://127.0.0.1/farm", "has no port"),
        ("zk://127.0.0.1:0/farm", "port number"),
        ("zk://127.0.0.1:99999/farm", "port number"),
        ("zk://:2181/farm", "has no host"),
        ("zk://a:1,,b:2/farm", "has no port"),
        ("zk://127.0.0.1:2181/", "below the root"),
        ("zk://127.0.0.1:2181/farm/", "must not end with '/'"),
        ("zk://127.0.0.1:2181/farm//a", "empty component"),
        ("zk://127.0.0.1:2181/farm/../x", "'..'"),
        ("zk://127.0.0.1:2181/zookeeper/x", "reserves"),
    ];
    for (text, expected) in cases {
        let error = StoreAddress::parse(text).unwrap_err();
        assert!(
            error.contains(expected),
            "{text:?} gave {error:?}, expected it to mention {expected:?}"
        );
    }
    assert!(ZooKeeperStore::open("embedded").is_err());
}
