//! A transactional hash table over farm objects, for the key-value
//! workloads (TATP, SmallBank, YCSB): `get`, `put` and `delete` run inside
//! the caller's transaction, so they commit or abort with everything else
//! it did.
//!
//! Layout: a fixed array of bucket objects chosen when the table is made,
//! spread over the given nodes' regions. A bucket is one 256-byte object
//! (232 bytes of payload): the address of an overflow bucket, the inline
//! capacity `I` its slots were made with and the *spilled* mark, and as
//! many slots as fit. A slot holds a key and its value, inline when the
//! value has at most `I` bytes, else the address of an object of its own:
//!
//! ```text
//! bucket: | next (Addr, 0 = none) | S I | slot 0 | slot 1 | ... | (unused) |
//!           8 B                     1 B    9 + I bytes each: (232 - 9) / (9 + I) slots
//!                                   S: the top bit, spilled; I: the low 7 bits
//! slot:   | key | tag | data (I bytes)                                     |
//!           8 B   1 B   tag 0: empty; 1..=I + 1: inline, length tag - 1;
//!                       0xFF: in an object, data[..8] = its Addr
//! ```
//!
//! `I` is the table's choice ([`HashTable::create_with`]; 8 to 64 bytes,
//! [`INLINE_VALUE_BYTES`] by default): 40 gives 4 slots (TATP's 38-byte
//! subscriber rows), 8 gives 13 (its 8-byte index entries). Each bucket
//! says its own `I`, so a table handle needs no more than its bucket
//! addresses and overflow buckets copy their home bucket's.
//!
//! Neighbourhoods, after FaRM's hash table (NSDI'14 §5: chained
//! associative hopscotch hashing, small values inline): a bucket's
//! *neighbour* is the table's bucket whose object lies right after it in
//! the same region (each node allocates its share of the buckets one after
//! another, so all but one bucket per share have one). A key lives in its
//! home bucket; when the home is full, in the home's neighbour; when both
//! are full, the neighbour first tries to move one of its own keys on to
//! its own neighbour (hopscotch's displacement), and only then does the key
//! go to the home's overflow chain. The rules the layout keeps: **a
//! bucket is marked spilled exactly while its neighbour holds some of its
//! keys, and only while it is full** (a delete from a spilled bucket takes
//! back into it one of its keys from the neighbour, and so on along the
//! run of neighbours).
//!
//! Where this differs from FaRM, which reads a key's whole neighbourhood
//! with every lookup: the spilled mark lets a lookup stop at the home when
//! the home has not spilled, so most lookups read 256 bytes and keep one
//! bucket in the read set even for an absent key; a home this process has
//! seen spilled is read together with its neighbour, with one READ of 512
//! bytes (`Txn::read_adjacent_with`: each bucket is an object with its own
//! version, both checked). A lookup keeps in the transaction's read set
//! only what its answer depends on: the bucket that holds the key; for an
//! absent key the home, and the neighbour too when the home has spilled.
//! So a lookup that finds its key leaves one object in the read set, and a
//! read-only transaction of one lookup still commits without validation.
//! What the bytes cost: an earlier form of this table read both buckets
//! for every home seen full (a quarter of TATP's lookups): TATP, scale
//! 0.2, one process over soft-RoCE in the VM, three interleaved runs each,
//! 8,368 / 7,907 / 8,084 tx/s against 8,909 / 8,018 / 8,611 with the home
//! read alone (6% less at the median); on shm within the noise.
//!
//! A lookup of a key whose value is inline costs one READ when the key is
//! in its home, and in its neighbour when this process has seen the home
//! spilled; the table before inline values always took two (bucket, then
//! value object). Larger values, and keys in an overflow chain, cost one
//! more READ each. `tests/hash_table.rs::small_values_take_one_read_a_lookup`
//! and `::a_crowded_table_answers_in_about_one_read_a_lookup` measure
//! READs per lookup (at 83% of the slots: 1.047 with neighbourhoods, 1.140
//! with chains alone).
//!
//! The cost of inline values is false sharing: writing one key's value
//! writes its bucket, so it conflicts with transactions that read other
//! keys of that bucket (FaRM's trade too).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::cluster::Node;
use crate::codec::DecodeError;
use crate::error::TxnError;
use crate::error::{Error, Result};
use crate::header::Addr;
use crate::outcome::AbortReason;
use crate::txn::{Keep, Txn};

/// The inline capacity of [`HashTable::create`]'s buckets (bytes): 4
/// slots a bucket.
pub const INLINE_VALUE_BYTES: usize = 40;
/// The smallest inline capacity: a slot's data holds an address.
pub const INLINE_VALUE_BYTES_MIN: usize = 8;
/// The largest inline capacity (3 slots a bucket).
pub const INLINE_VALUE_BYTES_MAX: usize = 64;

/// A bucket's payload: a 256-byte object to the byte.
const BUCKET_BYTES: usize = 232;
const _: () = assert!(
    BUCKET_BYTES + crate::limits::OBJECT_OVERHEAD_BYTES as usize
        == crate::limits::CLASS_BYTES[2] as usize
);
/// `next` and `I`.
const BUCKET_HEADER_BYTES: usize = 9;
/// A slot's key and tag.
const SLOT_HEADER_BYTES: usize = 9;
const TAG_EMPTY: u8 = 0;
/// The tag of a slot whose value is an object of its own.
const TAG_OBJECT: u8 = 0xFF;
/// The bit of a bucket's `I` byte that says it has spilled keys into its
/// neighbour ([`Bucket::spilled`]; `I` is at most 64).
const SPILLED: u8 = 0x80;

/// Slots of a bucket whose inline capacity is `inline` bytes.
pub const fn bucket_slots(inline: usize) -> usize {
    (BUCKET_BYTES - BUCKET_HEADER_BYTES) / (SLOT_HEADER_BYTES + inline)
}

const _: () = assert!(bucket_slots(INLINE_VALUE_BYTES) == 4);
const _: () = assert!(bucket_slots(INLINE_VALUE_BYTES_MIN) == 13);

/// A value as a bucket holds it: its bytes, or its object's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value<'a> {
    Inline(&'a [u8]),
    Object(Addr),
}

/// The image of a bucket object, decoded in place: lookups read slots
/// straight out of it and writes change it, so a `put` allocates nothing
/// for its bucket. `B` is an owned image or one borrowed from a read
/// buffer ([`Bucket::view`]: a `get` copies out only the value it finds,
/// where moving a decoded 232-byte bucket through `Result`s was most of
/// TATP's `memmove`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bucket<B = [u8; BUCKET_BYTES]> {
    bytes: B,
}

fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl<'a> Bucket<&'a [u8; BUCKET_BYTES]> {
    /// A bucket's bytes, checked: its inline capacity in range and every
    /// slot's tag empty, an inline length that fits, or an object.
    fn view(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let bytes: &[u8; BUCKET_BYTES] = bytes.try_into().map_err(|_| DecodeError::BadLength {
            what: "hash bucket",
            len: bytes.len() as u64,
            why: "not the size of a bucket",
        })?;
        let bucket = Bucket { bytes };
        let inline = bucket.inline();
        if !(INLINE_VALUE_BYTES_MIN..=INLINE_VALUE_BYTES_MAX).contains(&inline) {
            return Err(DecodeError::BadLength {
                what: "hash bucket's inline capacity",
                len: inline as u64,
                why: "not 8 to 64 bytes",
            });
        }
        for slot in bucket.slot_chunks() {
            let tag = slot[8];
            if tag != TAG_EMPTY && tag != TAG_OBJECT && usize::from(tag) > inline + 1 {
                return Err(DecodeError::BadLength {
                    what: "hash bucket slot's tag",
                    len: u64::from(tag),
                    why: "neither empty, an inline length nor an object",
                });
            }
        }
        Ok(bucket)
    }

    /// What the bucket says of `key`, the value copied out.
    fn look_up(&self, key: u64) -> Found {
        match self.find(key) {
            Some(slot) => self.found_at(slot),
            None if self.next() != 0 => Found::Next(Addr(self.next())),
            None => Found::Absent,
        }
    }

    /// The value in (used) slot `slot`, copied out.
    fn found_at(&self, slot: usize) -> Found {
        match self.value(slot) {
            Value::Inline(bytes) => Found::Inline(bytes.to_vec()),
            Value::Object(addr) => Found::Object(addr),
        }
    }
}

/// What a bucket says of a key ([`Bucket::look_up`]).
enum Found {
    Inline(Vec<u8>),
    Object(Addr),
    /// Not here: look in the overflow bucket.
    Next(Addr),
    Absent,
}

impl<B: std::borrow::Borrow<[u8; BUCKET_BYTES]>> Bucket<B> {
    fn raw(&self) -> &[u8; BUCKET_BYTES] {
        self.bytes.borrow()
    }

    fn inline(&self) -> usize {
        usize::from(self.raw()[8] & !SPILLED)
    }

    /// Whether some of this bucket's own keys (it is their home) may be
    /// in its neighbour: set when one goes there, cleared when the last
    /// comes back (see the module docs).
    fn spilled(&self) -> bool {
        self.raw()[8] & SPILLED != 0
    }

    fn slots(&self) -> usize {
        bucket_slots(self.inline())
    }

    fn next(&self) -> u64 {
        word(self.raw(), 0)
    }

    /// Where slot `slot` starts.
    fn at(&self, slot: usize) -> usize {
        BUCKET_HEADER_BYTES + slot * (SLOT_HEADER_BYTES + self.inline())
    }

    fn tag(&self, slot: usize) -> u8 {
        self.raw()[self.at(slot) + 8]
    }

    /// The slots' bytes, one chunk a slot (what lookups scan: a chunk
    /// walk costs no multiply or bounds check per slot).
    fn slot_chunks(&self) -> std::slice::ChunksExact<'_, u8> {
        let stride = SLOT_HEADER_BYTES + self.inline();
        self.raw()[BUCKET_HEADER_BYTES..BUCKET_HEADER_BYTES + self.slots() * stride]
            .chunks_exact(stride)
    }

    /// The key in (used) slot `slot`.
    fn key(&self, slot: usize) -> u64 {
        word(self.raw(), self.at(slot))
    }

    /// The slot holding `key`.
    fn find(&self, key: u64) -> Option<usize> {
        let key = key.to_le_bytes();
        self.slot_chunks()
            .position(|slot| slot[8] != TAG_EMPTY && slot[..8] == key)
    }

    /// An empty slot.
    fn vacant(&self) -> Option<usize> {
        self.slot_chunks().position(|slot| slot[8] == TAG_EMPTY)
    }

    /// The value in (used) slot `slot`.
    fn value(&self, slot: usize) -> Value<'_> {
        let at = self.at(slot) + SLOT_HEADER_BYTES;
        match self.tag(slot) {
            TAG_OBJECT => Value::Object(Addr(word(self.raw(), at))),
            tag => Value::Inline(&self.raw()[at..at + usize::from(tag) - 1]),
        }
    }

    /// Used slots.
    #[cfg(test)]
    fn len(&self) -> usize {
        (0..self.slots())
            .filter(|&slot| self.tag(slot) != TAG_EMPTY)
            .count()
    }
}

impl Bucket {
    /// An empty bucket whose slots hold `inline` bytes inline.
    fn empty(inline: usize) -> Bucket {
        debug_assert!((INLINE_VALUE_BYTES_MIN..=INLINE_VALUE_BYTES_MAX).contains(&inline));
        let mut bytes = [0u8; BUCKET_BYTES];
        bytes[8] = inline as u8;
        Bucket { bytes }
    }

    /// An owned copy of a checked bucket ([`Bucket::view`]).
    fn decode(bytes: &[u8]) -> Result<Bucket, DecodeError> {
        Ok(Bucket {
            bytes: *Bucket::view(bytes)?.bytes,
        })
    }

    fn set_next(&mut self, next: u64) {
        self.bytes[..8].copy_from_slice(&next.to_le_bytes());
    }

    fn set_spilled(&mut self, spilled: bool) {
        if spilled {
            self.bytes[8] |= SPILLED;
        } else {
            self.bytes[8] &= !SPILLED;
        }
    }

    /// A slot of this bucket's neighbour (`neighbour`, bucket number
    /// `index`'s) that holds a key whose home is bucket `index`.
    fn own_key_in(neighbour: &Bucket, table: &HashTable, index: usize) -> Option<usize> {
        (0..neighbour.slots()).find(|&slot| {
            neighbour.tag(slot) != TAG_EMPTY && table.home_index(neighbour.key(slot)) == index
        })
    }

    /// Puts `key` and `value` in slot `slot`; an inline value must fit.
    fn set(&mut self, slot: usize, key: u64, value: Value<'_>) {
        let (at, inline) = (self.at(slot), self.inline());
        self.bytes[at..at + 8].copy_from_slice(&key.to_le_bytes());
        let data = &mut self.bytes[at + SLOT_HEADER_BYTES..at + SLOT_HEADER_BYTES + inline];
        data.fill(0);
        self.bytes[at + 8] = match value {
            Value::Inline(bytes) => {
                assert!(bytes.len() <= inline, "an inline value fits its slot");
                self.bytes[at + SLOT_HEADER_BYTES..][..bytes.len()].copy_from_slice(bytes);
                bytes.len() as u8 + 1
            }
            Value::Object(addr) => {
                self.bytes[at + SLOT_HEADER_BYTES..][..8].copy_from_slice(&addr.0.to_le_bytes());
                TAG_OBJECT
            }
        };
    }

    fn clear(&mut self, slot: usize) {
        let at = self.at(slot);
        self.bytes[at + 8] = TAG_EMPTY;
    }
}

/// A value on its way into a bucket: bytes not placed yet, or an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Incoming<'a> {
    Bytes(&'a [u8]),
    Object(Addr),
}

impl<'a> Incoming<'a> {
    /// Where the value goes in `bucket`: inline if it fits, else an
    /// object `txn` allocates.
    fn place(self, txn: &mut Txn, bucket: &Bucket) -> Result<Value<'a>, TxnError> {
        match self {
            Incoming::Bytes(bytes) if bytes.len() <= bucket.inline() => Ok(Value::Inline(bytes)),
            Incoming::Bytes(bytes) => Ok(Value::Object(txn.alloc(bytes)?)),
            Incoming::Object(addr) => Ok(Value::Object(addr)),
        }
    }
}

/// Gives `key` (in `bucket`'s slot `slot`) the value `new`: an old value
/// object is written in place while the new bytes fit its class (so a
/// kept [`HashTable::value_addr`] stays good), else freed. True when the
/// bucket changed and must be written.
fn replace(
    txn: &mut Txn,
    bucket: &mut Bucket,
    slot: usize,
    key: u64,
    new: Incoming<'_>,
) -> Result<bool, TxnError> {
    let old = bucket.value(slot);
    if let Value::Object(old) = old {
        match new {
            Incoming::Object(addr) if addr == old => return Ok(false),
            Incoming::Bytes(bytes) if crate::region::class_for(bytes.len())? <= old.class() => {
                through_bucket(txn.write(old, bytes))?;
                return Ok(false);
            }
            _ => {}
        }
    }
    let placed = new.place(txn, bucket)?;
    if let Value::Object(old) = old {
        through_bucket(txn.free(old))?;
    }
    bucket.set(slot, key, placed);
    Ok(true)
}

/// A handle on a table: the addresses of its buckets. Cheap to clone; send
/// [`HashTable::bucket_addrs`] to another process to open the same table.
#[derive(Clone, Debug)]
pub struct HashTable {
    buckets: Arc<Vec<Addr>>,
    /// For each bucket, the index of its neighbour: the table's bucket
    /// whose object lies right after it in the same region
    /// ([`NO_NEIGHBOUR`] if none does).
    neighbours: Arc<Vec<u32>>,
    /// One bit a bucket, shared by this handle's clones: set when this
    /// process last saw the bucket spilled ([`Bucket::spilled`]). A lookup
    /// reads the home and its neighbour together (512 bytes) only for a
    /// home seen spilled, and the home alone (256 bytes) otherwise. A
    /// stale bit only changes how much one READ carries, never what a
    /// lookup answers.
    seen_spilled: Arc<Vec<AtomicU64>>,
}

/// A bucket without a neighbour ([`HashTable::neighbours`]).
const NO_NEIGHBOUR: u32 = u32::MAX;

/// Which of `buckets` lie right after another of them in the same region:
/// for each, its neighbour's index or [`NO_NEIGHBOUR`].
fn neighbours_of(buckets: &[Addr]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..buckets.len() as u32).collect();
    order.sort_unstable_by_key(|&index| {
        let addr = buckets[index as usize];
        (addr.region(), addr.offset())
    });
    let mut neighbours = vec![NO_NEIGHBOUR; buckets.len()];
    for pair in order.windows(2) {
        let (one, two) = (buckets[pair[0] as usize], buckets[pair[1] as usize]);
        if one.region() == two.region()
            && one.class() == two.class()
            && u64::from(two.offset())
                == u64::from(one.offset()) + u64::from(crate::region::class_bytes(one.class()))
        {
            neighbours[pair[0] as usize] = pair[1];
        }
    }
    neighbours
}

/// Removes the key in `bucket`'s slot `slot`, freeing its value object if
/// it has one.
fn remove(txn: &mut Txn, bucket: &mut Bucket, slot: usize) -> Result<(), TxnError> {
    if let Value::Object(value) = bucket.value(slot) {
        through_bucket(txn.free(value))?;
    }
    bucket.clear(slot);
    Ok(())
}

/// A bucket read in `txn`; one that does not decode is corrupt.
fn read_bucket(txn: &mut Txn, at: Addr) -> Result<Bucket, TxnError> {
    through_bucket(txn.read_with(at, Bucket::decode))?.map_err(|source| corrupt(at, source))
}

/// What `at`'s bucket says of `key`, read in `txn` without copying the
/// bucket.
fn look_up(txn: &mut Txn, at: Addr, key: u64) -> Result<Found, TxnError> {
    through_bucket(txn.read_with(at, |bytes| {
        Bucket::view(bytes).map(|bucket| bucket.look_up(key))
    }))?
    .map_err(|source| corrupt(at, source))
}

fn corrupt(at: Addr, source: DecodeError) -> TxnError {
    TxnError::Failed(Error::Corrupt {
        what: format!("hash bucket at {at}"),
        source,
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

/// The values of `lookups` (a table and a key each, tables may differ), in
/// their order, each as [`HashTable::get`] gives it, but with the home
/// buckets of all keys read in one round trip ([`Txn::read_many_with`]) and
/// then the values kept as objects of their own in one more; only a key
/// not in its home bucket reads its home's neighbour (when the home is
/// full) and walks its chain alone. For lookups that
/// do not depend on each other: TATP's get-new-destination reads a special
/// facility and its call-forwarding rows, one round trip instead of up to
/// four.
///
/// # Errors
/// As [`HashTable::get`].
pub fn get_many(
    txn: &mut Txn,
    lookups: &[(&HashTable, u64)],
) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
    let homes: SmallVec<[Addr; 8]> = lookups
        .iter()
        .map(|(table, key)| table.home(*key))
        .collect();
    // What each home says, and whether it has spilled (then the key may be
    // in the home's neighbour).
    type HomeSays = Option<Result<(Found, bool), DecodeError>>;
    let mut found: SmallVec<[HomeSays; 8]> = lookups.iter().map(|_| None).collect();
    through_bucket(txn.read_many_with(&homes, |index, bytes| {
        found[index] = Some(
            Bucket::view(bytes).map(|bucket| (bucket.look_up(lookups[index].1), bucket.spilled())),
        );
    }))?;
    let mut values: Vec<Option<Vec<u8>>> = Vec::with_capacity(lookups.len());
    // (index in `lookups`, address of its value object)
    let mut objects: SmallVec<[(usize, Addr); 8]> = SmallVec::new();
    for (index, (table, key)) in lookups.iter().enumerate() {
        let (mut found, spilled) = found[index]
            .take()
            .expect("read_many_with hands over every bucket")
            .map_err(|source| corrupt(homes[index], source))?;
        table.saw(table.home_index(*key), spilled);
        if spilled && matches!(found, Found::Absent | Found::Next(_)) {
            // A spilled home: the key may have gone to the neighbour,
            // read alone (one more READ).
            if let Some(next) = table.neighbour(table.home_index(*key)) {
                if let Some(there) = HashTable::look_in_neighbour(txn, table.buckets[next], *key)? {
                    found = there;
                }
            }
        }
        values.push(match found {
            Found::Inline(value) => Some(value),
            Found::Absent => None,
            Found::Object(addr) => {
                objects.push((index, addr));
                None
            }
            Found::Next(next) => table.get_from(txn, next, *key)?,
        });
    }
    if !objects.is_empty() {
        let addrs: SmallVec<[Addr; 8]> = objects.iter().map(|(_, addr)| *addr).collect();
        through_bucket(txn.read_many_with(&addrs, |at, bytes| {
            values[objects[at].0] = Some(bytes.to_vec());
        }))?;
    }
    Ok(values)
}

impl HashTable {
    /// Makes a table of `buckets` buckets, round-robin over `nodes`'
    /// regions, that holds values of up to [`INLINE_VALUE_BYTES`] inline.
    ///
    /// # Errors
    /// As [`HashTable::create_with`].
    pub fn create(nodes: &[&Node], buckets: usize) -> Result<HashTable> {
        HashTable::create_with(nodes, buckets, INLINE_VALUE_BYTES)
    }

    /// Makes a table of `buckets` buckets, round-robin over `nodes`'
    /// regions, whose buckets hold values of up to `inline` bytes inline
    /// ([`INLINE_VALUE_BYTES_MIN`] to [`INLINE_VALUE_BYTES_MAX`]; a bucket
    /// has [`bucket_slots`]`(inline)` slots). Pick the size of the table's
    /// usual value: a lookup of a larger one costs a second READ.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no nodes, no buckets or `inline` out
    /// of range; the engine's while allocating them.
    pub fn create_with(nodes: &[&Node], buckets: usize, inline: usize) -> Result<HashTable> {
        if nodes.is_empty() || buckets == 0 {
            return Err(Error::InvalidArgument {
                what: "a hash table",
                why: format!("needs nodes and buckets, got {} and {buckets}", nodes.len()),
            });
        }
        let shares = nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                HashTable::create_share_with(node, index, nodes.len(), buckets, inline)
            })
            .collect::<Result<Vec<_>>>()?;
        HashTable::from_shares(&shares, buckets)
    }

    /// One node's share of a table spread over `of` nodes, with
    /// [`INLINE_VALUE_BYTES`] inline: see [`HashTable::create_share_with`].
    ///
    /// # Errors
    /// As [`HashTable::create_share_with`].
    pub fn create_share(node: &Node, index: usize, of: usize, buckets: usize) -> Result<Vec<Addr>> {
        HashTable::create_share_with(node, index, of, buckets, INLINE_VALUE_BYTES)
    }

    /// One node's share of a table spread over `of` nodes: it allocates
    /// buckets `index`, `index + of`, … in its own regions, each holding
    /// values of up to `inline` bytes inline. Processes of a multi-process
    /// cluster each make their share and swap them (see
    /// [`HashTable::from_shares`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `index < of`, `buckets > 0` and
    /// `inline` is in [`INLINE_VALUE_BYTES_MIN`]..=[`INLINE_VALUE_BYTES_MAX`];
    /// the engine's while allocating.
    pub fn create_share_with(
        node: &Node,
        index: usize,
        of: usize,
        buckets: usize,
        inline: usize,
    ) -> Result<Vec<Addr>> {
        // Empty buckets allocated per transaction: each is a 256-byte
        // object, so a COMMIT-BACKUP of 128 (about 33 KB) stays well under
        // a record's 64 KB.
        const BUCKETS_PER_CREATE: usize = 128;
        if index >= of || buckets == 0 || buckets >= NO_NEIGHBOUR as usize {
            return Err(Error::InvalidArgument {
                what: "a hash table share",
                why: format!(
                    "share {index} of {of}, {buckets} buckets (1 to {} allowed)",
                    NO_NEIGHBOUR - 1
                ),
            });
        }
        if !(INLINE_VALUE_BYTES_MIN..=INLINE_VALUE_BYTES_MAX).contains(&inline) {
            return Err(Error::InvalidArgument {
                what: "a hash table's inline value bytes",
                why: format!(
                    "{inline} is not in {INLINE_VALUE_BYTES_MIN}..={INLINE_VALUE_BYTES_MAX}"
                ),
            });
        }
        let empty = Bucket::empty(inline);
        // Counted, not listed up front: a share larger than the node's
        // regions hold ends in `OutOfMemory` from the allocator, not in a
        // list of indices as large as the request.
        let mine = (buckets - index).div_ceil(of);
        let mut addrs = Vec::new();
        while addrs.len() < mine {
            let count = (mine - addrs.len()).min(BUCKETS_PER_CREATE);
            addrs.extend(node.run(|txn| {
                (0..count)
                    .map(|_| txn.alloc(&empty.bytes))
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
        if buckets.is_empty() || buckets.len() >= NO_NEIGHBOUR as usize {
            return Err(Error::InvalidArgument {
                what: "a hash table",
                why: format!(
                    "{} buckets (1 to {} allowed)",
                    buckets.len(),
                    NO_NEIGHBOUR - 1
                ),
            });
        }
        Ok(HashTable {
            neighbours: Arc::new(neighbours_of(&buckets)),
            seen_spilled: Arc::new(
                (0..buckets.len().div_ceil(64))
                    .map(|_| AtomicU64::new(0))
                    .collect(),
            ),
            buckets: Arc::new(buckets),
        })
    }

    /// How many buckets have a neighbour, the next bucket of their
    /// neighbourhood (see the module docs): the buckets a table's nodes
    /// allocated one after another in a region. Tables made by
    /// [`HashTable::create`] on nodes with room have one for all but about
    /// one bucket per region.
    pub fn buckets_with_neighbours(&self) -> usize {
        self.neighbours
            .iter()
            .filter(|&&next| next != NO_NEIGHBOUR)
            .count()
    }

    /// Whether this process last saw bucket `index` spilled.
    fn seen_spilled(&self, index: usize) -> bool {
        self.seen_spilled[index / 64].load(Ordering::Relaxed) & (1 << (index % 64)) != 0
    }

    /// Notes whether bucket `index` is spilled now (a hint: see
    /// `seen_spilled`).
    fn saw(&self, index: usize, spilled: bool) {
        if self.seen_spilled(index) != spilled {
            let bit = 1 << (index % 64);
            if spilled {
                self.seen_spilled[index / 64].fetch_or(bit, Ordering::Relaxed);
            } else {
                self.seen_spilled[index / 64].fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// The index of bucket `index`'s neighbour, if it has one.
    fn neighbour(&self, index: usize) -> Option<usize> {
        match self.neighbours[index] {
            NO_NEIGHBOUR => None,
            next => Some(next as usize),
        }
    }

    /// Reads bucket `index` and, when `need` says so of the home (it has
    /// spilled, so a key of this home may be in the neighbour; or it is
    /// full, so a new one may go there), its neighbour, both kept in
    /// `txn`'s read set: what an insert or a delete of a key of this home
    /// decides on. Else the neighbour is `None`, and not kept. For a home
    /// seen spilled, one READ carries both.
    fn read_neighbourhood(
        &self,
        txn: &mut Txn,
        index: usize,
        need: impl Fn(&Bucket) -> bool,
    ) -> Result<(Bucket, Option<(Addr, Bucket)>), TxnError> {
        let home = self.buckets[index];
        let neighbour = self.neighbour(index).map(|next| self.buckets[next]);
        let together = match neighbour {
            Some(next) => self.seen_spilled(index) && !txn.touched(home) && !txn.touched(next),
            None => false,
        };
        if !together {
            // The home alone, then the neighbour if needed: for a home
            // not seen spilled, and for buckets this transaction read or
            // wrote before.
            let home_bucket = read_bucket(txn, home)?;
            self.saw(index, home_bucket.spilled());
            return match neighbour {
                Some(next) if need(&home_bucket) => {
                    Ok((home_bucket, Some((next, read_bucket(txn, next)?))))
                }
                _ => Ok((home_bucket, None)),
            };
        }
        let next = neighbour.expect("read together with its neighbour");
        let (one, two) = through_bucket(txn.read_adjacent_with(home, next, |one, two| {
            let one = Bucket::decode(one);
            let needed = one.as_ref().is_ok_and(&need);
            let two = needed.then(|| Bucket::decode(two));
            ((one, two), if needed { Keep::Both } else { Keep::First })
        }))?;
        let one = one.map_err(|source| corrupt(home, source))?;
        self.saw(index, one.spilled());
        match two {
            None => Ok((one, None)),
            Some(two) => Ok((
                one,
                Some((next, two.map_err(|source| corrupt(next, source))?)),
            )),
        }
    }

    /// Where the bucket at `at`, the neighbour of `key`'s full home, holds
    /// `key` (read alone, kept in the read set), if it does.
    fn look_in_neighbour(txn: &mut Txn, at: Addr, key: u64) -> Result<Option<Found>, TxnError> {
        through_bucket(txn.read_with(at, |bytes| {
            Bucket::view(bytes).map(|bucket| bucket.find(key).map(|slot| bucket.found_at(slot)))
        }))?
        .map_err(|source| corrupt(at, source))
    }

    /// What `key`'s home bucket and, if the home has spilled, its
    /// neighbour say of it (one READ of both for a home seen spilled). The
    /// transaction keeps in its read set only what the answer depends on:
    /// the bucket that holds the key; for an absent key its home, and the
    /// neighbour too when the home has spilled. A [`Found::Next`] is the
    /// home's overflow chain, still to walk.
    fn look_up_home(&self, txn: &mut Txn, key: u64) -> Result<Found, TxnError> {
        let index = self.home_index(key);
        let home = self.buckets[index];
        // The home alone, then the neighbour if the home has spilled and
        // does not hold the key: for a home not seen spilled (the
        // neighbours' table is not even looked at then), and for buckets
        // this transaction read or wrote before.
        let alone = |txn: &mut Txn| -> Result<Found, TxnError> {
            let (found, spilled) = through_bucket(txn.read_with(home, |bytes| {
                Bucket::view(bytes).map(|bucket| (bucket.look_up(key), bucket.spilled()))
            }))?
            .map_err(|source| corrupt(home, source))?;
            self.saw(index, spilled);
            if spilled && matches!(found, Found::Absent | Found::Next(_)) {
                if let Some(next) = self.neighbour(index) {
                    if let Some(there) = HashTable::look_in_neighbour(txn, self.buckets[next], key)?
                    {
                        return Ok(there);
                    }
                }
            }
            Ok(found)
        };
        if !self.seen_spilled(index) {
            return alone(txn);
        }
        let Some(next) = self.neighbour(index) else {
            return alone(txn);
        };
        let next = self.buckets[next];
        if txn.touched(home) || txn.touched(next) {
            return alone(txn);
        }
        through_bucket(txn.read_adjacent_with(home, next, |one, two| {
            let home_bucket = match Bucket::view(one) {
                Ok(bucket) => bucket,
                Err(source) => return (Err(corrupt(home, source)), Keep::First),
            };
            let found = home_bucket.look_up(key);
            let spilled = home_bucket.spilled();
            self.saw(index, spilled);
            let here = matches!(found, Found::Inline(_) | Found::Object(_));
            if here || !spilled {
                return (Ok(found), Keep::First);
            }
            match Bucket::view(two) {
                Err(source) => (Err(corrupt(next, source)), Keep::Both),
                Ok(neighbour) => match neighbour.find(key) {
                    Some(slot) => (Ok(neighbour.found_at(slot)), Keep::Second),
                    None => (Ok(found), Keep::Both),
                },
            }
        }))?
    }

    /// Hopscotch's displacement (FaRM NSDI'14 §5), for a new key whose home
    /// and the home's neighbour `neighbour` (bucket `next`) are full: moves
    /// one of the neighbour's own keys on to the neighbour's neighbour, if
    /// that has room, which leaves a slot in `neighbour` (not written yet)
    /// for the new key. True if it made room. The moved key stays within
    /// its neighbourhood, and its home stays full once the new key is in.
    fn displace(
        &self,
        txn: &mut Txn,
        next: usize,
        neighbour: &mut Bucket,
    ) -> Result<bool, TxnError> {
        let Some(further) = self.neighbour(next) else {
            return Ok(false);
        };
        let Some(from) = Bucket::own_key_in(neighbour, self, next) else {
            return Ok(false);
        };
        let at = self.buckets[further];
        let mut bucket = read_bucket(txn, at)?;
        let Some(to) = bucket.vacant() else {
            return Ok(false);
        };
        if bucket.inline() != neighbour.inline() {
            return Ok(false);
        }
        bucket.set(to, neighbour.key(from), neighbour.value(from));
        neighbour.clear(from);
        neighbour.set_spilled(true);
        self.saw(next, true);
        txn.write(at, &bucket.bytes)?;
        Ok(true)
    }

    /// Writes bucket `index` (at `at`), which has just lost a key. If it
    /// has spilled, it first takes back one of its own keys from its
    /// neighbour (`neighbour`, if read already), and clears its flag once
    /// none is left there; the neighbour, which then lost a key, does the
    /// same, and so on along the run of neighbours. So a bucket's keys are
    /// in its neighbour only while it is full.
    fn refill(
        &self,
        txn: &mut Txn,
        mut index: usize,
        mut at: Addr,
        mut bucket: Bucket,
        mut neighbour: Option<(Addr, Bucket)>,
    ) -> Result<(), TxnError> {
        while bucket.spilled() {
            let Some(next) = self.neighbour(index) else {
                bucket.set_spilled(false);
                break;
            };
            let (next_at, mut next_bucket) = match neighbour.take() {
                Some(read) => read,
                None => (self.buckets[next], read_bucket(txn, self.buckets[next])?),
            };
            let (Some(from), Some(vacant)) = (
                Bucket::own_key_in(&next_bucket, self, index),
                bucket.vacant(),
            ) else {
                bucket.set_spilled(false);
                break;
            };
            bucket.set(vacant, next_bucket.key(from), next_bucket.value(from));
            next_bucket.clear(from);
            if Bucket::own_key_in(&next_bucket, self, index).is_none() {
                bucket.set_spilled(false);
            }
            self.saw(index, bucket.spilled());
            txn.write(at, &bucket.bytes)?;
            (index, at, bucket) = (next, next_at, next_bucket);
        }
        self.saw(index, bucket.spilled());
        txn.write(at, &bucket.bytes)
    }

    pub fn bucket_addrs(&self) -> &[Addr] {
        &self.buckets
    }

    fn home(&self, key: u64) -> Addr {
        self.buckets[self.home_index(key)]
    }

    /// The address of `key`'s value object, if the key is there and its
    /// value is an object of its own (it was larger than its bucket's
    /// inline capacity when it was put; a value inline in its bucket has
    /// no address: `None`). An application may keep the address and read
    /// the value directly later (a read through it after the key is
    /// deleted fails with [`Error::StaleAddress`]).
    ///
    /// # Errors
    /// As [`Txn::read`].
    pub fn value_addr(&self, txn: &mut Txn, key: u64) -> Result<Option<Addr>, TxnError> {
        let mut found = self.look_up_home(txn, key)?;
        loop {
            match found {
                Found::Object(addr) => return Ok(Some(addr)),
                Found::Inline(_) | Found::Absent => return Ok(None),
                Found::Next(next) => found = look_up(txn, next, key)?,
            }
        }
    }

    /// `key`'s value, if the key is there: one READ for an inline value
    /// in its home bucket, one more for an object or an overflowed key.
    ///
    /// # Errors
    /// As [`Txn::read`]; [`Error::Corrupt`] for a bucket that does not
    /// decode.
    pub fn get(&self, txn: &mut Txn, key: u64) -> Result<Option<Vec<u8>>, TxnError> {
        match self.look_up_home(txn, key)? {
            Found::Inline(value) => Ok(Some(value)),
            Found::Object(addr) => Ok(Some(through_bucket(txn.read(addr))?)),
            Found::Absent => Ok(None),
            Found::Next(next) => self.get_from(txn, next, key),
        }
    }

    /// The values of `keys`, in `keys`' order, each as [`HashTable::get`]
    /// gives it, with the lookups made together: see [`get_many`].
    ///
    /// # Errors
    /// As [`HashTable::get`].
    pub fn get_many(&self, txn: &mut Txn, keys: &[u64]) -> Result<Vec<Option<Vec<u8>>>, TxnError> {
        let lookups: SmallVec<[(&HashTable, u64); 8]> =
            keys.iter().map(|key| (self, *key)).collect();
        get_many(txn, &lookups)
    }

    /// [`HashTable::get`], starting at the bucket at `at` of `key`'s chain.
    fn get_from(&self, txn: &mut Txn, mut at: Addr, key: u64) -> Result<Option<Vec<u8>>, TxnError> {
        loop {
            match look_up(txn, at, key)? {
                Found::Inline(value) => return Ok(Some(value)),
                Found::Object(addr) => return Ok(Some(through_bucket(txn.read(addr))?)),
                Found::Absent => return Ok(None),
                Found::Next(next) => at = next,
            }
        }
    }

    /// Inserts or replaces `key`'s value. A value that has an object of
    /// its own is written in place while the new value fits the object's
    /// class (so a kept [`HashTable::value_addr`] stays good); otherwise
    /// a value that fits the bucket's inline capacity goes in the bucket.
    ///
    /// # Errors
    /// As [`Txn::read`], [`Txn::write`] and [`Txn::alloc`]
    /// ([`Error::InvalidArgument`] for a value larger than an object).
    pub fn put(&self, txn: &mut Txn, key: u64, value: &[u8]) -> Result<(), TxnError> {
        let index = self.home_index(key);
        let home = self.buckets[index];
        // The neighbour matters for a key not in its home when the home
        // has spilled (the key may be there) or is full (it may go there).
        let (mut home_bucket, mut neighbour) = self.read_neighbourhood(txn, index, |home| {
            home.find(key).is_none() && (home.spilled() || home.vacant().is_none())
        })?;
        // Where the key is: its home, the neighbour, the home's chain (read
        // only when the key is in neither, as `get` reads it).
        let replace_in = |txn: &mut Txn, at: Addr, bucket: &mut Bucket| {
            let Some(slot) = bucket.find(key) else {
                return Ok(false);
            };
            if replace(txn, bucket, slot, key, Incoming::Bytes(value))? {
                txn.write(at, &bucket.bytes)?;
            }
            Ok::<bool, TxnError>(true)
        };
        if replace_in(txn, home, &mut home_bucket)? {
            return Ok(());
        }
        if let Some((at, bucket)) = neighbour.as_mut() {
            if replace_in(txn, *at, bucket)? {
                return Ok(());
            }
        }
        // The chain's last bucket, where a new key may go.
        let mut last: Option<(Addr, Bucket)> = None;
        let mut next = home_bucket.next();
        while next != 0 {
            let at = Addr(next);
            let mut bucket = read_bucket(txn, at)?;
            if replace_in(txn, at, &mut bucket)? {
                return Ok(());
            }
            next = bucket.next();
            last = Some((at, bucket));
        }
        // A new key: its home; else, the home being full, the neighbour
        // (FaRM NSDI'14 §5), and the home notes that it spilled; else the
        // end of the home's chain.
        let (inline, home_has_room) = (home_bucket.inline(), home_bucket.vacant().is_some());
        if let (false, Some((at, bucket))) = (home_has_room, neighbour.as_mut()) {
            let next = self.neighbour(index).expect("read with its neighbour");
            if bucket.inline() == inline
                && (bucket.vacant().is_some() || self.displace(txn, next, bucket)?)
            {
                let placed = Incoming::Bytes(value).place(txn, bucket)?;
                let slot = bucket.vacant().expect("room was made");
                bucket.set(slot, key, placed);
                txn.write(*at, &bucket.bytes)?;
                if !home_bucket.spilled() {
                    home_bucket.set_spilled(true);
                    txn.write(home, &home_bucket.bytes)?;
                }
                self.saw(index, true);
                return Ok(());
            }
        }
        let (at, bucket) = match last.as_mut() {
            Some((at, bucket)) if !home_has_room => (*at, bucket),
            _ => (home, &mut home_bucket),
        };
        let placed = Incoming::Bytes(value).place(txn, bucket)?;
        if let Some(slot) = bucket.vacant() {
            bucket.set(slot, key, placed);
            return txn.write(at, &bucket.bytes);
        }
        // Full: chain a new overflow bucket holding the key.
        let mut overflow = Bucket::empty(bucket.inline());
        overflow.set(0, key, placed);
        let overflow_addr = txn.alloc(&overflow.bytes)?;
        bucket.set_next(overflow_addr.0);
        txn.write(at, &bucket.bytes)
    }

    /// Index of `key`'s home bucket in [`HashTable::bucket_addrs`]: bulk
    /// loaders group keys by it (see [`HashTable::put_many`]).
    pub fn home_index(&self, key: u64) -> usize {
        (mix(key) % self.buckets.len() as u64) as usize
    }

    /// Links values that are already objects to their keys, as many
    /// [`HashTable::put`]s would, but reading and writing each bucket (and
    /// chain) it touches once: `entries` are (key, value address) pairs in
    /// any order. A key already in the table is pointed at its new value
    /// and its old value object, if any, is freed; a key given twice keeps
    /// the last. The values stay objects of their own (two READs a
    /// lookup): to load small values inline, use [`HashTable::put_many`].
    ///
    /// # Errors
    /// As [`Txn::read`], [`Txn::write`], [`Txn::alloc`] and [`Txn::free`];
    /// [`Error::TransactionTooLarge`](crate::Error::TransactionTooLarge) at
    /// commit when the buckets touched do not fit one transaction (give
    /// fewer entries).
    pub fn link_many(&self, txn: &mut Txn, entries: &[(u64, Addr)]) -> Result<(), TxnError> {
        let mut by_home: Vec<(usize, u64, Incoming<'_>)> = entries
            .iter()
            .map(|&(key, value)| (self.home_index(key), key, Incoming::Object(value)))
            .collect();
        // Stable: a key given twice keeps its order, so the last one wins.
        by_home.sort_by_key(|&(home, _, _)| home);
        for group in by_home.chunk_by(|a, b| a.0 == b.0) {
            self.link_group(txn, group[0].0, group)?;
        }
        Ok(())
    }

    /// Puts many (key, value) pairs, as many [`HashTable::put`]s would,
    /// but reading and writing each bucket (and chain) it touches once:
    /// the bulk-load path. Values that fit their bucket's inline capacity
    /// go inline; larger ones get objects allocated on this transaction's
    /// node. A key already in the table gets its new value (as `put`
    /// gives it); a key given twice keeps the last.
    ///
    /// A loader that has each bucket's primary put the keys of its own
    /// buckets writes each bucket once instead of once per key, and no
    /// two loaders write the same bucket (`farm bench` loads this way).
    ///
    /// # Errors
    /// As [`HashTable::link_many`].
    pub fn put_many(&self, txn: &mut Txn, entries: &[(u64, &[u8])]) -> Result<(), TxnError> {
        let mut order: Vec<(usize, u64, usize)> = entries
            .iter()
            .enumerate()
            .map(|(at, &(key, _))| (self.home_index(key), key, at))
            .collect();
        // Stable, so among a key's entries the last given is last here;
        // only that one is stored (an object for an earlier one would be
        // allocated and freed in one transaction).
        order.sort_by_key(|&(home, key, _)| (home, key));
        let by_home: Vec<(usize, u64, Incoming<'_>)> = order
            .chunk_by(|a, b| a.0 == b.0 && a.1 == b.1)
            .map(|same_key| {
                let (home, key, at) = same_key[same_key.len() - 1];
                (home, key, Incoming::Bytes(entries[at].1))
            })
            .collect();
        for group in by_home.chunk_by(|a, b| a.0 == b.0) {
            self.link_group(txn, group[0].0, group)?;
        }
        Ok(())
    }

    /// [`HashTable::link_many`] and [`HashTable::put_many`] for keys of one
    /// home bucket, bucket `index`.
    fn link_group(
        &self,
        txn: &mut Txn,
        index: usize,
        group: &[(usize, u64, Incoming<'_>)],
    ) -> Result<(), TxnError> {
        // The chain as it is: (address, bucket, changed); new overflow
        // buckets get their address when they are allocated, at the end.
        let mut chain: Vec<(Option<Addr>, Bucket, bool)> = Vec::new();
        let (home_bucket, neighbour) =
            self.read_neighbourhood(txn, index, |home| home.spilled() || home.vacant().is_none())?;
        let mut neighbour = neighbour.map(|(at, bucket)| (at, bucket, false));
        let mut next = home_bucket.next();
        chain.push((Some(self.buckets[index]), home_bucket, false));
        while next != 0 {
            let at = Addr(next);
            let bucket = read_bucket(txn, at)?;
            next = bucket.next();
            chain.push((Some(at), bucket, false));
        }
        for &(_, key, value) in group {
            let found = chain.iter_mut().find_map(|(_, bucket, changed)| {
                let slot = bucket.find(key)?;
                Some((bucket, changed, slot))
            });
            if let Some((bucket, changed, slot)) = found {
                *changed |= replace(txn, bucket, slot, key, value)?;
                continue;
            }
            if let Some((_, bucket, changed)) = neighbour.as_mut() {
                if let Some(slot) = bucket.find(key) {
                    *changed |= replace(txn, bucket, slot, key, value)?;
                    continue;
                }
            }
            // A new key: its home, else (a full home) the neighbour, else
            // the end of the chain, as `put` places it.
            let (_, home_bucket, home_changed) = &mut chain[0];
            let inline = home_bucket.inline();
            if home_bucket.vacant().is_some() {
                let placed = value.place(txn, home_bucket)?;
                let slot = home_bucket.vacant().expect("checked");
                home_bucket.set(slot, key, placed);
                *home_changed = true;
                continue;
            }
            if let (None, Some(next)) = (&neighbour, self.neighbour(index)) {
                // The home filled up in this group: now the neighbour
                // matters.
                let at = self.buckets[next];
                neighbour = Some((at, read_bucket(txn, at)?, false));
            }
            if let Some((_, bucket, changed)) = neighbour.as_mut() {
                let next = self.neighbour(index).expect("read with its neighbour");
                if bucket.inline() == inline
                    && (bucket.vacant().is_some() || self.displace(txn, next, bucket)?)
                {
                    let placed = value.place(txn, bucket)?;
                    let slot = bucket.vacant().expect("room was made");
                    bucket.set(slot, key, placed);
                    *changed = true;
                    let (_, home_bucket, home_changed) = &mut chain[0];
                    if !home_bucket.spilled() {
                        home_bucket.set_spilled(true);
                        *home_changed = true;
                    }
                    continue;
                }
            }
            let (_, last, changed) = chain.last_mut().expect("a chain has its home bucket");
            let placed = value.place(txn, last)?;
            if let Some(slot) = last.vacant() {
                last.set(slot, key, placed);
                *changed = true;
            } else {
                let mut overflow = Bucket::empty(last.inline());
                overflow.set(0, key, placed);
                chain.push((None, overflow, true));
            }
        }
        self.saw(index, chain[0].1.spilled());
        // From the end: a new bucket's address is known before the bucket
        // that points at it is written.
        let mut following = 0u64;
        for (addr, bucket, changed) in chain.iter_mut().rev() {
            if bucket.next() != following {
                bucket.set_next(following);
                *changed = true;
            }
            match addr {
                None => following = txn.alloc(&bucket.bytes)?.0,
                Some(addr) => {
                    if *changed {
                        txn.write(*addr, &bucket.bytes)?;
                    }
                    following = addr.0;
                }
            }
        }
        if let Some((at, bucket, true)) = &neighbour {
            txn.write(*at, &bucket.bytes)?;
        }
        Ok(())
    }

    /// Removes `key`; true if it was there.
    ///
    /// # Errors
    /// As [`Txn::read`], [`Txn::write`] and [`Txn::free`].
    pub fn delete(&self, txn: &mut Txn, key: u64) -> Result<bool, TxnError> {
        let index = self.home_index(key);
        let home = self.buckets[index];
        let (mut home_bucket, mut neighbour) =
            self.read_neighbourhood(txn, index, Bucket::spilled)?;
        if let Some(slot) = home_bucket.find(key) {
            remove(txn, &mut home_bucket, slot)?;
            self.refill(txn, index, home, home_bucket, neighbour)?;
            return Ok(true);
        }
        if let Some((at, mut bucket)) = neighbour.take() {
            if let Some(slot) = bucket.find(key) {
                remove(txn, &mut bucket, slot)?;
                if Bucket::own_key_in(&bucket, self, index).is_none() {
                    home_bucket.set_spilled(false);
                    self.saw(index, false);
                    txn.write(home, &home_bucket.bytes)?;
                }
                let next = self.neighbour(index).expect("read with its neighbour");
                self.refill(txn, next, at, bucket, None)?;
                return Ok(true);
            }
        }
        let mut next = home_bucket.next();
        while next != 0 {
            let at = Addr(next);
            let mut bucket = read_bucket(txn, at)?;
            if let Some(slot) = bucket.find(key) {
                remove(txn, &mut bucket, slot)?;
                txn.write(at, &bucket.bytes)?;
                return Ok(true);
            }
            next = bucket.next();
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Clone, Debug)]
    enum Op {
        Put(u64, usize),
        Delete(u64),
        PutMany(Vec<(u64, usize)>),
        GetMany(Vec<u64>),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let key = 0u64..40;
        prop_oneof![
            4 => (key.clone(), 1usize..90).prop_map(|(k, len)| Op::Put(k, len)),
            3 => key.clone().prop_map(Op::Delete),
            1 => proptest::collection::vec((key.clone(), 1usize..90), 1..12).prop_map(Op::PutMany),
            1 => proptest::collection::vec(key, 1..6).prop_map(Op::GetMany),
        ]
    }

    /// Every key of `table` is in one place only: its home bucket, the
    /// home's neighbour (only while the home is full, and marked spilled)
    /// or the home's overflow chain; the keys are `model`'s.
    fn check_layout(txn: &mut Txn, table: &HashTable, model: &HashMap<u64, Vec<u8>>) {
        let mut seen: HashMap<u64, (usize, &'static str)> = HashMap::new();
        let homes: Vec<Bucket> = (0..table.buckets.len())
            .map(|index| read_bucket(txn, table.buckets[index]).unwrap())
            .collect();
        for (index, home) in homes.iter().enumerate() {
            let mut places = vec![(home.clone(), "home")];
            let mut next = home.next();
            while next != 0 {
                let bucket = read_bucket(txn, Addr(next)).unwrap();
                next = bucket.next();
                places.push((bucket, "chain"));
            }
            for (bucket, place) in places {
                for slot in (0..bucket.slots()).filter(|&s| bucket.tag(s) != TAG_EMPTY) {
                    let key = bucket.key(slot);
                    let home_index = table.home_index(key);
                    let place = match place {
                        "home" if home_index == index => "home",
                        "home" => {
                            assert_eq!(
                                table.neighbour(home_index),
                                Some(index),
                                "key {key} in bucket {index}, neither its home {home_index} nor the home's neighbour"
                            );
                            assert!(
                                homes[home_index].vacant().is_none(),
                                "key {key} in the neighbour of its home {home_index}, which has room"
                            );
                            assert!(
                                homes[home_index].spilled(),
                                "key {key} in the neighbour of its home {home_index}, not marked spilled"
                            );
                            "neighbour"
                        }
                        _ => {
                            assert_eq!(home_index, index, "key {key} in another home's chain");
                            "chain"
                        }
                    };
                    if let Some(earlier) = seen.insert(key, (index, place)) {
                        panic!("key {key} twice: {earlier:?} and ({index}, {place})");
                    }
                }
            }
        }
        // A bucket is marked spilled exactly while its neighbour holds some
        // of its keys.
        for (index, home) in homes.iter().enumerate() {
            let spilled = seen
                .iter()
                .any(|(key, (_, place))| *place == "neighbour" && table.home_index(*key) == index);
            assert_eq!(home.spilled(), spilled, "bucket {index}'s spilled mark");
        }
        let mut keys: Vec<u64> = seen.into_keys().collect();
        keys.sort_unstable();
        let mut expected: Vec<u64> = model.keys().copied().collect();
        expected.sort_unstable();
        assert_eq!(keys, expected);
    }

    fn value(key: u64, len: usize, round: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (key as usize * 31 + i + round) as u8)
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Puts, deletes and bulk puts on a small, crowded table (8
        /// buckets of 3 slots for up to 40 keys; values up to 89 bytes,
        /// over 64 in an object of their own) from every node: each
        /// lookup agrees with a model, and the layout keeps its rule (a
        /// key in its home's neighbour only while the home is full) after
        /// every step, so lookups that stop at a home with room are right.
        #[test]
        fn neighbourhoods_and_chains_agree_with_a_model(ops in proptest::collection::vec(op(), 1..80)) {
            let cluster = crate::testing::cluster(4 << 20);
            let nodes: Vec<_> = cluster.nodes().iter().collect();
            // On one node: a run of 8 neighbours, where a displaced key
            // moves two buckets on from the new key's home.
            let table = HashTable::create_with(&nodes[..1], 8, INLINE_VALUE_BYTES_MAX).unwrap();
            proptest::prop_assert_eq!(table.buckets_with_neighbours(), 7);
            let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
            for (round, op) in ops.iter().enumerate() {
                let node = cluster.node(round % 3);
                match op {
                    Op::Put(key, len) => {
                        let v = value(*key, *len, round);
                        node.run(|txn| table.put(txn, *key, &v)).unwrap();
                        model.insert(*key, v);
                    }
                    Op::Delete(key) => {
                        let removed = node.run(|txn| table.delete(txn, *key)).unwrap();
                        proptest::prop_assert_eq!(removed, model.remove(key).is_some());
                    }
                    Op::PutMany(entries) => {
                        let values: Vec<(u64, Vec<u8>)> =
                            entries.iter().map(|(k, len)| (*k, value(*k, *len, round))).collect();
                        let refs: Vec<(u64, &[u8])> =
                            values.iter().map(|(k, v)| (*k, v.as_slice())).collect();
                        node.run(|txn| table.put_many(txn, &refs)).unwrap();
                        model.extend(values);
                    }
                    Op::GetMany(keys) => {
                        let got = node.run(|txn| table.get_many(txn, keys)).unwrap();
                        for (key, got) in keys.iter().zip(got) {
                            proptest::prop_assert_eq!(got.as_ref(), model.get(key), "key {}", key);
                        }
                    }
                }
                node.run(|txn| {
                    check_layout(txn, &table, &model);
                    Ok(())
                })
                .unwrap();
                for key in 0..40u64 {
                    let got = node.run(|txn| table.get(txn, key)).unwrap();
                    proptest::prop_assert_eq!(got.as_ref(), model.get(&key), "key {} after {:?}", key, op);
                }
            }
        }
    }

    proptest::proptest! {
        /// Fuzz target: a bucket read from a region is bytes anyone may
        /// have written; decoding never panics, and a bucket that decodes
        /// can be read slot by slot without panicking.
        #[test]
        fn buckets_of_arbitrary_bytes_never_panic(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            inline in 0u8..70,
            tags in proptest::collection::vec(0u8..70, 13),
        ) {
            let _ = Bucket::decode(&bytes);
            if bytes.len() >= BUCKET_BYTES {
                // Mostly layouts and tags that decode (69 stands for the
                // object tag), so that the slots are read below.
                bytes[8] = inline;
                let slot_bytes = SLOT_HEADER_BYTES + usize::from(inline);
                for (slot, tag) in tags.iter().enumerate() {
                    let at = BUCKET_HEADER_BYTES + slot * slot_bytes + 8;
                    if at < BUCKET_BYTES {
                        bytes[at] = if *tag == 69 { TAG_OBJECT } else { *tag };
                    }
                }
                if let Ok(bucket) = Bucket::decode(&bytes[..BUCKET_BYTES]) {
                    proptest::prop_assert!(bucket.len() <= bucket.slots());
                    for slot in 0..bucket.slots() {
                        if bucket.tag(slot) != TAG_EMPTY {
                            if let Value::Inline(value) = bucket.value(slot) {
                                proptest::prop_assert!(value.len() <= bucket.inline());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Tags that are neither empty, inline lengths nor the object tag, and
    /// inline capacities out of range, are refused.
    #[test]
    fn bad_tags_and_layouts_are_refused() {
        let mut bucket = Bucket::empty(INLINE_VALUE_BYTES);
        bucket.bytes[BUCKET_HEADER_BYTES + 8] = INLINE_VALUE_BYTES as u8 + 2;
        assert!(matches!(
            Bucket::decode(&bucket.bytes),
            Err(DecodeError::BadLength { len, .. }) if len == INLINE_VALUE_BYTES as u64 + 2
        ));
        for inline in [0u8, 7, 65, 255] {
            let mut bytes = Bucket::empty(INLINE_VALUE_BYTES).bytes;
            bytes[8] = inline;
            assert!(Bucket::decode(&bytes).is_err(), "inline {inline}");
        }
        assert!(
            Bucket::decode(&[0u8; 144]).is_err(),
            "the old 144-byte format"
        );
    }

    #[test]
    fn slots_hold_keys_inline_values_and_objects() {
        for inline in [
            INLINE_VALUE_BYTES_MIN,
            10,
            INLINE_VALUE_BYTES,
            INLINE_VALUE_BYTES_MAX,
        ] {
            let mut bucket = Bucket::empty(inline);
            let slots = bucket.slots();
            for slot in 0..slots {
                let value = vec![slot as u8 + 1; slot % (inline + 1)];
                bucket.set(slot, 1000 + slot as u64, Value::Inline(&value));
            }
            bucket.set(slots - 1, 7, Value::Object(Addr(0xDEAD_BEEF)));
            bucket.set_next(77);
            let decoded = Bucket::decode(&bucket.bytes).unwrap();
            assert_eq!(decoded.next(), 77);
            assert_eq!(decoded.len(), slots);
            assert_eq!(decoded.vacant(), None);
            for slot in 0..slots - 1 {
                let value = vec![slot as u8 + 1; slot % (inline + 1)];
                assert_eq!(decoded.find(1000 + slot as u64), Some(slot));
                assert_eq!(decoded.value(slot), Value::Inline(&value));
            }
            assert_eq!(decoded.value(slots - 1), Value::Object(Addr(0xDEAD_BEEF)));
            // An empty value is not an empty slot; a cleared slot is.
            let mut bucket = decoded;
            bucket.set(0, 5, Value::Inline(b""));
            assert_eq!(bucket.find(5), Some(0));
            bucket.clear(0);
            assert_eq!((bucket.find(5), bucket.vacant()), (None, Some(0)));
        }
    }
}
