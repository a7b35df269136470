//! `farm check` on node processes: the `check` service that `farm node`
//! serves. Each node allocates the objects it owns, the addresses meet in
//! a round, every node runs its share of the transactions from its own
//! client threads and records them, and node 0 passes every node's history
//! on to the driver, which merges and checks them.

use farm_cluster::{Progress, Service, ServiceSite};
use farm_core::{AbortCounts, Addr, Fault, Faults};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::history::{self, Recorder};
use crate::workload::{self, WorkloadOptions};

/// What a driver asks the nodes to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The workload; `txns` counts the whole cluster's transactions,
    /// `threads` each node's client threads.
    pub workload: WorkloadOptions,
    /// A protocol fault every node injects, to see the checker fail.
    pub fault: Option<Fault>,
    /// Node `i` also journals its transactions to
    /// `<journal>/check-journal-<i>.jsonl` as they commit and end, so that
    /// the driver has the history of a node it kills (`--nemesis kill`).
    #[serde(default)]
    pub journal: Option<std::path::PathBuf>,
}

/// The journal of node `id` in directory `dir` (see
/// [`CheckRequest::journal`]).
pub fn journal_path(dir: &std::path::Path, id: usize) -> std::path::PathBuf {
    dir.join(format!("check-journal-{id}.jsonl"))
}

impl CheckRequest {
    /// # Errors
    /// The first field out of range, in words.
    pub fn check(&self) -> Result<(), String> {
        self.workload.check()
    }
}

/// What the nodes hand the driver: every transaction they ran, and their
/// aborts by reason.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckOutput {
    pub txns: Vec<history::Txn>,
    pub aborted: AbortCounts,
    /// Node 0's read of every list once every client was done, made when
    /// the request has a journal (a nemesis runs): (key, elements), to
    /// count acknowledged appends that are missing.
    #[serde(default)]
    pub final_read: Option<Vec<(u64, Vec<u64>)>>,
}

/// The `check` service of a node process.
#[derive(Default)]
pub struct CheckService;

impl Service for CheckService {
    fn name(&self) -> &'static str {
        "check"
    }

    fn check(&self, request: &RawValue) -> Result<(), String> {
        let request: CheckRequest =
            serde_json::from_str(request.get()).map_err(|e| format!("not a check request: {e}"))?;
        request.check()
    }

    fn run(&self, site: &ServiceSite<'_>, request: &RawValue) -> farm_cluster::Result<()> {
        let request: CheckRequest =
            farm_cluster::protocol::decode_value(request, "node 0", "check request")?;
        let (id, nodes) = (site.id(), site.nodes());
        let node = site.node();
        node.set_faults(Faults::from(request.fault));
        let total = request.workload.txns;
        let share = total / nodes as u64 + u64::from((id as u64) < total % nodes as u64);
        let options = WorkloadOptions {
            txns: share,
            progress: id == 0,
            ..request.workload.clone()
        };
        // Each node allocates the keys it owns; everyone learns every
        // address.
        let owned: Vec<(u64, u64)> = workload::allocate_keys(node, nodes, &options)?
            .into_iter()
            .map(|(key, addr)| (key as u64, addr.0))
            .collect();
        let mut keyed: Vec<(u64, u64)> = site.exchange("check-keys", &owned)?.concat();
        keyed.sort_unstable();
        let addrs: Vec<Addr> = keyed.into_iter().map(|(_, addr)| Addr(addr)).collect();
        // Allocations installed everywhere before any client starts.
        site.drain()?;
        site.barrier("check-installed")?;
        let base = id as u32 * 1000;
        let recorder = match &request.journal {
            Some(dir) => {
                let path = journal_path(dir, id);
                Recorder::for_process_journaled(base, &path).map_err(|e| {
                    farm_cluster::Error::File {
                        what: "create the check journal",
                        path,
                        source: e,
                    }
                })?
            }
            None => Recorder::for_process(base),
        };
        site.status("clients started");
        let result = workload::run_clients_with_progress(
            &[node],
            &addrs,
            &options,
            &recorder,
            &|done, rate| {
                site.progress(Progress {
                    run: 0,
                    done: done as f64,
                    total: share as f64,
                    unit: "txns".into(),
                    rate,
                })
            },
        );
        node.set_faults(Faults::default());
        let (_, aborted) = result?;
        // Every client is done everywhere; under a nemesis, node 0 reads
        // the final state, where every acknowledged append must be.
        site.barrier("check-clients-done")?;
        let final_read = if id == 0 && request.journal.is_some() {
            site.status("reading every list");
            Some(workload::final_read(node, &addrs, &options, &recorder)?)
        } else {
            None
        };
        site.status("gathering the histories at node 0");
        let part = CheckOutput {
            txns: recorder.history().txns().to_vec(),
            aborted,
            final_read,
        };
        // Each node's history goes to the driver as it is, through node 0.
        site.gather_to_driver("check-history", &part)?;
        // Everything a node wrote is installed before the next request.
        site.drain()?;
        site.barrier("check-done")?;
        Ok(())
    }
}
