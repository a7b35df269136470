//! Per-thread counts of the object copies transactions read, so that a
//! benchmark or a test can say what a lookup costs in READs
//! ([`thread_reads`]).

/// Object copies the calling thread has read for transactions since it
/// started ([`thread_reads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// Copies read from primaries, retries included: one-sided READs plus
    /// reads of the node's own memory when it is the primary. A
    /// hash-table lookup's cost in READs is the change of this.
    pub objects: u64,
    /// Of `objects`, one-sided READs through the fabric.
    pub remote: u64,
}

thread_local! {
    /// Per thread, so that counting costs no shared cache line (a counter
    /// in `NodeStats` would move between client threads' cores on every
    /// READ).
    static READS: std::cell::Cell<ReadCounts> = const {
        std::cell::Cell::new(ReadCounts { objects: 0, remote: 0 })
    };
}

/// The reads of transactions this thread has run (all nodes, since the
/// thread started): take it before and after a piece of work.
pub fn thread_reads() -> ReadCounts {
    READS.with(|reads| reads.get())
}

/// Counts one object copy read by this thread.
pub(crate) fn count_read(remote: bool) {
    READS.with(|reads| {
        let mut counts = reads.get();
        counts.objects += 1;
        counts.remote += u64::from(remote);
        reads.set(counts);
    });
}
