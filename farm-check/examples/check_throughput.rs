//! How long `farm_check::check` takes on a long generated valid history.
//!
//! `cargo run --release -p farm-check --example check_throughput [TXNS] [CLIENTS]`
//!
//! Prints one line per key mix: registers only, lists only, both.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let txn_count: usize = args
        .next()
        .map_or(200_000, |a| a.parse().expect("TXNS is a number"));
    let clients: usize = args
        .next()
        .map_or(16, |a| a.parse().expect("CLIENTS is a number"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{txn_count} txns, {clients} overlapping clients, {cores} cores");
    println!(
        "{:<16} {:>10} {:>12} {:>12}",
        "keys", "committed", "generate ms", "check ms"
    );
    for (name, register_keys, list_keys) in [
        ("registers", 64, 0),
        ("lists", 0, 64),
        ("registers+lists", 64, 64),
    ] {
        let mut store = common::Store::new(register_keys, list_keys);
        let started = Instant::now();
        let history = common::generate_valid(1, txn_count, clients, &mut store);
        let generate_ms = started.elapsed().as_secs_f64() * 1e3;
        let report = farm_check::check(&history);
        assert!(report.is_valid(), "{}", report.table());
        let check_ms = report.check_time.as_secs_f64() * 1e3;
        println!(
            "{name:<16} {:>10} {generate_ms:>12.0} {check_ms:>12.0}",
            report.committed
        );
    }
}
