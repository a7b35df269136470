//! Choosing and loading a workload by name.

use super::site::Site;
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

/// How to size and shape a workload's population.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// 1 = 10,000 subscribers / accounts / records; TPC-C: items and
    /// customers per warehouse.
    pub scale: f64,
    /// YCSB's key distribution.
    pub distribution: Distribution,
    /// TPC-C's warehouses on each node.
    pub warehouses_per_node: usize,
}

/// Loads `name` with its population scaled by `scale` (1 = 10,000
/// subscribers / accounts / records), TPC-C with one warehouse per node.
pub fn load(
    site: &Site,
    name: &str,
    scale: f64,
    distribution: Distribution,
) -> farm_core::Result<Box<dyn Workload>> {
    load_with(
        site,
        name,
        &LoadOptions {
            scale,
            distribution,
            warehouses_per_node: 1,
        },
    )
}

/// Loads `name` as `options` say.
pub fn load_with(
    site: &Site,
    name: &str,
    options: &LoadOptions,
) -> farm_core::Result<Box<dyn Workload>> {
    let (scale, distribution) = (options.scale, options.distribution);
    let population = ((10_000.0 * scale) as u64).max(16);
    Ok(match name {
        "tatp" => Box::new(Tatp::load(site, population)?),
        "smallbank" => Box::new(SmallBank::load(site, population)?),
        "ycsb-a" => Box::new(Ycsb::load(site, Mix::A, distribution, population)?),
        "ycsb-b" => Box::new(Ycsb::load(site, Mix::B, distribution, population)?),
        "ycsb-c" => Box::new(Ycsb::load(site, Mix::C, distribution, population)?),
        "ycsb-f" => Box::new(Ycsb::load(site, Mix::F, distribution, population)?),
        "tpcc" => Box::new(Tpcc::load(site, scale, options.warehouses_per_node)?),
        other => {
            return Err(farm_core::Error::Config(format!(
                "unknown workload {other:?}: one of {}",
                WORKLOADS.join(", ")
            )))
        }
    })
}
