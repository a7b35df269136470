//! Where a benchmark runs: every node of an in-process [`Cluster`], or one
//! node of a multi-process cluster (`farm node` processes driven by `farm
//! bench --cluster`).
//!
//! Workloads load through a site the same way in both cases: each node
//! loads the rows it owns, and what the others must know (the bucket
//! addresses of a table) travels as a [`Site::gather`] round. In process,
//! a round is a loop over the local nodes; across processes, it is a
//! bootstrap round through node 0. Every process draws the same random
//! population (the generators are seeded and consumed in the same order)
//! and inserts only its own nodes' share.

use farm_core::{Addr, Cluster, HashTable, Node};
use serde_json::Value;

/// Rounds across processes: hand in this process's part, get every
/// process's part in node order.
pub trait Rounds: Sync {
    /// # Errors
    /// A process failed or went away.
    fn exchange(&self, round: &str, part: Value) -> farm_core::Result<Vec<Value>>;
}

/// Batches below which [`Site::load_parallel`] loads from one thread.
const PARALLEL_LOAD_BATCHES_MIN: u64 = 256;

pub struct Site<'a> {
    nodes: usize,
    local: Vec<&'a Node>,
    rounds: Option<&'a dyn Rounds>,
    /// Told `(done, of how many)` while loading (see [`Site::with_progress`]).
    progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

fn malformed(round: &str) -> farm_core::Error {
    farm_core::Error::Peer(format!("a process sent a malformed part in round {round}"))
}

impl<'a> Site<'a> {
    /// Every node of `cluster`, in this process.
    pub fn cluster(cluster: &'a Cluster) -> Site<'a> {
        Site {
            nodes: cluster.nodes().len(),
            local: cluster.nodes().iter().collect(),
            rounds: None,
            progress: None,
        }
    }

    /// Calls `progress(done, of how many)` while loading, about five times
    /// a second (a progress bar's hook).
    pub fn with_progress(mut self, progress: &'a (dyn Fn(u64, u64) + Sync)) -> Site<'a> {
        self.progress = Some(progress);
        self
    }

    /// `node`, one of `nodes` node processes that meet in `rounds`.
    pub fn process(node: &'a Node, nodes: usize, rounds: &'a dyn Rounds) -> Site<'a> {
        Site {
            nodes,
            local: vec![node],
            rounds: Some(rounds),
            progress: None,
        }
    }

    /// Loads in parallel: `by_node[n]` holds node n's batches, and each
    /// node of this process runs `load(node, batch)` for its own from a
    /// thread of its own (other processes load theirs). Tells the site's
    /// progress hook (batches done, of how many) about five times a second
    /// from this thread, and once at the end.
    ///
    /// # Errors
    /// The first of the loaders' errors.
    pub fn load_parallel<T: Sync>(
        &self,
        by_node: &[Vec<T>],
        load: &(dyn Fn(&Node, &T) -> farm_core::Result<()> + Sync),
    ) -> farm_core::Result<()> {
        let progress = |done: u64, total: u64| {
            if let Some(progress) = self.progress {
                progress(done, total);
            }
        };
        use std::sync::atomic::{AtomicU64, Ordering};
        let mine: Vec<(&Node, &Vec<T>)> = by_node
            .iter()
            .enumerate()
            .filter_map(|(owner, batches)| Some((self.local(owner)?, batches)))
            .collect();
        let total: u64 = mine.iter().map(|(_, batches)| batches.len() as u64).sum();
        if total < PARALLEL_LOAD_BATCHES_MIN {
            // A small population has few hash buckets, and loaders in
            // parallel would keep aborting each other: one at a time.
            for (node, batches) in &mine {
                for batch in batches.iter() {
                    load(node, batch)?;
                }
            }
            progress(total, total);
            return Ok(());
        }
        let done = AtomicU64::new(0);
        let result = std::thread::scope(|scope| {
            let loaders: Vec<_> = mine
                .iter()
                .map(|&(node, batches)| {
                    let done = &done;
                    scope.spawn(move || -> farm_core::Result<()> {
                        for batch in batches {
                            load(node, batch)?;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            while loaders.iter().any(|loader| !loader.is_finished()) {
                progress(done.load(Ordering::Relaxed), total);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            loaders
                .into_iter()
                .try_for_each(|loader| loader.join().expect("a loader thread panicked"))
        });
        progress(done.load(Ordering::Relaxed), total);
        result
    }

    /// Nodes in the whole cluster.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The nodes in this process.
    pub fn local_nodes(&self) -> &[&'a Node] {
        &self.local
    }

    /// Node `id` if it runs in this process.
    pub fn local(&self, id: usize) -> Option<&'a Node> {
        self.local.iter().copied().find(|n| n.id() == id)
    }

    /// Every node's part, in node order: `make` runs for each node in this
    /// process, the others' parts come through a round.
    pub fn gather(
        &self,
        round: &str,
        mut make: impl FnMut(&Node) -> farm_core::Result<Value>,
    ) -> farm_core::Result<Vec<Value>> {
        match self.rounds {
            None => self.local.iter().map(|node| make(node)).collect(),
            Some(rounds) => rounds.exchange(round, make(self.local[0])?),
        }
    }

    /// One part per process (not per node): in process, just `part`.
    pub fn per_process(&self, round: &str, part: Value) -> farm_core::Result<Vec<Value>> {
        match self.rounds {
            None => Ok(vec![part]),
            Some(rounds) => rounds.exchange(round, part),
        }
    }

    /// Every process has reached this point.
    pub fn barrier(&self, round: &str) -> farm_core::Result<()> {
        self.per_process(round, Value::Null).map(|_| ())
    }

    /// A hash table of `buckets` buckets spread over every node: each node
    /// allocates its share, the shares meet in a round.
    pub fn table(&self, round: &str, buckets: usize) -> farm_core::Result<HashTable> {
        let parts = self.gather(round, |node| {
            let share = HashTable::create_share(node, node.id(), self.nodes, buckets)?;
            Ok(Value::from(share.iter().map(|a| a.0).collect::<Vec<_>>()))
        })?;
        let shares = parts
            .iter()
            .map(|part| {
                part.as_array()
                    .ok_or_else(|| malformed(round))?
                    .iter()
                    .map(|a| a.as_u64().map(Addr).ok_or_else(|| malformed(round)))
                    .collect::<farm_core::Result<Vec<Addr>>>()
            })
            .collect::<farm_core::Result<Vec<_>>>()?;
        if shares.len() != self.nodes {
            return Err(malformed(round));
        }
        HashTable::from_shares(&shares, buckets)
    }
}
