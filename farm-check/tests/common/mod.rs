//! Hand-built histories for the property tests.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use farm_check::{ClientId, History, MicroOp, Outcome, Txn};

/// A transaction of `client` over `[invoke_ns, complete_ns]`.
pub fn txn(
    client: u32,
    invoke_ns: u64,
    complete_ns: u64,
    outcome: Outcome,
    ops: Vec<MicroOp>,
) -> Txn {
    Txn {
        client: ClientId(client),
        invoke_ns,
        complete_ns,
        ops,
        outcome,
    }
}

pub fn ok(client: u32, invoke_ns: u64, complete_ns: u64, ops: Vec<MicroOp>) -> Txn {
    txn(client, invoke_ns, complete_ns, Outcome::Committed, ops)
}

pub fn r(key: u64, value: Option<u64>) -> MicroOp {
    MicroOp::ReadRegister { key, value }
}

pub fn w(key: u64, value: u64) -> MicroOp {
    MicroOp::WriteRegister { key, value }
}

pub fn append(key: u64, element: u64) -> MicroOp {
    MicroOp::Append { key, element }
}

pub fn read_list(key: u64, elements: &[u64]) -> MicroOp {
    MicroOp::ReadList {
        key,
        elements: elements.to_vec(),
    }
}

pub fn history(txns: Vec<Txn>) -> History {
    History::new(txns)
}

/// splitmix64: a small deterministic generator, so that a failing
/// generated history can be rebuilt from its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// How many appends a list key takes before the generator retires it, so
/// that list reads stay short however long the history runs.
pub const LIST_APPENDS_PER_KEY_MAX: usize = 32;

/// An in-memory store that runs each transaction atomically: whatever order
/// its caller runs transactions in is their serial order. Histories recorded
/// against it are strictly serializable as long as each transaction runs
/// between its invocation and completion stamps.
pub struct Store {
    registers: std::collections::HashMap<u64, u64>,
    lists: std::collections::HashMap<u64, Vec<u64>>,
    register_keys: Vec<u64>,
    list_keys: Vec<u64>,
    key_next: u64,
    value_next: u64,
}

impl Store {
    /// A store whose transactions pick among `register_keys_live` register
    /// keys and `list_keys_live` list keys at a time.
    pub fn new(register_keys_live: usize, list_keys_live: usize) -> Store {
        let mut store = Store {
            registers: Default::default(),
            lists: Default::default(),
            register_keys: Vec::new(),
            list_keys: Vec::new(),
            key_next: 0,
            value_next: 1,
        };
        for _ in 0..register_keys_live {
            let k = store.fresh_key();
            store.register_keys.push(k);
        }
        for _ in 0..list_keys_live {
            let k = store.fresh_key();
            store.list_keys.push(k);
        }
        store
    }

    fn fresh_key(&mut self) -> u64 {
        self.key_next += 1;
        self.key_next
    }

    fn fresh_value(&mut self) -> u64 {
        self.value_next += 1;
        self.value_next
    }

    /// Runs one random transaction of one to four micro-ops and returns what
    /// it did. Its writes take effect if `outcome` is committed, and, for an
    /// unknown outcome, if a coin says so.
    pub fn run(&mut self, rng: &mut Rng, outcome: Outcome) -> Vec<MicroOp> {
        let mut ops = Vec::new();
        let mut registers_own: std::collections::HashMap<u64, u64> = Default::default();
        let mut appends_own: Vec<(u64, u64)> = Vec::new();
        let op_count = 1 + rng.below(4);
        for _ in 0..op_count {
            let choice = match (self.register_keys.is_empty(), self.list_keys.is_empty()) {
                (false, false) => rng.below(6),
                (false, true) => rng.below(3),
                (true, false) => 3 + rng.below(3),
                (true, true) => panic!("a store needs keys"),
            };
            if choice < 3 {
                let key = self.register_keys[rng.below(self.register_keys.len() as u64) as usize];
                let current = registers_own
                    .get(&key)
                    .or(self.registers.get(&key))
                    .copied();
                if choice <= 1 {
                    ops.push(MicroOp::ReadRegister {
                        key,
                        value: current,
                    });
                }
                if choice >= 1 {
                    let value = self.fresh_value();
                    registers_own.insert(key, value);
                    ops.push(MicroOp::WriteRegister { key, value });
                }
            } else {
                let slot = rng.below(self.list_keys.len() as u64) as usize;
                let key = self.list_keys[slot];
                if choice >= 4 {
                    let mut elements = self.lists.get(&key).cloned().unwrap_or_default();
                    elements.extend(
                        appends_own
                            .iter()
                            .filter(|(k, _)| *k == key)
                            .map(|(_, e)| *e),
                    );
                    ops.push(MicroOp::ReadList { key, elements });
                }
                if choice != 4 {
                    let element = self.fresh_value();
                    appends_own.push((key, element));
                    ops.push(MicroOp::Append { key, element });
                }
            }
        }
        let applies = match outcome {
            Outcome::Committed => true,
            Outcome::Aborted => false,
            Outcome::Unknown => rng.below(2) == 0,
        };
        if applies {
            self.registers.extend(registers_own);
            for (key, element) in appends_own {
                let list = self.lists.entry(key).or_default();
                list.push(element);
                if list.len() >= LIST_APPENDS_PER_KEY_MAX {
                    // Retire the key: no transaction starts on it again.
                    if let Some(slot) = self.list_keys.iter().position(|k| *k == key) {
                        self.list_keys[slot] = self.fresh_key();
                    }
                }
            }
        }
        ops
    }
}

/// 90% committed, 7% aborted, 3% unknown.
pub fn random_outcome(rng: &mut Rng) -> Outcome {
    match rng.below(100) {
        0..=89 => Outcome::Committed,
        90..=96 => Outcome::Aborted,
        _ => Outcome::Unknown,
    }
}

/// A strictly serializable history of `txn_count` transactions from
/// `clients` simulated clients whose transactions overlap in time: on each
/// tick one random client either invokes a transaction or runs its pending
/// one atomically and completes it.
pub fn generate_valid(seed: u64, txn_count: usize, clients: usize, store: &mut Store) -> History {
    let mut rng = Rng(seed);
    let mut pending_invoke_tick: Vec<Option<u64>> = vec![None; clients];
    let mut txns = Vec::with_capacity(txn_count);
    let mut tick = 0u64;
    while txns.len() < txn_count {
        tick += 1;
        let client = rng.below(clients as u64) as usize;
        match pending_invoke_tick[client].take() {
            None => pending_invoke_tick[client] = Some(tick),
            Some(invoke_tick) => {
                let outcome = random_outcome(&mut rng);
                let ops = store.run(&mut rng, outcome);
                // It ran at `tick * 10`; invocation and completion bracket it.
                txns.push(txn(
                    client as u32,
                    invoke_tick * 10,
                    tick * 10 + 5,
                    outcome,
                    ops,
                ));
            }
        }
    }
    History::new(txns)
}
