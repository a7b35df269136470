//! A transactional hash table over farm objects, for the key-value
//! workloads (TATP, SmallBank, YCSB): `get`, `put` and `delete` run inside
//! the caller's transaction, so they commit or abort with everything else
//! it did.
//!
//! Layout: a fixed array of bucket objects chosen when the table is made,
//! spread over the given nodes' regions. A bucket holds up to
//! [`BUCKET_SLOTS`] (key, value address) pairs and the address of an
//! overflow bucket:
//!
//! ```text
//! bucket: | next (Addr, 0 = none) | count | key 0 | value 0 | ... | key 7 | value 7 |
//!           8 B                     8 B     8 B     8 B             (144 bytes)
//! ```
//!
//! Values are objects of their own. A lookup costs two READs (bucket, then
//! value) where FaRM's associative hopscotch table inlines small values in
//! its buckets and mostly needs one: simpler, and the first thing to change
//! when a benchmark says lookups dominate.

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use smallvec::SmallVec;

use crate::cluster::Node;
use crate::codec::DecodeError;
use crate::error::TxnError;
use crate::error::{Error, Result};
use crate::header::Addr;
use crate::outcome::AbortReason;
use crate::txn::Txn;

pub const BUCKET_SLOTS: usize = 8;

/// One (key, value address) pair of a bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
struct BucketSlot {
    key: u64,
    value: u64,
}

/// A bucket object's bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct BucketBytes {
    next: u64,
    count: u64,
    slots: [BucketSlot; BUCKET_SLOTS],
}

const BUCKET_BYTES: usize = size_of::<BucketBytes>();
const _: () = assert!(BUCKET_BYTES == 144);
const _: () = assert!(offset_of!(BucketBytes, slots) == 16);

/// A handle on a table: the addresses of its buckets. Cheap to clone; send
/// [`HashTable::bucket_addrs`] to another process to open the same table.
#[derive(Clone, Debug)]
pub struct HashTable {
    buckets: Arc<Vec<Addr>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Bucket {
    next: u64,
    /// Inline: decoding a bucket allocates nothing.
    entries: SmallVec<[(u64, Addr); BUCKET_SLOTS]>,
}

impl Bucket {
    fn decode(bytes: &[u8]) -> Result<Bucket, DecodeError> {
        if bytes.len() != BUCKET_BYTES {
            return Err(DecodeError::BadLength {
                what: "hash bucket",
                len: bytes.len() as u64,
                why: "not the size of a bucket",
            });
        }
        let raw: BucketBytes = bytemuck::pod_read_unaligned(bytes);
        let count = usize::try_from(raw.count)
            .ok()
            .filter(|count| *count <= BUCKET_SLOTS)
            .ok_or(DecodeError::BadLength {
                what: "hash bucket",
                len: raw.count,
                why: "more entries than slots",
            })?;
        Ok(Bucket {
            next: raw.next,
            entries: raw.slots[..count]
                .iter()
                .map(|slot| (slot.key, Addr(slot.value)))
                .collect(),
        })
    }

    /// The bucket's bytes, on the stack (a `Vec` per bucket written was
    /// an allocation per `put`).
    fn encode(&self) -> [u8; BUCKET_BYTES] {
        assert!(self.entries.len() <= BUCKET_SLOTS);
        let mut raw = BucketBytes::zeroed();
        raw.next = self.next;
        raw.count = self.entries.len() as u64;
        for (slot, (key, addr)) in raw.slots.iter_mut().zip(&self.entries) {
            *slot = BucketSlot {
                key: *key,
                value: addr.0,
            };
        }
        let mut bytes = [0u8; BUCKET_BYTES];
        bytes.copy_from_slice(bytemuck::bytes_of(&raw));
        bytes
    }
}

/// A bucket read in `txn`; one that does not decode is corrupt.
fn read_bucket(txn: &mut Txn, at: Addr) -> Result<Bucket, TxnError> {
    let bytes = through_bucket(txn.read(at))?;
    Bucket::decode(&bytes).map_err(|source| {
        TxnError::Failed(Error::Corrupt {
            what: format!("hash bucket at {at}"),
            source,
        })
    })
}

/// A value's address came from a bucket this transaction read. If the
/// value was freed since (a concurrent delete or resize), the bucket read
/// is stale too and would fail validation: that is a conflict, not the
/// caller's stale address. (Regression: TATP's concurrent inserts and
/// deletes of call-forwarding rows stopped `farm bench` with an error.)
fn through_bucket<T>(result: Result<T, TxnError>) -> Result<T, TxnError> {
    match result {
        Err(TxnError::Failed(Error::StaleAddress { .. })) => {
            Err(TxnError::Conflict(AbortReason::Validation))
        }
        other => other,
    }
}

/// splitmix64's finalizer: spreads sequential keys over the buckets.
fn mix(key: u64) -> u64 {
    let mut z = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl HashTable {
    /// Makes a table of `buckets` buckets, round-robin over `nodes`' regions.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no nodes or no buckets; the engine's
    /// while allocating them.
    pub fn create(nodes: &[&Node], buckets: usize) -> Result<HashTable> {
        if nodes.is_empty() || buckets == 0 {
            return Err(Error::InvalidArgument {
                what: "a hash table",
                why: format!("needs nodes and buckets, got {} and {buckets}", nodes.len()),
            });
        }
        let shares = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| HashTable::create_share(node, index, nodes.len(), buckets))
            .collect::<Result<Vec<_>>>()?;
        HashTable::from_shares(&shares, buckets)
    }

    /// One node's share of a table spread over `of` nodes: it allocates
    /// buckets `index`, `index + of`, … in its own regions. Processes of a
    /// multi-process cluster each make their share and swap them (see
    /// [`HashTable::from_shares`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `index < of` and `buckets > 0`;
    /// the engine's while allocating.
    pub fn create_share(node: &Node, index: usize, of: usize, buckets: usize) -> Result<Vec<Addr>> {
        // Empty buckets allocated per transaction: each is a 64-byte object,
        // so a COMMIT-BACKUP of 256 stays well under a record's limit.
        const BUCKETS_PER_CREATE: usize = 256;
        if index >= of || buckets == 0 {
            return Err(Error::InvalidArgument {
                what: "a hash table share",
                why: format!("share {index} of {of}, {buckets} buckets"),
            });
        }
        let empty = Bucket::default().encode();
        let mine: Vec<usize> = (index..buckets).step_by(of).collect();
        let mut addrs = Vec::with_capacity(mine.len());
        for chunk in mine.chunks(BUCKETS_PER_CREATE) {
            addrs.extend(node.run(|txn| {
                chunk
                    .iter()
                    .map(|_| txn.alloc(&empty))
                    .collect::<Result<Vec<_>, _>>()
            })?);
        }
        Ok(addrs)
    }

    /// Puts the shares of [`HashTable::create_share`] (in node order)
    /// together into the table.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the shares do not hold `buckets`
    /// buckets as [`HashTable::create_share`] spreads them (they came from
    /// other processes).
    pub fn from_shares(shares: &[Vec<Addr>], buckets: usize) -> Result<HashTable> {
        let of = shares.len();
        let addrs = (0..buckets)
            .map(|b| {
                shares
                    .get(b % of.max(1))
                    .and_then(|share| share.get(b / of.max(1)))
                    .copied()
            })
            .collect::<Option<Vec<Addr>>>()
            .ok_or_else(|| Error::InvalidArgument {
                what: "hash table shares",
                why: format!("{of} shares do not hold {buckets} buckets"),
            })?;
        HashTable::from_bucket_addrs(addrs)
    }

    /// Opens a table made elsewhere.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no buckets.
    pub fn from_bucket_addrs(buckets: Vec<Addr>) -> Result<HashTable> {
        if buckets.is_empty() {
            return Err(Error::InvalidArgument {
                what: "a hash table",
                why: "no buckets".into(),
            });
        }
        Ok(HashTable {
            buckets: Arc::new(buckets),
        })
    }

    pub fn bucket_addrs(&self) -> &[Addr] {
        &self.buckets
    }

    fn home(&self, key: u64) -> Addr {
        self.buckets[self.home_index(key)]
    }

    /// Walks the chain of `key`'s bucket: (bucket address, bucket, slot of
    /// the key if present). Stops at the bucket holding the key, or the last.
    fn find(&self, txn: &mut Txn, key: u64) -> Result<(Addr, Bucket, Option<usize>), TxnError> {
        let mut at = self.home(key);
        loop {
            let bucket = read_bucket(txn, at)?;
            if let Some(slot) = bucket.entries.iter().position(|(k, _)| *k == key) {
                return Ok((at, bucket, Some(slot)));
            }
            if bucket.next == 0 {
                return Ok((at, bucket, None));
            }
            at = Addr(bucket.next);
        }
    }

    /// The address of `key`'s value object, if the key is there: an
    /// application may keep it and read the value directly later (a read
    /// through it after the key is deleted fails with
    /// [`Error::StaleAddress`]).
    ///
    /// # Errors
    /// As [`Txn::read`].
    pub fn value_addr(&self, txn: &mut Txn, key: u64) -> Result<Option<Addr>, TxnError> {
        let (_, bucket, slot) = self.find(txn, key)?;
        Ok(slot.map(|slot| bucket.entries[slot].1))
    }

    pub fn get(&self, txn: &mut Txn, key: u64) -> Result<Option<Vec<u8>>, TxnError> {
        let (_, bucket, slot) = self.find(txn, key)?;
        match slot {
            Some(slot) => Ok(Some(through_bucket(txn.read(bucket.entries[slot].1))?)),
            None => Ok(None),
        }
    }

    /// Inserts or replaces `key`'s value.
    pub fn put(&self, txn: &mut Txn, key: u64, value: &[u8]) -> Result<(), TxnError> {
        let (at, mut bucket, slot) = self.find(txn, key)?;
        if let Some(slot) = slot {
            let old = bucket.entries[slot].1;
            // In place when the value still fits its object's class.
            if crate::region::class_for(value.len())? <= old.class() {
                return through_bucket(txn.write(old, value));
            }
            let new = txn.alloc(value)?;
            through_bucket(txn.free(old))?;
            bucket.entries[slot].1 = new;
            return txn.write(at, &bucket.encode());
        }
        let value_addr = txn.alloc(value)?;
        if bucket.entries.len() < BUCKET_SLOTS {
            bucket.entries.push((key, value_addr));
            return txn.write(at, &bucket.encode());
        }
        // Full: chain a new overflow bucket holding the key.
        let overflow = Bucket {
            next: 0,
            entries: smallvec::smallvec![(key, value_addr)],
        };
        let overflow_addr = txn.alloc(&overflow.encode())?;
        bucket.next = overflow_addr.0;
        txn.write(at, &bucket.encode())
    }

    /// Index of `key`'s home bucket in [`HashTable::bucket_addrs`]: bulk
    /// loaders group keys by it (see [`HashTable::link_many`]).
    pub fn home_index(&self, key: u64) -> usize {
        (mix(key) % self.buckets.len() as u64) as usize
    }

    /// Links values that are already objects to their keys, as many
    /// [`HashTable::put`]s would, but reading and writing each bucket (and
    /// chain) it touches once: `entries` are (key, value address) pairs in
    /// any order. A key already in the table is pointed at its new value
    /// and its old value is freed; a key given twice keeps the last.
    ///
    /// This is the bulk-load path: a loader allocates the values on their
    /// own node (many per transaction), then has each bucket's primary link
    /// the keys of its buckets, so that each bucket is written once instead
    /// of once per key and no two loaders write the same bucket. With
    /// TATP's 2–3 keys per bucket that is about a third of the bucket
    /// traffic, and no bucket read per key.
    ///
    /// # Errors
    /// As [`Txn::read`], [`Txn::write`], [`Txn::alloc`] and [`Txn::free`];
    /// [`Error::TransactionTooLarge`](crate::Error::TransactionTooLarge) at
    /// commit when the buckets touched do not fit one transaction (give
    /// fewer entries).
    pub fn link_many(&self, txn: &mut Txn, entries: &[(u64, Addr)]) -> Result<(), TxnError> {
        let mut by_home: Vec<(usize, u64, Addr)> = entries
            .iter()
            .map(|&(key, value)| (self.home_index(key), key, value))
            .collect();
        // Stable: a key given twice keeps its order, so the last one wins.
        by_home.sort_by_key(|&(home, _, _)| home);
        for group in by_home.chunk_by(|a, b| a.0 == b.0) {
            self.link_group(txn, self.buckets[group[0].0], group)?;
        }
        Ok(())
    }

    /// [`HashTable::link_many`] for keys of one home bucket at `home`.
    fn link_group(
        &self,
        txn: &mut Txn,
        home: Addr,
        group: &[(usize, u64, Addr)],
    ) -> Result<(), TxnError> {
        // The chain as it is: (address, bucket, changed); new overflow
        // buckets get their address when they are allocated, at the end.
        let mut chain: Vec<(Option<Addr>, Bucket, bool)> = Vec::new();
        let mut at = home;
        loop {
            let bucket = read_bucket(txn, at)?;
            let next = bucket.next;
            chain.push((Some(at), bucket, false));
            if next == 0 {
                break;
            }
            at = Addr(next);
        }
        for &(_, key, value) in group {
            let found = chain.iter_mut().find_map(|(_, bucket, changed)| {
                let slot = bucket.entries.iter().position(|(k, _)| *k == key)?;
                Some((bucket, changed, slot))
            });
            if let Some((bucket, changed, slot)) = found {
                let old = std::mem::replace(&mut bucket.entries[slot].1, value);
                if old != value {
                    *changed = true;
                    through_bucket(txn.free(old))?;
                }
                continue;
            }
            let (_, last, changed) = chain.last_mut().expect("a chain has its home bucket");
            if last.entries.len() < BUCKET_SLOTS {
                last.entries.push((key, value));
                *changed = true;
            } else {
                chain.push((
                    None,
                    Bucket {
                        next: 0,
                        entries: smallvec::smallvec![(key, value)],
                    },
                    true,
                ));
            }
        }
        // From the end: a new bucket's address is known before the bucket
        // that points at it is written.
        let mut following = 0u64;
        for (addr, bucket, changed) in chain.iter_mut().rev() {
            if bucket.next != following {
                bucket.next = following;
                *changed = true;
            }
            match addr {
                None => following = txn.alloc(&bucket.encode())?.0,
                Some(addr) => {
                    if *changed {
                        txn.write(*addr, &bucket.encode())?;
                    }
                    following = addr.0;
                }
            }
        }
        Ok(())
    }

    /// Removes `key`; true if it was there.
    pub fn delete(&self, txn: &mut Txn, key: u64) -> Result<bool, TxnError> {
        let (at, mut bucket, slot) = self.find(txn, key)?;
        let Some(slot) = slot else { return Ok(false) };
        let (_, value) = bucket.entries.swap_remove(slot);
        through_bucket(txn.free(value))?;
        txn.write(at, &bucket.encode())?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Fuzz target: a bucket read from a region is bytes anyone may
        /// have written; decoding never panics.
        #[test]
        fn buckets_of_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = Bucket::decode(&bytes);
            if bytes.len() >= BUCKET_BYTES {
                if let Ok(bucket) = Bucket::decode(&bytes[..BUCKET_BYTES]) {
                    proptest::prop_assert!(bucket.entries.len() <= BUCKET_SLOTS);
                }
            }
        }
    }

    #[test]
    fn bucket_round_trips() {
        let bucket = Bucket {
            next: 77,
            entries: (0..BUCKET_SLOTS as u64)
                .map(|k| (k * 3, Addr(k + 1000)))
                .collect(),
        };
        assert_eq!(Bucket::decode(&bucket.encode()).unwrap(), bucket);
    }
}
