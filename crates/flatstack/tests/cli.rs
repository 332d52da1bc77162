//! The command-line client against a running node.

mod common;

use assert_cmd::Command;
use common::Node;
use serde_json::Value;

fn flatstack(node: &Node) -> Command {
    let mut cmd = Command::cargo_bin("flatstack").expect("binary");
    cmd.env("FLATSTACK_ENDPOINT", &node.base)
        .env("FLATSTACK_TOKEN", &node.token)
        .env("RUST_BACKTRACE", "0");
    cmd
}

fn json_of(out: &[u8]) -> Value {
    serde_json::from_slice(out).expect("JSON output")
}

#[tokio::test(flavor = "multi_thread")]
async fn create_list_show_delete_with_tables_and_json() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());

    let out = flatstack(&node)
        .args([
            "zones",
            "create",
            "name=zone-a",
            "description=the first",
            "--output",
            "json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let zone = json_of(&out);
    assert_eq!(zone["name"], "zone-a");
    assert_eq!(zone["description"], "the first");
    let id = zone["uuid"].as_str().unwrap().to_owned();

    // Typed values: numbers are sent as JSON numbers.
    flatstack(&node)
        .args([
            "instance-offerings",
            "create",
            "name=small",
            "cpu_num=2",
            "memory_size=1073741824",
        ])
        .assert()
        .success();

    let table = String::from_utf8(
        flatstack(&node)
            .args(["zones", "list"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("UUID"), "{table}");
    assert!(lines.next().unwrap().contains("zone-a"), "{table}");

    let shown = String::from_utf8(
        flatstack(&node)
            .args(["zones", "show", &id])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    assert!(shown.contains("the first"), "{shown}");

    flatstack(&node)
        .args(["zones", "update", &id, "name=zone-b"])
        .assert()
        .success();
    let out = flatstack(&node)
        .args(["--output", "json", "zones", "list", "name=zone-b"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(json_of(&out)["total"], 1);

    flatstack(&node)
        .args(["zones", "delete", &id])
        .assert()
        .success()
        .stdout(format!("deleted {id}\n"));
    assert_eq!(node.count("zones").await, 0);

    let plugins = String::from_utf8(
        flatstack(&node)
            .arg("plugins")
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    assert!(plugins.contains("host-simulator"), "{plugins}");
    let types = String::from_utf8(
        flatstack(&node)
            .args(["types", "hosts"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    assert!(types.contains("Simulator"), "{types}");
    flatstack(&node).arg("extension-points").assert().success();
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_clear_and_exit_non_zero() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let err = flatstack(&node)
        .args(["zones", "create", "nam=x"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8(err).unwrap();
    assert!(err.starts_with("error 400 (invalid_argument)"), "{err}");
    assert!(err.contains("[field: nam]"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");

    let err = String::from_utf8(
        flatstack(&node)
            .args(["spaceships", "list"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(err.contains("no resource kind `spaceships`"), "{err}");
    let err = String::from_utf8(
        flatstack(&node)
            .args(["zones", "create", "just-a-word"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(err.contains("is not key=value"), "{err}");
    assert_eq!(node.count("zones").await, 0);

    let err = String::from_utf8(
        Command::cargo_bin("flatstack")
            .unwrap()
            .env("RUST_BACKTRACE", "0")
            .args(["--endpoint", "http://127.0.0.1:9", "zones", "list"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(err.contains("cannot reach the node"), "{err}");
}

/// A reader that stops early (`flatstack openapi | head -1`) ends the program quietly, as
/// any Unix tool: killed by SIGPIPE, nothing on standard error (no panic, no backtrace).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .arg("openapi")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let mut first = [0u8; 1];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("a first byte");
    // The pipe's reader is gone (dropped above): the rest cannot be written.
    let out = child.wait_with_output().expect("ends");
    assert_eq!(first[0], b'{');
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_keeps_a_profile_that_later_commands_use_and_logout_revokes() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let account = node
        .create("accounts", serde_json::json!({"name": "acme"}))
        .await;
    node.create(
        "users",
        serde_json::json!({"name": "alice", "account_uuid": common::uuid(&account),
            "role": "member", "password": "correct horse battery"}),
    )
    .await;
    let home = tempfile::tempdir().expect("home");
    let config = home.path().join("profiles.toml");
    // No token nor endpoint from the environment: only the profile.
    let client = || {
        let mut cmd = Command::cargo_bin("flatstack").expect("binary");
        cmd.env_remove("FLATSTACK_ENDPOINT")
            .env_remove("FLATSTACK_TOKEN")
            .env("FLATSTACK_DATA_DIR", home.path())
            .env("FLATSTACK_CONFIG", &config)
            .env("RUST_BACKTRACE", "0");
        cmd
    };
    client()
        .args([
            "login",
            "--name",
            "alice",
            "--password-stdin",
            "--endpoint",
            &node.base,
        ])
        .write_stdin("wrong password!\n")
        .assert()
        .failure();
    client()
        .args([
            "login",
            "--name",
            "alice",
            "--password-stdin",
            "--endpoint",
            &node.base,
        ])
        .write_stdin("correct horse battery\n")
        .assert()
        .success();
    let mode = std::fs::metadata(&config)
        .expect("profiles")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let saved = std::fs::read_to_string(&config).expect("profiles");
    assert!(
        saved.contains(&node.base) && saved.contains("fst_"),
        "{saved}"
    );
    // The profile's node and token: alice's view, and a member's refusal.
    client().args(["vm-instances", "list"]).assert().success();
    let refused = client()
        .args(["zones", "create", "name=not-hers"])
        .assert()
        .failure()
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&refused).contains("403"));
    client().args(["logout"]).assert().success();
    let token = saved
        .lines()
        .find_map(|l| l.strip_prefix("token = "))
        .expect("a token line")
        .trim_matches('"')
        .to_owned();
    let (status, _) = reqwest::Client::new()
        .get(format!("{}/v1/zones", node.base))
        .bearer_auth(&token)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .expect("answer");
    assert_eq!(status, 401, "the session was revoked");
    client()
        .args(["--profile", "gone", "zones", "list"])
        .assert()
        .failure();
}

#[test]
fn a_kind_explains_its_verbs_and_extra_arguments_are_refused() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
            // No node there: what is checked here is refused before any request.
            .args(["--endpoint", "http://127.0.0.1:9", "--token", "fst_unused"])
            .args(args)
            .output()
            .expect("runs")
    };
    for help in [
        &["zones", "--help"][..],
        &["zones", "-h"],
        &["zones", "help"],
        &["zones"],
    ] {
        let out = run(help);
        assert!(out.status.success(), "{help:?}: {out:?}");
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("flatstack zones list"), "{help:?}: {said}");
        assert!(
            said.contains("flatstack zones show|delete <uuid or name>"),
            "{said}"
        );
    }
    for extra in [
        &["zones", "delete", "A", "B"][..],
        &["zones", "show", "A", "B", "C"],
    ] {
        let out = run(extra);
        assert!(!out.status.success(), "{extra:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("takes one uuid; unexpected: B"),
            "{extra:?}: {said}"
        );
        // Refused before any request: the unreachable node is never mentioned.
        assert!(!said.contains("127.0.0.1:9"), "{said}");
    }
    // A mistyped verb is answered with the verb it is closest to; bad waiting flags are
    // refused before any request too.
    for (args, expected) in [
        (
            &["zones", "lsit"][..],
            "unknown verb `lsit` (did you mean `list`?)",
        ),
        (&["zones", "dleete"], "(did you mean `delete`?)"),
        (
            &["zones", "create", "name=a", "--timeout"],
            "--timeout needs a number",
        ),
        (
            &["zones", "create", "name=a", "--timeout", "0"],
            "is not a number of seconds",
        ),
        (
            &["zones", "create", "name=a", "--timeout=soon"],
            "`soon` is not a number",
        ),
        (
            &["jobs", "delete", "x"],
            "jobs are listed, shown and waited for",
        ),
    ] {
        let out = run(args);
        assert!(!out.status.success(), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(expected), "{args:?}: {said}");
        assert!(!said.contains("127.0.0.1:9"), "{said}");
    }
    let out = run(&["zones", "frobnicate"]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("did you mean"));
}

/// `flatstack completion <shell>` prints a script that completes the client's commands.
#[test]
fn completion_scripts_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_flatstack()"),
        ("zsh", "#compdef flatstack"),
        ("fish", "complete -c flatstack"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
            .args(["completion", shell])
            .output()
            .expect("runs");
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("serve"),
            "{shell}: the subcommands are completed"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(["completion", "cmd.exe"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}

/// Wherever a uuid is taken, a name that is unique among the kind's resources is too; an
/// ambiguous or unknown name is an error that says so (and lists the candidates). A job
/// can be started without waiting, then shown and waited for.
#[tokio::test(flavor = "multi_thread")]
async fn names_stand_for_uuids_and_jobs_can_be_left_running_then_waited_for() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let create = |name: &str| {
        let out = flatstack(&node)
            .args([
                "zones",
                "create",
                &format!("name={name}"),
                "--output",
                "uuid",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out).unwrap().trim().to_owned()
    };
    let solo = create("solo zone");
    let twins = [create("twin"), create("twin")];
    let home = create("home");

    // A reference in a body, by name too (`zone_uuid=home`), and ambiguity refused there.
    let cluster = json_of(
        &flatstack(&node)
            .args([
                "clusters",
                "create",
                "name=by-name",
                "zone_uuid=home",
                "hypervisor_type=Simulator",
                "--output",
                "json",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(cluster["zone_uuid"], home.as_str());
    let said = String::from_utf8(
        flatstack(&node)
            .args([
                "clusters",
                "create",
                "name=x",
                "zone_uuid=twin",
                "hypervisor_type=Simulator",
            ])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(said.contains("2 zones are named `twin`"), "{said}");
    assert_eq!(node.count("clusters").await, 1);

    let shown = json_of(
        &flatstack(&node)
            .args(["zones", "show", "solo zone", "--output", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(shown["uuid"], solo.as_str());
    let said = String::from_utf8(
        flatstack(&node)
            .args(["zones", "delete", "twin"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(said.contains("2 zones are named `twin`"), "{said}");
    assert!(
        said.contains(&twins[0]) && said.contains(&twins[1]),
        "{said}"
    );
    let said = String::from_utf8(
        flatstack(&node)
            .args(["zones", "update", "nowhere", "description=x"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(
        said.contains("none of the zones has the uuid or name `nowhere`"),
        "{said}"
    );
    assert_eq!(node.count("zones").await, 4, "nothing deleted");
    flatstack(&node)
        .args(["zones", "delete", "solo zone"])
        .assert()
        .success();
    assert_eq!(node.count("zones").await, 3);

    // --no-wait: the job, not the zone; then shown and waited for.
    let job = String::from_utf8(
        flatstack(&node)
            .args([
                "zones",
                "create",
                "name=later",
                "--no-wait",
                "--output",
                "uuid",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap()
    .trim()
    .to_owned();
    let zone = json_of(
        &flatstack(&node)
            .args(["jobs", "wait", &job, "--timeout", "30", "--output", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(zone["name"], "later");
    let shown = json_of(
        &flatstack(&node)
            .args(["jobs", "show", &job, "--output", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(shown["uuid"], job.as_str());
    assert_eq!(shown["state"], "succeeded");
    let listed = json_of(
        &flatstack(&node)
            .args(["jobs", "list", "state=succeeded", "--output", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert!(
        listed["inventories"]
            .as_array()
            .is_some_and(|jobs| jobs.iter().any(|j| j["uuid"] == job.as_str())),
        "{listed}"
    );
    let table = String::from_utf8(
        flatstack(&node)
            .args(["zones", "create", "name=table", "--no-wait"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    assert!(
        table.starts_with("job ") && table.contains("flatstack jobs wait"),
        "{table}"
    );
}

/// The client asks the node what a kind takes: `<kind> --help` lists its fields (required
/// ones marked, types, allowed values), filters, actions and child collections; values are
/// typed by the field's JSON type (`name=2024` is a name, not a number); `-f` reads a
/// body from a file or standard input, and `key=value` pairs override it.
#[tokio::test(flavor = "multi_thread")]
async fn the_schema_explains_a_kind_and_types_its_values() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let help = String::from_utf8(
        flatstack(&node)
            .args(["vm-instances", "--help"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    for expected in [
        "create fields (* required):",
        "image_uuid*",
        "l3_network_uuids*",
        "host_tags",
        "array",
        "list filters: name, state",
        "actions (flatstack vm-instances action <uuid or name> <action>",
        "  start\n",
        "  reboot\n",
    ] {
        assert!(help.contains(expected), "{expected}: {help}");
    }
    let help = String::from_utf8(
        flatstack(&node)
            .args(["l3-networks", "--help"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    )
    .unwrap();
    assert!(help.contains("child collection ip-ranges"), "{help}");
    assert!(help.contains("start_ip*"), "{help}");
    let said = String::from_utf8(
        flatstack(&node)
            .args(["spaceships", "--help"])
            .assert()
            .failure()
            .get_output()
            .stderr
            .clone(),
    )
    .unwrap();
    assert!(
        said.contains("serves no resource kind `spaceships`"),
        "{said}"
    );

    // A name made of digits stays a name; a number field still gets a number.
    let zone = json_of(
        &flatstack(&node)
            .args(["zones", "create", "name=2024", "--output", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(zone["name"], "2024");
    let offering = json_of(
        &flatstack(&node)
            .args([
                "instance-offerings",
                "create",
                "name=007",
                "cpu_num=2",
                "memory_size=1073741824",
                "--output",
                "json",
            ])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(
        (offering["name"].clone(), offering["cpu_num"].clone()),
        ("007".into(), 2.into())
    );

    // -f: a file, then standard input; the pairs win over the file.
    let body = dir.path().join("zone.json");
    std::fs::write(
        &body,
        r#"{"name": "from-file", "description": "in the file"}"#,
    )
    .unwrap();
    let zone = json_of(
        &flatstack(&node)
            .args(["zones", "create", "-f"])
            .arg(&body)
            .args(["description=on the line", "--output", "json"])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(zone["name"], "from-file");
    assert_eq!(zone["description"], "on the line");
    let zone = json_of(
        &flatstack(&node)
            .args(["zones", "create", "-f", "-", "--output", "json"])
            .write_stdin(r#"{"name": "from-stdin"}"#)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone(),
    );
    assert_eq!(zone["name"], "from-stdin");
    for (input, expected) in [
        ("[1, 2]", "does not hold a JSON object"),
        ("{nope", "is not JSON"),
    ] {
        let said = String::from_utf8(
            flatstack(&node)
                .args(["zones", "create", "-f", "-"])
                .write_stdin(input)
                .assert()
                .failure()
                .get_output()
                .stderr
                .clone(),
        )
        .unwrap();
        assert!(said.contains(expected), "{input}: {said}");
    }
    let missing = dir.path().join("absent.json");
    flatstack(&node)
        .args(["zones", "create", "-f"])
        .arg(&missing)
        .assert()
        .failure();
    assert_eq!(
        node.count("zones").await,
        3,
        "the refused bodies created nothing"
    );
}

/// Tables show the columns each kind's inventory declares (VMs: name, state, host, IPs,
/// CPUs, memory), sizes readable; `-o wide` shows every field.
#[tokio::test(flavor = "multi_thread")]
async fn tables_show_each_kinds_columns_and_readable_sizes() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = common::cloud::data_centre(&node).await;
    let vm = node
        .create("vm-instances", common::cloud::vm_body(&dc, "vm-columns"))
        .await;
    let table = |args: &[&str]| {
        String::from_utf8(
            flatstack(&node)
                .args(args)
                .assert()
                .success()
                .get_output()
                .stdout
                .clone(),
        )
        .unwrap()
    };
    let vms = table(&["vm-instances", "list"]);
    let header: Vec<&str> = vms.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "UUID",
            "NAME",
            "STATE",
            "HOST_UUID",
            "IPS",
            "CPU_NUM",
            "MEMORY_SIZE"
        ],
        "{vms}"
    );
    let ip = vm["nics"][0]["ip"].as_str().unwrap();
    let row = vms.lines().nth(1).unwrap();
    for expected in ["vm-columns", "Running", ip, "4.0 GiB"] {
        assert!(row.contains(expected), "{expected}: {vms}");
    }
    let hosts = table(&["hosts", "list"]);
    assert!(
        hosts.starts_with("UUID")
            && hosts.contains("MANAGEMENT_IP")
            && hosts.contains("AVAILABLE_MEMORY"),
        "{hosts}"
    );
    assert!(hosts.contains("GiB"), "{hosts}");
    // One resource's fields, sizes readable too; JSON stays the API's numbers.
    let shown = table(&["vm-instances", "show", "vm-columns"]);
    assert!(shown.contains("4.0 GiB"), "{shown}");
    let json =
        json_of(table(&["vm-instances", "show", "vm-columns", "--output", "json"]).as_bytes());
    assert_eq!(json["memory_size"], 4u64 << 30);
    let wide = table(&["vm-instances", "list", "--output", "wide"]);
    for expected in [
        "IMAGE_UUID",
        "INSTANCE_OFFERING_UUID",
        "ACCOUNT_UUID",
        "DESCRIPTION",
    ] {
        assert!(
            wide.lines().next().unwrap().contains(expected),
            "{expected}: {wide}"
        );
    }
}
