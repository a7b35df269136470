//! Every bound of the fabric in one place (TigerBeetle's habit): queue depths,
//! batch sizes, registered bytes. Each is checked at compile time against the
//! others and at run time before anything is posted.

/// Work requests one endpoint may have posted and not yet completed.
pub const WR_OUTSTANDING_MAX: usize = 256;
/// Work requests in one `post` call (one chain, only the last signaled).
pub const BATCH_WR_COUNT_MAX: usize = 64;
/// Bytes of one READ or WRITE work request.
pub const OP_BYTES_MAX: usize = 1 << 30;
/// Bytes of one memory registration.
pub const MR_BYTES_MAX: u64 = 1 << 40;
/// Memory registrations with remote access that one node advertises.
pub const MR_REMOTE_COUNT_MAX: usize = 4096;
/// Receive work requests kept posted per passive queue pair (for WRITE_WITH_IMM).
pub const RECV_DEPTH: usize = 256;
/// Passive queue pairs (incoming connections) one verbs node accepts: all
/// share one receive CQ, which must hold every posted receive's completion.
pub const PASSIVE_QP_MAX: usize = 64;
/// Entries of that receive CQ.
pub const RECEIVE_CQ_DEPTH: usize = RECV_DEPTH * PASSIVE_QP_MAX;
/// Bytes a verbs WRITE may carry inline in the work request.
pub const INLINE_BYTES_MAX: u32 = 64;
/// Largest control message on the out-of-band TCP channel.
pub const WIRE_MESSAGE_BYTES_MAX: usize = 256 * 1024;
/// How long the out-of-band handshake waits for a peer before giving up.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// How often (at most) a shm endpoint re-checks that its peer is alive.
pub const SHM_LIVENESS_CHECK_MS: u64 = 20;

const _: () = assert!(BATCH_WR_COUNT_MAX <= WR_OUTSTANDING_MAX);
const _: () = assert!(WR_OUTSTANDING_MAX.is_power_of_two());
const _: () = assert!((OP_BYTES_MAX as u64) < MR_BYTES_MAX);
const _: () = assert!(OP_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(
    RECEIVE_CQ_DEPTH <= 16384,
    "rxe and ConnectX CQs hold at least this many"
);
