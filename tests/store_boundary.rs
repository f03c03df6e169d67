//! The store's boundary (ARCHITECTURE.md invariant 17): SQL, `rusqlite` and its connections
//! appear only under `src/store/`. Everything else reaches the index through its domain methods,
//! each of which names its caller and passes the one checkpoint, so no handler can skip it.

use std::path::{Path, PathBuf};

/// What only the store may say: the driver, its connection type, and SQL statements.
fn store_only(line: &str) -> Option<&'static str> {
    const MARKERS: [&str; 9] = [
        "rusqlite",
        "&Connection",
        "Connection::",
        "SELECT ",
        "INSERT INTO",
        "INSERT OR ",
        "DELETE FROM",
        "CREATE TABLE",
        "PRAGMA ",
    ];
    if let Some(m) = MARKERS.into_iter().find(|m| line.contains(m)) {
        return Some(m);
    }
    (line.contains("UPDATE ") && line.contains(" SET ")).then_some("UPDATE … SET")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_markers_catch_what_they_are_for() {
    assert!(store_only("use rusqlite::{params, Connection};").is_some());
    assert!(store_only("fn f(conn: &Connection) {}").is_some());
    assert!(store_only(r#"c.execute("UPDATE triage_jobs SET state = 'done'", [])"#).is_some());
    assert!(store_only("/// Connection bounds of the HTTP listener").is_none());
}

#[test]
fn sql_and_rusqlite_live_only_in_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let store = src.join("store");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let offences: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(&store))
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).expect("readable source");
            text.lines()
                .enumerate()
                .filter_map(|(i, line)| {
                    store_only(line).map(|m| format!("{}:{}: {m}", f.display(), i + 1))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        files.len() > 50,
        "the walk found the sources ({})",
        files.len()
    );
    assert!(
        offences.is_empty(),
        "outside src/store/ (use or add an Index method):\n{}",
        offences.join("\n")
    );
}
