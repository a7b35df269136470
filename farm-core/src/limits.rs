//! Every bound of the engine in one place, checked against each other at
//! compile time.

/// Nodes in one cluster.
pub const NODES_MAX: usize = 64;
/// Replicas of a region (1 primary + f backups). FaRM ran with 3.
pub const COPIES_MAX: usize = 4;
/// Bytes of one message ring, one per (sender, receiver) pair.
pub const RING_BYTES: u64 = 1 << 21;
/// Bytes of one record in a ring: a commit that needs more is refused.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;
/// Object slot sizes (header, size word, payload, footer included).
pub const CLASS_BYTES: [u32; 7] = [64, 128, 256, 512, 1024, 2048, 4096];
/// Bytes an object occupies beyond its payload: header, size word, footer.
pub const OBJECT_OVERHEAD_BYTES: u32 = 24;
/// The largest payload of one object.
pub const OBJECT_PAYLOAD_MAX: u32 = CLASS_BYTES[CLASS_BYTES.len() - 1] - OBJECT_OVERHEAD_BYTES;
/// Bytes of a slab: the unit in which a region hands space to a class.
pub const SLAB_BYTES: u32 = 64 * 1024;
/// Bytes at the start of a region file for its header and slab table.
pub const REGION_HEADER_BYTES: u32 = 64 * 1024;
/// Transaction contexts (client threads in a transaction) per node.
pub const CONTEXTS_MAX: usize = 64;
/// Committed transactions a context may leave untruncated before it sends
/// TRUNCATE records (bounds the ring space held by COMMIT-BACKUP records).
pub const TRUNCATE_BATCH: usize = 16;
/// How long a commit waits for LOCK replies before it gives up.
pub const REPLY_TIMEOUT_MS: u64 = 10_000;
/// How long a sender waits for ring space before reporting a full ring.
pub const RING_WAIT_MS: u64 = 10_000;
/// Reads of a locked or torn object retried at once (spinning) before the
/// reader starts to yield and to look at the clock.
pub const READ_SPINS: u32 = 8;
/// How long a read waits for a locked (or torn) object to become readable
/// before its transaction aborts with a read conflict. A COMMIT-PRIMARY is
/// installed within microseconds once the primary's server runs; on a
/// loaded machine that thread may wait for a core for milliseconds.
pub const READ_WAIT_MS: u64 = 50;

const _: () = assert!(RECORD_BYTES_MAX as u64 * 16 <= RING_BYTES);
const _: () = assert!(RING_BYTES.is_multiple_of(4096));
const _: () = assert!(SLAB_BYTES.is_multiple_of(CLASS_BYTES[CLASS_BYTES.len() - 1]));
const _: () = assert!(CLASS_BYTES.len() <= 16, "the class is 4 bits of an address");
const _: () = assert!((SLAB_BYTES as usize / 64) <= REGION_HEADER_BYTES as usize);
