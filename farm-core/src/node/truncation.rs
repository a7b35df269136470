//! The node-wide queue of committed transactions whose backups still hold
//! COMMIT-BACKUP records, per backup: what the lazy TRUNCATE step sends
//! (FaRM SOSP'15 §4 step 5). Node-wide, not per context: a per-context
//! queue starved when its context sat idle in the pool, and the ring head
//! stayed behind its COMMIT-BACKUPs until the ring was full (found by
//! TPC-C's large records).

use std::sync::Mutex;

use crate::limits::TRUNCATE_BATCH;
use crate::txn_id::TxnId;

pub(crate) struct TruncationQueue {
    /// Per backup node, the transactions to truncate there; and how many
    /// transactions are queued.
    queued: Mutex<(Vec<Vec<TxnId>>, usize)>,
}

impl TruncationQueue {
    pub(crate) fn new(nodes: usize) -> TruncationQueue {
        TruncationQueue {
            queued: Mutex::new((vec![Vec::new(); nodes], 0)),
        }
    }

    /// Queues the truncation of `txid` at `backups`; true when enough are
    /// queued that the caller should send them.
    pub(crate) fn queue(&self, backups: &[usize], txid: TxnId) -> bool {
        let mut queued = self.queued.lock().expect("truncation queue lock");
        for &backup in backups {
            queued.0[backup].push(txid);
        }
        queued.1 += 1;
        queued.1 >= TRUNCATE_BATCH
    }

    /// Takes every queued truncation, per backup node.
    pub(crate) fn take(&self) -> Vec<Vec<TxnId>> {
        let mut queued = self.queued.lock().expect("truncation queue lock");
        queued.1 = 0;
        let nodes = queued.0.len();
        std::mem::replace(&mut queued.0, vec![Vec::new(); nodes])
    }

    /// Puts back the truncations of `txids` at `backup` that could not be
    /// sent, so that the next flush tries them again.
    pub(crate) fn requeue(&self, backup: usize, txids: &[TxnId]) {
        let mut queued = self.queued.lock().expect("truncation queue lock");
        queued.0[backup].extend_from_slice(txids);
        queued.1 += txids.len();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued.lock().expect("truncation queue lock").1 == 0
    }
}
