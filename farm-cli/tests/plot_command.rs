//! `farm plot` draws SVG from `farm bench --json` reports (a single run
//! and a sweep), names each file's runs in the legend, and refuses a file
//! that is not a report with an error naming it.

use std::path::Path;
use std::process::Command;

fn farm(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_farm"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

#[test]
fn plot_draws_saved_reports() {
    let dir = tempfile::tempdir().unwrap();
    let bench = |threads: &str, json: &str| {
        let output = farm(
            &[
                "bench",
                "--workload",
                "ycsb-b",
                "--scale",
                "0.02",
                "--warmup",
                "0",
                "--duration",
                "0.3",
                "--quiet",
                "--threads",
                threads,
                "--json",
                json,
            ],
            dir.path(),
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    bench("1", "single.json");
    bench("1,2", "sweep.json");
    // Every report says how long loading took.
    let single: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("single.json")).unwrap())
            .unwrap();
    let single = single.as_array().and_then(|a| a.first()).unwrap_or(&single);
    let load_s = single["load_s"].as_f64().expect("load_s in the report");
    assert!(load_s > 0.0, "load_s {load_s}");
    let output = farm(
        &["plot", "single.json", "sweep.json", "--out", "both.svg"],
        dir.path(),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let svg = std::fs::read_to_string(dir.path().join("both.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG");
    for text in [
        "single: 3 nodes",
        "sweep: 3 nodes",
        "client threads",
        "latency [µs]",
    ] {
        assert!(svg.contains(text), "the plot lacks {text:?}");
    }

    std::fs::write(dir.path().join("other.json"), "{\"colour\": 1}").unwrap();
    let output = farm(&["plot", "other.json", "--out", "x.svg"], dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("other.json"), "unclear error: {stderr}");
}
