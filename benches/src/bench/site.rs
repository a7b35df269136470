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

/// Bytes of objects one loading transaction of [`Site::load_bulk`] writes
/// at most (each key counts its 256-byte bucket, and its value's object
/// when the value is not inline): a COMMIT-BACKUP stays near half of a
/// record's 64 KB.
const LOAD_TXN_BYTES: usize = farm_core::limits::RECORD_BYTES_MAX / 2;

/// A bucket object's bytes, as [`LOAD_TXN_BYTES`] counts them.
const BUCKET_OBJECT_BYTES: usize = 256;

/// One row of [`Site::load_bulk`] on its way to the primary of its home
/// bucket: its value is `bytes[start..start + len]` of its [`Parcel`].
struct Link {
    table: u32,
    home: u32,
    key: u64,
    start: u32,
    len: u32,
}

/// A row to put: (table, home bucket, key, value).
type Row<'a> = (usize, usize, u64, &'a [u8]);

/// The rows one loader thread sorted out for one node.
#[derive(Default)]
struct Parcel {
    links: Vec<Link>,
    bytes: Vec<u8>,
}

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

    /// Loads rows into hash tables, every node in parallel, in two steps:
    /// first the loader threads (one per node of this process) draw the
    /// rows of `batches` and sort them out by the primary of each row's
    /// home bucket (no transaction); then each node puts the rows of its
    /// own buckets with [`HashTable::put_many`], in transactions of up to
    /// [`LOAD_TXN_BYTES`], so that every bucket is read and written once
    /// and no two loaders meet on a bucket. Small values go inline in the
    /// buckets; larger ones become objects on the bucket's primary. Tells
    /// the site's progress hook (of twice the batches: both steps on one
    /// scale) about five times a second.
    ///
    /// `batches` are every node's batches, in any grouping: every process
    /// of a multi-process cluster draws the same rows and keeps only those
    /// of its own nodes' buckets, so nothing travels between processes.
    /// (The loader before this one allocated each value on the node that
    /// drew it and shipped the addresses to the bucket primaries in a
    /// round: a second object and a second READ per lookup.)
    ///
    /// # Errors
    /// The first of the loaders' errors.
    pub fn load_bulk<T: Sync>(
        &self,
        tables: &[&HashTable],
        batches: &[Vec<T>],
        rows: &RowSource<'_, T>,
    ) -> farm_core::Result<()> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let count: u64 = batches.iter().map(|b| b.len() as u64).sum();
        let total = 2 * count;
        let done = AtomicU64::new(0);
        let progress = |done: u64| {
            if let Some(progress) = self.progress {
                progress(done.min(total), total);
            }
        };
        // Step 1: rows to the primaries of their home buckets; loader i
        // takes the batch lists i, i + loaders, ...
        let placement = self.local[0].placement();
        let loaders = self.local.len();
        let sorted: Vec<Vec<Parcel>> = self.on_every_node(&done, &progress, |node| {
            let me = self.local.iter().position(|n| n.id() == node.id());
            let mut parcels: Vec<Parcel> = (0..self.nodes).map(|_| Parcel::default()).collect();
            for list in batches.iter().skip(me.unwrap_or(0)).step_by(loaders) {
                for batch in list {
                    rows(batch, &mut |table, key, value| {
                        let home = tables[table].home_index(key);
                        let primary =
                            placement.primary(tables[table].bucket_addrs()[home].region());
                        if self.local(primary).is_some() {
                            let parcel = &mut parcels[primary];
                            parcel.links.push(Link {
                                table: table as u32,
                                home: home as u32,
                                key,
                                start: parcel.bytes.len() as u32,
                                len: value.len() as u32,
                            });
                            parcel.bytes.extend_from_slice(value);
                        }
                        Ok(())
                    })
                    .map_err(|error| match error {
                        TxnError::Failed(error) => error,
                        TxnError::Conflict(reason) => farm_core::Error::Peer(format!(
                            "drawing rows to load aborted ({reason:?})"
                        )),
                    })?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(parcels)
        })?;
        // Step 2: each node puts the rows of its buckets, by table and
        // bucket, so that one transaction fills whole buckets.
        let mut mine: Vec<Vec<Row<'_>>> = vec![Vec::new(); self.nodes];
        for parcels in &sorted {
            for (primary, parcel) in parcels.iter().enumerate() {
                mine[primary].extend(parcel.links.iter().map(|link| {
                    let start = link.start as usize;
                    (
                        link.table as usize,
                        link.home as usize,
                        link.key,
                        &parcel.bytes[start..start + link.len as usize],
                    )
                }));
            }
        }
        let links: u64 = mine.iter().map(|l| l.len() as u64).sum();
        for links in &mut mine {
            // Stable: a key loaded twice keeps its order (the last wins).
            links.sort_by_key(|&(table, home, _, _)| (table, home));
        }
        let step_one = done.load(Ordering::Relaxed);
        let linked = AtomicU64::new(0);
        let scaled = |linked: u64| step_one + linked * count / links.max(1);
        self.on_every_node(&linked, &|l| progress(scaled(l)), |node| {
            let mine = &mine[node.id()];
            let mut from = 0;
            while from < mine.len() {
                let (mut to, mut bytes) = (from, 0);
                while to < mine.len() && (to == from || bytes < LOAD_TXN_BYTES) {
                    let value = mine[to].3.len();
                    bytes += BUCKET_OBJECT_BYTES;
                    if value > farm_core::INLINE_VALUE_BYTES {
                        bytes += value + farm_core::limits::OBJECT_OVERHEAD_BYTES as usize;
                    }
                    to += 1;
                }
                let chunk = &mine[from..to];
                node.run(|txn| {
                    for run in chunk.chunk_by(|a, b| a.0 == b.0) {
                        let entries: Vec<(u64, &[u8])> =
                            run.iter().map(|&(_, _, key, value)| (key, value)).collect();
                        tables[run[0].0].put_many(txn, &entries)?;
                    }
                    Ok(())
                })?;
                linked.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                from = to;
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

    /// A hash table of `buckets` buckets spread over every node, holding
    /// values of up to `inline` bytes in its buckets
    /// ([`HashTable::create_share_with`]): each node allocates its share,
    /// the shares meet in a round.
    ///
    /// In process, the nodes allocate their shares in parallel, a thread
    /// each (one after the other, the five TATP tables took 0.3–0.6 s of
    /// loading at `--scale 10`).
    pub fn table(
        &self,
        round: &str,
        buckets: usize,
        inline: usize,
    ) -> farm_core::Result<HashTable> {
        let share_of = |node: &Node| -> farm_core::Result<Value> {
            let share = HashTable::create_share_with(node, node.id(), self.nodes, buckets, inline)?;
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
