//! Message rings: one per (sender, receiver) pair, in the receiver's
//! persistent memory (its inbox, laid out in [`crate::codec::inbox`]),
//! appended to by the sender with one-sided WRITEs of records
//! ([`crate::codec::record`]).
//!
//! Positions are absolute byte counts (they never wrap); `position %
//! RING_BYTES` is the place in the ring. A receiver processes records in
//! place and *retires* them once their effect is durable (a LOCK when its
//! transaction committed or aborted, a COMMIT-BACKUP when truncated). It
//! zeroes retired bytes and tells the sender lazily, by writing its retired
//! position into the sender's `heads[receiver]` word. A sender never
//! writes past the last head it was told: a full ring makes it wait
//! ([`crate::Error::RingFull`] after [`RING_WAIT_MS`]), it never overwrites.
//! This module moves bytes and positions only; what a record means is the
//! participant's business ([`crate::participant`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdma_transport::MemoryRegion;

use crate::codec::inbox::{head_offset, retired_offset, ring_offset};
use crate::codec::record::{self, Kind, RecordPrefix, OVERHEAD_BYTES, TRAILER_BYTES};
use crate::codec::DecodeError;
use crate::error::{Error, Result};
use crate::limits::RING_BYTES;
#[cfg(test)]
use crate::limits::RING_WAIT_MS;

/// How long a record may stay unreadable before it counts as corrupt.
pub const CORRUPT_GRACE: Duration = Duration::from_millis(200);

/// A word of the inbox this module owns (a head, a retired position, a
/// ring word): the offsets come from [`crate::codec::inbox`], so they are
/// in range and aligned by construction.
fn inbox_word(inbox: &MemoryRegion, offset: u64) -> &AtomicU64 {
    inbox
        .atomic_u64(offset)
        .expect("inbox offsets come from the inbox layout")
}

/// Records in this node's inbox where `receiver` has retired the ring we
/// send it (what a [`RingSender`] starts from).
pub fn set_published_head(inbox: &MemoryRegion, receiver: usize, position: u64) {
    inbox_word(inbox, head_offset(receiver)).store(position, Ordering::Release);
}

/// Where a record goes, decided by [`RingSender::reserve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// Absolute position of the record.
    pub position: u64,
    /// Byte offset of the record in the receiver's inbox.
    pub inbox_offset: u64,
    /// A PAD word to write first (inbox offset, word), when the record did
    /// not fit in the rest of the lap.
    pub pad: Option<(u64, u64)>,
    /// The sender's tail before this reservation (before its PAD).
    tail_before: u64,
}

/// The sending side of one ring (this node → `receiver`).
pub struct RingSender {
    receiver: usize,
    /// This node's inbox: where `receiver` publishes its head for us.
    local_inbox: Arc<MemoryRegion>,
    /// Offset of ring (this node → receiver) in the receiver's inbox.
    ring_base: u64,
    tail: u64,
    head: u64,
}

impl RingSender {
    pub fn new(receiver: usize, local_inbox: Arc<MemoryRegion>, sender: usize) -> RingSender {
        let head = inbox_word(&local_inbox, head_offset(receiver)).load(Ordering::Acquire);
        RingSender {
            receiver,
            local_inbox,
            ring_base: ring_offset(sender),
            tail: head,
            head,
        }
    }

    pub fn refresh_head(&mut self) {
        // This Acquire pairs with the receiver's WRITE of its head, which it
        // issues after zeroing the retired bytes.
        let head =
            inbox_word(&self.local_inbox, head_offset(self.receiver)).load(Ordering::Acquire);
        // The word is the peer's to write: a head that goes back or past
        // what was sent is not believed (the old one stays, and a ring that
        // never drains ends in `RingFull` naming the receiver), so the
        // sizes below cannot underflow.
        if (self.head..=self.tail).contains(&head) {
            self.head = head;
        }
    }

    /// Bytes a record of `len` bytes needs at the current tail (with the
    /// padding to the lap's end when it does not fit).
    fn needed(&self, len: u64) -> u64 {
        let in_lap = self.tail % RING_BYTES;
        if in_lap + len > RING_BYTES {
            RING_BYTES - in_lap + len
        } else {
            len
        }
    }

    /// Reserves room for a record of `len` bytes, waiting for the receiver
    /// to retire records while the ring is full.
    #[cfg(test)]
    pub fn reserve(&mut self, len: usize) -> Result<Reservation> {
        self.reserve_within(len, Duration::from_millis(RING_WAIT_MS))
    }

    /// [`RingSender::reserve`] with another limit on the wait.
    pub fn reserve_within(&mut self, len: usize, wait: Duration) -> Result<Reservation> {
        let len = len as u64;
        assert!(len.is_multiple_of(8) && len >= OVERHEAD_BYTES as u64 && len <= RING_BYTES / 16);
        // The clock is read only once the ring is full.
        let mut start: Option<Instant> = None;
        let mut spins = 0u32;
        while self.tail + self.needed(len) - self.head > RING_BYTES {
            self.refresh_head();
            if self.tail + self.needed(len) - self.head <= RING_BYTES {
                break;
            }
            if start.get_or_insert_with(Instant::now).elapsed() >= wait {
                return Err(Error::RingFull {
                    receiver: self.receiver,
                    used: self.tail - self.head,
                    needed: len,
                });
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let tail_before = self.tail;
        let in_lap = self.tail % RING_BYTES;
        let mut pad = None;
        if in_lap + len > RING_BYTES {
            let pad_len = RING_BYTES - in_lap;
            pad = Some((self.ring_base + in_lap, record::pad_word(pad_len)));
            self.tail += pad_len;
        }
        let position = self.tail;
        self.tail += len;
        Ok(Reservation {
            position,
            inbox_offset: self.ring_base + position % RING_BYTES,
            pad,
            tail_before,
        })
    }

    /// Gives back the space of the latest reservation, whose record was
    /// never written (its post failed): a reservation left unwritten is a
    /// hole the receiver would wait at for ever.
    ///
    /// # Panics
    /// When `reservation` is not the latest: the caller holds the sender
    /// from reserving to posting, so nothing can come after it.
    pub fn cancel(&mut self, reservation: Reservation, len: usize) {
        assert_eq!(
            self.tail,
            reservation.position + len as u64,
            "only the latest reservation can be given back"
        );
        self.tail = reservation.tail_before;
    }

    /// Bytes written and not yet retired by the receiver, as last told.
    pub fn used(&self) -> u64 {
        self.tail - self.head
    }
}

/// What [`RingReceiver::poll`] found.
#[derive(Debug)]
pub enum Polled<'b> {
    /// Nothing new (or a record still landing).
    Empty,
    /// A complete, checked record, decoded from the caller's buffer.
    Record {
        position: u64,
        record: record::Record<'b>,
    },
}

/// The receiving side of one ring (`sender` → this node).
pub struct RingReceiver {
    pub sender: usize,
    inbox: Arc<MemoryRegion>,
    base: u64,
    /// Next position to parse.
    processed: u64,
    /// Everything before this is retired and zeroed.
    retired: u64,
    /// The retired position the sender was last told.
    published: u64,
    /// The last publication failed: publish again even if nothing more
    /// was retired.
    republish: bool,
    /// Processed records, oldest first: (position, len, retired).
    unretired: VecDeque<(u64, u64, bool)>,
    broken: Option<String>,
    /// A record that did not parse: where, and since when.
    suspect: Option<(u64, Instant)>,
}

impl RingReceiver {
    pub fn new(sender: usize, inbox: Arc<MemoryRegion>) -> RingReceiver {
        let retired = inbox_word(&inbox, retired_offset(sender)).load(Ordering::Acquire);
        RingReceiver {
            sender,
            inbox,
            base: ring_offset(sender),
            processed: retired,
            retired,
            published: retired,
            republish: false,
            unretired: VecDeque::new(),
            broken: None,
            suspect: None,
        }
    }

    fn word(&self, position: u64) -> u64 {
        inbox_word(&self.inbox, self.base + position % RING_BYTES).load(Ordering::Acquire)
    }

    /// Why this ring stopped, if a corrupt record stopped it.
    #[cfg(test)]
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Looks for the next record; copies a complete one into `buffer`.
    /// A corrupt record stops the ring for good (reported once as an
    /// error): its length cannot be trusted to find the next one, and
    /// recovery must decide what the sender meant.
    pub fn poll<'b>(&mut self, buffer: &'b mut Vec<u8>) -> Result<Polled<'b>> {
        if self.broken.is_some() {
            return Ok(Polled::Empty);
        }
        loop {
            let word = self.word(self.processed);
            if word == 0 {
                return Ok(Polled::Empty);
            }
            let in_lap = self.processed % RING_BYTES;
            let (kind, len) = match RecordPrefix::decode(word) {
                Ok(decoded) => decoded,
                Err(error) => return self.corrupt(error),
            };
            let len = len as u64;
            if kind == Kind::Pad {
                if in_lap + len != RING_BYTES {
                    return self.corrupt(DecodeError::Invalid {
                        what: "PAD record",
                        why: "does not end at the lap's end",
                    });
                }
                self.unretired.push_back((self.processed, len, true));
                self.processed += len;
                continue;
            }
            if len < OVERHEAD_BYTES as u64 || !len.is_multiple_of(8) || in_lap + len > RING_BYTES {
                return self.corrupt(DecodeError::BadLength {
                    what: "record",
                    len,
                    why: "shorter than its header, not a multiple of 8, or past the lap's end",
                });
            }
            let trailer = self.word(self.processed + len - TRAILER_BYTES as u64);
            if trailer == 0 {
                return Ok(Polled::Empty);
            }
            buffer.resize(len as usize, 0);
            self.inbox.read(self.base + in_lap, buffer)?;
            let position = self.processed;
            let bytes: &'b Vec<u8> = buffer;
            return match record::Record::decode(bytes, position) {
                Ok(record) => {
                    self.unretired.push_back((position, len, false));
                    self.processed += len;
                    self.suspect = None;
                    Ok(Polled::Record { position, record })
                }
                Err(error) => self.corrupt(error),
            };
        }
    }

    /// A record that does not parse may still be landing: soft-RoCE (and
    /// any NIC that DMAs bytewise) can expose a half-written word. Only a
    /// record that stays unreadable for [`CORRUPT_GRACE`] is corrupt.
    fn corrupt<'b>(&mut self, error: DecodeError) -> Result<Polled<'b>> {
        match self.suspect {
            Some((position, since)) if position == self.processed => {
                if since.elapsed() < CORRUPT_GRACE {
                    return Ok(Polled::Empty);
                }
            }
            _ => {
                self.suspect = Some((self.processed, Instant::now()));
                return Ok(Polled::Empty);
            }
        }
        let what = format!(
            "record in the ring from node {} at position {}",
            self.sender, self.processed
        );
        self.broken = Some(format!("{what}: {error}"));
        Err(Error::Corrupt {
            what,
            source: error,
        })
    }

    /// Marks the record at `position` retired, then zeroes and releases
    /// the retired prefix.
    pub fn retire(&mut self, position: u64) {
        // Sorted by position (records are processed in ring order): a
        // binary search, not a scan (with 8 worker threads per node and 2
        // transactions in flight each, many LOCKs wait here for their
        // COMMIT-PRIMARY, and the scan was 4.6% of TATP's time, perf).
        if let Ok(index) = self
            .unretired
            .binary_search_by_key(&position, |entry| entry.0)
        {
            self.unretired[index].2 = true;
        }
        let mut advanced = false;
        while let Some(&(position, len, true)) = self.unretired.front() {
            self.zero(position, len);
            self.retired = position + len;
            self.unretired.pop_front();
            advanced = true;
        }
        if advanced {
            // Persist how far we got, for a restart.
            inbox_word(&self.inbox, retired_offset(self.sender))
                .store(self.retired, Ordering::Release);
        }
    }

    fn zero(&self, position: u64, len: u64) {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut done = 0;
        // Nobody reads these bytes until the sender is told they are free.
        while done < len {
            let chunk = (len - done).min(ZEROS.len() as u64);
            let at = position + done;
            self.inbox
                .write(self.base + at % RING_BYTES, &ZEROS[..chunk as usize])
                .expect("ring bytes in inbox");
            done += chunk;
        }
    }

    /// The retired position to publish, if it moved since the last call.
    pub fn take_publishable(&mut self) -> Option<u64> {
        (self.retired != self.published || self.republish).then(|| {
            self.published = self.retired;
            self.republish = false;
            self.retired
        })
    }

    /// The WRITE that published `head` failed: forget that it was
    /// published, so the next idle round tells the sender again
    /// (regression: a failed publication was never repeated once the ring
    /// went quiet, and its sender waited for that space for ever).
    pub fn publish_failed(&mut self) {
        self.republish = true;
    }

    /// After a restart's recovery has decided every record: zeroes the
    /// whole ring (including any record a dead sender left half-written
    /// past the last complete one) and retires everything up to the last
    /// complete record. Returns that position, where the sender resumes.
    pub fn reset_after_recovery(&mut self) -> u64 {
        self.zero(0, RING_BYTES);
        self.unretired.clear();
        self.retired = self.processed;
        self.published = self.processed;
        self.suspect = None;
        self.broken = None;
        inbox_word(&self.inbox, retired_offset(self.sender)).store(self.retired, Ordering::Release);
        self.processed
    }

    /// A sender rejoined as a new incarnation (FaRM SOSP'15 §5: a
    /// restarted machine joins as a new member): whatever its dead
    /// incarnation left in this ring was decided when it was removed;
    /// zero the ring and start again at position 0, where the new
    /// incarnation's sender starts.
    pub fn reset_for_new_sender(&mut self) {
        self.zero(0, RING_BYTES);
        self.unretired.clear();
        self.processed = 0;
        self.retired = 0;
        self.published = 0;
        self.suspect = None;
        self.broken = None;
        inbox_word(&self.inbox, retired_offset(self.sender)).store(0, Ordering::Release);
    }

    /// Where this ring stands, for a diagnostic: positions processed,
    /// retired and published, and the oldest records not retired yet, as
    /// (position, length, retired).
    pub fn describe(&self) -> String {
        let oldest: Vec<_> = self.unretired.iter().take(4).collect();
        format!(
            "processed {}, retired {}, published {}{}, {} unretired records, oldest {oldest:?}",
            self.processed,
            self.retired,
            self.published,
            if self.republish {
                " (to publish again)"
            } else {
                ""
            },
            self.unretired.len(),
        )
    }

    /// Whether processed records wait to be retired.
    pub fn holds_records(&self) -> bool {
        !self.unretired.is_empty()
    }

    /// Retired bytes the sender has not been told about.
    pub fn unpublished_bytes(&self) -> u64 {
        self.retired - self.published
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::inbox::inbox_bytes;
    use crate::codec::record::{RecordWriter, TRAILER_BYTES};
    use crate::txn_id::TxnId;
    use rdma_transport::shm::{ShmConfig, ShmFabric};
    use rdma_transport::{Access, Backing, Fabric, NodeId};

    /// One node's inbox, with node 0 sending to itself: the test writes
    /// records where an RDMA WRITE would put them.
    fn inbox() -> (tempfile::TempDir, Arc<dyn Fabric>, Arc<MemoryRegion>) {
        let dir = tempfile::tempdir().unwrap();
        let fabric: Arc<dyn Fabric> = Arc::new(
            ShmFabric::open(ShmConfig {
                dir: dir.path().to_path_buf(),
                node: NodeId(0),
            })
            .unwrap(),
        );
        let mr = fabric
            .register(
                Backing::Anonymous {
                    len: inbox_bytes(1),
                },
                Access::ALL,
            )
            .unwrap();
        (dir, fabric, mr)
    }

    /// A TRUNCATE record whose every listed id is `sequence`: a record
    /// overwritten by another would show another id.
    fn append(
        sender: &mut RingSender,
        inbox: &MemoryRegion,
        sequence: u64,
        body_bytes: usize,
        wait: Duration,
    ) -> Result<u64> {
        let mut record = Vec::new();
        let id = TxnId::decode(sequence);
        let mut writer = RecordWriter::new(&mut record, Kind::Truncate, 0, 1, id);
        for _ in 0..1 + body_bytes / 8 {
            writer.truncated(id);
        }
        let reservation = sender.reserve_within(writer.sealed_len(), wait)?;
        record::seal(&mut record, reservation.position).unwrap();
        if let Some((offset, word)) = reservation.pad {
            inbox.write(offset, &word.to_le_bytes()).unwrap();
        }
        inbox.write(reservation.inbox_offset, &record).unwrap();
        Ok(reservation.position)
    }

    /// Consumes one record: returns its sequence number and retires it,
    /// publishing the head as a receiver does.
    fn consume(receiver: &mut RingReceiver, inbox: &MemoryRegion) -> Option<u64> {
        let mut buffer = Vec::new();
        match receiver.poll(&mut buffer).unwrap() {
            Polled::Empty => None,
            Polled::Record { position, record } => {
                let sequence = record.txid.encode();
                assert!(
                    record
                        .truncated()
                        .unwrap()
                        .all(|id| id.encode() == sequence),
                    "record {sequence} was overwritten"
                );
                receiver.retire(position);
                if let Some(head) = receiver.take_publishable() {
                    set_published_head(inbox, 0, head);
                }
                Some(sequence)
            }
        }
    }

    #[test]
    fn full_ring_back_pressures_and_never_overwrites() {
        let (_dir, _fabric, inbox) = inbox();
        let mut sender = RingSender::new(0, inbox.clone(), 0);
        let mut receiver = RingReceiver::new(0, inbox.clone());
        let body = 4000;
        let mut sent = 0u64;
        // Fill the ring until the sender has to wait.
        loop {
            match append(&mut sender, &inbox, sent, body, Duration::from_millis(50)) {
                Ok(_) => sent += 1,
                Err(Error::RingFull { .. }) => break,
                Err(error) => panic!("{error}"),
            }
            assert!(sent < 10_000, "the ring never filled");
        }
        assert!(
            sender.used() <= RING_BYTES,
            "the sender never exceeds the ring"
        );
        // A receiver drains it from another thread while the sender, now
        // blocked, keeps appending: everything arrives, in order, intact.
        let total = sent + 2000;
        let consumer = {
            let inbox = inbox.clone();
            std::thread::spawn(move || {
                let mut next = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                while next < total && Instant::now() < deadline {
                    match consume(&mut receiver, &inbox) {
                        Some(sequence) => {
                            assert_eq!(sequence, next, "records arrive in order");
                            next += 1;
                        }
                        None => std::thread::yield_now(),
                    }
                }
                next
            })
        };
        for sequence in sent..total {
            append(&mut sender, &inbox, sequence, body, Duration::from_secs(30)).unwrap();
        }
        assert_eq!(consumer.join().unwrap(), total);
    }

    #[test]
    fn corrupted_record_is_rejected_and_stops_the_ring() {
        let (_dir, _fabric, inbox) = inbox();
        let mut sender = RingSender::new(0, inbox.clone(), 0);
        let mut receiver = RingReceiver::new(0, inbox.clone());
        let wait = Duration::from_secs(1);
        append(&mut sender, &inbox, 0, 64, wait).unwrap();
        let second = append(&mut sender, &inbox, 1, 64, wait).unwrap();
        append(&mut sender, &inbox, 2, 64, wait).unwrap();
        // Flip one payload byte of the second record, as a bad NIC or a
        // stray write would.
        let at = ring_offset(0) + second % RING_BYTES + 40;
        let mut byte = [0u8];
        inbox.read(at, &mut byte).unwrap();
        inbox.write(at, &[byte[0] ^ 0x10]).unwrap();
        assert_eq!(consume(&mut receiver, &inbox), Some(0));
        let mut buffer = Vec::new();
        // It may still be landing, for a grace period; then it is corrupt.
        let started = Instant::now();
        let verdict = loop {
            match receiver.poll(&mut buffer) {
                Ok(Polled::Empty) if started.elapsed() < CORRUPT_GRACE * 10 => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(Polled::Empty) => break Ok(()),
                Ok(Polled::Record { .. }) => panic!("the corrupt record was accepted"),
                Err(error) => break Err(error),
            }
        };
        assert!(
            matches!(verdict, Err(Error::Corrupt { .. })),
            "the corrupt record is rejected: {verdict:?}"
        );
        assert!(
            started.elapsed() >= CORRUPT_GRACE,
            "a record gets its grace period"
        );
        assert!(receiver.broken().is_some());
        assert!(
            matches!(receiver.poll(&mut buffer).unwrap(), Polled::Empty),
            "nothing after it is applied"
        );
    }

    #[test]
    fn incomplete_record_waits_for_its_trailer() {
        let (_dir, _fabric, inbox) = inbox();
        let mut sender = RingSender::new(0, inbox.clone(), 0);
        let mut receiver = RingReceiver::new(0, inbox.clone());
        let mut record = Vec::new();
        let id = TxnId::decode(9);
        let mut writer = RecordWriter::new(&mut record, Kind::Truncate, 0, 1, id);
        writer.truncated(id);
        let reservation = sender.reserve(writer.sealed_len()).unwrap();
        record::seal(&mut record, reservation.position).unwrap();
        // Everything but the trailer has landed.
        inbox
            .write(
                reservation.inbox_offset,
                &record[..record.len() - TRAILER_BYTES],
            )
            .unwrap();
        let mut buffer = Vec::new();
        assert!(matches!(receiver.poll(&mut buffer).unwrap(), Polled::Empty));
        inbox
            .write(
                reservation.inbox_offset + (record.len() - TRAILER_BYTES) as u64,
                &record[record.len() - TRAILER_BYTES..],
            )
            .unwrap();
        assert_eq!(consume(&mut receiver, &inbox), Some(9));
    }
}
