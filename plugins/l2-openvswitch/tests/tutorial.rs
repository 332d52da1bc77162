//! `docs/tutorial-l2-driver.md` shows this crate's code; this test keeps the two the same.
//! Each ```` ```rust ```` block of the tutorial follows a marker saying where it comes from:
//! `<!-- from PATH#NAME -->` — the block is exactly the lines between `// ANCHOR: NAME` and
//! `// ANCHOR_END: NAME` in PATH (anchor lines nested inside left out) — or `<!-- from PATH
//! -->`, the block appears verbatim in PATH. Paths are from the repository's root.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The lines of `source` between the anchor `name` and its end, nested anchors left out.
fn anchored(source: &str, name: &str) -> Option<String> {
    let start = format!("// ANCHOR: {name}");
    let end = format!("// ANCHOR_END: {name}");
    let mut lines = source.lines().skip_while(|l| l.trim() != start);
    lines.next()?;
    let mut out = Vec::new();
    for line in lines {
        if line.trim() == end {
            return Some(out.join("\n"));
        }
        let trimmed = line.trim_start();
        if !trimmed.starts_with("// ANCHOR: ") && !trimmed.starts_with("// ANCHOR_END: ") {
            out.push(line);
        }
    }
    None
}

/// Each excerpt of the tutorial: (its marker's target, its code).
fn excerpts(tutorial: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = tutorial.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if line == "```rust" {
            let marker = i
                .checked_sub(1)
                .and_then(|j| lines[j].trim().strip_prefix("<!-- from "))
                .and_then(|m| m.strip_suffix(" -->"))
                .unwrap_or_else(|| {
                    panic!(
                        "line {}: a ```rust block without a `<!-- from ... -->` marker",
                        i + 1
                    )
                });
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                code.push(lines[i]);
                i += 1;
            }
            out.push((marker.to_owned(), code.join("\n")));
        } else if line.starts_with("<!-- from ") {
            assert_eq!(
                lines.get(i + 1).map(|l| l.trim()),
                Some("```rust"),
                "line {}: a marker must be followed by a ```rust block",
                i + 1
            );
        }
        i += 1;
    }
    out
}

#[test]
fn every_excerpt_of_the_tutorial_is_the_crate_s_code() {
    let root = root();
    let tutorial = std::fs::read_to_string(root.join("docs/tutorial-l2-driver.md"))
        .expect("docs/tutorial-l2-driver.md");
    let excerpts = excerpts(&tutorial);
    assert!(
        excerpts.len() >= 15,
        "the tutorial shows the crate: {}",
        excerpts.len()
    );
    for (marker, code) in excerpts {
        let (path, anchor) = match marker.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (marker.as_str(), None),
        };
        let source = std::fs::read_to_string(root.join(path))
            .unwrap_or_else(|e| panic!("{marker}: cannot read {path}: {e}"));
        assert!(!code.trim().is_empty(), "{marker}: an empty excerpt");
        match anchor {
            Some(anchor) => {
                let expected = anchored(&source, anchor)
                    .unwrap_or_else(|| panic!("{marker}: no anchor `{anchor}` in {path}"));
                assert!(
                    code == expected,
                    "{marker}: the tutorial's excerpt differs from the source; copy it again:\n{expected}"
                );
            }
            None => assert!(
                source.contains(&code),
                "{marker}: the excerpt is not in {path}:\n{code}"
            ),
        }
    }
}

#[test]
fn anchors_are_found_and_nested_ones_left_out() {
    let source =
        "a\n// ANCHOR: x\nb\n    // ANCHOR: y\n    c\n    // ANCHOR_END: y\n// ANCHOR_END: x\n";
    assert_eq!(anchored(source, "x").as_deref(), Some("b\n    c"));
    assert_eq!(anchored(source, "y").as_deref(), Some("    c"));
    assert_eq!(anchored(source, "z"), None);
}
