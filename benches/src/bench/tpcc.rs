//! TPC-C's NewOrder and Payment transactions (the two that make up 88% of
//! the standard mix and the two FaRM reported), with warehouses partitioned
//! across nodes: `--warehouses` per node (default 1), warehouse w's rows in
//! the regions of node (w-1) mod nodes, and each transaction of a node's
//! client threads takes one of that node's warehouses as home, uniformly
//! (the spec binds a terminal to one warehouse; a client thread here plays
//! many terminals).
//!
//! Readings of the spec (TPC-C 5.11):
//! - the mix is NewOrder 51%, Payment 49% (45:43 rescaled without the other
//!   three transactions);
//! - a NewOrder line is supplied by a remote warehouse 10% of the time (as in
//!   FaRM's runs; the spec says 1%), a Payment's customer is remote 15%;
//! - 60% of Payments find the customer by last name through a secondary
//!   index (w, d, last name) → customer ids, taking the middle one;
//! - 1% of NewOrders name an unused item and roll back (counted as
//!   "requested" aborts);
//! - the population is scaled: `scale` × 10,000 items and stock rows per
//!   warehouse, `scale` × 300 customers per district; the initial 3,000 orders
//!   per district are not loaded (orders start at id 1), so the consistency
//!   conditions below are checked over the orders the run made;
//! - money is integer cents, tax and discount in basis points.
//!
//! The check afterwards (spec §3.3.2, conditions 1–4 as they apply without
//! Delivery): W_YTD = Σ D_YTD per warehouse; D_NEXT_O_ID − 1 = max(O_ID) =
//! max(NO_O_ID) with every order and new-order row present; Σ O_OL_CNT =
//! the number of ORDER_LINE rows of the district.

use std::sync::atomic::{AtomicU64, Ordering};

use farm_core::{AbortReason, HashTable, Node, Txn, TxnError};

use super::site::Site;
use super::{finish, Attempt, Rng, Workload};

const TYPES: &[&str] = &["new-order", "payment"];
const DISTRICTS: u64 = 10;

pub struct Tpcc {
    nodes: u64,
    warehouses: u64,
    items: u64,
    customers: u64,
    warehouse: HashTable,
    district: HashTable,
    customer: HashTable,
    by_last_name: HashTable,
    item: HashTable,
    stock: HashTable,
    order: HashTable,
    new_order: HashTable,
    order_line: HashTable,
    history: HashTable,
    history_ids: AtomicU64,
}

fn wd(w: u64, d: u64) -> u64 {
    (w << 8) | d
}
fn wdc(w: u64, d: u64, c: u64) -> u64 {
    (w << 40) | (d << 32) | c
}
fn wdo(w: u64, d: u64, o: u64) -> u64 {
    (w << 40) | (d << 32) | o
}
fn wdol(w: u64, d: u64, o: u64, line: u64) -> u64 {
    (w << 48) | (d << 40) | (o << 8) | line
}
fn wi(w: u64, i: u64) -> u64 {
    (w << 32) | i
}

fn words(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn get(table: &HashTable, txn: &mut Txn, key: u64) -> Result<Vec<i64>, TxnError> {
    Ok(decode(&table.get(txn, key)?.expect("row exists")))
}

/// NURand(A, x, y) of the spec, with a fixed C.
fn nurand(rng: &mut Rng, a: u64, x: u64, y: u64) -> u64 {
    (((rng.range(0, a) | rng.range(x, y)) + 42) % (y - x + 1)) + x
}

/// The last-name number of customer c (the spec's syllable index, 0..999).
fn last_name(c: u64, rng: &mut Rng) -> u64 {
    if c <= 1000 {
        c - 1
    } else {
        nurand(rng, 255, 0, 999)
    }
}

/// Inline capacity of TPC-C's tables (most rows are a few words).
const INLINE: usize = farm_core::INLINE_VALUE_BYTES;

impl Tpcc {
    /// Warehouse w is loaded by node w − 1, the items by node 0; every
    /// process draws the whole population.
    pub fn load(site: &Site, scale: f64, warehouses_per_node: usize) -> farm_core::Result<Tpcc> {
        let nodes = site.nodes() as u64;
        let warehouses = nodes * warehouses_per_node.max(1) as u64;
        let items = ((10_000.0 * scale) as u64).max(100);
        let customers = ((300.0 * scale) as u64).max(30);
        let rows_per_w = items + DISTRICTS * customers * 3;
        // Rows of up to 40 bytes inline, 4 a bucket, about 2 in each.
        let buckets = |rows: u64| (rows as usize / 2).max(16);
        let tpcc = Tpcc {
            nodes,
            warehouses,
            items,
            customers,
            warehouse: site.table("tpcc-warehouse", 16, INLINE)?,
            district: site.table("tpcc-district", buckets(warehouses * DISTRICTS), INLINE)?,
            customer: site.table(
                "tpcc-customer",
                buckets(warehouses * DISTRICTS * customers),
                INLINE,
            )?,
            by_last_name: site.table(
                "tpcc-by-last-name",
                buckets(warehouses * DISTRICTS * 1000),
                INLINE,
            )?,
            item: site.table("tpcc-item", buckets(items), INLINE)?,
            stock: site.table("tpcc-stock", buckets(warehouses * items), INLINE)?,
            order: site.table("tpcc-order", buckets(warehouses * rows_per_w / 8), INLINE)?,
            new_order: site.table(
                "tpcc-new-order",
                buckets(warehouses * rows_per_w / 8),
                INLINE,
            )?,
            order_line: site.table("tpcc-order-line", buckets(warehouses * rows_per_w), INLINE)?,
            history: site.table("tpcc-history", buckets(warehouses * rows_per_w / 8), INLINE)?,
            history_ids: AtomicU64::new(1),
        };
        let mut rng = Rng::new(2023);
        // Items: price 1.00 .. 100.00.
        for chunk in (1..=items).collect::<Vec<_>>().chunks(64) {
            let prices: Vec<i64> = chunk
                .iter()
                .map(|_| rng.range(100, 10_000) as i64)
                .collect();
            let Some(node) = site.local(0) else {
                continue;
            };
            node.run(|txn| {
                for (i, price) in chunk.iter().zip(&prices) {
                    tpcc.item.put(txn, *i, &words(&[*price]))?;
                }
                Ok(())
            })?;
        }
        for w in 1..=warehouses {
            let Some(node) = site.local(((w - 1) % nodes) as usize) else {
                continue;
            };
            // Drawn outside the transactions: a retried one draws nothing new.
            let mut rng = Rng::new(2024 + w);
            let tax = rng.range(0, 2000) as i64;
            node.run(|txn| tpcc.warehouse.put(txn, w, &words(&[tax, 30_000_000])))?;
            for chunk in (1..=items).collect::<Vec<_>>().chunks(64) {
                let quantities: Vec<i64> =
                    chunk.iter().map(|_| rng.range(10, 100) as i64).collect();
                node.run(|txn| {
                    for (i, quantity) in chunk.iter().zip(&quantities) {
                        // quantity, ytd, order count, remote count
                        tpcc.stock
                            .put(txn, wi(w, *i), &words(&[*quantity, 0, 0, 0]))?;
                    }
                    Ok(())
                })?;
            }
            for d in 1..=DISTRICTS {
                // tax, ytd, next order id
                let tax = rng.range(0, 2000) as i64;
                node.run(|txn| {
                    tpcc.district
                        .put(txn, wd(w, d), &words(&[tax, 3_000_000, 1]))
                })?;
                let mut names: std::collections::BTreeMap<u64, Vec<i64>> = Default::default();
                for chunk in (1..=customers).collect::<Vec<_>>().chunks(32) {
                    let rows: Vec<(u64, Vec<i64>)> = chunk
                        .iter()
                        .map(|c| {
                            let name = last_name(*c, &mut rng);
                            names.entry(name).or_default().push(*c as i64);
                            // discount, balance, ytd payment, payment count, last name
                            (
                                *c,
                                vec![rng.range(0, 5000) as i64, -10_00, 10_00, 1, name as i64],
                            )
                        })
                        .collect();
                    node.run(|txn| {
                        for (c, row) in &rows {
                            tpcc.customer.put(txn, wdc(w, d, *c), &words(row))?;
                        }
                        Ok(())
                    })?;
                }
                for chunk in names.iter().collect::<Vec<_>>().chunks(32) {
                    node.run(|txn| {
                        for (name, ids) in chunk {
                            // At most 500 ids per name object (4 KiB objects).
                            let ids = &ids[..ids.len().min(500)];
                            tpcc.by_last_name.put(txn, wdc(w, d, **name), &words(ids))?;
                        }
                        Ok(())
                    })?;
                }
            }
        }
        site.barrier("tpcc-loaded")?;
        Ok(tpcc)
    }

    /// A home warehouse for this transaction: one of the node's own,
    /// n+1, n+1+nodes, …, chosen uniformly.
    fn home(&self, node: &Node, rng: &mut Rng) -> u64 {
        let per_node = self.warehouses / self.nodes;
        (node.id() as u64 % self.nodes) + 1 + self.nodes * rng.range(0, per_node - 1)
    }

    fn other_warehouse(&self, w: u64, rng: &mut Rng) -> u64 {
        if self.warehouses == 1 {
            return w;
        }
        let other = rng.range(1, self.warehouses - 1);
        if other >= w {
            other + 1
        } else {
            other
        }
    }

    fn new_order(&self, txn: &mut Txn, node: &Node, rng: &mut Rng) -> Result<(), TxnError> {
        let w = self.home(node, rng);
        let d = rng.range(1, DISTRICTS);
        let c = nurand(rng, 1023, 1, self.customers);
        let lines = rng.range(5, 15);
        let rollback = rng.percent() == 0;
        let warehouse = get(&self.warehouse, txn, w)?;
        let mut district = get(&self.district, txn, wd(w, d))?;
        let o = district[2] as u64;
        district[2] += 1;
        self.district.put(txn, wd(w, d), &words(&district))?;
        let customer = get(&self.customer, txn, wdc(w, d, c))?;
        let mut all_local = 1;
        let mut chosen = Vec::new();
        for line in 1..=lines {
            let mut i = nurand(rng, 8191, 1, self.items);
            while chosen.contains(&i) {
                i = i % self.items + 1;
            }
            chosen.push(i);
            if rollback && line == lines {
                // The spec's unused item: the transaction rolls back.
                return Err(TxnError::Conflict(AbortReason::Requested));
            }
            let supply = if rng.percent() < 10 {
                self.other_warehouse(w, rng)
            } else {
                w
            };
            all_local &= i64::from(supply == w);
            let quantity = rng.range(1, 10) as i64;
            let price = get(&self.item, txn, i)?[0];
            let mut stock = get(&self.stock, txn, wi(supply, i))?;
            stock[0] = if stock[0] >= quantity + 10 {
                stock[0] - quantity
            } else {
                stock[0] - quantity + 91
            };
            stock[1] += quantity;
            stock[2] += 1;
            stock[3] += i64::from(supply != w);
            self.stock.put(txn, wi(supply, i), &words(&stock))?;
            let amount = quantity * price * (10_000 - customer[0]) / 10_000
                * (10_000 + warehouse[0] + district[0])
                / 10_000;
            self.order_line.put(
                txn,
                wdol(w, d, o, line),
                &words(&[i as i64, supply as i64, quantity, amount]),
            )?;
        }
        self.order.put(
            txn,
            wdo(w, d, o),
            &words(&[c as i64, lines as i64, all_local]),
        )?;
        self.new_order.put(txn, wdo(w, d, o), &words(&[1]))?;
        Ok(())
    }

    fn payment(&self, txn: &mut Txn, node: &Node, rng: &mut Rng) -> Result<(), TxnError> {
        let w = self.home(node, rng);
        let d = rng.range(1, DISTRICTS);
        let (cw, cd) = if rng.percent() < 85 {
            (w, d)
        } else {
            (self.other_warehouse(w, rng), rng.range(1, DISTRICTS))
        };
        let amount = rng.range(100, 500_000) as i64;
        let c = if rng.percent() < 60 {
            let name = nurand(rng, 255, 0, 999);
            match self.by_last_name.get(txn, wdc(cw, cd, name))? {
                Some(ids) => {
                    let ids = decode(&ids);
                    ids[(ids.len().saturating_sub(1)) / 2] as u64
                }
                None => nurand(rng, 1023, 1, self.customers),
            }
        } else {
            nurand(rng, 1023, 1, self.customers)
        };
        let mut warehouse = get(&self.warehouse, txn, w)?;
        warehouse[1] += amount;
        self.warehouse.put(txn, w, &words(&warehouse))?;
        let mut district = get(&self.district, txn, wd(w, d))?;
        district[1] += amount;
        self.district.put(txn, wd(w, d), &words(&district))?;
        let mut customer = get(&self.customer, txn, wdc(cw, cd, c))?;
        customer[1] -= amount;
        customer[2] += amount;
        customer[3] += 1;
        self.customer.put(txn, wdc(cw, cd, c), &words(&customer))?;
        // History keys: the node in the top bits, so that node processes,
        // each with its own counter, never pick the same one.
        let id = ((node.id() as u64 + 1) << 40) | self.history_ids.fetch_add(1, Ordering::Relaxed);
        self.history.put(
            txn,
            id,
            &words(&[c as i64, cd as i64, cw as i64, d as i64, w as i64, amount]),
        )?;
        Ok(())
    }
}

impl Workload for Tpcc {
    fn name(&self) -> super::config::WorkloadName {
        super::config::WorkloadName::Tpcc
    }

    fn types(&self) -> &'static [&'static str] {
        TYPES
    }

    fn run_one(&self, node: &Node, rng: &mut Rng) -> farm_core::Result<Attempt> {
        let kind = usize::from(rng.percent() >= 51);
        let mut txn = node.begin()?;
        let body = if kind == 0 {
            self.new_order(&mut txn, node, rng)
        } else {
            self.payment(&mut txn, node, rng)
        };
        // The spec's expected failures abort as "requested", like any
        // other conflict.
        finish(kind, txn, body)
    }

    fn check(&self, node: &Node, _: &[i64]) -> farm_core::Result<Result<String, String>> {
        let mut orders = 0;
        for w in 1..=self.warehouses {
            let w_ytd = node.run(|txn| get(&self.warehouse, txn, w))?[1];
            let mut d_ytd = 0;
            for d in 1..=DISTRICTS {
                let district = node.run(|txn| get(&self.district, txn, wd(w, d)))?;
                d_ytd += district[1];
                let next = district[2] as u64;
                for o in 1..next {
                    let problem = node.run(|txn| {
                        let Some(order) = self.order.get(txn, wdo(w, d, o))? else {
                            return Ok(Some(format!(
                                "order ({w}, {d}, {o}) below D_NEXT_O_ID is missing"
                            )));
                        };
                        if self.new_order.get(txn, wdo(w, d, o))?.is_none() {
                            return Ok(Some(format!("new-order ({w}, {d}, {o}) is missing")));
                        }
                        let lines = decode(&order)[1] as u64;
                        for line in 1..=lines {
                            if self.order_line.get(txn, wdol(w, d, o, line))?.is_none() {
                                return Ok(Some(format!(
                                    "order line ({w}, {d}, {o}, {line}) is missing"
                                )));
                            }
                        }
                        if self
                            .order_line
                            .get(txn, wdol(w, d, o, lines + 1))?
                            .is_some()
                        {
                            return Ok(Some(format!(
                                "order ({w}, {d}, {o}) has more lines than O_OL_CNT"
                            )));
                        }
                        Ok::<_, TxnError>(None)
                    })?;
                    if let Some(problem) = problem {
                        return Ok(Err(problem));
                    }
                    orders += 1;
                }
                let beyond = node.run(|txn| {
                    Ok::<_, TxnError>((
                        self.order.get(txn, wdo(w, d, next))?,
                        self.new_order.get(txn, wdo(w, d, next))?,
                    ))
                })?;
                if beyond.0.is_some() || beyond.1.is_some() {
                    return Ok(Err(format!(
                        "district ({w}, {d}) has an order at D_NEXT_O_ID = {next}"
                    )));
                }
            }
            if w_ytd != d_ytd {
                return Ok(Err(format!(
                    "warehouse {w}: W_YTD {w_ytd} != sum of D_YTD {d_ytd}"
                )));
            }
        }
        Ok(Ok(format!(
            "W_YTD = sum(D_YTD) for {} warehouses; {orders} orders below D_NEXT_O_ID, each with its new-order row and O_OL_CNT order lines",
            self.warehouses
        )))
    }
}
