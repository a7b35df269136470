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

use farm_core::{Addr, Cluster, HashTable, Node, TxnError};
use serde_json::Value;

/// Rounds across processes: hand in this process's part, get every
/// process's part in node order.
pub trait Rounds: Sync {
    /// # Errors
    /// A process failed or went away.
    fn exchange(&self, round: &str, part: Value) -> farm_core::Result<Vec<Value>>;
}

/// Keys one transaction of [`Site::load_bulk`]'s second step links: each
/// may write a 144-byte bucket, so a COMMIT-BACKUP stays near 28 KB, under
/// a record's 64 KB.
const LINKS_PER_TXN: usize = 160;

/// Where [`Site::load_bulk`] hands each row: `(table, key, value)`, the
/// table an index into the load's tables.
pub type RowSink<'s> = dyn FnMut(usize, u64, &[u8]) -> Result<(), TxnError> + 's;

/// The rows of one batch of [`Site::load_bulk`], told to a sink.
pub type RowSource<'s, T> = dyn Fn(&T, &mut RowSink<'_>) -> Result<(), TxnError> + Sync + 's;

pub struct Site<'a> {
    nodes: usize,
    local: Vec<&'a Node>,
    rounds: Option<&'a dyn Rounds>,
    /// Told `(done, of how many)` while loading (see [`Site::with_progress`]).
    progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

/// Waits until `finished`, calling `tell` about five times a second. It
/// looks every 5 ms: sleeping whole 200 ms steps added up to 0.2 s to each
/// loading step.
fn wait_telling(finished: &dyn Fn() -> bool, tell: &dyn Fn()) {
    let mut told = std::time::Instant::now();
    tell();
    while !finished() {
        std::thread::sleep(std::time::Duration::from_millis(5));
        if told.elapsed() >= std::time::Duration::from_millis(200) {
            tell();
            told = std::time::Instant::now();
        }
    }
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

    /// Loads rows into hash tables in two steps, every node in parallel:
    /// each node allocates the values of its own batches (`by_node[n]`
    /// holds node n's; many values per transaction, no bucket read),
    /// then each bucket's primary links the keys of its buckets
    /// ([`HashTable::link_many`], [`LINKS_PER_TXN`] per transaction), so
    /// that every bucket is read and written once and no two loaders meet
    /// on a bucket. Tells the site's progress hook (batches done, of how
    /// many) about five times a second, both steps on one scale. (Loaders
    /// never conflict: step 1 only allocates, and step 2 splits the
    /// buckets by primary.)
    ///
    /// Across processes, the (table, key, value address) triples of step 1
    /// travel in round `round` (every process gets every process's, as a
    /// flat JSON array of numbers: about 40 bytes a row) and each process
    /// links those whose buckets its nodes are primary for.
    ///
    /// # Errors
    /// The first of the loaders' errors; [`farm_core::Error::Peer`] for a
    /// process's part that is not a list of triples of these tables.
    pub fn load_bulk<T: Sync>(
        &self,
        round: &str,
        tables: &[&HashTable],
        by_node: &[Vec<T>],
        rows: &RowSource<'_, T>,
    ) -> farm_core::Result<()> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let batches: u64 = by_node.iter().map(|b| b.len() as u64).sum();
        // Both steps count as `batches` on the bar.
        let total = 2 * batches;
        let done = AtomicU64::new(0);
        let progress = |done: u64| {
            if let Some(progress) = self.progress {
                progress(done.min(total), total);
            }
        };
        // Step 1: values, on their own nodes: (table, key, address).
        let allocated: Vec<Vec<(usize, u64, Addr)>> =
            self.on_every_node(&done, &progress, |node| {
                let mut linked = Vec::new();
                for batch in by_node
                    .get(node.id())
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                {
                    let addrs = node.run(|txn| {
                        let mut addrs = Vec::new();
                        rows(batch, &mut |table, key, value| {
                            addrs.push((table, key, txn.alloc(value)?));
                            Ok(())
                        })?;
                        Ok(addrs)
                    })?;
                    linked.extend(addrs);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(linked)
            })?;
        // Step 2: keys to the primaries of their home buckets, by table and
        // bucket, so that one transaction links whole buckets.
        let allocated: Vec<(usize, u64, Addr)> = match self.rounds {
            None => allocated.into_iter().flatten().collect(),
            Some(rounds) => {
                let flat: Vec<u64> = allocated
                    .iter()
                    .flatten()
                    .flat_map(|&(table, key, addr)| [table as u64, key, addr.0])
                    .collect();
                let parts = rounds.exchange(round, Value::from(flat))?;
                let mut all = Vec::new();
                for part in &parts {
                    let numbers = part.as_array().ok_or_else(|| malformed(round))?;
                    if numbers.len() % 3 != 0 {
                        return Err(malformed(round));
                    }
                    for triple in numbers.chunks(3) {
                        let [Some(table), Some(key), Some(addr)] =
                            [0, 1, 2].map(|i| triple[i].as_u64())
                        else {
                            return Err(malformed(round));
                        };
                        let table = usize::try_from(table)
                            .ok()
                            .filter(|t| *t < tables.len())
                            .ok_or_else(|| malformed(round))?;
                        all.push((table, key, Addr(addr)));
                    }
                }
                all
            }
        };
        let placement = self.local[0].placement();
        let mut by_primary: Vec<Vec<(usize, usize, u64, Addr)>> = vec![Vec::new(); self.nodes];
        for (table, key, addr) in allocated {
            let home = tables[table].home_index(key);
            let primary = placement.primary(tables[table].bucket_addrs()[home].region());
            if self.local(primary).is_some() {
                by_primary[primary].push((table, home, key, addr));
            }
        }
        let links: u64 = by_primary.iter().map(|l| l.len() as u64).sum();
        for links in &mut by_primary {
            links.sort_by_key(|&(table, home, _, _)| (table, home));
        }
        let step_one = done.load(Ordering::Relaxed);
        let linked = AtomicU64::new(0);
        let scaled = |linked: u64| step_one + linked * batches / links.max(1);
        self.on_every_node(&linked, &|l| progress(scaled(l)), |node| {
            let mine = &by_primary[node.id()];
            for chunk in mine.chunks(LINKS_PER_TXN) {
                node.run(|txn| {
                    for run in chunk.chunk_by(|a, b| a.0 == b.0) {
                        let entries: Vec<(u64, Addr)> =
                            run.iter().map(|&(_, _, key, addr)| (key, addr)).collect();
                        tables[run[0].0].link_many(txn, &entries)?;
                    }
                    Ok(())
                })?;
                linked.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        })?;
        progress(total);
        Ok(())
    }

    /// Runs `work` for every node of this process, a thread each, telling
    /// `progress` the counter `done` about five times a second; the
    /// results in node order.
    fn on_every_node<R: Send>(
        &self,
        done: &std::sync::atomic::AtomicU64,
        progress: &(dyn Fn(u64) + Sync),
        work: impl Fn(&Node) -> farm_core::Result<R> + Sync,
    ) -> farm_core::Result<Vec<R>> {
        std::thread::scope(|scope| {
            let work = &work;
            let workers: Vec<_> = self
                .local
                .iter()
                .map(|&node| scope.spawn(move || work(node)))
                .collect();
            wait_telling(&|| workers.iter().all(|w| w.is_finished()), &|| {
                progress(done.load(std::sync::atomic::Ordering::Relaxed))
            });
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a loader thread panicked"))
                .collect()
        })
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
    ///
    /// In process, the nodes allocate their shares in parallel, a thread
    /// each (one after the other, the five TATP tables took 0.3–0.6 s of
    /// loading at `--scale 10`).
    pub fn table(&self, round: &str, buckets: usize) -> farm_core::Result<HashTable> {
        let share_of = |node: &Node| -> farm_core::Result<Value> {
            let share = HashTable::create_share(node, node.id(), self.nodes, buckets)?;
            Ok(Value::from(share.iter().map(|a| a.0).collect::<Vec<_>>()))
        };
        let parts = if self.rounds.is_none() && self.local.len() > 1 {
            let nothing = std::sync::atomic::AtomicU64::new(0);
            self.on_every_node(&nothing, &|_| {}, share_of)?
        } else {
            self.gather(round, share_of)?
        };
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
