//! Choosing and loading a workload by name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::site::Site;
use super::smallbank::SmallBank;
use super::tatp::Tatp;
use super::tpcc::Tpcc;
use super::ycsb::{Distribution, Mix, Ycsb};
use super::Workload;

/// The workloads `farm bench` runs; reports and requests spell them as
/// [`WorkloadName::name`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadName {
    Tatp,
    Smallbank,
    YcsbA,
    YcsbB,
    YcsbC,
    YcsbF,
    Tpcc,
}

impl WorkloadName {
    pub const ALL: [WorkloadName; 7] = [
        WorkloadName::Tatp,
        WorkloadName::Smallbank,
        WorkloadName::YcsbA,
        WorkloadName::YcsbB,
        WorkloadName::YcsbC,
        WorkloadName::YcsbF,
        WorkloadName::Tpcc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WorkloadName::Tatp => "tatp",
            WorkloadName::Smallbank => "smallbank",
            WorkloadName::YcsbA => "ycsb-a",
            WorkloadName::YcsbB => "ycsb-b",
            WorkloadName::YcsbC => "ycsb-c",
            WorkloadName::YcsbF => "ycsb-f",
            WorkloadName::Tpcc => "tpcc",
        }
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkloadName {
    type Err = String;

    fn from_str(name: &str) -> Result<WorkloadName, String> {
        WorkloadName::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown workload {name:?}: one of {}",
                    WorkloadName::ALL.map(WorkloadName::name).join(", ")
                )
            })
    }
}

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
///
/// # Errors
/// The engine's, while loading.
pub fn load(
    site: &Site,
    name: WorkloadName,
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

/// A progress bar on standard error for [`Site::with_progress`]:
/// `[#####     ] done/total batches loaded`.
pub fn load_progress_bar(done: u64, total: u64) {
    let filled = ((done * 30).checked_div(total).unwrap_or(30) as usize).min(30);
    eprint!(
        "\r[{}{}] {done:>8}/{total} batches loaded",
        "#".repeat(filled),
        " ".repeat(30 - filled),
    );
}

/// Loads `name` as `options` say.
///
/// # Errors
/// The engine's, while loading.
pub fn load_with(
    site: &Site,
    name: WorkloadName,
    options: &LoadOptions,
) -> farm_core::Result<Box<dyn Workload>> {
    let (scale, distribution) = (options.scale, options.distribution);
    let population = ((10_000.0 * scale) as u64).max(16);
    Ok(match name {
        WorkloadName::Tatp => Box::new(Tatp::load(site, population)?),
        WorkloadName::Smallbank => Box::new(SmallBank::load(site, population)?),
        WorkloadName::YcsbA => Box::new(Ycsb::load(site, Mix::A, distribution, population)?),
        WorkloadName::YcsbB => Box::new(Ycsb::load(site, Mix::B, distribution, population)?),
        WorkloadName::YcsbC => Box::new(Ycsb::load(site, Mix::C, distribution, population)?),
        WorkloadName::YcsbF => Box::new(Ycsb::load(site, Mix::F, distribution, population)?),
        WorkloadName::Tpcc => Box::new(Tpcc::load(site, scale, options.warehouses_per_node)?),
    })
}
