//! `farm check` as a user runs it: in one process and with one process per
//! node; it passes a correct engine and fails (non-zero exit, anomalies in
//! the JSON line) when a protocol fault is injected.

use std::process::Command;

fn farm_check(args: &[&str]) -> (bool, serde_json::Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_farm"))
        .arg("check")
        .args(args)
        .output()
        .expect("run farm check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or_default().to_string();
    let json: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| {
        panic!(
            "last line is not JSON ({e}): {last}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), json, stdout)
}

#[test]
fn check_passes_in_one_process_and_as_separate_processes() {
    for extra in [&[][..], &["--processes"][..]] {
        let mut args = vec!["--nodes", "3", "--txns", "3000"];
        args.extend_from_slice(extra);
        let (ok, json, stdout) = farm_check(&args);
        assert!(ok, "farm check {args:?} failed:\n{stdout}");
        assert_eq!(json["txns"], 3000);
        assert_eq!(json["anomalies"].as_array().map(Vec::len), Some(0));
        let committed = json["committed"].as_u64().unwrap();
        let aborted = json["aborted"].as_u64().unwrap();
        assert_eq!(committed + aborted, 3000);
        assert!(stdout.contains("strict serializability: VALID"), "{stdout}");
    }
}

#[test]
fn check_fails_when_validation_is_skipped_in_node_processes() {
    for seed in 1..=6 {
        let seed = seed.to_string();
        let (ok, json, stdout) = farm_check(&[
            "--nodes",
            "3",
            "--txns",
            "3000",
            "--processes",
            "--fault",
            "skip-validation",
            "--registers",
            "6",
            "--lists",
            "3",
            "--seed",
            &seed,
        ]);
        let anomalies = json["anomalies"].as_array().map(Vec::len).unwrap_or(0);
        if anomalies > 0 {
            assert!(!ok, "farm check exits non-zero on anomalies:\n{stdout}");
            return;
        }
    }
    panic!("no anomaly found with validation skipped in 6 runs");
}

/// Options out of range are refused by name before anything runs, in one
/// process as with node processes (regression: in one process `--ops-max
/// 0` and `--registers 0 --lists 0` divided by zero in the clients, and a
/// huge `--in-flight` overflowed an allocation).
#[test]
fn options_out_of_range_are_refused_by_name() {
    for (args, says) in [
        (&["--ops-max", "0"][..], "operations per transaction"),
        (
            &["--registers", "0", "--lists", "0"][..],
            "registers + lists",
        ),
        (&["--threads-per-node", "100000"][..], "threads per node"),
        (&["--in-flight", "18446744073709551615"][..], "in flight"),
        (&["--txns", "0"][..], "txns"),
    ] {
        for extra in [&[][..], &["--processes"][..]] {
            let output = Command::new(env!("CARGO_BIN_EXE_farm"))
                .arg("check")
                .args(args)
                .args(extra)
                .output()
                .expect("run farm check");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success(),
                "farm check {args:?} {extra:?} passed"
            );
            assert!(
                stderr.contains(says) && !stderr.contains("panicked"),
                "farm check {args:?} {extra:?}: {stderr}"
            );
        }
    }
}
