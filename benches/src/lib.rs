//! Benchmarks of farm-rs, each a module the `farm` command line drives.
//!
//! * [`bench`]: `farm bench`, FaRM's workloads (TATP, SmallBank, YCSB,
//!   TPC-C) with latency histograms and commit-phase breakdowns, in one
//!   process or on node processes (its `bench` service plugs into
//!   `farm node`'s serve loop).
//! * [`commit_lat`]: the latency of the smallest read-write commit.
//! * [`rdma_bench`]: a perftest-like microbenchmark of the fabric alone
//!   (READ, WRITE, compare-and-swap, fetch-and-add latency and throughput).
//!
//! Every table these benchmarks print names the fabric, the device and the
//! machine it was measured on, so that numbers from different machines are
//! never compared by accident.

pub mod bench;
pub mod commit_lat;
pub mod error;
pub mod rdma_bench;

pub use error::Error;
