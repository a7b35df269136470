//! A filesystem too small for a node's memory files is a one-line error
//! that names the file, the bytes it needs and the bytes free, before any
//! work; nothing dies of SIGBUS. (Regression: with TMPDIR on an 8 MiB or
//! 24 MiB tmpfs, `farm bench --scale 1` exited 135, "Bus error", with no
//! message: region and ring files were created sparse, and the first store
//! into a page the filesystem could not back raised SIGBUS.)
//!
//! Each run gets a tmpfs of its own in a private mount namespace
//! (`unshare -m`, as root, as the test command runs), so nothing leaks.

use std::process::{Command, Output};

/// Runs `farm ARGS` with TMPDIR on a fresh tmpfs of `megabytes` MiB.
fn farm_on_small_tmpfs(megabytes: u32, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size={megabytes}m tmpfs \"$1\" || exit 99; export TMPDIR=\"$1\"; shift; exec \"$@\""
    );
    let output = Command::new("unshare")
        .args(["-m", "sh", "-c", &script, "sh"])
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_farm"))
        .args(args)
        .output()
        .expect("unshare (util-linux) runs");
    assert_ne!(
        output.status.code(),
        Some(99),
        "this test mounts a tmpfs in a private mount namespace and needs root: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The run failed with an exit code (no signal) and its last line names a
/// file, its size and the free bytes.
fn assert_no_space_error(output: &Output, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        None,
        "{what}: killed by a signal: {stderr}"
    );
    assert!(!output.status.success(), "{what} succeeded: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("farm: ")
            && last.contains("no space for ")
            && last.contains(" bytes, its filesystem has ")
            && last.contains(" bytes free"),
        "{what}: the last line does not name the file and the sizes: {last:?}\n{stderr}"
    );
    eprintln!("{what}: {last}");
}

#[test]
fn bench_in_process_on_an_8_mib_tmpfs() {
    let output = farm_on_small_tmpfs(8, &["bench", "--scale", "1", "--quiet"]);
    assert_no_space_error(&output, "farm bench, 8 MiB");
}

#[test]
fn bench_with_node_processes_on_an_8_mib_tmpfs() {
    let output = farm_on_small_tmpfs(8, &["bench", "--scale", "1", "--quiet", "--processes"]);
    assert_no_space_error(&output, "farm bench --processes, 8 MiB");
}

/// A variant: on 24 MiB the inboxes and some regions fit, and the node
/// that runs out is named, with another file.
#[test]
fn check_on_a_24_mib_tmpfs_names_the_file_that_does_not_fit() {
    let output = farm_on_small_tmpfs(24, &["check", "--txns", "100", "--region-bytes", "8388608"]);
    assert_no_space_error(&output, "farm check, 24 MiB");
}
