//! Fuzz targets for the benchmarks' decoders of bytes from elsewhere: the
//! `bench` request a driver sends node processes, the measurements nodes
//! send node 0, and the reports `farm plot` reads from files. Arbitrary
//! input must never panic (a request that decodes is then checked, and
//! that must not panic either); an encoding of arbitrary values decodes to
//! them again.
//!
//! Inputs come from proptest (256 cases per target in the suite; a longer
//! run is `PROPTEST_CASES=1000000 cargo test --release -p farm-benches
//! --test decoders_never_panic_and_round_trip`, see the README).

use farm_benches::bench::config::WorkloadName;
use farm_benches::bench::service::BenchRequest;
use farm_benches::bench::ycsb::Distribution;
use farm_benches::bench::BenchReport;
use proptest::collection::vec;
use proptest::prelude::*;

fn request() -> impl Strategy<Value = BenchRequest> {
    (
        prop::sample::select(WorkloadName::ALL.to_vec()),
        any::<f64>(),
        any::<bool>(),
        vec(any::<usize>(), 0..4),
        any::<f64>(),
        any::<f64>(),
        any::<usize>(),
        any::<usize>(),
    )
        .prop_map(
            |(
                workload,
                scale,
                zipfian,
                threads,
                warmup_s,
                duration_s,
                warehouses_per_node,
                in_flight,
            )| {
                BenchRequest {
                    workload,
                    scale,
                    distribution: if zipfian {
                        Distribution::Zipfian
                    } else {
                        Distribution::Uniform
                    },
                    threads,
                    warmup_s,
                    duration_s,
                    warehouses_per_node,
                    in_flight,
                    max_in_flight: None,
                }
            },
        )
}

proptest! {
    #[test]
    fn bench_requests_of_arbitrary_text_never_panic(text in ".{0,200}") {
        if let Ok(request) = serde_json::from_str::<BenchRequest>(&text) {
            let _ = request.check();
        }
        let _ = serde_json::from_str::<BenchReport>(&text);
    }

    /// Requests with every field anything at all: the check refuses what
    /// is out of range instead of panicking, and JSON carries them whole
    /// (non-finite numbers are not JSON: those are refused at encoding).
    #[test]
    fn bench_requests_round_trip_and_check_never_panics(request in request()) {
        let _ = request.check();
        if let Ok(text) = serde_json::to_string(&request) {
            if let Ok(again) = serde_json::from_str::<BenchRequest>(&text) {
                if request.scale.is_finite() && request.warmup_s.is_finite() && request.duration_s.is_finite() {
                    prop_assert_eq!(again, request);
                }
            }
        }
    }

    #[test]
    fn request_shaped_json_never_panics(
        workload in "[a-z-]{0,8}",
        scale in any::<f64>(),
        threads in vec(any::<i64>(), 0..3),
        extra in prop::option::of("[a-z]{1,6}"),
    ) {
        let mut text = format!(
            r#"{{"workload":"{workload}","scale":{},"distribution":"zipfian","threads":{threads:?},"warmup_s":1,"duration_s":2"#,
            if scale.is_finite() { scale.to_string() } else { "1".into() }
        );
        if let Some(extra) = extra {
            text.push_str(&format!(r#","{extra}":1"#));
        }
        text.push('}');
        if let Ok(request) = serde_json::from_str::<BenchRequest>(&text) {
            let _ = request.check();
        }
    }
}
