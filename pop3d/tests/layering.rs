//! The module table in `pop3d/README.md` says what each part must never import; this test reads
//! that table and checks every source file of each part against it, so the rule a newcomer reads is
//! the rule the build keeps. A forbidden phrase the test does not know fails the test: the README
//! cannot promise a rule nobody checks.

use std::fs;
use std::path::{Path, PathBuf};

/// What each phrase of the "must never import" column means in source text.
fn patterns(phrase: &str) -> Option<&'static [&'static str]> {
    Some(match phrase {
        "tokio" => &["tokio"],
        "tokio sockets" => &["tokio::net"],
        "sockets" => {
            &["std::net::TcpStream", "std::net::TcpListener", "std::net::UdpSocket", "TcpStream", "TcpListener"]
        }
        "TLS" => &["rustls", "tokio_rustls"],
        "scylla" => &["scylla"],
        "redb" => &["redb"],
        "the engines" => &["crate::pop3", "crate::lmtp"],
        "`server`" => &["crate::server"],
        "`admin`" => &["crate::admin"],
        "`daemon`" => &["crate::daemon"],
        "`context`" => &["crate::context"],
        _ => return None,
    })
}

struct Rule {
    /// Paths under `src/`: a folder ends in `/`, a file in `.rs`.
    parts: Vec<String>,
    forbidden: Vec<String>,
}

fn rules(readme: &str) -> Vec<Rule> {
    let table = readme.lines().skip_while(|l| !l.starts_with("| module |")).skip(2).take_while(|l| l.starts_with('|'));
    table
        .map(|row| {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "a module row has three cells: {row}");
            let parts = cells[0].split(", ").map(|p| p.trim_matches('`').to_owned()).collect();
            let forbidden =
                if cells[2].starts_with('(') { Vec::new() } else { cells[2].split(", ").map(str::to_owned).collect() };
            Rule { parts, forbidden }
        })
        .collect()
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

/// Whether `needle` occurs in `line` as a whole path segment (so `redb` does not match `shredb`
/// and `crate::pop3` does not match `crate::pop3d`).
fn mentions(line: &str, needle: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(needle).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + needle.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[test]
fn every_part_keeps_the_imports_the_readme_forbids_out() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let rules = rules(&readme);
    assert!(rules.len() >= 8, "the README's module table was not found or lost rows: {}", rules.len());
    let mut broken = Vec::new();
    for rule in &rules {
        for part in &rule.parts {
            let path = crate_dir.join("src").join(part.trim_end_matches('/'));
            assert!(path.exists(), "the README names {part}, which is not in src/");
            let mut files = Vec::new();
            rust_files(&path, &mut files);
            for phrase in &rule.forbidden {
                let needles =
                    patterns(phrase).unwrap_or_else(|| panic!("the README forbids {phrase:?}: no check knows it"));
                for file in &files {
                    let text = fs::read_to_string(file).unwrap();
                    // Comments may name what the code must not use; only code counts.
                    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("//")) {
                        if let Some(needle) = needles.iter().find(|needle| mentions(line, needle)) {
                            broken.push(format!(
                                "{}:{}: {part} must never import {phrase} ({needle})",
                                file.display(),
                                n + 1
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
}

#[test]
fn the_check_finds_what_it_looks_for() {
    assert!(mentions("use crate::server::ServerContext;", "crate::server"));
    assert!(!mentions("use crate::servers;", "crate::server"));
    assert!(mentions("    let s = redb::Database::create(p)?;", "redb"));
    assert!(!mentions("shredb", "redb"));
    assert!(!mentions("pop3d::pop3", "crate::pop3"));
    let rules = rules("| module | what | never |\n| --- | --- | --- |\n| `a/`, `b.rs` | x | tokio, `server` |\n| `c/` | y | (none) |\n");
    assert_eq!(rules[0].parts, ["a/", "b.rs"]);
    assert_eq!(rules[0].forbidden, ["tokio", "`server`"]);
    assert!(rules[1].forbidden.is_empty());
}
