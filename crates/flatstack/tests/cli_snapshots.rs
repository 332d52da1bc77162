//! Snapshots of what the client prints: help, tables and errors, with their exit codes
//! (docs/operators.md, "Exit codes"). Uuids, MACs, times and ports, which change every run, are
//! replaced by placeholders. After an intended change: `INSTA_UPDATE=always cargo test -p
//! flatstack --test cli_snapshots`, then review the `.snap` files' diff.

mod common;

use assert_cmd::Command;
use common::Node;

fn flatstack(endpoint: &str, token: &str) -> Command {
    let mut cmd = Command::cargo_bin("flatstack").expect("binary");
    cmd.env("FLATSTACK_ENDPOINT", endpoint)
        .env("FLATSTACK_TOKEN", token)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1");
    cmd
}

/// The client with none of its settings from the environment.
fn bare() -> Command {
    let mut cmd = Command::cargo_bin("flatstack").expect("binary");
    for name in [
        "FLATSTACK_ENDPOINT",
        "FLATSTACK_TOKEN",
        "FLATSTACK_PROFILE",
        "FLATSTACK_DATA_DIR",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("RUST_BACKTRACE", "0").env("NO_COLOR", "1");
    cmd
}

/// What a command printed and how it ended, as one text.
fn run(mut cmd: Command, args: &[&str]) -> String {
    let out = cmd.args(args).output().expect("the client runs");
    format!(
        "$ flatstack {}\nexit code: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    )
}

/// Uuids, MACs, times and ports as placeholders (and the columns they widen, collapsed).
fn settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\b[0-9a-f]{32}\b", "[uuid]");
    // YAML quotes a uuid that reads as a number (`1e5...`): quoted or not, the same.
    settings.add_filter(r"'\[uuid\]'", "[uuid]");
    settings.add_filter(r"\b([0-9a-f]{2}:){5}[0-9a-f]{2}\b", "[mac]");
    settings.add_filter(r"\b[0-9a-f]{8}\b", "[job]");
    settings.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "[time]",
    );
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[port]");
    settings.add_filter(r" {2,}", "  ");
    settings
}

#[test]
fn help_without_a_node() {
    settings().bind(|| {
        insta::assert_snapshot!("top-level-help", run(bare(), &["--help"]));
        insta::assert_snapshot!("short-help", run(bare(), &["-h"]));
        insta::assert_snapshot!(
            "no-node-to-ask",
            run(
                bare(),
                &["--endpoint", "http://127.0.0.1:9", "zones", "list"]
            )
        );
        insta::assert_snapshot!(
            "an-unknown-flag",
            run(bare(), &["--colour", "zones", "list"])
        );
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kind_its_tables_and_its_errors() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = common::cloud::data_centre(&node).await;
    node.create("vm-instances", common::cloud::vm_body(&dc, "web-1"))
        .await;
    // Reboots that take a while, for a job that outlives its `--timeout`.
    for host in &dc.hosts {
        let (status, reply) = node
            .post(
                &format!("/v1/hosts/{host}/actions?wait=10"),
                serde_json::json!({"action": "inject_failure", "operation": "reboot_vm", "delay_ms": 5000}),
            )
            .await;
        assert!(status.is_success(), "{reply}");
    }
    let cli = || flatstack(&node.base, &node.token);
    settings().bind(|| {
        insta::assert_snapshot!("zones-help", run(cli(), &["zones", "--help"]));
        insta::assert_snapshot!("vm-table", run(cli(), &["vm-instances", "list"]));
        insta::assert_snapshot!(
            "vm-as-yaml",
            run(cli(), &["vm-instances", "show", "web-1", "-o", "yaml"])
        );
        insta::assert_snapshot!(
            "an-ip-range-page",
            run(
                cli(),
                &["l3-networks", &dc.l3, "ip-ranges", "list", "limit=1"]
            )
        );
        insta::assert_snapshot!(
            "a-refused-create",
            run(cli(), &["zones", "create", "nam=x"])
        );
        insta::assert_snapshot!("a-mistyped-verb", run(cli(), &["zones", "lst"]));
        insta::assert_snapshot!("a-mistyped-kind", run(cli(), &["zonez", "list"]));
        insta::assert_snapshot!(
            "an-extra-argument",
            run(cli(), &["zones", "delete", "a", "b"])
        );
        insta::assert_snapshot!(
            "a-job-outliving-its-timeout",
            run(
                cli(),
                &[
                    "vm-instances",
                    "action",
                    "web-1",
                    "reboot",
                    "--timeout",
                    "0.2"
                ]
            )
        );
    });
}
