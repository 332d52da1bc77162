//! What hostile input and hostile clients cannot do: hostile text is refused on every field
//! (and escaped by the client), errors have the JSON shape, and idle or slow connections
//! cannot take the node down.

mod common;

use common::Node;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Strings a terminal, a log or a browser would act on.
const HOSTILE: &[&str] = &[
    "nul\0byte",
    "line\nbreak",
    "\u{1b}[2Jclear",
    "\u{1b}]0;title\u{7}",
    "c1\u{9b}31m",
    "del\u{7f}",
    "\u{202e}fdp.exe",
    "zero\u{200b}width",
    "iso\u{2066}late",
    "bom\u{feff}",
];

#[tokio::test]
async fn hostile_text_is_refused_on_every_field_and_nothing_is_created() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let zone = node.create("zones", json!({"name": "z1"})).await;
    let zone = common::uuid(&zone);
    let creates: Vec<(&str, Value)> = vec![
        ("zones", json!({"name": "z"})),
        (
            "clusters",
            json!({"name": "c", "zone_uuid": zone, "hypervisor_type": "Simulator"}),
        ),
        ("accounts", json!({"name": "a"})),
        (
            "instance-offerings",
            json!({"name": "o", "cpu_num": 1, "memory_size": 1 << 30}),
        ),
        (
            "images",
            json!({"name": "i", "url": "http://x.invalid/i.qcow2", "format": "qcow2",
            "size": 1, "backup_storage_uuids": []}),
        ),
        (
            "quotas",
            json!({"name": "q", "account_uuid": "a", "max_vm_num": 1, "max_cpu_num": 1,
            "max_memory_size": 1}),
        ),
    ];
    let before: Vec<u64> = {
        let mut counts = Vec::new();
        for (kind, _) in &creates {
            counts.push(node.count(kind).await);
        }
        counts
    };
    for (kind, body) in &creates {
        // Its text fields, and the description every kind has.
        let mut fields: Vec<String> = body
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| v.is_string())
            .map(|(k, _)| k.clone())
            .collect();
        fields.push("description".into());
        for field in &fields {
            for hostile in HOSTILE {
                let mut bad = body.clone();
                bad[field] = json!(hostile);
                let (status, answer) = node.post(&format!("/v1/{kind}?wait=10"), bad).await;
                assert_eq!(
                    status,
                    StatusCode::BAD_REQUEST,
                    "{kind}.{field} {hostile:?}: {answer}"
                );
                assert_eq!(
                    answer["error"]["details"]["field"],
                    field.as_str(),
                    "{answer}"
                );
            }
        }
    }
    // Nested too: a list's items are named by their index.
    let (status, answer) = node
        .post(
            "/v1/vm-instances?wait=10",
            json!({"name": "vm", "instance_offering_uuid": "o", "image_uuid": "i",
                "l3_network_uuids": ["ok", "bad\u{1b}"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "l3_network_uuids[1]");
    // An update too.
    let (status, answer) = node
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/zones/{zone}?wait=10"),
            Some(json!({"description": "a\u{202e}b"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    for ((kind, _), before) in creates.iter().zip(before) {
        assert_eq!(node.count(kind).await, before, "{kind}: nothing created");
    }
    let (_, zone) = node.get(&format!("/v1/zones/{zone}")).await;
    assert_eq!(zone["inventory"]["description"], "", "nothing changed");
}

#[tokio::test]
async fn every_error_has_the_json_shape() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    // Too large (axum's own 413), a malformed query (400), a method the route lacks (405).
    let huge = "x".repeat(3 << 20);
    let post = reqwest::Method::POST;
    let (status, answer) = node
        .send_as(
            Some(&node.token),
            post,
            "/v1/zones",
            Some(json!({"name": huge})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"]["code"], "invalid_argument", "{answer}");
    let (status, answer) = node
        .send_as(
            Some(&node.token),
            reqwest::Method::GET,
            "/v1/jobs?limit=many",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"]["message"].is_string(), "{answer}");
    let (status, answer) = node
        .send_as(Some(&node.token), reqwest::Method::PUT, "/v1/zones", None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(answer["error"]["code"].is_string(), "{answer}");
}

#[test]
fn the_client_escapes_hostile_text_it_receives() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    // The node's refusal quotes the unknown kind back: the client must not print it raw.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(["--endpoint", &node.base, "--token", &node.token])
        .args(["\u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}", "list"])
        .output()
        .expect("the client runs");
    assert!(!output.status.success());
    let shown = [output.stdout, output.stderr].concat();
    let shown = String::from_utf8_lossy(&shown);
    assert!(shown.contains("\\u{001b}"), "{shown}");
    for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(!shown.contains(raw), "{raw:?} printed raw: {shown:?}");
    }
}

#[tokio::test]
async fn idle_and_half_sent_connections_do_not_take_the_node_down() {
    let dir = common::data_dir();
    let node = Node::start_custom(
        dir.path(),
        &[
            "--max-connections".as_ref(),
            "16".as_ref(),
            "--header-timeout".as_ref(),
            "1".as_ref(),
        ],
        &[],
    );
    let address: std::net::SocketAddr = node
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    // Far more idle connections than the node serves at once (past its backlog, a connect
    // is not even answered), and a request half sent.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect_timeout(&address, Duration::from_millis(300)).ok())
        .collect();
    assert!(idle.len() > 16, "{} connected", idle.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut half = loop {
        match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Ok(stream) => break stream,
            Err(e) => assert!(Instant::now() < deadline, "cannot connect: {e}"),
        }
    };
    half.write_all(b"POST /v1/zones HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .expect("written");
    // The node still answers, once the idle ones it took are closed.
    let started = Instant::now();
    let (status, _) = node
        .send_as(Some(&node.token), reqwest::Method::GET, "/v1/zones", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The half-sent request's connection is closed by the node.
    half.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 256];
    let read = half.read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || matches!(read, Ok(n) if n > 0 && buf.starts_with(b"HTTP/1.1 408"))
            || read.is_err(),
        "{read:?}"
    );
    drop(idle);
    let (status, _) = node
        .send_as(Some(&node.token), reqwest::Method::GET, "/healthz", None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

/// A `GET /v1/zones` over TLS to `address`, trusting `certificate` only: the raw answer.
async fn zones_over_tls(address: &str, certificate: &rcgen::CertifiedKey, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.cert.der().clone()).expect("root");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connected");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("a TLS handshake");
    let request = format!(
        "GET /v1/zones HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.expect("answer");
    answer
}

/// A self-signed certificate for `localhost`, written as PEM to `cert` and `key`.
fn self_signed(cert: &std::path::Path, key: &std::path::Path) -> rcgen::CertifiedKey {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    std::fs::write(cert, certified.cert.pem()).expect("cert written");
    std::fs::write(key, certified.key_pair.serialize_pem()).expect("key written");
    certified
}

#[tokio::test]
async fn the_manifest_can_name_the_certificate_relative_to_itself() {
    let dir = common::data_dir();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("tls")).expect("conf dir");
    let certified = self_signed(&conf.join("tls/node.pem"), &conf.join("tls/node.key"));
    let manifest = conf.join("flatstack.toml");
    std::fs::write(
        &manifest,
        "enabled = [\"fault-injection\"]\n[tls]\ncert = \"tls/node.pem\"\nkey = \"tls/node.key\"\n",
    )
    .expect("manifest written");

    // A manifest naming a key that is not there: the node refuses to start, and says which.
    let broken = conf.join("broken.toml");
    std::fs::write(
        &broken,
        "[tls]\ncert = \"tls/node.pem\"\nkey = \"tls/missing.key\"\n",
    )
    .expect("manifest written");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .arg("--config")
        .arg(&broken)
        .env("RUST_LOG", "warn")
        .env_remove("FLATSTACK_DATABASE_URL")
        .output()
        .expect("the node runs");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("missing.key"), "{said}");

    let node = Node::start_custom(
        dir.path(),
        &["--config".as_ref(), manifest.as_os_str()],
        &[],
    );
    let address = node
        .base
        .strip_prefix("https://")
        .expect("an https address");
    let answer = zones_over_tls(address, &certified, &node.token).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn the_api_is_served_over_tls_when_given_a_certificate() {
    let dir = common::data_dir();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let certified = self_signed(&cert, &key);
    let node = Node::start_custom(
        dir.path(),
        &[
            "--tls-cert".as_ref(),
            cert.as_os_str(),
            "--tls-key".as_ref(),
            key.as_os_str(),
        ],
        &[],
    );
    let address = node
        .base
        .strip_prefix("https://")
        .expect("an https address");
    // A client that trusts that certificate only.
    let answer = zones_over_tls(address, &certified, &node.token).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"inventories\""), "{answer}");
    // The client, trusting that certificate (SSL_CERT_FILE, as for other programs).
    let port = address.rsplit(':').next().expect("a port");
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_flatstack"))
        .args([
            "--endpoint",
            &format!("https://localhost:{port}"),
            "--token",
            &node.token,
        ])
        .args(["zones", "list", "--output", "json"])
        .env("SSL_CERT_FILE", &cert)
        .output()
        .expect("the client runs");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{address}/healthz"))
        .send()
        .await;
    assert!(plain.is_err() || !plain.expect("answer").status().is_success());
}
