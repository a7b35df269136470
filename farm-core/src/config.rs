//! Cluster configuration and region placement.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::limits::{
    COPIES_MAX, NODES_MAX, REGIONS_MAX, REGION_BYTES_MAX, REGION_HEADER_BYTES, SLAB_BYTES,
};

pub use rdma_transport::FabricKind;

/// Which RDMA device and GID a verbs node uses (ignored by shm).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerbsDevice {
    /// Device name (`mlx5_0`, `rxe0`); the first device when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// GID table index; the port's IPv4-mapped RoCE v2 GID when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid_index: Option<u8>,
}

/// Protocol faults a test can switch on to show that the checker catches
/// them. Off in every real configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// The coordinator skips VALIDATE: read-only objects are not re-checked.
    pub skip_validation: bool,
    /// Primaries answer LOCK with success without taking the lock.
    pub skip_lock: bool,
    /// A configuration manager's recovery aborts every transaction it
    /// decides, committed ones included, and installs nothing (the wrong
    /// rule of FaRM SOSP'15 §5.3's vote): acknowledged writes go missing.
    pub abort_in_recovery: bool,
}

/// One protocol fault, by name (`skip-validation`, `skip-lock`,
/// `abort-in-recovery`), as requests and command lines name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The coordinator skips VALIDATE.
    SkipValidation,
    /// Primaries grant LOCK without locking.
    SkipLock,
    /// Recovery aborts every transaction it decides (shows only when a
    /// node fails: `farm check --processes --nemesis kill`).
    AbortInRecovery,
}

impl Fault {
    pub const ALL: [Fault; 3] = [
        Fault::SkipValidation,
        Fault::SkipLock,
        Fault::AbortInRecovery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::SkipValidation => "skip-validation",
            Fault::SkipLock => "skip-lock",
            Fault::AbortInRecovery => "abort-in-recovery",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Fault, String> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                format!("unknown fault {name:?}: skip-validation, skip-lock or abort-in-recovery")
            })
    }
}

impl From<Option<Fault>> for Faults {
    fn from(fault: Option<Fault>) -> Faults {
        Faults {
            skip_validation: fault == Some(Fault::SkipValidation),
            skip_lock: fault == Some(Fault::SkipLock),
            abort_in_recovery: fault == Some(Fault::AbortInRecovery),
        }
    }
}

impl Faults {
    pub fn bits(self) -> u8 {
        u8::from(self.skip_validation)
            | (u8::from(self.skip_lock) << 1)
            | (u8::from(self.abort_in_recovery) << 2)
    }

    pub fn from_bits(bits: u8) -> Faults {
        Faults {
            skip_validation: bits & 1 != 0,
            skip_lock: bits & 2 != 0,
            abort_in_recovery: bits & 4 != 0,
        }
    }
}

/// How long [`crate::Node::run`] retries a transaction that keeps
/// aborting before it gives up with [`crate::Error::RetriesExhausted`]
/// (a transaction that can never commit, say one that reads an object a
/// lost lock holds, would otherwise retry for ever, silently).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    /// Attempts at most.
    pub attempts_max: u64,
    /// Time at most, from the first attempt.
    pub time_max: std::time::Duration,
}

impl Default for RetryBudget {
    /// Up to [`crate::limits::RUN_RETRY_MS`], as many attempts as fit.
    fn default() -> Self {
        RetryBudget {
            attempts_max: u64::MAX,
            time_max: std::time::Duration::from_millis(crate::limits::RUN_RETRY_MS),
        }
    }
}

/// How a coordinator waits for the answers to its LOCKs, once it has run
/// the primaries' servers over its own ring (in process) and the answers
/// are still missing. A choice between throughput and the far tail on a
/// host with fewer cores than threads; on dedicated cores they agree.
///
/// Measured on the 2-vCPU dev machine (45db9e8, shm, interleaved): `farm
/// bench --quiet --json F` with `--lock-wait spin` against `--lock-wait
/// yield`, three runs each (median tx/s, p99 µs, p99.9 µs): TATP 904,467 /
/// 12.7–12.8 / 1,340–1,431 against 798,817 / 63–66 / 92–98; SmallBank
/// 298,918 / 450–481 / 977–1,115 against 255,424 / 57–62 / 81–86. TATP
/// with 8 client threads per node (`--threads 8 --duration 5`, two runs):
/// 790,666–821,576 / 231–249 / 4,542–4,649 against 732,686–736,788 /
/// 238–242 / 343–351.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockWait {
    /// Spin 128 polls, then yield between polls: more throughput and a
    /// lower p99, but a spinning thread loses its priority to the
    /// scheduler, and the waits that outlast the spin take milliseconds
    /// (instrumented once: 3.6% of TATP's read-write commits waited over
    /// 300 µs for their LOCK answers).
    #[default]
    Spin,
    /// Yield between polls from the first help on (after 8 polls): 7–15%
    /// less throughput in process, a far tail (p99.9) of about 0.1–0.4 ms.
    Yield,
}

impl LockWait {
    /// Polls spent spinning before the first yield.
    pub(crate) fn spins(self) -> u32 {
        match self {
            LockWait::Spin => 128,
            LockWait::Yield => 0,
        }
    }
}

impl std::str::FromStr for LockWait {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<LockWait, String> {
        match text {
            "spin" => Ok(LockWait::Spin),
            "yield" => Ok(LockWait::Yield),
            other => Err(format!("a LOCK wait is `spin` or `yield`, not `{other}`")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    /// Replicas of every region: one primary and `copies - 1` backups.
    pub copies: usize,
    pub regions_per_node: usize,
    pub region_bytes: u64,
    /// Where region files and logs live; a fresh temporary directory when
    /// `None`.
    pub data_dir: Option<PathBuf>,
    pub fabric: FabricKind,
    /// The verbs device (with [`FabricKind::Verbs`]; in-process verbs
    /// nodes each listen on 127.0.0.1:0).
    pub verbs: VerbsDevice,
    pub faults: Faults,
    /// How long `Node::run` retries.
    pub retry: RetryBudget,
    /// Faults of the fabric itself (cut links): every node's fabric is
    /// wrapped in a [`rdma_transport::faulty::FaultyFabric`] with this
    /// plan (tests only).
    pub fault_plan: Option<std::sync::Arc<rdma_transport::faulty::FaultPlan>>,
    /// Fault every region replica's pages in when the node opens it
    /// ([`rdma_transport::MemoryRegion::make_resident`]), as RDMA
    /// registration pins them, instead of on first write. Off by default
    /// (tests start many small clusters); `farm bench` turns it on, since
    /// page faults were a fifth of the CPU time of loading.
    pub resident_regions: bool,
    /// How coordinators wait for LOCK answers ([`LockWait`]).
    pub lock_wait: LockWait,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            copies: 3,
            regions_per_node: 1,
            region_bytes: 16 << 20,
            data_dir: None,
            fabric: FabricKind::Shm,
            verbs: VerbsDevice::default(),
            faults: Faults::default(),
            retry: RetryBudget::default(),
            fault_plan: None,
            resident_regions: false,
            lock_wait: LockWait::Spin,
        }
    }
}

impl ClusterConfig {
    /// The cluster's first configuration: where its regions live.
    pub fn placement(&self) -> Configuration {
        Configuration::initial(self.nodes, self.copies, self.regions_per_node)
    }

    /// # Errors
    /// [`Error::Config`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        let minimum_region_bytes = u64::from(REGION_HEADER_BYTES + SLAB_BYTES);
        let why = if self.nodes == 0 || self.nodes > NODES_MAX {
            format!("nodes must be 1 to {NODES_MAX}, got {}", self.nodes)
        } else if self.copies == 0 || self.copies > COPIES_MAX || self.copies > self.nodes {
            format!(
                "copies must be 1 to min({COPIES_MAX}, nodes = {}), got {}",
                self.nodes, self.copies
            )
        } else if self.regions_per_node == 0
            || self
                .nodes
                .checked_mul(self.regions_per_node)
                .is_none_or(|regions| regions > REGIONS_MAX)
        {
            format!(
                "regions_per_node must be at least 1 and nodes × regions_per_node at most {REGIONS_MAX}, got {}",
                self.regions_per_node
            )
        } else if self.region_bytes < minimum_region_bytes || self.region_bytes > REGION_BYTES_MAX {
            format!(
                "region_bytes must be {minimum_region_bytes} to {REGION_BYTES_MAX} bytes, got {}",
                self.region_bytes
            )
        } else {
            return Ok(());
        };
        Err(Error::Config(why))
    }

    /// The data directory a node process keeps its files in.
    ///
    /// # Errors
    /// As [`ClusterConfig::validate`], when there is none.
    pub fn required_data_dir(&self) -> Result<&std::path::Path> {
        self.data_dir
            .as_deref()
            .ok_or_else(|| Error::Config("a node process needs a data directory".into()))
    }
}

/// A configuration (FaRM SOSP'15 §5.2): its id, the member nodes, their
/// failure domains, the configuration manager (CM), and which nodes hold
/// each region (the primary first, then the backups, all distinct). It
/// changes only by a compare-and-swap from id c to c + 1 in the
/// configuration store; ring records carry the id their sender was in.
///
/// The first configuration places region r's primary on node r /
/// regions per node and its backups on the following nodes (FaRM spreads
/// them with consistent hashing over failure domains; a rotation is what
/// one host needs); later ones are made by [`Configuration::without`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Configuration {
    pub id: u32,
    /// Node slots of the cluster (the cluster file's nodes), members or not.
    pub nodes: usize,
    /// The member nodes, in order.
    pub members: Vec<usize>,
    /// Each node slot's failure domain (replicas of a region are kept in
    /// different domains where they can be).
    pub domains: Vec<u32>,
    /// The configuration manager.
    pub manager: usize,
    /// Replicas each region should have.
    pub copies: usize,
    /// `regions[r]`: the nodes that hold region r, its primary first.
    pub regions: Vec<Vec<usize>>,
}

impl Configuration {
    /// Configuration 1 of a cluster: every node a member, each its own
    /// failure domain, the last node the CM (so that node 0, where drivers
    /// connect, is not also the CM by default).
    pub fn initial(nodes: usize, copies: usize, regions_per_node: usize) -> Configuration {
        let regions = (0..nodes * regions_per_node)
            .map(|region| {
                let primary = region / regions_per_node;
                (0..copies).map(|k| (primary + k) % nodes).collect()
            })
            .collect();
        Configuration {
            id: 1,
            nodes,
            members: (0..nodes).collect(),
            domains: (0..nodes as u32).collect(),
            manager: nodes.saturating_sub(1),
            copies,
            regions,
        }
    }

    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// Checks what a configuration that came from elsewhere (a
    /// configuration manager's message, a configuration store) must hold
    /// before a node acts on it: node slots 1 to [`NODES_MAX`], a failure
    /// domain per slot, members in order and below `nodes`, the
    /// configuration manager a member, 1 to [`COPIES_MAX`] copies, and
    /// every region (at most [`REGIONS_MAX`]) held by 1 or more distinct
    /// node slots.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first thing out of range.
    pub fn check(&self) -> Result<()> {
        let why = if self.nodes == 0 || self.nodes > NODES_MAX {
            format!("nodes must be 1 to {NODES_MAX}, got {}", self.nodes)
        } else if self.domains.len() != self.nodes {
            format!(
                "{} failure domains for {} nodes",
                self.domains.len(),
                self.nodes
            )
        } else if self.members.is_empty()
            || !self.members.windows(2).all(|pair| pair[0] < pair[1])
            || self.members.iter().any(|&member| member >= self.nodes)
        {
            format!(
                "members must be distinct node slots below {}, in order: {:?}",
                self.nodes, self.members
            )
        } else if !self.members.contains(&self.manager) {
            format!("the configuration manager {} is not a member", self.manager)
        } else if self.copies == 0 || self.copies > COPIES_MAX {
            format!("copies must be 1 to {COPIES_MAX}, got {}", self.copies)
        } else if self.regions.len() > REGIONS_MAX {
            format!("{} regions, at most {REGIONS_MAX}", self.regions.len())
        } else if let Some((region, replicas)) =
            self.regions.iter().enumerate().find(|(_, replicas)| {
                replicas.is_empty()
                    || replicas.iter().any(|&node| node >= self.nodes)
                    || (1..replicas.len()).any(|i| replicas[..i].contains(&replicas[i]))
            })
        {
            format!("region {region}'s replicas must be distinct node slots below {}, at least one: {replicas:?}", self.nodes)
        } else {
            return Ok(());
        };
        Err(Error::Config(format!("configuration {}: {why}", self.id)))
    }

    fn replica_list(&self, region: u16) -> &[usize] {
        self.regions
            .get(usize::from(region))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The nodes that hold `region`, its primary first.
    pub fn replicas(&self, region: u16) -> impl Iterator<Item = usize> + '_ {
        self.replica_list(region).iter().copied()
    }

    /// The primary of `region`.
    ///
    /// # Panics
    /// For a region without replicas: callers check addresses against
    /// [`Configuration::regions`] first.
    pub fn primary(&self, region: u16) -> usize {
        self.replica_list(region)[0]
    }

    pub fn backups(&self, region: u16) -> impl Iterator<Item = usize> + '_ {
        self.replicas(region).skip(1)
    }

    pub fn holds(&self, node: usize, region: u16) -> bool {
        self.replicas(region).any(|n| n == node)
    }

    /// Regions whose primary is `node`.
    pub fn primaried_by(&self, node: usize) -> impl Iterator<Item = u16> + '_ {
        (0..self.regions.len() as u16).filter(move |&region| self.primary(region) == node)
    }

    pub fn is_member(&self, node: usize) -> bool {
        self.members.binary_search(&node).is_ok()
    }

    /// A majority of this configuration's members.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Configuration `id + 1` without the `failed` nodes, managed by
    /// `manager` (FaRM SOSP'15 §5.2 "remap regions"): a region whose
    /// primary failed gets its first surviving backup as primary; failed
    /// backups are dropped (re-replication adds new ones later). `None`
    /// when a region would have no replica left.
    pub fn without(&self, failed: &[usize], manager: usize) -> Option<Configuration> {
        let regions = self
            .regions
            .iter()
            .map(|replicas| {
                let left: Vec<usize> = replicas
                    .iter()
                    .copied()
                    .filter(|n| !failed.contains(n))
                    .collect();
                (!left.is_empty()).then_some(left)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Configuration {
            id: self.id + 1,
            nodes: self.nodes,
            members: self
                .members
                .iter()
                .copied()
                .filter(|n| !failed.contains(n))
                .collect(),
            domains: self.domains.clone(),
            manager,
            copies: self.copies,
            regions,
        })
    }

    /// Configuration `id + 1` with `node` (back) as a member.
    pub fn with_member(&self, node: usize) -> Configuration {
        let mut next = self.clone();
        next.id += 1;
        if !next.is_member(node) {
            next.members.push(node);
            next.members.sort_unstable();
        }
        next
    }

    /// Configuration `id + 1` with `node` back as a member, managed by
    /// `manager`, holding again, as the last backup, every region that
    /// `placement` (configuration 1) gave it and that has fewer than
    /// [`Configuration::copies`] replicas now: FaRM SOSP'15 §5.4
    /// re-replication onto a node that rejoined. Primaries do not move.
    pub fn with_joined(
        &self,
        node: usize,
        manager: usize,
        placement: &Configuration,
    ) -> Configuration {
        let mut next = self.with_member(node);
        next.manager = manager;
        for (region, replicas) in next.regions.iter_mut().enumerate() {
            let given = placement
                .regions
                .get(region)
                .is_some_and(|initial| initial.contains(&node));
            if given && !replicas.contains(&node) && replicas.len() < self.copies {
                replicas.push(node);
            }
        }
        next
    }

    /// Regions with fewer replicas than [`Configuration::copies`].
    pub fn under_replicated(&self) -> impl Iterator<Item = u16> + '_ {
        let wanted = self.copies.min(self.members.len());
        (0..self.regions.len() as u16).filter(move |&r| self.replica_list(r).len() < wanted)
    }
}

/// Placement is what a configuration says about regions.
pub type Placement = Configuration;

#[cfg(test)]
mod tests {
    use super::*;

    /// What configurations change into passes `check`; what a peer could
    /// send that the node would crash on does not (regression: a
    /// configuration manager's `apply` with an empty replica list, or
    /// members past `nodes`, panicked a node with its server lock held).
    #[test]
    fn check_passes_real_configurations_and_refuses_broken_ones() {
        let initial = Configuration::initial(5, 3, 2);
        let later = initial
            .without(&[1, 3], 4)
            .expect("regions left")
            .with_joined(1, 4, &initial);
        for good in [&initial, &later] {
            good.check().unwrap();
        }
        type Break = Box<dyn Fn(&mut Configuration)>;
        let broken: Vec<(&str, Break)> = vec![
            ("no nodes", Box::new(|c| c.nodes = 0)),
            (
                "a failure domain short",
                Box::new(|c| {
                    c.domains.pop();
                }),
            ),
            ("no members", Box::new(|c| c.members.clear())),
            ("member past nodes", Box::new(|c| c.members.push(9))),
            ("members out of order", Box::new(|c| c.members.swap(0, 1))),
            ("manager not a member", Box::new(|c| c.manager = 7)),
            ("no copies", Box::new(|c| c.copies = 0)),
            ("empty replica list", Box::new(|c| c.regions[3].clear())),
            ("replica past nodes", Box::new(|c| c.regions[0].push(5))),
            ("replica twice", Box::new(|c| c.regions[2] = vec![1, 1])),
        ];
        for (what, breaks) in broken {
            let mut config = initial.clone();
            breaks(&mut config);
            assert!(
                matches!(config.check(), Err(Error::Config(_))),
                "{what}: {config:?}"
            );
        }
    }

    /// A count whose product with the nodes overflows is refused by name,
    /// not wrapped into a small one (regression: 3 nodes ×
    /// 6148914691236517206 regions wrapped to 2 in release builds and
    /// panicked in debug ones).
    #[test]
    fn regions_per_node_that_overflow_are_refused() {
        for regions_per_node in [usize::MAX / 3 + 1, usize::MAX, REGIONS_MAX] {
            let config = ClusterConfig {
                nodes: 3,
                regions_per_node,
                ..ClusterConfig::default()
            };
            match config.validate() {
                Err(Error::Config(why)) => assert!(why.contains("regions_per_node"), "{why}"),
                other => panic!("{regions_per_node} regions per node: {other:?}"),
            }
        }
    }
}
