//! Conventions kept true by a test rather than by review, as rust-analyzer's `tidy.rs` does:
//! every module says what it holds in a `//!` line; ARCHITECTURE.md's module table lists
//! exactly the modules that exist; no file or function grows past a size without an entry
//! in the allow-lists below that says why; text for people uses Display, not Rust's `Debug`;
//! the modules' imports run one way: a part never imports its parent (or any module above
//! it), a shared module never imports a subcommand, and no modules import each other in a
//! circle; and visibility says the design: `pub(crate)` by default, `pub` only for what
//! `main.rs`, the harness and the tests name, or what a public signature carries.

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
    (
        "harness/src/fixtures.rs",
        "debian_repo_with_tools",
        "a test fixture's recipe: a linear script of apt-get, dpkg-scanpackages and gpg commands",
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
    let text = "fn a() {\n    x();\n}\n\nimpl T {\n    pub fn b(\n        y: u8,\n    ) -> u8 {\n        y\n    }\n    fn c();\n}\n#[cfg(test)]\nfn d() {\n}\n";
    assert_eq!(
        functions(text),
        [("a".to_string(), 1, 3), ("b".to_string(), 6, 5)]
    );
}

/// The module path of a file of `xtask/src`: `e2e/driver/kind.rs` → `e2e::driver::kind`.
fn module_of(file: &str) -> String {
    file.trim_end_matches(".rs").replace('/', "::")
}

/// Whether `path` (`e2e::driver`) names a module of the crate: a file or a folder.
fn is_module(path: &str) -> bool {
    let rel = path.replace("::", "/");
    src().join(format!("{rel}.rs")).is_file() || src().join(&rel).is_dir()
}

/// Every path the shipped code of `file` names through `crate::` or `super::`, whole
/// (`use` trees expanded: `crate::a::{b, c::D}` → `crate::a::b`, `crate::a::c::D`), with
/// `super` resolved against the file's module: `crate::e2e::cluster::Allocator`.
fn paths_named(file: &str, text: &str) -> Vec<String> {
    let module = module_of(file);
    let parent: Vec<&str> = module.split("::").collect();
    let code: String = shipped(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = ["crate::", "super::"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        let start = &rest[i..];
        let len = path_len(start);
        for p in expand(&start[..len]) {
            let mut segs: Vec<&str> = p.split("::").collect();
            let mut base: Vec<&str> = parent.clone();
            while let Some(first) = segs.first() {
                match *first {
                    "crate" => {
                        base.clear();
                        segs.remove(0);
                    }
                    "super" => {
                        base.pop();
                        segs.remove(0);
                    }
                    _ => break,
                }
            }
            let whole: Vec<&str> = base.into_iter().chain(segs).collect();
            out.push(whole.join("::"));
        }
        rest = &start[len.max(1)..];
    }
    out
}

/// The length of the path (with a `use` tree in braces) at the start of `s`.
fn path_len(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth > 0 || c.is_alphanumeric() || c == '_' || c == ':' => {}
            _ => return i,
        }
        if depth == 0 && c == '}' {
            return i + 1;
        }
    }
    s.len()
}

/// A `use` tree as whole paths: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.trim_end_matches("::").to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[from..]);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .flat_map(|i| {
            expand(i)
                .into_iter()
                .map(|p| {
                    if p == "self" {
                        prefix.trim_end_matches("::").to_string()
                    } else {
                        format!("{prefix}{p}")
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The module a whole path lands in: its longest prefix that is a module of the crate.
fn module_named(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find(|m| is_module(m))
}

#[test]
fn no_part_imports_a_module_above_it() {
    let mut upward = Vec::new();
    for f in files(&src(), "rs") {
        let module = module_of(&f);
        let text = std::fs::read_to_string(src().join(&f)).unwrap();
        for p in paths_named(&f, &text) {
            let Some(target) = module_named(&p) else {
                continue;
            };
            // An ancestor's own item (`super::Run`, `crate::image::cache_blob`), not one of
            // its parts: the part reaches back into what orchestrates it.
            if module.starts_with(&format!("{target}::")) {
                upward.push(format!(
                    "xtask/src/{f} names `{p}` of its ancestor `{target}`"
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "a part imports a module above it: move what it takes into a part of its own beside \
         it (as image/cache.rs and e2e/context.rs are):\n{}",
        upward.join("\n")
    );
}

/// The modules listed in lib.rs under the comment that starts with `heading`.
fn lib_modules(heading: &str) -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.split("\n\n")
        .find(|block| block.trim_start().starts_with(heading))
        .unwrap_or_else(|| panic!("lib.rs has no block `{heading}`"))
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn no_shared_module_imports_a_subcommand() {
    let subcommands = lib_modules("// The subcommands.");
    let shared = lib_modules("// Shared by several subcommands.");
    assert!(subcommands.contains(&"image".to_string()) && shared.contains(&"oci".to_string()));
    let mut wrong = Vec::new();
    for f in files(&src(), "rs") {
        let top = module_of(&f).split("::").next().unwrap().to_string();
        if !shared.contains(&top) {
            continue;
        }
        let text = std::fs::read_to_string(src().join(&f)).unwrap();
        for p in paths_named(&f, &text) {
            if subcommands
                .iter()
                .any(|s| p == *s || p.starts_with(&format!("{s}::")))
            {
                wrong.push(format!("xtask/src/{f} (shared) names `{p}`"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a shared module imports a subcommand: move what it takes into a shared module:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    // Module → the modules its shipped code names (a parent declaring its parts is not an
    // import; a parent naming a part's item is).
    let mut graph: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    for f in files(&src(), "rs") {
        let module = module_of(&f);
        let text = std::fs::read_to_string(src().join(&f)).unwrap();
        let named = graph.entry(module.clone()).or_default();
        for p in paths_named(&f, &text) {
            if let Some(target) = module_named(&p) {
                if target != module && !module.starts_with(&format!("{target}::")) {
                    named.insert(target);
                }
            }
        }
    }
    // Depth-first search; a module met again on the current path closes a circle.
    fn visit(
        m: &str,
        graph: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|p| p == m) {
            circles.push(format!("{} → {m}", path[at..].join(" → ")));
            return;
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "modules import each other in a circle: move what both need into a third module \
         (as e2e/report/model.rs is):\n{}",
        circles.join("\n")
    );
}

#[test]
fn import_paths_are_read_whole() {
    assert_eq!(
        expand("crate::e2e::{cluster::{Allocator, Cluster}, scenario, self}"),
        [
            "crate::e2e::cluster::Allocator",
            "crate::e2e::cluster::Cluster",
            "crate::e2e::scenario",
            "crate::e2e"
        ]
    );
    let text = "//! x\nuse super::cache::{cache_blob, CacheBlobs};\nuse super::Run;\n\
                fn f() { crate::oci::layer(); }\n#[cfg(test)]\nuse super::Hidden;\n";
    assert_eq!(
        paths_named("image/base.rs", text),
        [
            "image::cache::cache_blob",
            "image::cache::CacheBlobs",
            "image::Run",
            "oci::layer"
        ]
    );
    assert_eq!(
        module_named("image::cache::cache_blob").as_deref(),
        Some("image::cache")
    );
    assert_eq!(module_named("image::Run").as_deref(), Some("image"));
}

/// The words of `text`: identifiers and keywords.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The text from each line of `text` that starts (after indentation) with `start` to the
/// first line that ends with one of `ends`.
fn blocks<'a>(text: &'a str, start: &str, ends: &[&str]) -> Vec<&'a str> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with(start) {
            let end = (i..lines.len())
                .find(|&j| ends.iter().any(|e| lines[j].trim_end().ends_with(e)))
                .unwrap_or(i);
            let from = l.as_ptr() as usize - text.as_ptr() as usize;
            let to = lines[end].as_ptr() as usize - text.as_ptr() as usize + lines[end].len();
            out.push(&text[from..to]);
        }
    }
    out
}

#[test]
fn only_what_others_use_is_pub() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // What the binary, the harness and the tests name.
    let mut outside = std::fs::read_to_string(src().join("main.rs")).unwrap();
    for (label, path) in sources() {
        if label.starts_with("harness/") {
            outside += &std::fs::read_to_string(path).unwrap();
        }
    }
    let tests = root.join("tests");
    for f in files(&tests, "rs") {
        outside += &std::fs::read_to_string(tests.join(f)).unwrap();
    }
    let named = words(&outside);
    // What the public signatures carry: their parameter and return types, public fields,
    // the variants of public enums and the methods of public traits.
    let mut carried = BTreeSet::new();
    for f in files(&src(), "rs") {
        let text = std::fs::read_to_string(src().join(&f)).unwrap();
        let text = shipped(&text);
        for b in blocks(text, "pub fn ", &["{", ";"])
            .into_iter()
            .chain(blocks(text, "pub enum ", &["}"]))
            .chain(blocks(text, "pub trait ", &["}"]))
        {
            // Not the item's own name: `pub fn x` does not carry `x`.
            let own = b.split_whitespace().nth(2).unwrap_or("");
            let own: String = own
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            carried.extend(words(b).into_iter().filter(|w| *w != own));
        }
        for l in text.lines() {
            let t = l.trim_start();
            if t.starts_with("pub ") && t.contains(": ") && !t.starts_with("pub fn ") {
                carried.extend(words(t));
            }
        }
    }
    let mut wider = Vec::new();
    for f in files(&src(), "rs") {
        if f == "main.rs" || f == "lib.rs" {
            continue;
        }
        let text = std::fs::read_to_string(src().join(&f)).unwrap();
        for l in shipped(&text).lines() {
            let t = l.trim_start();
            let Some(rest) = [
                "fn ", "struct ", "enum ", "const ", "static ", "type ", "trait ",
            ]
            .iter()
            .find_map(|k| t.strip_prefix("pub ").and_then(|r| r.strip_prefix(k))) else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !named.contains(&name) && !carried.contains(&name) {
                wider.push(format!("xtask/src/{f}: `{name}`"));
            }
        }
    }
    assert!(
        wider.is_empty(),
        "pub items that main.rs, the harness and the tests do not use and no public signature \
         carries: make them pub(crate):\n{}",
        wider.join("\n")
    );
}

#[test]
fn tests_stay_readable() {
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
