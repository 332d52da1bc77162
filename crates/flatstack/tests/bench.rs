//! `flatstack bench create-vms`: the real binary runs a small benchmark end to end. Only
//! that it works and reports is checked here, never how fast.

use std::collections::HashMap;
use std::process::Command;

#[test]
fn bench_create_vms_creates_every_vm_and_reports_numbers() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args([
            "bench",
            "create-vms",
            "--count",
            "50",
            "--concurrency",
            "10",
        ])
        .args(["--hosts", "3", "--data-dir"])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .expect("flatstack runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    // `key: number [unit]` lines.
    let report: HashMap<&str, f64> = stdout
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(": ")?;
            let number = value.split_whitespace().next()?.parse().ok()?;
            Some((key, number))
        })
        .collect();
    let get = |key: &str| {
        *report
            .get(key)
            .unwrap_or_else(|| panic!("no numeric `{key}:` line in\n{stdout}"))
    };
    assert_eq!(get("count"), 50.0);
    assert_eq!(get("succeeded"), 50.0, "{stdout}");
    assert_eq!(get("failed"), 0.0, "{stdout}");
    assert_eq!(get("vm rows"), 50.0, "{stdout}");
    for key in [
        "wall time",
        "throughput",
        "latency p50",
        "latency p99",
        "latency max",
        "raw time",
        "raw throughput",
        "ratio create/raw",
        "raw statements",
        "single-row commits time",
        "ratio create/single-row commits",
    ] {
        assert!(get(key) > 0.0, "{key} in\n{stdout}");
    }
    assert!(get("latency p50") <= get("latency p99"));
    assert!(get("latency p99") <= get("latency max"));
    let per_create = get("commits per create");
    assert!(per_create >= 1.0, "a create commits something: {stdout}");
    // The replay is of every transaction the creates committed, each of one statement at
    // least.
    assert_eq!(get("raw transactions"), get("commits"));
    assert!(get("raw statements") >= get("raw transactions"), "{stdout}");
    assert!(
        std::fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "the temporary data directory is removed"
    );
}
