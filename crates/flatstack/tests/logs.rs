//! Logs as operators collect them: `--log-format json` writes one JSON object per line,
//! with an access line per request and a line per finished operation; the text format
//! has no colour codes when standard error is not a terminal.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs a node with `args` (logs at `info` into a file), creates a zone and lists zones,
/// stops it with SIGTERM; what it logged.
fn logged(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("stderr.log");
    let mut node = Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("FLATSTACK_DATABASE_URL")
        .env_remove("FLATSTACK_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(node.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let base = line
        .trim()
        .strip_prefix("flatstack listening on ")
        .expect("address")
        .to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let token =
            flatstack::token::admin_token(&dir.path().join("data")).expect("the admin token");
        let http = flatstack::token::client(Some(&token)).expect("client");
        let created = http
            .post(format!("{base}/v1/zones?wait=10"))
            .json(&serde_json::json!({"name": "logged"}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201);
        let listed = http
            .get(format!("{base}/v1/zones"))
            .send()
            .await
            .expect("list");
        assert_eq!(listed.status(), 200);
    });
    // SAFETY: kill(2) only reads its two integer arguments.
    unsafe { libc::kill(node.id() as i32, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while node.try_wait().expect("wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the node did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(&log).expect("log")
}

#[test]
fn json_logs_have_an_access_line_per_request_and_a_line_per_operation() {
    let text = logged(&["--log-format", "json"]);
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let access = lines
        .iter()
        .find(|l| {
            l["target"] == "flatstack::access"
                && l["fields"]["method"] == "POST"
                && l["fields"]["path"] == "/v1/zones"
        })
        .unwrap_or_else(|| panic!("no access line for the create in {text}"));
    assert_eq!(access["fields"]["status"], 201, "{access}");
    assert!(
        access["fields"]["latency_ms"].as_f64().is_some(),
        "{access}"
    );
    assert!(lines.iter().any(|l| l["fields"]["path"] == "/v1/zones"
        && l["fields"]["method"] == "GET"
        && l["fields"]["status"] == 200));
    let operation = lines
        .iter()
        .find(|l| l["fields"]["message"] == "operation succeeded")
        .unwrap_or_else(|| panic!("no operation line in {text}"));
    assert_eq!(operation["fields"]["kind"], "zone.create", "{operation}");
    assert_eq!(operation["level"], "INFO");
    assert!(
        operation["fields"]["job"]
            .as_str()
            .is_some_and(|j| j.len() == 32),
        "{operation}"
    );
}

#[test]
fn text_logs_into_a_file_have_no_colour_codes() {
    let text = logged(&[]);
    assert!(text.contains("operation succeeded"), "{text}");
    assert!(!text.contains('\u{1b}'), "an escape sequence in: {text}");
}
