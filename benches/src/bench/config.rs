//! Choosing and loading a workload by name.

use farm_core::Cluster;

use super::smallbank::SmallBank;
use super::tatp::Tatp;
use super::tpcc::Tpcc;
use super::ycsb::{Distribution, Mix, Ycsb};
use super::Workload;

pub const WORKLOADS: &[&str] = &[
    "tatp",
    "smallbank",
    "ycsb-a",
    "ycsb-b",
    "ycsb-c",
    "ycsb-f",
    "tpcc",
];

/// Loads `name` with its population scaled by `scale` (1 = 10,000
/// subscribers / accounts / records).
pub fn load(
    cluster: &Cluster,
    name: &str,
    scale: f64,
    distribution: Distribution,
) -> farm_core::Result<Box<dyn Workload>> {
    let population = ((10_000.0 * scale) as u64).max(16);
    Ok(match name {
        "tatp" => Box::new(Tatp::load(cluster, population)?),
        "smallbank" => Box::new(SmallBank::load(cluster, population)?),
        "ycsb-a" => Box::new(Ycsb::load(cluster, Mix::A, distribution, population)?),
        "ycsb-b" => Box::new(Ycsb::load(cluster, Mix::B, distribution, population)?),
        "ycsb-c" => Box::new(Ycsb::load(cluster, Mix::C, distribution, population)?),
        "ycsb-f" => Box::new(Ycsb::load(cluster, Mix::F, distribution, population)?),
        "tpcc" => Box::new(Tpcc::load(cluster, scale)?),
        other => {
            return Err(farm_core::Error::Config(format!(
                "unknown workload {other:?}: one of {}",
                WORKLOADS.join(", ")
            )))
        }
    })
}
