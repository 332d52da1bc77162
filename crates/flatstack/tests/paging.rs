//! Lists over HTTP are paged: `limit`, an opaque `cursor`, `next`, `sort`, and `total` the
//! true count; a walk sees every resource that stays once, whatever is created meanwhile.

mod common;

use common::Node;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[tokio::test]
async fn lists_page_by_cursor_sort_and_count_truly() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    for i in 0..25 {
        node.create("zones", json!({"name": format!("zone-{i:02}")}))
            .await;
    }
    for sort in ["created_at", "-name", "name,-created_at"] {
        // Zones created between pages: the walk still sees every zone that was there once.
        let between = format!("late-{sort}");
        let pages = walk(
            &node,
            &format!("/v1/zones?limit=7&sort={sort}"),
            Some(&between),
        )
        .await;
        let mut seen = Vec::new();
        for page in &pages {
            let names = column(page, "name");
            assert!(names.len() <= 7);
            assert!(page["total"].as_u64().expect("total") >= 25);
            seen.extend(names);
        }
        let first: Vec<&String> = seen.iter().filter(|n| n.starts_with("zone-")).collect();
        assert_eq!(first.len(), 25, "{sort}: {seen:?}");
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{sort}: one zone twice: {seen:?}");
        if sort == "-name" {
            let mut sorted = first.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            assert_eq!(first, sorted, "descending by name");
        }
    }
    // The true count, and a page past the end is empty with no `next`.
    let (_, all) = node.get("/v1/zones?limit=1000").await;
    let count = all["inventories"].as_array().expect("inventories").len() as u64;
    assert_eq!(all["total"], count);
    assert!(all.get("next").is_none());
    // Bad paging parameters are 400s naming them.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("sort=description", "sort"),
        ("sort=name,name", "sort"),
        ("cursor=zz", "cursor"),
        ("cursor=5b5d", "cursor"),
    ] {
        let (status, answer) = node.get(&format!("/v1/zones?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert_eq!(
            answer["error"]["details"]["field"], field,
            "{query}: {answer}"
        );
    }
}

/// Every page of `path` (`?limit=` and the like already in it), walked by `next`; with
/// `between`, a zone named `<between>-<n>` is created after each page.
async fn walk(node: &Node, path: &str, between: Option<&str>) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = node.get(&url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        if let Some(between) = between {
            node.create(
                "zones",
                json!({"name": format!("{between}-{}", pages.len() + 1)}),
            )
            .await;
        }
        cursor = page["next"].as_str().map(str::to_owned);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
    }
}

/// The `field` of every row of `page`.
fn column(page: &Value, field: &str) -> Vec<String> {
    page["inventories"]
        .as_array()
        .expect("inventories")
        .iter()
        .map(|row| row[field].as_str().expect("a text field").to_owned())
        .collect()
}

/// The `field` of every row of `pages`, in order, and each page's `total`.
fn rows(pages: &[Value], field: &str) -> (Vec<String>, Vec<u64>) {
    let names = pages.iter().flat_map(|page| column(page, field)).collect();
    let totals = pages
        .iter()
        .map(|page| page["total"].as_u64().expect("total"))
        .collect();
    (names, totals)
}

#[tokio::test]
async fn child_collections_page_as_lists_do() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    let (zone, first_cluster, _) = common::data_centre(&node).await;
    let l2 = common::uuid(
        &node
            .create(
                "l2-networks",
                json!({"name": "l2", "zone_uuid": zone, "physical_interface": "eth0",
                       "type": "L2VlanNetwork", "vlan": 100}),
            )
            .await,
    );
    let l3 = common::uuid(
        &node
            .create("l3-networks", json!({"name": "l3", "l2_network_uuid": l2}))
            .await,
    );
    for i in 1..=7 {
        let (status, reply) = node
            .post(
                &format!("/v1/l3-networks/{l3}/ip-ranges?wait=10"),
                json!({"name": format!("range-{i}"), "start_ip": format!("192.168.0.{}", i * 10),
                       "end_ip": format!("192.168.0.{}", i * 10 + 5),
                       "netmask": "255.255.255.0", "gateway": "192.168.0.1"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
    }
    // An L3 network's IP ranges, 3 a page, by name descending.
    let ranges = format!("/v1/l3-networks/{l3}/ip-ranges");
    let (names, totals) = rows(
        &walk(&node, &format!("{ranges}?limit=3&sort=-name"), None).await,
        "name",
    );
    let expected: Vec<String> = (1..=7).rev().map(|i| format!("range-{i}")).collect();
    assert_eq!(names, expected);
    assert_eq!(totals, [7, 7, 7], "three pages, each with the true count");
    // An L2 network's clusters (an attachment table, keyed by the cluster), 2 a page.
    let mut clusters = vec![first_cluster];
    for i in 2..=5 {
        clusters.push(common::uuid(
            &node
                .create(
                    "clusters",
                    json!({"name": format!("c{i}"), "zone_uuid": zone, "hypervisor_type": "Simulator"}),
                )
                .await,
        ));
    }
    for cluster in &clusters {
        let (status, reply) = node
            .post(
                &format!("/v1/l2-networks/{l2}/actions?wait=10"),
                json!({"action": "attach_cluster", "cluster_uuid": cluster}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{reply}");
    }
    let (seen, totals) = rows(
        &walk(
            &node,
            &format!("/v1/l2-networks/{l2}/clusters?limit=2"),
            None,
        )
        .await,
        "cluster_uuid",
    );
    clusters.sort();
    assert_eq!(seen, clusters, "by cluster, each once");
    assert_eq!(totals, [5, 5, 5]);
    // Bad paging is a 400 naming the parameter, as on a kind's list; and a child list
    // takes nothing else.
    for (query, field) in [
        ("limit=0", Some("limit")),
        ("limit=many", None),
        ("sort=end_ip", Some("sort")),
        ("cursor=zz", Some("cursor")),
        ("colour=red", None),
    ] {
        let (status, answer) = node.get(&format!("{ranges}?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["details"]["field"], field, "{answer}");
        }
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_walk_through_ten_thousand_rows_sees_each_once_whatever_is_inserted_meanwhile() {
    let dir = common::data_dir();
    let node = Node::start(dir.path());
    // 10,000 zones written straight into the table, all with one creation time: the
    // order is then decided by the uuid that ends every order.
    let uuid = if dir.is_postgres() {
        "lpad(i::text, 32, '0')"
    } else {
        "substr('00000000000000000000000000000000' || i, -32)"
    };
    let written = common::execute(
        dir.path(),
        &format!(
            "INSERT INTO zones (uuid, name, description, created_at, updated_at) \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000) \
             SELECT {uuid}, 'bulk-' || i, '', '2026-01-01T00:00:00.000000Z', \
                    '2026-01-01T00:00:00.000000Z' FROM n"
        ),
    )
    .await;
    assert_eq!(written, 10_000);
    // Inserted between pages, newer than every bulk row: seen at the end, if at all.
    let pages = walk(&node, "/v1/zones?limit=500", Some("between")).await;
    let mut seen = BTreeSet::new();
    for uuid in rows(&pages, "uuid").0 {
        assert!(seen.insert(uuid.clone()), "zone {uuid} seen twice");
    }
    let pages = pages.len() as u64;
    let bulk = seen
        .iter()
        .filter(|u| u.starts_with("000000000000000000000000"))
        .count();
    assert_eq!(bulk, 10_000, "every bulk zone, once");
    assert!(pages >= 20, "{pages} pages");
    let (_, last) = node.get("/v1/zones?limit=1").await;
    assert_eq!(last["total"], 10_000 + pages, "the true count: {last}");
}
