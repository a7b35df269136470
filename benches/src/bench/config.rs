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

/// Loads `name` with its population scaled by `scale` (1 = 10,000
/// subscribers / accounts / records).
pub fn load(
    site: &Site,
    name: &str,
    scale: f64,
    distribution: Distribution,
) -> farm_core::Result<Box<dyn Workload>> {
    let population = ((10_000.0 * scale) as u64).max(16);
    Ok(match name {
        "tatp" => Box::new(Tatp::load(site, population)?),
        "smallbank" => Box::new(SmallBank::load(site, population)?),
        "ycsb-a" => Box::new(Ycsb::load(site, Mix::A, distribution, population)?),
        "ycsb-b" => Box::new(Ycsb::load(site, Mix::B, distribution, population)?),
        "ycsb-c" => Box::new(Ycsb::load(site, Mix::C, distribution, population)?),
        "ycsb-f" => Box::new(Ycsb::load(site, Mix::F, distribution, population)?),
        "tpcc" => Box::new(Tpcc::load(site, scale)?),
        other => {
            return Err(farm_core::Error::Config(format!(
                "unknown workload {other:?}: one of {}",
                WORKLOADS.join(", ")
            )))
        }
    })
}
