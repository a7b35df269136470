//! TATP (Telecom Application Transaction Processing, v1.0), FaRM's headline
//! benchmark: four tables keyed by subscriber and the standard mix of seven
//! transactions: GET_SUBSCRIBER_DATA 35%, GET_NEW_DESTINATION 10%,
//! GET_ACCESS_DATA 35%, UPDATE_SUBSCRIBER_DATA 2%, UPDATE_LOCATION 14%,
//! INSERT_CALL_FORWARDING 2%, DELETE_CALL_FORWARDING 2%.
//!
//! Readings of the spec:
//! - tables are transactional hash tables with composite keys packed into
//!   a u64: (s_id, ai_type), (s_id, sf_type), (s_id, sf_type, start_time/8);
//!   `sub_nbr` is the s_id as a 15-digit number, and the transactions that
//!   look a subscriber up by sub_nbr go through a secondary index table;
//! - subscribers are drawn with the spec's non-uniform generator
//!   `((rand(0, A) | rand(1, P)) % P) + 1`, A = 65535 up to 1 M subscribers;
//! - a transaction the spec lets fail (no such row, a duplicate
//!   INSERT_CALL_FORWARDING) aborts with reason "requested" and is not counted
//!   in the throughput (FaRM's figures may count them: ours are lower).
//!
//! The check afterwards: every subscriber exists and its sub_nbr index
//! entry points back to it; every call-forwarding row has its special
//! facility (the spec's foreign key); access-info rows are untouched.

use farm_core::{AbortReason, HashTable, Node, Txn, TxnError};

use super::site::{RowSink, Site};
use super::{finish, Attempt, Rng, Workload};

const TYPES: &[&str] = &[
    "get-subscriber-data",
    "get-new-destination",
    "get-access-data",
    "update-subscriber-data",
    "update-location",
    "insert-call-forwarding",
    "delete-call-forwarding",
];

pub struct Tatp {
    subscribers: u64,
    checked: super::CheckCounter,
    subscriber: HashTable,
    access_info: HashTable,
    special_facility: HashTable,
    call_forwarding: HashTable,
    sub_nbr_index: HashTable,
    access_rows: u64,
}

fn sf_key(s_id: u64, sf_type: u64) -> u64 {
    (s_id << 8) | sf_type
}

fn cf_key(s_id: u64, sf_type: u64, start_time: u64) -> u64 {
    (s_id << 8) | (sf_type << 4) | (start_time / 8)
}

/// Subscriber row: sub_nbr, bit field, 10 hex digits, 10 bytes, msc and
/// vlr locations (38 bytes).
fn subscriber_row(s_id: u64, rng: &mut Rng) -> Vec<u8> {
    let mut row = Vec::with_capacity(38);
    row.extend_from_slice(&s_id.to_le_bytes());
    row.extend_from_slice(&((rng.next_u64() & 0x3ff) as u16).to_le_bytes());
    row.extend((0..10).map(|_| (rng.next_u64() & 0xf) as u8));
    row.extend((0..10).map(|_| rng.next_u64() as u8));
    row.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
    row.extend_from_slice(&(rng.next_u64() as u32).to_le_bytes());
    row
}

const VLR_AT: usize = 34;

/// One subscriber's rows, drawn before loading: its subscriber row, its
/// access-info rows by type, and its special facilities by type, each with
/// its call-forwarding rows by start time.
struct SubscriberRows {
    s_id: u64,
    row: Vec<u8>,
    access_info: Vec<(u64, Vec<u8>)>,
    facilities: Vec<Facility>,
}

/// A special facility: its type, its row, and its call-forwarding rows by
/// start time.
type Facility = (u64, [u8; 8], Vec<(u64, Vec<u8>)>);

/// Bytes of rows in one batch of loading: the unit the loader threads
/// draw rows in and count progress by ([`Site::load_bulk`] sizes its
/// transactions itself).
const LOAD_BATCH_ROW_BYTES: usize = farm_core::limits::RECORD_BYTES_MAX / 4;

/// Consecutive subscribers whose rows (with [`OBJECT_ESTIMATE_BYTES`] per
/// row for its object and bucket overhead) fit [`LOAD_BATCH_ROW_BYTES`].
fn batches(rows: &[SubscriberRows]) -> Vec<&[SubscriberRows]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, subscriber) in rows.iter().enumerate() {
        let size = subscriber.bytes();
        if i > start && bytes + size > LOAD_BATCH_ROW_BYTES {
            out.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Subscribers one read-only transaction of the consistency check reads
/// (about 26 gets each).
const CHECK_BATCH: u64 = 8;

/// A row's object header and its hash bucket's share, roughly.
const OBJECT_ESTIMATE_BYTES: usize = 48;

impl SubscriberRows {
    fn bytes(&self) -> usize {
        let rows = 2
            + self.access_info.len()
            + self
                .facilities
                .iter()
                .map(|(_, _, forwards)| 1 + forwards.len())
                .sum::<usize>();
        let payload = self.row.len()
            + 8
            + self.access_info.iter().map(|(_, r)| r.len()).sum::<usize>()
            + self
                .facilities
                .iter()
                .map(|(_, r, f)| r.len() + f.iter().map(|(_, c)| c.len()).sum::<usize>())
                .sum::<usize>();
        payload + rows * OBJECT_ESTIMATE_BYTES
    }
}

impl Tatp {
    /// Subscriber s lives on node s mod nodes (its rows are inserted
    /// there); every process draws the whole population.
    ///
    /// # Errors
    /// The engine's, while loading.
    ///
    /// Rows go straight into the buckets of their primaries, inline
    /// ([`Site::load_bulk`]), each node from its own thread.
    pub fn load(site: &Site, subscribers: u64) -> farm_core::Result<Tatp> {
        // Each table's buckets hold its rows inline (subscriber rows are
        // 38 bytes, 4 a bucket; access-info rows 10, 11 a bucket; special
        // facilities 8 and call forwardings 9, 13 and 12 a bucket; index
        // entries 8), at about half their slots on average, so that few
        // keys overflow their home bucket and a lookup is one READ.
        let per = |buckets_per_subscriber: f64| {
            ((subscribers as f64 * buckets_per_subscriber) as usize).max(1)
        };
        let mut tatp = Tatp {
            subscribers,
            checked: super::CheckCounter::default(),
            subscriber: site.table("tatp-subscriber", per(1.0), 40)?,
            access_info: site.table("tatp-access-info", per(0.5), 10)?,
            special_facility: site.table("tatp-special-facility", per(0.5), 8)?,
            call_forwarding: site.table("tatp-call-forwarding", per(0.75), 9)?,
            sub_nbr_index: site.table("tatp-sub-nbr-index", per(0.25), 8)?,
            access_rows: 0,
        };
        // Draw every row in one pass (the same draws, in the same order, as
        // ever), by the node that owns the subscriber (every process keeps
        // them all: each puts the rows of its own buckets).
        let nodes = site.nodes();
        let mut by_node: Vec<Vec<SubscriberRows>> = (0..nodes).map(|_| Vec::new()).collect();
        let mut rng = Rng::new(4242);
        for s_id in 1..=subscribers {
            let owner = s_id as usize % nodes;
            let row = subscriber_row(s_id, &mut rng);
            let ai_types = distinct_types(&mut rng);
            let sf_types = distinct_types(&mut rng);
            tatp.access_rows += ai_types.len() as u64;
            let mut facilities = Vec::new();
            for sf_type in &sf_types {
                let active = u8::from(rng.percent() < 85);
                let sf_row = [
                    active,
                    rng.next_u64() as u8,
                    rng.next_u64() as u8,
                    b'A',
                    b'B',
                    b'C',
                    b'D',
                    b'E',
                ];
                let mut forwards = Vec::new();
                for start_time in [0u64, 8, 16] {
                    if rng.percent() < 50 {
                        let end_time = start_time + rng.range(1, 8);
                        let mut cf_row = vec![end_time as u8];
                        cf_row.extend_from_slice(&rng.next_u64().to_le_bytes());
                        forwards.push((start_time, cf_row));
                    }
                }
                facilities.push((*sf_type, sf_row, forwards));
            }
            let access_info: Vec<(u64, Vec<u8>)> = ai_types
                .iter()
                .map(|t| (*t, (0..10).map(|_| rng.next_u64() as u8).collect()))
                .collect();
            by_node[owner].push(SubscriberRows {
                s_id,
                row,
                access_info,
                facilities,
            });
        }
        let batches: Vec<Vec<&[SubscriberRows]>> =
            by_node.iter().map(|rows| batches(rows)).collect();
        let t = &tatp;
        let tables = [
            &t.subscriber,
            &t.access_info,
            &t.special_facility,
            &t.call_forwarding,
            &t.sub_nbr_index,
        ];
        site.load_bulk(&tables, &batches, &|batch, sink| {
            for subscriber in batch.iter() {
                Tatp::rows(subscriber, sink)?;
            }
            Ok(())
        })?;
        site.barrier("tatp-loaded")?;
        Ok(tatp)
    }

    /// One subscriber's rows, told to `sink` as (table, key, value), the
    /// tables numbered subscriber 0, access info 1, special facility 2,
    /// call forwarding 3, sub_nbr index 4 (the order [`Tatp::load`] hands
    /// them to [`Site::load_bulk`]).
    fn rows(subscriber: &SubscriberRows, sink: &mut RowSink<'_>) -> Result<(), TxnError> {
        let s_id = subscriber.s_id;
        sink(0, s_id, &subscriber.row)?;
        sink(4, s_id, &s_id.to_le_bytes())?;
        for (ai_type, ai_row) in &subscriber.access_info {
            sink(1, sf_key(s_id, *ai_type), ai_row)?;
        }
        for (sf_type, sf_row, forwards) in &subscriber.facilities {
            sink(2, sf_key(s_id, *sf_type), sf_row)?;
            for (start_time, cf_row) in forwards {
                sink(3, cf_key(s_id, *sf_type, *start_time), cf_row)?;
            }
        }
        Ok(())
    }

    /// Checks the subscribers `s` with `s mod of == index` (those node
    /// `index` of `of` owns) from several threads of `node`: `[the first
    /// problem or null, call-forwarding rows, access-info rows]`.
    fn check_counts(
        &self,
        node: &Node,
        index: u64,
        of: u64,
    ) -> farm_core::Result<serde_json::Value> {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8) as u64;
        let first = if index == 0 { of } else { index };
        self.checked
            .begin((first..=self.subscribers).step_by(of as usize).count() as u64);
        let parts: Vec<farm_core::Result<(Option<String>, u64, u64)>> =
            std::thread::scope(|scope| {
                let checkers: Vec<_> = (0..threads)
                    .map(|t| {
                        let start = first + t * of;
                        scope.spawn(move || self.check_range(node, start, threads * of))
                    })
                    .collect();
                checkers
                    .into_iter()
                    .map(|c| c.join().expect("a TATP checker panicked"))
                    .collect()
            });
        let (mut forwards, mut access) = (0, 0);
        for part in parts {
            let (problem, cf, ai) = part?;
            if let Some(problem) = problem {
                return Ok(serde_json::json!([problem, 0, 0]));
            }
            forwards += cf;
            access += ai;
        }
        Ok(serde_json::json!([null, forwards, access]))
    }

    /// Checks subscribers `first`, `first + step`, … up to the last: the
    /// first problem found, and the call-forwarding and access-info rows
    /// counted.
    fn check_range(
        &self,
        node: &Node,
        first: u64,
        step: u64,
    ) -> farm_core::Result<(Option<String>, u64, u64)> {
        let (mut forwards, mut access) = (0, 0);
        let all: Vec<u64> = (first..=self.subscribers).step_by(step as usize).collect();
        for batch in all.chunks(CHECK_BATCH as usize) {
            let (problem, cf, ai) = node.run(|txn| {
                let (mut cf, mut ai) = (0, 0);
                for &s_id in batch {
                    let (problem, c, a) = self.check_subscriber(txn, s_id)?;
                    if problem.is_some() {
                        return Ok((problem, 0, 0));
                    }
                    cf += c;
                    ai += a;
                }
                Ok((None, cf, ai))
            })?;
            if problem.is_some() {
                return Ok((problem, 0, 0));
            }
            self.checked.add(batch.len() as u64);
            forwards += cf;
            access += ai;
        }
        Ok((None, forwards, access))
    }

    /// One subscriber's rows: a problem, or its call-forwarding and
    /// access-info rows counted.
    fn check_subscriber(
        &self,
        txn: &mut Txn,
        s_id: u64,
    ) -> Result<(Option<String>, u64, u64), TxnError> {
        let Some(row) = self.subscriber.get(txn, s_id)? else {
            return Ok((Some(format!("subscriber {s_id} is missing")), 0, 0));
        };
        if u64::from_le_bytes(row[..8].try_into().expect("sub_nbr")) != s_id
            || self.lookup(txn, s_id)? != s_id
        {
            return Ok((
                Some(format!("subscriber {s_id}: sub_nbr or its index is wrong")),
                0,
                0,
            ));
        }
        let (mut cf, mut ai) = (0, 0);
        for t in 1..=4 {
            ai += u64::from(self.access_info.get(txn, sf_key(s_id, t))?.is_some());
            let sf = self.special_facility.get(txn, sf_key(s_id, t))?;
            for start in [0, 8, 16] {
                if self
                    .call_forwarding
                    .get(txn, cf_key(s_id, t, start))?
                    .is_some()
                {
                    if sf.is_none() {
                        return Ok((
                            Some(format!(
                                "call forwarding ({s_id}, {t}, {start}) has no special facility"
                            )),
                            0,
                            0,
                        ));
                    }
                    cf += 1;
                }
            }
        }
        Ok((None, cf, ai))
    }

    fn s_id(&self, rng: &mut Rng) -> u64 {
        let a = if self.subscribers <= 1_000_000 {
            65_535
        } else if self.subscribers <= 10_000_000 {
            1_048_575
        } else {
            2_097_151
        };
        ((rng.range(0, a) | rng.range(1, self.subscribers)) % self.subscribers) + 1
    }

    /// sub_nbr → s_id through the secondary index.
    fn lookup(&self, txn: &mut Txn, sub_nbr: u64) -> Result<u64, TxnError> {
        let value = self
            .sub_nbr_index
            .get(txn, sub_nbr)?
            .expect("every sub_nbr is indexed");
        Ok(u64::from_le_bytes(value.try_into().expect("8-byte s_id")))
    }
}

/// 1 to 4 distinct types from 1..=4.
fn distinct_types(rng: &mut Rng) -> Vec<u64> {
    let count = rng.range(1, 4);
    let mut types: Vec<u64> = (1..=4).collect();
    for i in 0..4 {
        let j = rng.range(i, 3) as usize;
        types.swap(i as usize, j);
    }
    types.truncate(count as usize);
    types
}

fn requested() -> TxnError {
    TxnError::Conflict(AbortReason::Requested)
}

impl Workload for Tatp {
    fn name(&self) -> super::config::WorkloadName {
        super::config::WorkloadName::Tatp
    }

    fn types(&self) -> &'static [&'static str] {
        TYPES
    }

    fn run_one(&self, node: &Node, rng: &mut Rng) -> farm_core::Result<Attempt> {
        let kind = match rng.percent() {
            0..=34 => 0,
            35..=44 => 1,
            45..=79 => 2,
            80..=81 => 3,
            82..=95 => 4,
            96..=97 => 5,
            _ => 6,
        };
        let s_id = self.s_id(rng);
        let sf_type = rng.range(1, 4);
        let start_time = rng.range(0, 2) * 8;
        let mut txn = node.begin()?;
        let body = (|| -> Result<(), TxnError> {
            match kind {
                0 => {
                    self.subscriber
                        .get(&mut txn, s_id)?
                        .expect("subscriber exists");
                }
                1 => {
                    let end_time = rng.range(1, 24);
                    if let Some(sf) = self.special_facility.get(&mut txn, sf_key(s_id, sf_type))? {
                        if sf[0] == 1 {
                            // The call-forwarding rows that start by
                            // `start_time`, in one round trip.
                            let keys = [0u64, 8, 16].map(|start| cf_key(s_id, sf_type, start));
                            let count = [0u64, 8, 16].iter().filter(|s| **s <= start_time).count();
                            for cf in self
                                .call_forwarding
                                .get_many(&mut txn, &keys[..count])?
                                .iter()
                                .flatten()
                            {
                                let _numberx_matches = u64::from(cf[0]) > end_time;
                            }
                        }
                    }
                }
                2 => {
                    let _ = self
                        .access_info
                        .get(&mut txn, sf_key(s_id, rng.range(1, 4)))?;
                }
                3 => {
                    let mut row = self
                        .subscriber
                        .get(&mut txn, s_id)?
                        .expect("subscriber exists");
                    row[8] = (row[8] & !1) | (rng.next_u64() & 1) as u8;
                    self.subscriber.put(&mut txn, s_id, &row)?;
                    let key = sf_key(s_id, sf_type);
                    let mut sf = self
                        .special_facility
                        .get(&mut txn, key)?
                        .ok_or_else(requested)?;
                    sf[2] = rng.next_u64() as u8;
                    self.special_facility.put(&mut txn, key, &sf)?;
                }
                4 => {
                    let s_id = self.lookup(&mut txn, s_id)?;
                    let mut row = self
                        .subscriber
                        .get(&mut txn, s_id)?
                        .expect("subscriber exists");
                    row[VLR_AT..VLR_AT + 4].copy_from_slice(&(rng.next_u64() as u32).to_le_bytes());
                    self.subscriber.put(&mut txn, s_id, &row)?;
                }
                5 => {
                    let s_id = self.lookup(&mut txn, s_id)?;
                    // The subscriber's four special facilities in one
                    // round trip.
                    let sf = &self.special_facility;
                    let facilities = sf.get_many(
                        &mut txn,
                        &[
                            sf_key(s_id, 1),
                            sf_key(s_id, 2),
                            sf_key(s_id, 3),
                            sf_key(s_id, 4),
                        ],
                    )?;
                    if facilities[sf_type as usize - 1].is_none() {
                        return Err(requested());
                    }
                    let key = cf_key(s_id, sf_type, start_time);
                    if self.call_forwarding.get(&mut txn, key)?.is_some() {
                        return Err(requested());
                    }
                    let mut cf_row = vec![(start_time + rng.range(1, 8)) as u8];
                    cf_row.extend_from_slice(&rng.next_u64().to_le_bytes());
                    self.call_forwarding.put(&mut txn, key, &cf_row)?;
                }
                _ => {
                    let s_id = self.lookup(&mut txn, s_id)?;
                    if !self
                        .call_forwarding
                        .delete(&mut txn, cf_key(s_id, sf_type, start_time))?
                    {
                        return Err(requested());
                    }
                }
            }
            Ok(())
        })();
        // The spec's expected failures abort as "requested", like any
        // other conflict.
        finish(kind, txn, body)
    }

    /// Checks every subscriber from several threads of `node` (reads are
    /// latency-bound, over verbs above all), [`CHECK_BATCH`] subscribers
    /// per read-only transaction.
    fn check_progress(&self) -> Option<super::CheckProgress> {
        self.checked.progress("subscribers")
    }

    fn check(&self, node: &Node, tallies: &[i64]) -> farm_core::Result<Result<String, String>> {
        let part = self.check_counts(node, 0, 1)?;
        Ok(self.check_merge(&[part], tallies))
    }

    /// The subscribers node `index` of `of` owns, checked from that node,
    /// in parallel with the other nodes' parts: `[problem or null,
    /// call-forwarding rows, access-info rows]`. (Rows live in the buckets
    /// their keys hash to, on any node: a lookup from the owner is a
    /// one-sided READ two times in three with three nodes.)
    fn check_part(
        &self,
        node: &Node,
        index: usize,
        of: usize,
    ) -> farm_core::Result<Option<serde_json::Value>> {
        self.check_counts(node, index as u64, of as u64).map(Some)
    }

    fn check_merge(&self, parts: &[serde_json::Value], _: &[i64]) -> Result<String, String> {
        let (mut forwards, mut access) = (0, 0);
        for part in parts {
            let malformed = || format!("a malformed part of the check: {part}");
            if let Some(problem) = part.get(0).and_then(serde_json::Value::as_str) {
                return Err(problem.to_string());
            }
            forwards += part
                .get(1)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(malformed)?;
            access += part
                .get(2)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(malformed)?;
        }
        if access != self.access_rows {
            return Err(format!(
                "{access} access-info rows, {} loaded",
                self.access_rows
            ));
        }
        Ok(format!(
            "{} subscribers with index entries; {forwards} call-forwarding rows all with their special facility; {access} access-info rows unchanged",
            self.subscribers
        ))
    }
}
