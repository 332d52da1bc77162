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

/// Runs `flatstack` with `args` (the address made `127.0.0.1:0`, the data directory
/// `data_dir`) and returns the first line it prints; the node is then killed.
fn first_line(args: &[String], data_dir: &Path) -> String {
    let args: Vec<String> = args
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
    line
}

#[test]
fn the_systemd_unit_is_valid_and_its_command_starts_a_node() {
    let unit = deploy("flatstack.service");
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let mut args: Vec<String> = exec.split_whitespace().map(str::to_owned).collect();
    assert_eq!(args.remove(0), "/usr/local/bin/flatstack");
    let dir = tempfile::tempdir().expect("dir");
    let line = first_line(&args, &dir.path().join("data"));
    assert!(
        line.starts_with("flatstack listening on http://127.0.0.1:"),
        "{line}"
    );

    // systemd's own check, with the binary where the unit expects it made this one.
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
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
    let mut args: Vec<String> = serde_json::from_str(entrypoint).expect("an exec-form array");
    assert_eq!(args.remove(0), "flatstack");
    let dir = tempfile::tempdir().expect("dir");
    let line = first_line(&args, &dir.path().join("data"));
    assert!(
        line.starts_with("flatstack listening on http://127.0.0.1:"),
        "{line}"
    );
    // The binary it copies is the one the build stage builds.
    assert!(dockerfile.contains("cargo build --locked --release -p flatstack"));
    assert!(dockerfile
        .contains("COPY --from=build /src/target/release/flatstack /usr/local/bin/flatstack"));
}
