//! `flatstack bench create-vms`: the real binary runs a small benchmark end to end, on
//! SQLite and on PostgreSQL. Only that it works and reports is checked here, never how
//! fast.

use std::collections::HashMap;
use std::process::Command;

/// Runs `bench create-vms` for 50 VMs with `extra` arguments; its stdout, once it succeeded.
fn bench(extra: &[&str], dir: &std::path::Path) -> String {
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
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .expect("flatstack runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(
        std::fs::read_dir(dir).expect("dir").next().is_none(),
        "the temporary data directory is removed"
    );
    stdout
}

/// Checks the figures every report gives.
fn check_report(stdout: &str) {
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
}

#[test]
fn bench_create_vms_creates_every_vm_and_reports_numbers() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let stdout = bench(&[], dir.path());
    check_report(&stdout);
    assert!(stdout.contains("backend: SQLite"), "{stdout}");
}

/// On the server of `FLATSTACK_TEST_DATABASE_URL` if set, else the local one (`.ci/run`
/// starts it): the node on a database of its own, the replay on a copy, both dropped.
#[test]
fn bench_create_vms_runs_and_replays_on_postgresql_and_drops_its_databases() {
    let admin = std::env::var("FLATSTACK_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let dir = tempfile::tempdir().expect("temporary directory");
    let stdout = bench(&["--database-url", &admin], dir.path());
    check_report(&stdout);
    assert!(stdout.contains("backend: PostgreSQL"), "{stdout}");
    let database = stdout
        .lines()
        .find_map(|line| line.strip_prefix("database: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `database:` line in\n{stdout}"))
        .to_owned();
    assert!(database.starts_with("flatstack_bench_"), "{database}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let left: Vec<String> = runtime.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect");
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{database}%"))
                .fetch_all(&mut conn)
                .await
                .expect("databases");
        rows.into_iter().map(|(name,)| name).collect()
    });
    assert!(left.is_empty(), "left behind: {left:?}");
}
