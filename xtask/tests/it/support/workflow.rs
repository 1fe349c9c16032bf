//! Reading a GitHub Actions workflow: its `run:` scripts and the `cargo xtask` commands in
//! them.

/// The `run:` scripts of a workflow: block scalars (`|`, `>-`, …) and plain one-liners, with
/// folded blocks joined by spaces and `\` continuations joined.
pub fn run_scripts(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut scripts = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        if let Some(rest) = trimmed.strip_prefix("run:") {
            let rest = rest.trim();
            let indent = line.len() - line.trim_start().len();
            if rest.starts_with('|') || rest.starts_with('>') {
                let folded = rest.starts_with('>');
                let mut body = Vec::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    body.push(lines[i].trim());
                    i += 1;
                }
                let text = if folded {
                    body.join(" ")
                } else {
                    body.join("\n").replace("\\\n", " ")
                };
                scripts.push(text);
                continue;
            }
            scripts.push(rest.to_string());
        }
        i += 1;
    }
    scripts
}

/// Every `cargo xtask <sub> <args…>` in a script, as its tokens after `cargo xtask`.
pub fn xtask_commands(script: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for line in script.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("cargo xtask ") {
            rest = &rest[at + "cargo xtask ".len()..];
            let mut tokens = Vec::new();
            for t in rest.split_whitespace() {
                if [">", ">>", "|", "||", "&&", ";"].contains(&t) || t.starts_with('>') {
                    break;
                }
                let closes = t.contains(')');
                let t = t.trim_end_matches([')', '"', ';']);
                if !t.is_empty() {
                    tokens.push(t.to_string());
                }
                if closes {
                    break;
                }
            }
            out.push(tokens);
        }
    }
    out
}
