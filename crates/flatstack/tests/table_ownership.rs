//! No component's SQL names a table another component owns (issue 10: plugins meet through
//! typed records and requests published in header crates, never through each other's
//! schemas).
//!
//! A table's owner is the crate whose migrations `CREATE TABLE` it. Every non-test source
//! file of every crate and plugin is then scanned for table names used as SQL — after
//! `FROM`, `JOIN`, `INTO`, `UPDATE`, `TABLE` in a string literal, or as the first (table)
//! argument of a store call such as `tx.exists("images", ...)`, or as any string literal
//! naming a table with an underscore (API paths use hyphens, so such a literal is always a
//! table) — and each use must be in the owner's crate. The distribution crate
//! (`crates/flatstack`) assembles every plugin and is not scanned: its `bench` command
//! counts rows to check its raw replay, as an operator's tool would. The one allowed foreign mention is `REFERENCES other (uuid)`: a
//! foreign key states referential integrity on another kind's uuid, it reads nothing. A
//! driver's own table joined to its base record needs no exception: the driver hands its
//! table name to the base through `L2NetworkDriver::table`, so no literal crosses.

use regex::Regex;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` under `dir`, skipping test directories.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if !matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("tests" | "benches" | "target")
            ) {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Drops `#[cfg(test)] mod tests { ... }` (tests may set up any table they like): by
/// convention it is the last item of a file.
fn without_unit_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The components: every crate under `crates/` and `plugins/` but the distribution, with
/// its non-test sources.
fn components(root: &Path) -> BTreeMap<String, Vec<(PathBuf, String)>> {
    let mut out = BTreeMap::new();
    for group in ["crates", "plugins"] {
        let Ok(entries) = fs::read_dir(root.join(group)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name() == "flatstack" {
                continue;
            }
            let mut files = Vec::new();
            sources(&entry.path().join("src"), &mut files);
            let name = format!("{group}/{}", entry.file_name().to_string_lossy());
            let texts = files
                .into_iter()
                .map(|f| {
                    let text = fs::read_to_string(&f).expect("readable source");
                    let text = without_unit_tests(&text).to_owned();
                    (f, text)
                })
                .collect();
            out.insert(name, texts);
        }
    }
    out
}

struct Use {
    component: String,
    file: PathBuf,
    line: usize,
    table: String,
    text: String,
}

#[test]
fn no_component_names_a_table_another_owns() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let components = components(&root);

    let create = Regex::new(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_][a-z0-9_]*)").unwrap();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (component, files) in &components {
        for (_, text) in files {
            for cap in create.captures_iter(text) {
                let previous = owner.insert(cap[1].to_owned(), component.clone());
                assert!(
                    previous.is_none_or(|p| &p == component),
                    "table `{}` is created by two components",
                    &cap[1]
                );
            }
        }
    }
    // The scan found the schema it is meant to guard.
    for table in [
        "hosts",
        "images",
        "vm_instances",
        "l2_networks",
        "backup_storage",
    ] {
        assert!(owner.contains_key(table), "no migration creates `{table}`");
    }

    let names = owner.keys().cloned().collect::<Vec<_>>().join("|");
    let sql = Regex::new(&format!(r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+({names})\b")).unwrap();
    let call = Regex::new(&format!(r#"\.[a-z_]+\(\s*"({names})""#)).unwrap();
    let literal = Regex::new(&format!(r#""({names})""#)).unwrap();
    let mut foreign = Vec::new();
    for (component, files) in &components {
        for (file, text) in files {
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let literals = literal
                    .captures_iter(code)
                    .filter(|cap| cap[1].contains('_'));
                let uses = sql.captures_iter(code).chain(call.captures_iter(code));
                for cap in uses.chain(literals) {
                    let table = &cap[1];
                    if owner.get(table) != Some(component) {
                        foreign.push(Use {
                            component: component.clone(),
                            file: file.clone(),
                            line: n + 1,
                            table: table.to_owned(),
                            text: line.trim().to_owned(),
                        });
                    }
                }
            }
        }
    }
    let report = foreign
        .iter()
        .map(|u| {
            format!(
                "{} names `{}` (owned by {}) at {}:{}: {}",
                u.component,
                u.table,
                owner[&u.table],
                u.file.strip_prefix(&root).unwrap_or(&u.file).display(),
                u.line,
                u.text
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(foreign.is_empty(), "foreign table uses:\n{report}");
}
