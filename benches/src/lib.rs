//! Benchmarks of farm-rs, each a module the `farm` command line drives.
//!
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
