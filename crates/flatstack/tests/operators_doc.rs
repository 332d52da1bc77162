//! Runs every `console` block of docs/operators.md, in order, as one bash script against a
//! real node: the operators' guide cannot drift from what the binary does.

mod common;

use common::Node;
use std::process::Command;

/// The `$ ` lines of the ```console blocks, as bash commands.
fn commands(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_console = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_console = line.trim() == "```console";
            continue;
        }
        let Some(command) = line.strip_prefix("$ ").filter(|_| in_console) else {
            continue;
        };
        // `! cmd` documents a command that must fail; bash's `set -e` ignores `!`, so
        // check it explicitly.
        out.push(match command.strip_prefix("! ") {
            Some(failing) => format!(
                "if {failing} 2>/dev/null; then echo 'expected to fail: {}' >&2; exit 1; fi",
                failing.replace('\'', "")
            ),
            None => command.to_owned(),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_console_example_of_the_operators_guide_runs() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operators.md"
    ))
    .expect("docs/operators.md");
    let commands = commands(&guide);
    assert!(
        commands.len() >= 15,
        "the guide lost its examples: {commands:?}"
    );
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_flatstack"))
        .parent()
        .unwrap()
        .to_owned();
    let script = format!("set -euo pipefail\n{}\n", commands.join("\n"));
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("FLATSTACK_ENDPOINT", &node.base)
        .env("FLATSTACK_TOKEN", &node.token)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "an example failed\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // The examples did what they say.
    assert_eq!(node.count("zones").await, 1);
    assert_eq!(node.count("hosts").await, 1);
    assert_eq!(node.count("images").await, 1);
    let (_, zones) = node.get("/v1/zones").await;
    assert_eq!(zones["inventories"][0]["name"], "zone-one");
}

#[test]
fn the_operators_guide_example_manifest_is_valid() {
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operators.md"
    ))
    .expect("docs/operators.md");
    let section = guide
        .split("## The manifest")
        .nth(1)
        .expect("the guide has a manifest section");
    let manifest = section
        .split("```toml\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .expect("the section shows a manifest");
    let dir = common::data_dir();
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, manifest).expect("manifest written");
    let inspected = Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .arg("inspect")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("the client runs");
    let said = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        inspected.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&inspected.stderr)
    );
    // What it shows took effect: the order override and the disabled plugin.
    assert!(
        said.contains("implementors=[vm, l3-network, host-tags, volume]"),
        "{said}"
    );
    assert!(!said.contains("l2-openvswitch"), "{said}");
    // And the same manifest with a typo in the order is refused, naming it.
    let typo = manifest.replace("after = [\"l3-network\"]", "after = [\"l3-netwrok\"]");
    assert_ne!(typo, manifest);
    std::fs::write(&path, typo).expect("manifest written");
    let refused = Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .arg("inspect")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("the client runs");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("l3-netwrok"));
}
