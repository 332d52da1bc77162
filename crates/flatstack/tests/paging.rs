//! Lists over HTTP are paged: `limit`, an opaque `cursor`, `next`, `sort`, and `total` the
//! true count; a walk sees every resource that stays once, whatever is created meanwhile.

mod common;

use common::Node;
use reqwest::StatusCode;
use serde_json::json;
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
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut added = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/zones?limit=7&sort={sort}&cursor={c}"),
                None => format!("/v1/zones?limit=7&sort={sort}"),
            };
            let (status, page) = node.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let names: Vec<String> = page["inventories"]
                .as_array()
                .expect("inventories")
                .iter()
                .map(|z| z["name"].as_str().expect("name").to_owned())
                .collect();
            assert!(names.len() <= 7);
            assert!(page["total"].as_u64().expect("total") >= 25);
            seen.extend(names);
            // Created between pages: the walk still sees every zone that was there once.
            added += 1;
            node.create("zones", json!({"name": format!("late-{sort}-{added}")}))
                .await;
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
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
