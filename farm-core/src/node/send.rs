//! The send path: appends a record to the ring of a receiver (reserve
//! space, seal the record for its position, stage it in registered
//! scratch memory, post one WRITE). One [`RingSender`] per receiver,
//! shared by the node's threads.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdma_transport::{Endpoint, Fabric, MemoryRegion, NodeId, Op, RemoteAddr};

use super::contexts::{staging_offset, STAGING_PAD_BYTES};
use crate::codec::record::{self, TRAILER_BYTES};
use crate::error::{Error, Result};
use crate::limits::{RECORD_BYTES_MAX, REPLY_TIMEOUT_MS, RING_WAIT_MS};
use crate::ring::{Reservation, RingSender};
use crate::task::NoPause;

pub(crate) struct SendPath {
    senders: Vec<Mutex<RingSender>>,
}

/// Where a record goes: the receiver and its inbox's remote key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Destination {
    pub target: usize,
    pub inbox_key: u32,
}

impl SendPath {
    /// The send side of node `sender`'s rings to each of `nodes`, starting
    /// where the receivers last said they retired (in `local_inbox`).
    pub(crate) fn new(sender: usize, nodes: usize, local_inbox: &Arc<MemoryRegion>) -> SendPath {
        SendPath {
            senders: (0..nodes)
                .map(|receiver| Mutex::new(RingSender::new(receiver, local_inbox.clone(), sender)))
                .collect(),
        }
    }

    /// Starts the ring to `receiver` afresh: it rejoined as a new
    /// incarnation with an empty inbox.
    pub(crate) fn reset(&self, sender: usize, receiver: usize, local_inbox: &Arc<MemoryRegion>) {
        let mut ring = self.senders[receiver].lock().expect("ring sender lock");
        crate::ring::set_published_head(local_inbox, receiver, 0);
        *ring = RingSender::new(receiver, local_inbox.clone(), sender);
    }

    /// Reserves ring space, keeping the fabric's housekeeping going while
    /// the ring is full (the receiver may need our receives re-posted to
    /// make the progress we wait for). Returns the sender still locked:
    /// the caller posts the record before releasing it, so that records
    /// are written in the order of their positions and a sender that dies
    /// leaves no gap before a later, complete record (on shm a post is the
    /// copy itself; on verbs it fixes the posting order only).
    fn reserve(
        &self,
        fabric: &dyn Fabric,
        target: usize,
        len: usize,
    ) -> Result<(MutexGuard<'_, RingSender>, Reservation)> {
        // The clock is read only once the ring is found full (a clock read
        // per send was half a percent of TATP's CPU).
        let mut started: Option<Instant> = None;
        loop {
            let mut sender = self.senders[target].lock().expect("ring sender lock");
            match sender.reserve_within(len, Duration::from_millis(1)) {
                Ok(reservation) => return Ok((sender, reservation)),
                Err(Error::RingFull { .. })
                    if started.get_or_insert_with(Instant::now).elapsed()
                        < Duration::from_millis(RING_WAIT_MS) =>
                {
                    drop(sender);
                    fabric.progress()?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Appends the record built in `record` (by a
    /// [`crate::codec::record::RecordWriter`]) to the ring of
    /// `destination`, staging it in `scratch` and posting it on `endpoint`.
    /// Only posted: the caller waits for the fabric's completion when it
    /// needs it.
    ///
    /// # Errors
    /// [`Error::RecordTooLarge`] before anything is reserved, when the
    /// record exceeds [`RECORD_BYTES_MAX`]; [`Error::RingFull`] when the
    /// receiver retires nothing for [`RING_WAIT_MS`]; the fabric's errors.
    pub(crate) fn send(
        &self,
        fabric: &dyn Fabric,
        destination: Destination,
        record: &mut Vec<u8>,
        scratch: &Arc<MemoryRegion>,
        endpoint: &mut dyn Endpoint,
        notify: bool,
    ) -> Result<()> {
        let len = record.len() + TRAILER_BYTES;
        // Checked before any ring space is taken: a reservation that is
        // never written is a hole the receiver would wait at for ever.
        if len > RECORD_BYTES_MAX {
            return Err(Error::RecordTooLarge {
                bytes: len,
                max: RECORD_BYTES_MAX,
            });
        }
        // Reusing the staging area needs the previous WRITE from it done.
        if endpoint.outstanding() > 0 {
            endpoint.wait(Duration::from_millis(REPLY_TIMEOUT_MS))?;
        }
        let Destination { target, inbox_key } = destination;
        // The ring sender stays locked until the record is posted: no
        // pause in between (another task of this thread may send to the
        // same receiver).
        let _held = NoPause::hold();
        let (mut sender, reservation) = self.reserve(fabric, target, len)?;
        // The trailer's tag needs the position, known only now.
        record::seal(record, reservation.position).expect("the length was checked above");
        let posted = Self::post(
            record,
            reservation,
            scratch,
            endpoint,
            target,
            inbox_key,
            notify,
        );
        if posted.is_err() {
            // Nothing was posted: give the space back (regression: a post
            // that failed after its reservation left a hole, and the
            // receiver waited at it for ever).
            sender.cancel(reservation, len);
        }
        posted
    }

    /// Stages the sealed record (and its PAD) and posts the WRITEs.
    fn post(
        record: &[u8],
        reservation: Reservation,
        scratch: &Arc<MemoryRegion>,
        endpoint: &mut dyn Endpoint,
        target: usize,
        inbox_key: u32,
        notify: bool,
    ) -> Result<()> {
        let staging = staging_offset(target);
        scratch.write(staging + STAGING_PAD_BYTES, record)?;
        let node = NodeId(target as u16);
        let remote = |offset| RemoteAddr {
            node,
            key: inbox_key,
            offset,
        };
        let mut ops: [Option<Op>; 2] = [None, None];
        if let Some((offset, word)) = reservation.pad {
            scratch.write(staging, &word.to_le_bytes())?;
            ops[0] = Some(Op::Write {
                local: scratch.slice(staging, STAGING_PAD_BYTES as u32)?,
                remote: remote(offset),
            });
        }
        let local = scratch.slice(staging + STAGING_PAD_BYTES, record.len() as u32)?;
        let remote = remote(reservation.inbox_offset);
        ops[1] = Some(if notify {
            Op::WriteNotify { local, remote }
        } else {
            Op::Write { local, remote }
        });
        match ops {
            [Some(pad), Some(op)] => endpoint.post(&[pad, op])?,
            [None, Some(op)] => endpoint.post(&[op])?,
            _ => unreachable!("the record's WRITE is always set"),
        }
        Ok(())
    }

    /// The rings this node sends on whose receiver has not retired
    /// everything yet (as the receivers last told us), as (receiver, bytes
    /// still held).
    pub(crate) fn busy_rings(&self, counted: impl Fn(usize) -> bool) -> Vec<(usize, u64)> {
        self.senders
            .iter()
            .enumerate()
            .filter(|(target, _)| counted(*target))
            .filter_map(|(target, sender)| {
                let mut sender = sender.lock().expect("ring sender lock");
                sender.refresh_head();
                let used = sender.used();
                (used > 0).then_some((target, used))
            })
            .collect()
    }
}
