//! farm-rs node processes, between the engine (`farm-core`) and its users
//! (the `farm` command line, the benchmarks, the checker):
//!
//! | module | what |
//! | --- | --- |
//! | [`cluster_file`] | the TOML file every node process of a cluster shares |
//! | [`protocol`] | every message between node processes and drivers: typed, versioned |
//! | [`bootstrap`] | start-up rounds through node 0 |
//! | [`process`] | one node as its own process: memory, rounds, restart recovery, serving |
//! | [`serve`] | the serve loop and the [`Service`] trait that benchmarks and checker plug into |
//! | [`driver`] | the driver's side: run a service's request on a cluster |
//! | [`launcher`] | start N local node processes with race-free ports; killed on drop |
//! | [`membership`] | leases, failure detection, the configuration manager and its store |
//! | [`zookeeper`] | the ZooKeeper configuration store, store addresses, a local ZooKeeper server for tests |

pub mod bootstrap;
pub mod cluster_file;
pub mod driver;
pub mod error;
pub mod launcher;
pub mod membership;
pub mod process;
pub mod protocol;
pub mod serve;
pub mod zookeeper;

pub use cluster_file::{ClusterFile, NodeEntry};
pub use driver::{Driver, Event};
pub use error::{Error, Result};
pub use launcher::{Launched, LocalCluster};
pub use process::NodeProcess;
pub use protocol::Progress;
pub use serve::{serve, Service, ServiceSite};
pub use zookeeper::{open_store, StoreAddress, ZooKeeperStore};
