//! Conventions kept true by a test rather than by review, as rust-analyzer's `tidy.rs` does:
//! every module says what it holds in a `//!` line; ARCHITECTURE.md's module table lists
//! exactly the modules that exist; no file or function grows past a size without an entry
//! in the allow-lists below that says why; text for people uses Display, not Rust's `Debug`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lines a file in `xtask/src` may have.
const FILE_LINES: usize = 700;
/// Lines a function outside tests may have.
const FN_LINES: usize = 80;

/// Files allowed to be longer, and why.
const LONG_FILES: &[(&str, &str)] = &[
    (
        "e2e/kind_cluster.rs",
        "the kind driver: a session, a self-healing port-forward and the cluster, with the pod \
         status readers each behaviour needs and their unit tests",
    ),
    (
        "oci.rs",
        "every OCI format the tool reads or writes (layer tars, configs, manifests, layouts, \
         docker-archives) in one place, with its tests",
    ),
];

/// Functions allowed to be longer, and why.
const LONG_FNS: &[(&str, &str, &str)] = &[
    (
        "image/deps.rs",
        "resolve",
        "one worklist algorithm (alternatives, virtual packages, versions) whose steps share \
         its state; compared with apt's own choice in tests/deps.rs",
    ),
    (
        "e2e/plot.rs",
        "line_chart",
        "a straight sequence of SVG elements (axes, ticks, series, legend) with no branching",
    ),
    (
        "unpack.rs",
        "unpack_into",
        "one match over tar entry kinds, each arm a safety check; splitting it would scatter \
         the policy",
    ),
    (
        "fixtures.rs",
        "debian_repo_with_tools",
        "a test fixture's recipe: a linear script of apt-get, dpkg-scanpackages and gpg commands",
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every file below `dir` with extension `ext`, relative to `dir`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// The text before the first `#[cfg(test)]`: what ships.
fn shipped(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn every_module_says_what_it_holds() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    for (dir, name) in [(src(), "src"), (tests, "tests")] {
        for f in files(&dir, "rs") {
            let text = std::fs::read_to_string(dir.join(&f)).unwrap();
            assert!(
                text.starts_with("//! "),
                "xtask/{name}/{f} does not start with a `//!` line saying what it holds"
            );
        }
    }
}

#[test]
fn architecture_lists_exactly_the_modules() {
    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .unwrap();
    let listed: BTreeSet<String> = arch
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(m, _)| m.to_string()))
        .filter(|m| m.ends_with(".rs"))
        .collect();
    let existing: BTreeSet<String> = files(&src(), "rs").into_iter().collect();
    let missing: Vec<_> = existing.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&existing).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's module table is out of date: not listed {missing:?}, gone {stale:?}"
    );
}

#[test]
fn no_file_is_longer_than_its_reason() {
    for f in files(&src(), "rs") {
        let lines = std::fs::read_to_string(src().join(&f))
            .unwrap()
            .lines()
            .count();
        let allowed = LONG_FILES.iter().any(|(name, _)| *name == f);
        assert!(
            lines <= FILE_LINES || allowed,
            "xtask/src/{f} has {lines} lines (more than {FILE_LINES}): split it into parts \
             beside it, or add it to LONG_FILES with the reason"
        );
    }
    for (name, why) in LONG_FILES {
        assert!(src().join(name).is_file() && !why.is_empty(), "{name}");
    }
}

/// (name, first line, line count) of each `fn` in shipped code: from its signature to the
/// closing brace at its own indentation.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = shipped(text).lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        let after_vis = t
            .strip_prefix("pub(crate) ")
            .or(t.strip_prefix("pub "))
            .unwrap_or(t);
        let Some(rest) = after_vis.strip_prefix("fn ") else {
            i += 1;
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let indent = &l[..l.len() - t.len()];
        let mut j = i;
        while j < lines.len() && !lines[j].trim_end().ends_with('{') {
            if lines[j].trim_end().ends_with(';') {
                break;
            }
            j += 1;
        }
        if j >= lines.len() || lines[j].trim_end().ends_with(';') {
            i = j + 1;
            continue;
        }
        let close = format!("{indent}}}");
        let mut k = j + 1;
        while k < lines.len() && lines[k] != close {
            k += 1;
        }
        out.push((name, i + 1, k - i + 1));
        i = k + 1;
    }
    out
}

#[test]
fn no_function_is_longer_than_its_reason() {
    let mut long = Vec::new();
    for f in files(&src(), "rs") {
        let text = std::fs::read_to_string(src().join(&f)).unwrap();
        for (name, line, n) in functions(&text) {
            let allowed = LONG_FNS
                .iter()
                .any(|(file, fun, _)| *file == f && *fun == name);
            if n > FN_LINES && !allowed {
                long.push(format!("xtask/src/{f}:{line} fn {name}: {n} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {FN_LINES} lines: split them into named stages, or add them to \
         LONG_FNS with the reason:\n{}",
        long.join("\n")
    );
    for (file, fun, why) in LONG_FNS {
        let text = std::fs::read_to_string(src().join(file)).unwrap();
        assert!(
            functions(&text)
                .iter()
                .any(|(n, _, len)| n == fun && *len > FN_LINES),
            "LONG_FNS names {file}::{fun}, which is gone or short now: remove the entry"
        );
        assert!(!why.is_empty());
    }
}

#[test]
fn text_for_people_is_not_debug_output() {
    let mut found = Vec::new();
    for f in files(&src(), "rs") {
        let text = std::fs::read_to_string(src().join(&f)).unwrap();
        for (n, line) in shipped(&text).lines().enumerate() {
            if line.contains(":?}") || line.contains("{:?") || line.contains(":#?}") {
                found.push(format!("xtask/src/{f}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "Rust's Debug formatting in messages: use the CLI's words (Display):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_function_finder_finds_functions() {
    let text = "fn a() {\n    x();\n}\n\nimpl T {\n    pub fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n    fn c();\n}\n#[cfg(test)]\nfn d() {\n}\n";
    assert_eq!(
        functions(text),
        [("a".to_string(), 1, 3), ("b".to_string(), 6, 5)]
    );
}
