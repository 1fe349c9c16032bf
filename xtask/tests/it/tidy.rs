//! Conventions kept true by a test rather than by review, as rust-analyzer's `tidy.rs` does:
//! every module says what it holds in a `//!` line; ARCHITECTURE.md's module table lists
//! exactly the modules that exist; no file or function grows past a size without an entry
//! in the allow-lists below that says why; text for people uses Display, not Rust's `Debug`;
//! the modules' imports run one way: a part never imports its parent (or any module above
//! it), a shared module never imports a subcommand, and no modules import each other in a
//! circle; and visibility says the design: `pub(crate)` by default, `pub` only for what
//! `main.rs`, the harness and the tests name, or what a public signature carries.

mod imports;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Lines a file in `xtask/src` may have.
const FILE_LINES: usize = 700;
/// Lines a function outside tests may have.
const FN_LINES: usize = 80;

/// Lines a test file may have.
const TEST_FILE_LINES: usize = 700;
/// Lines a test function (or test helper) may have: a test is a story, so more than code's,
/// but one that a reader holds in mind.
const TEST_FN_LINES: usize = 150;

/// Test functions allowed to be longer, and why.
const LONG_TEST_FNS: &[(&str, &str, &str)] = &[
    (
        "runner.rs",
        "the_workflows_commands_as_an_unprivileged_runner",
        "one unprivileged runner running the workflows' commands in their order, each step \
         using what the one before made (the lock, the image, the job's jar, the push)",
    ),
    (
        "publish.rs",
        "publish_dry_run_two_suites_stable_digests_and_sboms",
        "two publish runs compared, then per spec its tag, labels and SBOM read back from the \
         one registry, the loop's checks sharing the spec's report entry and lock",
    ),
];

/// Files allowed to be longer, and why.
const LONG_FILES: &[(&str, &str)] = &[];

/// Functions allowed to be longer, and why.
const LONG_FNS: &[(&str, &str, &str)] = &[
    (
        "image/deps.rs",
        "resolve",
        "one worklist algorithm (alternatives, virtual packages, versions) whose steps share \
         its state; compared with apt's own choice in tests/deps.rs",
    ),
    (
        "plot.rs",
        "line_chart",
        "a straight sequence of SVG elements (axes, ticks, series, legend) with no branching",
    ),
    (
        "unpack.rs",
        "unpack_into",
        "one match over tar entry kinds, each arm a safety check; splitting it would scatter \
         the policy",
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every shipped source file of the workspace: xtask's by their path in `xtask/src`
/// (`e2e/driver/kind.rs`), the harness crate's by their path from the root
/// (`harness/src/fixtures.rs`); with where each is.
fn sources() -> Vec<(String, PathBuf)> {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/src");
    let mut out: Vec<(String, PathBuf)> = files(&src(), "rs")
        .into_iter()
        .map(|f| (f.clone(), src().join(f)))
        .collect();
    out.extend(
        files(&harness, "rs")
            .into_iter()
            .map(|f| (format!("harness/src/{f}"), harness.join(f))),
    );
    out
}

/// How a message names a source of [`sources`].
fn shown(label: &str) -> String {
    if label.starts_with("harness/") {
        label.to_string()
    } else {
        format!("xtask/src/{label}")
    }
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
    let _shared = crate::support::shared();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let test_files = files(&tests, "rs")
        .into_iter()
        .map(|f| (format!("tests/{f}"), tests.join(f)));
    for (label, path) in sources().into_iter().chain(test_files) {
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("//! "),
            "{} does not start with a `//!` line saying what it holds",
            shown(&label)
        );
    }
}

#[test]
fn architecture_lists_exactly_the_modules() {
    let _shared = crate::support::shared();
    let arch =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"))
            .unwrap();
    let listed: BTreeSet<String> = arch
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(m, _)| m.to_string()))
        .filter(|m| m.ends_with(".rs"))
        .collect();
    let existing: BTreeSet<String> = sources().into_iter().map(|(label, _)| label).collect();
    let missing: Vec<_> = existing.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&existing).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's module table is out of date: not listed {missing:?}, gone {stale:?}"
    );
}

#[test]
fn no_file_is_longer_than_its_reason() {
    let _shared = crate::support::shared();
    for (f, path) in sources() {
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        let allowed = LONG_FILES.iter().any(|(name, _)| *name == f);
        assert!(
            lines <= FILE_LINES || allowed,
            "{} has {lines} lines (more than {FILE_LINES}): split it into parts beside it, or \
             add it to LONG_FILES with the reason",
            shown(&f)
        );
    }
    for (name, why) in LONG_FILES {
        assert!(
            sources().iter().any(|(f, _)| f == name) && !why.is_empty(),
            "{name}"
        );
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
    let _shared = crate::support::shared();
    let mut long = Vec::new();
    for (f, path) in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (name, line, n) in functions(&text) {
            let allowed = LONG_FNS
                .iter()
                .any(|(file, fun, _)| *file == f && *fun == name);
            if n > FN_LINES && !allowed {
                long.push(format!("{}:{line} fn {name}: {n} lines", shown(&f)));
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
        let path = sources()
            .into_iter()
            .find(|(f, _)| f == file)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("LONG_FNS names {file}, which is gone: remove the entry"));
        let text = std::fs::read_to_string(path).unwrap();
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
    let _shared = crate::support::shared();
    let mut found = Vec::new();
    for (f, path) in sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in shipped(&text).lines().enumerate() {
            if line.contains(":?}") || line.contains("{:?") || line.contains(":#?}") {
                found.push(format!("{}:{}: {}", shown(&f), n + 1, line.trim()));
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
    let _shared = crate::support::shared();
    let text = "fn a() {\n    x();\n}\n\nimpl T {\n    pub fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n    fn c();\n}\n#[cfg(test)]\nfn d() {\n}\n";
    assert_eq!(
        functions(text),
        [("a".to_string(), 1, 3), ("b".to_string(), 6, 5)]
    );
}

#[test]
fn tests_stay_readable() {
    let _shared = crate::support::shared();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut long = Vec::new();
    for f in files(&tests, "rs") {
        let text = std::fs::read_to_string(tests.join(&f)).unwrap();
        let lines = text.lines().count();
        if lines > TEST_FILE_LINES {
            long.push(format!(
                "xtask/tests/it/{f}: {lines} lines (more than {TEST_FILE_LINES}): split it by area"
            ));
        }
        // Test functions are in `#[cfg(test)]`-free files: all of the text counts.
        let all = text.replace("#[cfg(test)]", "");
        for (name, line, n) in functions(&all) {
            let allowed = LONG_TEST_FNS
                .iter()
                .any(|(file, fun, _)| *file == f && *fun == name);
            if n > TEST_FN_LINES && !allowed {
                long.push(format!(
                    "xtask/tests/it/{f}:{line} fn {name}: {n} lines (more than {TEST_FN_LINES}): \
                     split it into named stages, as image.rs's end-to-end test is"
                ));
            }
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
    for (file, fun, why) in LONG_TEST_FNS {
        let text = std::fs::read_to_string(tests.join(file)).unwrap();
        assert!(
            functions(&text)
                .iter()
                .any(|(n, _, len)| n == fun && *len > TEST_FN_LINES),
            "LONG_TEST_FNS names {file}::{fun}, which is gone or short now: remove the entry"
        );
        assert!(!why.is_empty());
    }
}

#[test]
fn every_test_takes_the_machine() {
    let _shared = crate::support::shared();
    // A light test beside a heavy one would slow it or break its timings: each test takes
    // the machine, alone (`serial`) or shared with the light ones (`shared`), first thing.
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut loose = Vec::new();
    for f in files(&tests, "rs") {
        let text = std::fs::read_to_string(tests.join(&f)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim() != "#[test]" {
                continue;
            }
            let open = (i..lines.len())
                .find(|&j| lines[j].trim_end().ends_with('{'))
                .unwrap();
            let first = lines.get(open + 1).copied().unwrap_or("");
            let takes = |what: &str| first.contains(&format!("crate::support::{what}()"));
            // A doc comment or a `use` may come first; the lock within the next lines.
            let near: Vec<&str> = lines[open + 1..(open + 14).min(lines.len())].to_vec();
            let takes_near = near.iter().any(|l| {
                l.contains("crate::support::serial()") || l.contains("crate::support::shared()")
            });
            if !(takes("serial") || takes("shared") || takes_near) {
                loose.push(format!("xtask/tests/it/{f}:{}", open + 1));
            }
        }
    }
    assert!(
        loose.is_empty(),
        "tests that take neither crate::support::serial() nor shared():\n{}",
        loose.join("\n")
    );
}
