//! Every bound of the engine in one place, checked against each other at
//! compile time. The README's table of limits is this module's
//! (`farm-core/tests/readme_lists_the_limits.rs` keeps them equal).
//!
//! | limit | value | constant |
//! | --- | --- | --- |
//! | nodes in a cluster | 64 | [`NODES_MAX`] |
//! | replicas of a region | 4 | [`COPIES_MAX`] |
//! | regions in a cluster | 16,384 | [`REGIONS_MAX`] |
//! | bytes of a region | 2 GiB | [`REGION_BYTES_MAX`] |
//! | bytes of an object | 4,072 | [`OBJECT_PAYLOAD_MAX`] |
//! | concurrent transactions per node | 64 | [`CONTEXTS_MAX`] |
//! | bytes of one LOCK or COMMIT-BACKUP record | 65,536 | [`RECORD_BYTES_MAX`] |
//! | frees of one slot before its addresses repeat | 4,194,304 (2^22) | [`INCARNATIONS`] |
//!
//! A transaction's writes travel in one LOCK record per primary and one
//! COMMIT-BACKUP record per backup, each at most [`RECORD_BYTES_MAX`]
//! bytes: 48 bytes of record (for a transaction that writes up to 4
//! regions; 8 more per 4 more regions), then 32 bytes and the payload
//! (rounded up to 8) per object. So one node can be sent at most 15 objects of the
//! largest size ([`RECORD_OBJECTS_LARGEST`]), or 1,637 objects of up to 8
//! bytes ([`RECORD_OBJECTS_SMALLEST`]); a backup receives the writes of
//! every region it backs, so on 3 nodes with 3 copies that is the bound of
//! everything a transaction writes outside one node's regions. A larger
//! transaction is refused before anything is sent
//! ([`crate::Error::TransactionTooLarge`]).

/// Nodes in one cluster.
pub const NODES_MAX: usize = 64;
/// Replicas of a region (1 primary + f backups). FaRM ran with 3.
pub const COPIES_MAX: usize = 4;
/// Bits of a region id in an address; regions in a cluster.
pub const REGION_ID_BITS: u32 = 14;
pub const REGIONS_MAX: usize = 1 << REGION_ID_BITS;
/// Bits of a size class in an address.
pub const CLASS_ID_BITS: u32 = 3;
/// Bits of a slot's incarnation in an address and in the slot: the frees
/// of one slot before an address of it repeats.
pub const INCARNATION_BITS: u32 = 22;
pub const INCARNATIONS: u64 = 1 << INCARNATION_BITS;
/// Bits of a slot's index in its region (its offset / the smallest class).
pub const SLOT_INDEX_BITS: u32 = 25;
/// Object slot sizes (header, size word, payload, footer included).
pub const CLASS_BYTES: [u32; 7] = [64, 128, 256, 512, 1024, 2048, 4096];
/// The largest region: every slot must have an index (2 GiB, FaRM's size).
pub const REGION_BYTES_MAX: u64 = (1 << SLOT_INDEX_BITS) * CLASS_BYTES[0] as u64;
/// Bytes of one message ring, one per (sender, receiver) pair.
pub const RING_BYTES: u64 = 1 << 21;
/// Bytes of one record in a ring: a commit that needs more is refused.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;
/// Bytes an object occupies beyond its payload: header, size and
/// incarnation, footer.
pub const OBJECT_OVERHEAD_BYTES: u32 = 24;
/// The largest payload of one object.
pub const OBJECT_PAYLOAD_MAX: u32 = CLASS_BYTES[CLASS_BYTES.len() - 1] - OBJECT_OVERHEAD_BYTES;
/// Bytes of a LOCK or COMMIT-BACKUP record beyond its entries, for a
/// transaction that writes up to 4 regions: header and trailer, counts,
/// one word of region ids.
pub(crate) const RECORD_FIXED_BYTES: usize = 24 + 8 + 8 + 8;
/// Bytes of one entry's header in a LOCK or COMMIT-BACKUP record.
pub(crate) const ENTRY_FIXED_BYTES: usize = 32;
/// Objects of the largest size one LOCK or COMMIT-BACKUP record carries.
pub const RECORD_OBJECTS_LARGEST: usize = (RECORD_BYTES_MAX - RECORD_FIXED_BYTES)
    / (ENTRY_FIXED_BYTES + (OBJECT_PAYLOAD_MAX as usize).next_multiple_of(8));
/// Objects of up to 8 bytes one LOCK or COMMIT-BACKUP record carries.
pub const RECORD_OBJECTS_SMALLEST: usize =
    (RECORD_BYTES_MAX - RECORD_FIXED_BYTES) / (ENTRY_FIXED_BYTES + 8);
/// Bytes of a slab: the unit in which a region hands space to a class.
pub const SLAB_BYTES: u32 = 64 * 1024;
/// Bytes at the start of a region file for its header and slab table.
pub const REGION_HEADER_BYTES: u32 = 64 * 1024;
/// Transaction contexts (client threads in a transaction) per node.
pub const CONTEXTS_MAX: usize = 64;
/// Committed transactions a node may leave untruncated before it sends
/// TRUNCATE records (bounds the ring space held by COMMIT-BACKUP records).
pub const TRUNCATE_BATCH: usize = 16;
/// How long a commit waits for LOCK replies before it gives up.
pub const REPLY_TIMEOUT_MS: u64 = 10_000;
/// How long `Node::run` retries a transaction that keeps aborting (the
/// default [`crate::config::RetryBudget`]).
pub const RUN_RETRY_MS: u64 = 10_000;
/// How long a commit stopped by a configuration change (or by a failed
/// peer, on a node with a membership agent) waits for recovery's decision,
/// and how long a new transaction waits for the change to end.
pub const RECOVERY_WAIT_MS: u64 = 10_000;
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
const _: () = assert!(CLASS_BYTES.len() <= 1 << CLASS_ID_BITS);
const _: () = assert!(REGION_ID_BITS + CLASS_ID_BITS + INCARNATION_BITS + SLOT_INDEX_BITS == 64);
const _: () = assert!(REGION_HEADER_BYTES.is_multiple_of(CLASS_BYTES[0]));
const _: () = assert!((SLAB_BYTES as usize / 64) <= REGION_HEADER_BYTES as usize);
const _: () = assert!(REGION_BYTES_MAX == 2 << 30);
const _: () = assert!(RECORD_OBJECTS_LARGEST == 15 && RECORD_OBJECTS_SMALLEST == 1637);
