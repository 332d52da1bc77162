//! Identity over HTTP, on SQLite (or PostgreSQL with FLATSTACK_TEST_DATABASE_URL): nothing
//! without a token, roles and accounts kept apart, tokens revoked and expired, logins
//! limited, every mutation audited.

mod common;

use common::cloud::{data_centre, vm_body};
use common::{uuid, Node};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// An account with a user of `role` and an API token for it: (account, user, token).
async fn member(node: &Node, account: &str, role: &str) -> (String, String, String) {
    let account = node.create("accounts", json!({"name": account})).await;
    let user = node
        .create(
            "users",
            json!({"name": format!("{}-{role}", account["name"].as_str().unwrap_or_default()),
                "account_uuid": uuid(&account), "role": role,
                "password": "correct horse battery"}),
        )
        .await;
    let token = token_for(node, &uuid(&user)).await;
    (uuid(&account), uuid(&user), token)
}

async fn token_for(node: &Node, user: &str) -> String {
    let (status, created) = node
        .post("/v1/tokens", json!({"user_uuid": user, "name": "test"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let inventory = &created["inventory"];
    assert!(inventory.get("token_hash").is_none(), "{inventory}");
    inventory["token"]
        .as_str()
        .expect("the token, once")
        .to_owned()
}

#[tokio::test]
async fn nothing_but_probes_version_and_the_document_answers_without_a_valid_token() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    for path in ["/healthz", "/readyz", "/v1/version", "/v1/openapi.json"] {
        let (status, body) = node.send_as(None, Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    // Every operation of the document, and the routes it does not describe.
    let (_, doc) = node.get("/v1/openapi.json").await;
    let mut operations: Vec<(Method, String)> = vec![
        (Method::GET, "/metrics".into()),
        (Method::GET, "/v1/events/stream".into()),
        (Method::GET, "/v1/audit".into()),
        (Method::GET, "/v1/permissions".into()),
    ];
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let path = path
            .replace("{uuid}", "0123456789abcdef0123456789abcdef")
            .replace("{type}", "io.flatstack.vm.created.v1")
            .replace("{point}", "vm.create.pre-check")
            .replace("{name}", "x");
        for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
            operations.push((method.to_uppercase().parse().expect("method"), path.clone()));
        }
    }
    assert!(operations.len() > 40, "{}", operations.len());
    let zones = node.count("zones").await;
    for token in [None, Some("fst_0000000000000000"), Some("not-even-a-token")] {
        for (method, path) in &operations {
            let public = matches!(
                path.as_str(),
                "/healthz" | "/readyz" | "/v1/version" | "/v1/openapi.json"
            ) || (method == Method::POST && path == "/v1/sessions");
            if public {
                continue;
            }
            let body = (method != Method::GET && method != Method::DELETE)
                .then(|| json!({"name": "sneaky"}));
            let (status, answer) = node.send_as(token, method.clone(), path, body).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path}: {answer}"
            );
            assert_eq!(answer["error"]["code"], "unauthenticated", "{answer}");
        }
    }
    assert_eq!(node.count("zones").await, zones, "nothing changed");
}

#[tokio::test]
async fn members_see_and_change_only_their_own_accounts_resources() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let (a, _, alice) = member(&node, "acme", "member").await;
    let (b, _, bob) = member(&node, "bravo", "member").await;
    let (viewer_account, _, _) = (a.clone(), (), ());
    let victor = {
        let user = node
            .create(
                "users",
                json!({"name": "victor", "account_uuid": viewer_account, "role": "viewer"}),
            )
            .await;
        token_for(&node, &uuid(&user)).await
    };

    // Alice's VM is her account's, whatever the body says.
    let mut body = vm_body(&dc, "alices");
    body["account_uuid"] = json!(b);
    let (status, created) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let vm = uuid(&created["inventory"]);
    assert_eq!(created["inventory"]["account_uuid"], a.as_str());

    let list = |token: String| {
        let node = &node;
        async move {
            let (status, list) = node
                .send_as(Some(&token), Method::GET, "/v1/vm-instances", None)
                .await;
            assert_eq!(status, StatusCode::OK, "{list}");
            list["total"].as_u64().expect("total")
        }
    };
    assert_eq!(list(alice.clone()).await, 1);
    assert_eq!(
        list(victor.clone()).await,
        1,
        "a viewer reads its account's"
    );
    assert_eq!(list(bob.clone()).await, 0, "another account sees nothing");
    let (_, all) = node
        .get(&format!("/v1/vm-instances?account_uuid={b}"))
        .await;
    assert_eq!(all["total"], 0, "admins narrow by account: {all}");

    // Another account's VM answers as a missing one, to every verb.
    let path = format!("/v1/vm-instances/{vm}");
    for (method, path, body) in [
        (Method::GET, path.clone(), None),
        (
            Method::PATCH,
            format!("{path}?wait=10"),
            Some(json!({"name": "mine"})),
        ),
        (
            Method::POST,
            format!("{path}/actions?wait=10"),
            Some(json!({"action": "stop"})),
        ),
        (Method::DELETE, format!("{path}?wait=10"), None),
    ] {
        let (status, answer) = node.send_as(Some(&bob), method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
    }
    // A viewer reads it but changes nothing; nobody but admins touches infrastructure.
    let (status, _) = node.send_as(Some(&victor), Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    let stop = json!({"action": "stop"});
    let actions = format!("{path}/actions?wait=10");
    let (status, answer) = node
        .send_as(Some(&victor), Method::POST, &actions, Some(stop.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(answer["error"]["code"], "forbidden");
    for token in [&alice, &victor] {
        let (status, answer) = node
            .send_as(
                Some(token),
                Method::POST,
                "/v1/zones?wait=10",
                Some(json!({"name": "z"})),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        let (status, _) = node
            .send_as(Some(token), Method::GET, "/v1/zones", None)
            .await;
        assert_eq!(status, StatusCode::OK, "infrastructure is readable");
        for admin_only in ["/v1/accounts", "/v1/users", "/v1/audit", "/v1/events"] {
            let (status, _) = node
                .send_as(Some(token), Method::GET, admin_only, None)
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{admin_only}");
        }
    }
    // Alice stops her own VM; its job is hers, not Bob's.
    let (status, stopped) = node
        .send_as(
            Some(&alice),
            Method::POST,
            &actions.replace("?wait=10", ""),
            Some(stop),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{stopped}");
    let job = stopped["location"].as_str().expect("location").to_owned();
    let (status, _) = node.send_as(Some(&bob), Method::GET, &job, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = node.send_as(Some(&alice), Method::GET, &job, None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, jobs) = node
        .send_as(Some(&bob), Method::GET, "/v1/jobs", None)
        .await;
    assert_eq!(jobs["total"], 0, "{jobs}");

    // Quotas count per account: Acme may hold one VM, Bravo is not limited by it.
    let quota = json!({"name": "acme", "account_uuid": a, "max_vm_num": 1, "max_cpu_num": 64,
        "max_memory_size": 64u64 << 30});
    node.create("quotas", quota).await;
    let (status, refused) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(vm_body(&dc, "second")),
        )
        .await;
    assert!(status.is_client_error(), "{status} {refused}");
    let (status, bobs) = node
        .send_as(
            Some(&bob),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(vm_body(&dc, "bobs")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bobs}");
    let bobs = uuid(&bobs["inventory"]);

    // A volume attaches only to a VM of its own account.
    let (status, volume) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/volumes?wait=30",
            Some(json!({"name": "data", "size": 1u64 << 30})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{volume}");
    let volume = uuid(&volume["inventory"]);
    let attach = format!("/v1/volumes/{volume}/actions?wait=30");
    let (status, answer) = node
        .send_as(
            Some(&alice),
            Method::POST,
            &attach,
            Some(json!({"action": "attach", "vm_instance_uuid": bobs})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    let (status, answer) = node
        .send_as(
            Some(&bob),
            Method::POST,
            &attach,
            Some(json!({"action": "attach", "vm_instance_uuid": bobs})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

/// Members build L3 networks of their own on the cloud's L2 networks: private to their
/// account (another account's VMs cannot use one, and it answers `404` to them), while the
/// admins' networks are shared with all, readable by members and changed by admins only.
#[tokio::test]
async fn members_build_their_own_l3_networks_and_images_private_to_their_account() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let dc = data_centre(&node).await;
    let (a, _, alice) = member(&node, "acme", "member").await;
    let (_, _, bob) = member(&node, "bravo", "member").await;

    // The admin's network is shared: members read it.
    let (status, shared) = node
        .send_as(
            Some(&bob),
            Method::GET,
            &format!("/v1/l3-networks/{}", dc.l3),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shared}");
    assert_eq!(shared["inventory"]["shared"], true);
    let l2 = shared["inventory"]["l2_network_uuid"]
        .as_str()
        .unwrap()
        .to_owned();

    // Alice's own network: hers, private, whatever she asks; sharing is refused.
    let (status, refused) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/l3-networks?wait=10",
            Some(json!({"name": "alices-net", "l2_network_uuid": l2, "shared": true})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["error"]["details"]["field"], "shared");
    assert_eq!(node.count("l3-networks").await, 1, "nothing made");
    let (status, made) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/l3-networks?wait=10",
            Some(json!({"name": "alices-net", "l2_network_uuid": l2})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["inventory"]["account_uuid"], a.as_str());
    assert_eq!(made["inventory"]["shared"], false);
    let own = uuid(&made["inventory"]);
    let range = json!({"name": "r", "start_ip": "10.9.0.10", "end_ip": "10.9.0.19",
        "netmask": "255.255.255.0", "gateway": "10.9.0.1"});
    let (status, added) = node
        .send_as(
            Some(&alice),
            Method::POST,
            &format!("/v1/l3-networks/{own}/ip-ranges?wait=10"),
            Some(range.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{added}");

    // Her VM gets an address on it.
    let mut body = vm_body(&dc, "on-her-net");
    body["l3_network_uuids"] = json!([own]);
    let (status, vm) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{vm}");
    let ip = vm["inventory"]["nics"][0]["ip"].as_str().unwrap();
    assert!(ip.starts_with("10.9.0."), "{vm}");

    // Lists: each member sees its own and the shared; the admin sees all.
    let total = |token: Option<String>, query: &'static str| {
        let node = &node;
        async move {
            let path = format!("/v1/l3-networks{query}");
            let (status, list) = match token {
                Some(token) => node.send_as(Some(&token), Method::GET, &path, None).await,
                None => node.get(&path).await,
            };
            assert_eq!(status, StatusCode::OK, "{list}");
            list["total"].as_u64().expect("total")
        }
    };
    assert_eq!(total(Some(alice.clone()), "").await, 2);
    assert_eq!(total(Some(bob.clone()), "").await, 1, "only the shared one");
    assert_eq!(
        total(Some(bob.clone()), "?name=alices-net").await,
        0,
        "a filter does not reach past the scope"
    );

    // To Bob, Alice's network is as absent as one that never was: every verb, and a VM on it.
    let path = format!("/v1/l3-networks/{own}");
    for (method, path, body) in [
        (Method::GET, path.clone(), None),
        (
            Method::PATCH,
            format!("{path}?wait=10"),
            Some(json!({"name": "mine"})),
        ),
        (Method::DELETE, format!("{path}?wait=10"), None),
        (Method::GET, format!("{path}/ip-ranges"), None),
        (
            Method::POST,
            format!("{path}/ip-ranges?wait=10"),
            Some(range.clone()),
        ),
    ] {
        let (status, answer) = node.send_as(Some(&bob), method.clone(), &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
    }
    // Nor through the list of every network's ranges, which is the admins'.
    let (status, _) = node
        .send_as(Some(&bob), Method::GET, "/v1/ip-ranges", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, refused) = node
        .send_as(
            Some(&bob),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(body.clone()),
        )
        .await;
    let absent = "00000000000000000000000000000bad";
    let mut missing = body.clone();
    missing["l3_network_uuids"] = json!([absent]);
    let (_, as_missing) = node
        .send_as(
            Some(&bob),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(missing),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&own, absent),
        as_missing["error"]["message"].as_str().unwrap(),
        "the same answer as a network that does not exist"
    );
    // The shared network is the admins' to change.
    for (method, path, body) in [
        (
            Method::PATCH,
            format!("/v1/l3-networks/{}?wait=10", dc.l3),
            Some(json!({"name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/v1/l3-networks/{}?wait=10", dc.l3),
            None,
        ),
        (
            Method::POST,
            format!("/v1/l3-networks/{}/ip-ranges?wait=10", dc.l3),
            Some(range.clone()),
        ),
    ] {
        let (status, answer) = node
            .send_as(Some(&alice), method.clone(), &path, body)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {answer}");
    }
    // Her own she renames.
    let (status, renamed) = node
        .send_as(
            Some(&alice),
            Method::PATCH,
            &format!("{path}?wait=10"),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(total(None, "").await, 2);
    assert_eq!(
        total(None, "?account_uuid=00000000000000000000000000000001").await,
        1
    );

    // Images alike: the admin's is public; Alice's own is hers alone.
    let (status, public) = node
        .send_as(
            Some(&bob),
            Method::GET,
            &format!("/v1/images/{}", dc.image),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{public}");
    assert_eq!(public["inventory"]["shared"], true);
    let image = json!({"name": "alices-image", "url": "http://images/alice.qcow2",
        "format": "qcow2", "size": 1024, "backup_storage_uuids": public["inventory"]["backup_storage_uuids"]});
    let (status, registered) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/images?wait=10",
            Some(image),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{registered}");
    assert_eq!(registered["inventory"]["shared"], false);
    let hers = uuid(&registered["inventory"]);
    let (status, _) = node
        .send_as(Some(&bob), Method::GET, &format!("/v1/images/{hers}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, images) = node
        .send_as(Some(&bob), Method::GET, "/v1/images", None)
        .await;
    assert_eq!(images["total"], 1, "{images}");
    let mut from_hers = vm_body(&dc, "from-her-image");
    from_hers["image_uuid"] = json!(hers);
    let (status, refused) = node
        .send_as(
            Some(&bob),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(from_hers.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"]["message"], format!("no image {hers}"));
    let (status, made) = node
        .send_as(
            Some(&alice),
            Method::POST,
            "/v1/vm-instances?wait=30",
            Some(from_hers),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["inventory"]["image_uuid"], hers.as_str());
    let (status, _) = node
        .send_as(
            Some(&alice),
            Method::PATCH,
            &format!("/v1/images/{}?wait=10", dc.image),
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn tokens_are_revoked_and_expire_and_logins_are_limited() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (_, user, token) = member(&node, "acme", "member").await;
    let (status, _) = node
        .send_as(Some(&token), Method::GET, "/v1/zones", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // The token is shown once: lists and reads show neither it nor its hash.
    let (_, tokens) = node
        .send_as(Some(&token), Method::GET, "/v1/tokens", None)
        .await;
    let mine = tokens["inventories"].as_array().expect("tokens");
    assert_eq!(mine.len(), 1, "a member sees its own tokens only: {tokens}");
    assert!(mine[0].get("token").is_none() && mine[0].get("token_hash").is_none());
    let (_, all) = node.get("/v1/tokens").await;
    assert!(
        all["total"].as_u64().unwrap_or(0) >= 2,
        "admins see all: {all}"
    );

    // Revoked: refused at once.
    let (status, _) = node
        .send_as(
            Some(&token),
            Method::DELETE,
            &format!("/v1/tokens/{}", uuid(&mine[0])),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = node
        .send_as(Some(&token), Method::GET, "/v1/zones", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // An expiry in the past is refused; one in two seconds is honoured.
    let past = json!({"user_uuid": user, "expires_at": "2020-01-01T00:00:00Z"});
    let (status, answer) = node.post("/v1/tokens", past).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "expires_at");
    let soon = time::OffsetDateTime::now_utc() + Duration::from_secs(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .expect("time");
    let (status, short) = node
        .post("/v1/tokens", json!({"user_uuid": user, "expires_at": soon}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{short}");
    let short = short["inventory"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, _) = node
        .send_as(Some(&short), Method::GET, "/v1/zones", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, _) = node
        .send_as(Some(&short), Method::GET, "/v1/zones", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "expired");

    // A login answers a session token; wrong passwords are limited per name.
    let login = |password: &str| json!({"name": "acme-member", "password": password});
    let (status, session) = node
        .send_as(
            None,
            Method::POST,
            "/v1/sessions",
            Some(login("correct horse battery")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let session = session["inventory"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, _) = node
        .send_as(Some(&session), Method::GET, "/v1/vm-instances", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..5 {
        let (status, _) = node
            .send_as(None, Method::POST, "/v1/sessions", Some(login("wrong")))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, answer) = node
        .send_as(
            None,
            Method::POST,
            "/v1/sessions",
            Some(login("correct horse battery")),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    let (status, _) = node
        .send_as(
            None,
            Method::POST,
            "/v1/sessions",
            Some(json!({"name": "nobody", "password": "whatever-it-is"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A password too short is refused at the user's create, naming the field.
    let (status, answer) = node
        .post(
            "/v1/users",
            json!({"name": "weak", "account_uuid": "00000000000000000000000000000001",
                "role": "member", "password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "password");
}

#[tokio::test]
async fn every_mutating_request_is_audited_and_only_admins_read_it() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (_, user, token) = member(&node, "acme", "member").await;
    let (status, _) = node
        .post("/v1/zones?wait=10", json!({"name": "audited"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = node
        .send_as(
            Some(&token),
            Method::POST,
            "/v1/zones",
            Some(json!({"name": "no"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = node
        .send_as(None, Method::DELETE, "/v1/zones/x", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Written in batches: within a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records = loop {
        let (status, page) = node.get("/v1/audit?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let records = page["inventories"].as_array().cloned().unwrap_or_default();
        let seen = |s: u64, m: &str| records.iter().any(|r| r["status"] == s && r["method"] == m);
        if seen(201, "POST") && seen(403, "POST") && seen(401, "DELETE") {
            break records;
        }
        assert!(Instant::now() < deadline, "not audited: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let created = records
        .iter()
        .find(|r| r["status"] == 201 && r["path"] == "/v1/zones")
        .expect("the zone's create");
    assert_eq!(created["user_name"], "admin");
    assert!(created["job_uuid"].is_string(), "{created}");
    assert_eq!(created["remote"], "127.0.0.1");
    let refused = records
        .iter()
        .find(|r| r["status"] == 403)
        .expect("refusal");
    assert_eq!(refused["user_uuid"], user.as_str());
    let anonymous = records.iter().find(|r| r["status"] == 401).expect("401");
    assert!(anonymous["user_uuid"].is_null());
    // Newest first, paged, filtered.
    let (_, first) = node.get("/v1/audit?limit=1").await;
    assert_eq!(first["inventories"].as_array().map(Vec::len), Some(1));
    let next = first["next"].as_str().expect("a next page");
    let (_, second) = node.get(&format!("/v1/audit?limit=1&cursor={next}")).await;
    assert_ne!(first["inventories"][0], second["inventories"][0]);
    let (_, mine) = node.get(&format!("/v1/audit?user_uuid={user}")).await;
    assert!(mine["inventories"]
        .as_array()
        .expect("records")
        .iter()
        .all(|r| r["user_uuid"] == user.as_str()));
    let (status, _) = node.get("/v1/audit?cursor=zz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = node
        .send_as(Some(&token), Method::GET, "/v1/audit", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn permissions_list_what_each_role_may_do() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (status, list) = node.get("/v1/permissions").await;
    assert_eq!(status, StatusCode::OK);
    let roles = |permission: &str| -> Vec<String> {
        list["permissions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["permission"] == permission)
            .unwrap_or_else(|| panic!("{permission} not listed: {list}"))["roles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(roles("vm-instances:read"), ["admin", "member", "viewer"]);
    assert_eq!(roles("vm-instances:create"), ["admin", "member"]);
    assert_eq!(roles("vm-instances:action:stop"), ["admin", "member"]);
    assert_eq!(roles("zones:read"), ["admin", "member", "viewer"]);
    assert_eq!(roles("zones:create"), ["admin"]);
    assert_eq!(roles("accounts:read"), ["admin"]);
    // An action no plugin declared for members is admin-only.
    assert_eq!(roles("hosts:action:reconnect"), ["admin"]);
}

#[tokio::test]
async fn the_admin_token_is_written_once_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::data_dir();
    let first = Node::start(dir.path());
    let path = dir.path().join("admin.token");
    let mode = std::fs::metadata(&path)
        .expect("token file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = first.token.clone();
    drop(first);
    // A restart keeps it (still valid), a lost file gets a new one.
    let again = Node::start(dir.path());
    assert_eq!(again.token, token);
    drop(again);
    std::fs::remove_file(&path).expect("removed");
    let third = Node::start(dir.path());
    assert_ne!(third.token, token);
    let (status, _) = third.get("/v1/zones").await;
    assert_eq!(status, StatusCode::OK);
}
