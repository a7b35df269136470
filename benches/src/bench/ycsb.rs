//! YCSB core workloads A (50% read, 50% update), B (95/5), C (100% read) and
//! F (50% read, 50% read-modify-write), over the transactional hash table,
//! with zipfian (YCSB's scrambled zipfian, θ = 0.99) or uniform keys.
//!
//! Reading of the spec: a record is one 1000-byte value (YCSB's 10 fields of
//! 100 bytes, stored as one object); an update rewrites the whole record
//! (YCSB's `writeallfields`); every operation is its own transaction. A
//! record holds its key, an update count and a pattern derived from both,
//! so the check afterwards can tell a torn or misplaced write.

use std::sync::Arc;

use farm_core::{HashTable, Node, TxnError};

use super::site::Site;
use super::{finish, Attempt, Rng, Workload};

pub const VALUE_BYTES: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    A,
    B,
    C,
    F,
}

/// YCSB's key distribution; requests and command lines spell it
/// `zipfian` or `uniform`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Zipfian,
    Uniform,
}

impl std::str::FromStr for Distribution {
    type Err = String;

    fn from_str(name: &str) -> Result<Distribution, String> {
        match name {
            "zipfian" => Ok(Distribution::Zipfian),
            "uniform" => Ok(Distribution::Uniform),
            other => Err(format!(
                "unknown distribution {other:?}: zipfian or uniform"
            )),
        }
    }
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Distribution::Zipfian => "zipfian",
            Distribution::Uniform => "uniform",
        })
    }
}

/// YCSB's zipfian generator (Gray et al., "Quickly generating
/// billion-record synthetic databases"), scrambled by a hash so that the
/// hot keys spread over the table.
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Zipfian {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(items);
        let zeta2 = zeta(2);
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
        }
    }

    /// A rank: 0 is the most popular.
    pub fn rank(&self, rng: &mut Rng) -> u64 {
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        ((self.items as f64) * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64 % self.items
    }

    /// A key: the rank, scrambled (FNV-1a), as YCSB's ScrambledZipfian.
    pub fn key(&self, rng: &mut Rng) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for byte in self.rank(rng).to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        hash % self.items
    }
}

fn record(key: u64, version: u64) -> Vec<u8> {
    let mut value = vec![(key.wrapping_mul(31).wrapping_add(version)) as u8; VALUE_BYTES];
    value[..8].copy_from_slice(&key.to_le_bytes());
    value[8..16].copy_from_slice(&version.to_le_bytes());
    value
}

fn parse(value: &[u8]) -> Option<(u64, u64)> {
    if value.len() != VALUE_BYTES {
        return None;
    }
    let key = u64::from_le_bytes(value[..8].try_into().ok()?);
    let version = u64::from_le_bytes(value[8..16].try_into().ok()?);
    (value == record(key, version).as_slice()).then_some((key, version))
}

pub struct Ycsb {
    name: super::config::WorkloadName,
    mix: Mix,
    table: HashTable,
    records: u64,
    zipfian: Option<Arc<Zipfian>>,
    checked: super::CheckCounter,
}

impl Ycsb {
    pub fn load(
        site: &Site,
        mix: Mix,
        distribution: Distribution,
        records: u64,
    ) -> farm_core::Result<Ycsb> {
        // Records (1000 bytes) are objects of their own: the smallest
        // inline capacity gives 13 slots a bucket, about 4 in each.
        let table = site.table("ycsb-table", (records as usize / 4).max(1), 8)?;
        // Records are inserted 32 at a time, chunk c by node c mod nodes,
        // each node from its own thread.
        let mut by_node: Vec<Vec<std::ops::Range<u64>>> =
            (0..site.nodes()).map(|_| Vec::new()).collect();
        for first in (0..records).step_by(32) {
            by_node[(first / 32) as usize % site.nodes()].push(first..(first + 32).min(records));
        }
        // Values first, then each bucket's primary links its keys
        // ([`Site::load_bulk`]).
        site.load_bulk(&[&table], &by_node, &|keys, sink| {
            for key in keys.clone() {
                sink(0, key, &record(key, 0))?;
            }
            Ok(())
        })?;
        site.barrier("ycsb-loaded")?;
        Ok(Ycsb {
            name: match mix {
                Mix::A => super::config::WorkloadName::YcsbA,
                Mix::B => super::config::WorkloadName::YcsbB,
                Mix::C => super::config::WorkloadName::YcsbC,
                Mix::F => super::config::WorkloadName::YcsbF,
            },
            mix,
            table,
            records,
            zipfian: (distribution == Distribution::Zipfian)
                .then(|| Arc::new(Zipfian::new(records, 0.99))),
            checked: super::CheckCounter::default(),
        })
    }

    fn key(&self, rng: &mut Rng) -> u64 {
        match &self.zipfian {
            Some(zipfian) => zipfian.key(rng),
            None => rng.next_u64() % self.records,
        }
    }
}

const TYPES: &[&str] = &["read", "update", "read-modify-write"];

impl Workload for Ycsb {
    fn name(&self) -> super::config::WorkloadName {
        self.name
    }

    fn types(&self) -> &'static [&'static str] {
        TYPES
    }

    fn run_one(&self, node: &Node, rng: &mut Rng) -> farm_core::Result<Attempt> {
        let key = self.key(rng);
        let percent = rng.percent();
        let kind = match self.mix {
            Mix::A => usize::from(percent >= 50),
            Mix::B => usize::from(percent >= 95),
            Mix::C => 0,
            Mix::F => 2 * usize::from(percent >= 50),
        };
        let mut txn = node.begin()?;
        let body = (|| -> Result<(), TxnError> {
            let value = self
                .table
                .get(&mut txn, key)?
                .expect("every loaded key exists");
            if kind > 0 {
                let (_, version) = parse(&value).expect("records are well-formed");
                self.table.put(&mut txn, key, &record(key, version + 1))?;
            }
            Ok(())
        })();
        finish(kind, txn, body)
    }

    fn check_progress(&self) -> Option<super::CheckProgress> {
        self.checked.progress("records")
    }

    fn check(&self, node: &Node, _: &[i64]) -> farm_core::Result<Result<String, String>> {
        let mut updates = 0;
        self.checked.begin(self.records);
        for key in 0..self.records {
            self.checked.add(1);
            let value = node.run(|txn| self.table.get(txn, key))?;
            match value.as_deref().and_then(parse) {
                Some((stored, version)) if stored == key => updates += version,
                _ => return Ok(Err(format!("record {key} is missing or malformed"))),
            }
        }
        Ok(Ok(format!(
            "all {} records present and well-formed ({updates} updates applied)",
            self.records
        )))
    }
}
