//! The rules on what modules name: imports run one way (a part never names an item of a
//! module above it, a shared module never names a subcommand, no circle), and only what
//! `main.rs`, the harness and the tests use, or a public signature carries, is `pub`.

use std::collections::BTreeSet;
use std::path::Path;

use super::{files, shipped, sources, src};

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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
    let _shared = crate::support::shared();
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
