//! One owner per table (migrations/20261231000001_table_owners.sql): every
//! table and view carries a comment naming the module that owns it, the
//! modules that may read it in a statement of their own, and any column
//! another module writes. This test reads those comments from a migrated
//! database and checks every SQL statement in the server's sources against
//! them: a write outside the owner, or a read by a module not listed, fails
//! with the file and the table. (The bench, which builds its own database to
//! measure PostgreSQL's floor, is not the server and is not checked.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::helpers::spawn_app;

struct Rule {
    owner: String,
    readers: Vec<String>,
    /// (path, column) another module writes.
    also_writes: Vec<(String, String)>,
}

fn parse(comment: &str) -> Rule {
    let mut rule = Rule {
        owner: String::new(),
        readers: vec![],
        also_writes: vec![],
    };
    let mut rest = comment;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let end = after.find(' ').unwrap_or(after.len());
        let value = &after[..end];
        rest = &after[end..];
        let key = key.rsplit(' ').next().unwrap_or(key);
        match key {
            "owner" => rule.owner = value.to_owned(),
            "readers" => rule.readers = value.split(',').map(str::to_owned).collect(),
            "writes" => {
                for item in value.split(',') {
                    let (path, column) = item.split_once(':').expect("path:column");
                    rule.also_writes.push((path.to_owned(), column.to_owned()));
                }
            }
            other => panic!("unknown key {other:?} in table comment {comment:?}"),
        }
    }
    assert!(!rule.owner.is_empty(), "no owner in {comment:?}");
    rule
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The statements' verbs before a table name, for writes and for reads.
const WRITES: [&str; 4] = ["INSERT INTO", "UPDATE", "DELETE FROM", "TRUNCATE"];
const READS: [&str; 2] = ["FROM", "JOIN"];

/// Whether `text` has `verb <table>` with the table name ending there.
fn mentions(text: &str, verb: &str, table: &str) -> bool {
    let needle = format!("{verb} {table}");
    text.match_indices(&needle).any(|(at, _)| {
        let before_ok = at == 0 || !text.as_bytes()[at - 1].is_ascii_alphanumeric();
        let after = text.as_bytes().get(at + needle.len()).copied();
        before_ok && !after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

#[tokio::test]
async fn every_table_is_written_by_its_owner_and_read_only_by_those_it_names() {
    let app = spawn_app().await;
    let comments: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT c.relname::text, obj_description(c.oid, 'pg_class')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')
           AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(comments.len() >= 12, "tables: {comments:?}");
    let mut rules = BTreeMap::new();
    for (table, comment) in comments {
        let comment =
            comment.unwrap_or_else(|| panic!("table {table} has no owner comment: add one"));
        rules.insert(table, parse(&comment));
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![];
    for dir in ["src", "crates"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut broken = vec![];
    let mut checked = 0;
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        // Collapse whitespace so a statement split over lines still reads
        // `FROM outbox`.
        let text = std::fs::read_to_string(file)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for (table, rule) in &rules {
            let owned = rel.starts_with(&rule.owner);
            for verb in WRITES {
                if mentions(&text, verb, table) {
                    checked += 1;
                    let column_writer = rule.also_writes.iter().any(|(path, column)| {
                        rel.starts_with(path.as_str())
                            && verb == "UPDATE"
                            && text.contains(&format!("UPDATE {table} SET {column} ="))
                    });
                    if !owned && !column_writer {
                        broken.push(format!(
                            "{rel} writes {table} ({verb}), owned by {}",
                            rule.owner
                        ));
                    }
                }
            }
            for verb in READS {
                if mentions(&text, verb, table) {
                    checked += 1;
                    let listed = rule.readers.iter().any(|r| rel.starts_with(r.as_str()));
                    if !owned && !listed {
                        broken.push(format!(
                            "{rel} reads {table}, owned by {} and read by {:?}",
                            rule.owner, rule.readers
                        ));
                    }
                }
            }
        }
    }
    // The scan found the statements it checks (it would pass on nothing).
    assert!(
        checked > 40,
        "only {checked} statements found: is the scan reading the sources?"
    );
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn a_comment_is_read_as_owner_readers_and_column_writers() {
    let rule = parse("owner=a/ readers=b.rs,c/ also writes=d/:col");
    assert_eq!(rule.owner, "a/");
    assert_eq!(rule.readers, ["b.rs", "c/"]);
    assert_eq!(rule.also_writes, [("d/".to_owned(), "col".to_owned())]);
    assert!(mentions("SELECT 1 FROM outbox o", "FROM", "outbox"));
    assert!(!mentions("SELECT 1 FROM outbox_x", "FROM", "outbox"));
}
