//! The deployment examples in `deploy/`: the systemd unit passes `systemd-analyze verify`,
//! and the command lines that the unit and the Dockerfile run start a node (their address
//! and data directory swapped for the test's).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `command` (a program, then its arguments, with the address made `127.0.0.1:0` and
/// the data directory a temporary one) and checks that it starts a node, which is then
/// killed. `program` is where the example expects the binary; this one stands for it.
fn starts_a_node(mut command: Vec<String>, program: &str) {
    assert_eq!(command.remove(0), program);
    let dir = tempfile::tempdir().expect("dir");
    let data_dir = dir.path().join("data");
    let args: Vec<String> = command
        .iter()
        .map(|arg| match arg.as_str() {
            "0.0.0.0:8080" => "127.0.0.1:0".to_owned(),
            "/var/lib/flatstack" => data_dir.display().to_string(),
            _ => arg.clone(),
        })
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .env_remove("FLATSTACK_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("flatstack starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("first line");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("flatstack listening on http://127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn the_systemd_unit_is_valid_and_its_command_starts_a_node() {
    let unit = deploy("flatstack.service");
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    starts_a_node(
        exec.split_whitespace().map(str::to_owned).collect(),
        "/usr/local/bin/flatstack",
    );

    // systemd's own check, with the binary where the unit expects it made this one.
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let dir = tempfile::tempdir().expect("dir");
            let copy = dir.path().join("flatstack.service");
            std::fs::write(
                &copy,
                unit.replace("/usr/local/bin/flatstack", env!("CARGO_BIN_EXE_flatstack")),
            )
            .expect("unit written");
            let verified = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .output()
                .expect("systemd-analyze runs");
            assert!(
                verified.status.success() && verified.stderr.is_empty(),
                "{}",
                String::from_utf8_lossy(&verified.stderr)
            );
        }
        Err(_) => eprintln!("systemd-analyze is not installed: the unit's syntax is not checked"),
    }
}

#[test]
fn the_dockerfile_entrypoint_starts_a_node() {
    let dockerfile = deploy("Dockerfile");
    let entrypoint = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT line");
    starts_a_node(
        serde_json::from_str(entrypoint).expect("an exec-form array"),
        "flatstack",
    );
    // The binary it copies is the one the build stage builds.
    assert!(dockerfile.contains("cargo build --locked --release -p flatstack"));
    assert!(dockerfile
        .contains("COPY --from=build /src/target/release/flatstack /usr/local/bin/flatstack"));
}
