//! SmallBank (Alomari et al., ICDE 2008, as in H-Store/OLTPBench): savings
//! and checking accounts, six transaction types in the standard mix:
//! Amalgamate 15%, Balance 15%, DepositChecking 15%, SendPayment 25%,
//! TransactSavings 15%, WriteCheck 15%.
//!
//! Readings of the spec: balances are integer cents; accounts are chosen
//! uniformly (OLTPBench's hotspot option is not modelled); a
//! TransactSavings or SendPayment that would overdraw aborts (counted as
//! "requested"); WriteCheck charges a 1-cent penalty when the total balance
//! is short. The check afterwards: the sum of all balances equals the
//! initial sum plus the deposits, savings transactions and checks that
//! committed (every committed amount is counted by the driver).

use std::sync::atomic::{AtomicI64, Ordering};

use farm_core::{AbortReason, HashTable, Node, Outcome, TxnError};

use super::site::Site;
use super::{finish, Attempt, Rng, Workload};

const TYPES: &[&str] = &[
    "amalgamate",
    "balance",
    "deposit-checking",
    "send-payment",
    "transact-savings",
    "write-check",
];

pub struct SmallBank {
    savings: HashTable,
    checking: HashTable,
    accounts: u64,
    initial_total: i64,
    /// Net money that committed transactions brought in or took out.
    delta: AtomicI64,
    checked: super::CheckCounter,
}

fn get(table: &HashTable, txn: &mut farm_core::Txn, account: u64) -> Result<i64, TxnError> {
    let value = table.get(txn, account)?.expect("every account exists");
    Ok(i64::from_le_bytes(
        value.try_into().expect("8-byte balance"),
    ))
}

fn set(
    table: &HashTable,
    txn: &mut farm_core::Txn,
    account: u64,
    balance: i64,
) -> Result<(), TxnError> {
    table.put(txn, account, &balance.to_le_bytes())
}

/// Accounts loaded by one transaction: the first one's number and each
/// one's (savings, checking) balance.
type Chunk = (u64, Vec<(i64, i64)>);

impl SmallBank {
    /// Accounts are inserted 64 at a time, chunk c by node c mod nodes;
    /// every process draws every balance.
    pub fn load(site: &Site, accounts: u64) -> farm_core::Result<SmallBank> {
        // 8-byte balances inline, 13 slots a bucket, about 4 accounts in
        // each. (One in each, for fewer false conflicts, was slower: 4
        // times the buckets, and their memory, for half the aborts.)
        let savings = site.table("smallbank-savings", (accounts as usize / 4).max(1), 8)?;
        let checking = site.table("smallbank-checking", (accounts as usize / 4).max(1), 8)?;
        let mut rng = Rng::new(77);
        let mut total = 0i64;
        // (first account, balances) per chunk, by the node that inserts it.
        let mut by_node: Vec<Vec<Chunk>> = (0..site.nodes()).map(|_| Vec::new()).collect();
        for first in (0..accounts).step_by(64) {
            let balances: Vec<(i64, i64)> = (first..(first + 64).min(accounts))
                .map(|_| {
                    (
                        rng.range(10_000, 50_000) as i64,
                        rng.range(10_000, 50_000) as i64,
                    )
                })
                .collect();
            total += balances.iter().map(|(s, c)| s + c).sum::<i64>();
            by_node[(first / 64) as usize % site.nodes()].push((first, balances));
        }
        // Values first, then each bucket's primary links its keys
        // ([`Site::load_bulk`]): table 0 savings, 1 checking.
        site.load_bulk(
            &[&savings, &checking],
            &by_node,
            &|(first, balances), sink| {
                for (account, (s, c)) in (*first..).zip(balances) {
                    sink(0, account, &s.to_le_bytes())?;
                    sink(1, account, &c.to_le_bytes())?;
                }
                Ok(())
            },
        )?;
        site.barrier("smallbank-loaded")?;
        Ok(SmallBank {
            savings,
            checking,
            accounts,
            initial_total: total,
            delta: AtomicI64::new(0),
            checked: super::CheckCounter::default(),
        })
    }
}

impl Workload for SmallBank {
    fn name(&self) -> super::config::WorkloadName {
        super::config::WorkloadName::Smallbank
    }

    fn types(&self) -> &'static [&'static str] {
        TYPES
    }

    fn run_one(&self, node: &Node, rng: &mut Rng) -> farm_core::Result<Attempt> {
        let percent = rng.percent();
        let kind = match percent {
            0..=14 => 0,
            15..=29 => 1,
            30..=44 => 2,
            45..=69 => 3,
            70..=84 => 4,
            _ => 5,
        };
        let a = rng.next_u64() % self.accounts;
        let mut b = rng.next_u64() % self.accounts;
        if b == a {
            b = (a + 1) % self.accounts;
        }
        let mut txn = node.begin()?;
        let mut delta = 0i64;
        let body = (|| -> Result<(), TxnError> {
            match kind {
                0 => {
                    let total =
                        get(&self.savings, &mut txn, a)? + get(&self.checking, &mut txn, a)?;
                    let to = get(&self.checking, &mut txn, b)?;
                    set(&self.savings, &mut txn, a, 0)?;
                    set(&self.checking, &mut txn, a, 0)?;
                    set(&self.checking, &mut txn, b, to + total)?;
                }
                1 => {
                    let _ = get(&self.savings, &mut txn, a)? + get(&self.checking, &mut txn, a)?;
                }
                2 => {
                    let balance = get(&self.checking, &mut txn, a)?;
                    set(&self.checking, &mut txn, a, balance + 130)?;
                    delta = 130;
                }
                3 => {
                    let from = get(&self.checking, &mut txn, a)?;
                    if from < 500 {
                        return Err(TxnError::Conflict(AbortReason::Requested));
                    }
                    let to = get(&self.checking, &mut txn, b)?;
                    set(&self.checking, &mut txn, a, from - 500)?;
                    set(&self.checking, &mut txn, b, to + 500)?;
                }
                4 => {
                    let balance = get(&self.savings, &mut txn, a)?;
                    if balance + 2020 < 0 {
                        return Err(TxnError::Conflict(AbortReason::Requested));
                    }
                    set(&self.savings, &mut txn, a, balance + 2020)?;
                    delta = 2020;
                }
                _ => {
                    let savings = get(&self.savings, &mut txn, a)?;
                    let checking = get(&self.checking, &mut txn, a)?;
                    let charge = if savings + checking < 500 { 501 } else { 500 };
                    set(&self.checking, &mut txn, a, checking - charge)?;
                    delta = -charge;
                }
            }
            Ok(())
        })();
        // A requested abort (an overdraft) is an ordinary conflict to `finish`.
        let attempt = finish(kind, txn, body)?;
        if attempt.outcome == Outcome::Committed {
            self.delta.fetch_add(delta, Ordering::Relaxed);
        }
        Ok(attempt)
    }

    fn check_progress(&self) -> Option<super::CheckProgress> {
        self.checked.progress("accounts")
    }

    fn tally(&self) -> i64 {
        self.delta.load(Ordering::Relaxed)
    }

    /// `tallies`: every process's net money in and out.
    fn check(&self, node: &Node, tallies: &[i64]) -> farm_core::Result<Result<String, String>> {
        let mut total = 0i64;
        self.checked.begin(self.accounts);
        for account in 0..self.accounts {
            self.checked.add(1);
            total += node.run(|txn| {
                Ok::<i64, TxnError>(
                    get(&self.savings, txn, account)? + get(&self.checking, txn, account)?,
                )
            })?;
        }
        let delta: i64 = tallies.iter().sum();
        let expected = self.initial_total + delta;
        Ok(if total == expected {
            Ok(format!("total balance {total} = initial {} + committed deposits, savings transactions and checks", self.initial_total))
        } else {
            Err(format!("total balance {total}, expected {expected}"))
        })
    }
}
