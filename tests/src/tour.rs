//! The documents' commands, run as written: a small harness that reads the
//! fenced blocks of a Markdown file and runs them, in order, in a scratch
//! copy of the checkout, as a new user would type them.
//!
//! What it runs, and what it checks:
//! - every ` ```sh ` block, in a `bash -euo pipefail` subshell started at
//!   the scratch checkout's root (files carry over from block to block, the
//!   shell's directory and variables do not); a block fails the test when a
//!   command in it fails;
//! - every ` ```text ` block that opens with `$ command`: the command is
//!   run and what it prints (stdout and stderr together) must match the rest
//!   of the block, where a line `...` stands for any number of lines and
//!   `[..]` inside a line for any text;
//!   (`<!-- tour: output in DIR -->` runs it in DIR);
//! - a block preceded by `<!-- tour: write PATH -->` is not run but written
//!   to PATH (so the Rust and Python shown in a tour are the code built);
//! - a block preceded by `<!-- tour: skip REASON -->` is not run; the
//!   reason is required, so no block goes unrun unnoticed.
//!
//! `GARDEN_TOUR_SHOW=1` prints what every `sh` block printed (with
//! `cargo test ... -- --nocapture`), to see a passing tour's output.
//!
//! Invariants: a `sh` block or a `$`-block is either run or skipped with a
//! reason, never silently ignored; the harness changes no command, except
//! the loopback addresses it is given (the documents name Redis on
//! 127.0.0.1:6379, the tests start their own on free ports) and two shell
//! functions: `cargo run --release -- ARGS` runs the `garden` of this build
//! (the test binary may not run cargo on the build directory it runs from),
//! and `redis-cli` talks to the test's Redis.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a block is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run it as shell commands.
    Run,
    /// Run its `$ command` and match the output.
    Output {
        /// Directory to run it in (relative to the root), if not the root.
        dir: Option<String>,
        /// The command after `$ `.
        command: String,
        /// The expected output (`...` and `[..]` are wildcards).
        expected: String,
    },
    /// Write it to this path (relative to the checkout's root).
    Write(String),
    /// Leave it, for this reason.
    Skip(String),
}

/// One fenced block the harness acts on.
#[derive(Debug, Clone)]
pub struct Block {
    /// Line of the opening fence (1-based), for messages.
    pub line: usize,
    /// Its text.
    pub text: String,
    /// What to do with it.
    pub action: Action,
}

/// The blocks of a Markdown document that the harness acts on: `sh` blocks,
/// `text` blocks that open with `$ `, and any block under a directive.
///
/// # Panics
/// On an unknown directive or a `skip` without a reason: a typo must not
/// turn a block into one that is quietly not run.
pub fn blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].strip_prefix("```") else {
            i += 1;
            continue;
        };
        let info = info.trim().to_string();
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && !lines[i].starts_with("```") {
            body.push(lines[i]);
            i += 1;
        }
        i += 1;
        let directive = start
            .checked_sub(1)
            .and_then(|p| lines[p].trim().strip_prefix("<!-- tour:"))
            .and_then(|d| d.strip_suffix("-->"))
            .map(str::trim);
        let text = body.join("\n") + "\n";
        let action = match directive {
            Some(d) => directive_action(d, start + 1),
            None if info == "sh" => Action::Run,
            None if info == "text" && body.first().is_some_and(|l| l.starts_with("$ ")) => {
                panic!(
                    "line {}: a `$ command` block needs `<!-- tour: output -->` or `<!-- tour: skip REASON -->`",
                    start + 1
                )
            }
            None => continue,
        };
        let action = match action {
            Action::Output { dir, .. } => {
                let command = body
                    .first()
                    .and_then(|l| l.strip_prefix("$ "))
                    .unwrap_or_else(|| {
                        panic!("line {}: an output block opens with `$ command`", start + 1)
                    })
                    .to_string();
                let expected = body[1..].join("\n");
                Action::Output {
                    dir,
                    command,
                    expected,
                }
            }
            other => other,
        };
        out.push(Block {
            line: start + 1,
            text,
            action,
        });
    }
    out
}

fn directive_action(directive: &str, line: usize) -> Action {
    let (word, rest) = directive.split_once(' ').unwrap_or((directive, ""));
    let rest = rest.trim();
    match word {
        "run" => Action::Run,
        "output" => Action::Output {
            dir: rest.strip_prefix("in ").map(|d| d.trim().to_string()),
            command: String::new(),
            expected: String::new(),
        },
        "write" if !rest.is_empty() => Action::Write(rest.to_string()),
        "skip" if !rest.is_empty() => Action::Skip(rest.to_string()),
        _ => panic!(
            "line {line}: unknown tour directive `{directive}` (run, output [in DIR], write PATH, skip REASON)"
        ),
    }
}

/// Whether `actual` matches `expected`, where an `expected` line `...`
/// matches any number of lines and `[..]` within a line any text.
/// Trailing spaces are ignored.
pub fn matches(expected: &str, actual: &str) -> bool {
    let want: Vec<&str> = expected.lines().map(str::trim_end).collect();
    let have: Vec<&str> = actual.lines().map(str::trim_end).collect();
    lines_match(&want, &have)
}

fn lines_match(want: &[&str], have: &[&str]) -> bool {
    match want.split_first() {
        None => have.is_empty(),
        Some((&"...", rest)) => (0..=have.len()).any(|skip| lines_match(rest, &have[skip..])),
        Some((first, rest)) => have
            .split_first()
            .is_some_and(|(line, more)| line_matches(first, line) && lines_match(rest, more)),
    }
}

fn line_matches(want: &str, have: &str) -> bool {
    let mut parts = want.split("[..]");
    let Some(head) = parts.next() else {
        return have.is_empty();
    };
    let Some(mut rest) = have.strip_prefix(head) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (n, part) in parts.iter().enumerate() {
        if n + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// Where and how a document's blocks run.
pub struct Tour {
    /// The scratch checkout (a copy of the tracked files).
    pub root: PathBuf,
    /// Directory of the `garden` binary to put first on PATH.
    pub bin_dir: PathBuf,
    /// Text replacements applied to every block (addresses of the test's servers).
    pub replace: Vec<(String, String)>,
    /// Port of the test's Redis, if any (for `redis-cli`).
    pub redis_port: Option<u16>,
    /// Extra environment (e.g. a home for garden's files).
    pub env: Vec<(String, std::ffi::OsString)>,
}

impl Tour {
    /// A scratch copy of `checkout`'s tracked files in `root`, with the
    /// JavaScript SDK's installed tools linked in (not tracked, and large).
    pub fn copy_checkout(checkout: &Path, root: &Path) {
        let listed = Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(checkout)
            .output()
            .expect("git runs (the checkout's files are listed with git ls-files)");
        assert!(
            listed.status.success(),
            "git ls-files failed in {checkout:?}"
        );
        for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            let from = checkout.join(&name);
            if !from.is_file() {
                continue; // deleted in the work tree
            }
            let to = root.join(&name);
            if let Some(dir) = to.parent() {
                std::fs::create_dir_all(dir).expect("scratch directory");
            }
            std::fs::copy(&from, &to).expect("copy into the scratch checkout");
        }
        let modules = checkout.join("guest-sdk/js/node_modules");
        if modules.is_dir() {
            std::os::unix::fs::symlink(&modules, root.join("guest-sdk/js/node_modules"))
                .expect("link node_modules");
        }
    }

    /// Run `doc`'s blocks in order. Returns a description of the first
    /// failure: the block's line, the command's output.
    pub fn run(&self, doc: &str, markdown: &str) -> Result<usize, String> {
        let blocks = blocks(markdown);
        let mut ran = 0;
        for block in &blocks {
            let text = self.substitute(&block.text);
            match &block.action {
                Action::Skip(_) => continue,
                Action::Write(path) => {
                    let path = self.root.join(path);
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(&path, text).map_err(|e| e.to_string())?;
                }
                Action::Run => {
                    let (ok, out) = self.shell(&text);
                    if std::env::var_os("GARDEN_TOUR_SHOW").is_some() {
                        eprintln!("--- {doc}:{}\n{text}{out}", block.line);
                    }
                    if !ok {
                        return Err(format!(
                            "{doc}:{}: the block failed:\n{text}\n{out}",
                            block.line
                        ));
                    }
                }
                Action::Output {
                    dir,
                    command,
                    expected,
                } => {
                    let command = self.substitute(command);
                    // One stream, as a terminal shows it.
                    let cd = dir
                        .as_ref()
                        .map(|d| format!("cd {d}\n"))
                        .unwrap_or_default();
                    let (ok, out) = self.shell(&format!("exec 2>&1\n{cd}{command}"));
                    if !ok || !matches(expected, &out) {
                        return Err(format!(
                            "{doc}:{}: `{command}` {}; it printed:\n{out}\n--- the document shows:\n{expected}",
                            block.line,
                            if ok {
                                "printed something else"
                            } else {
                                "failed"
                            }
                        ));
                    }
                }
            }
            ran += 1;
        }
        Ok(ran)
    }

    fn substitute(&self, text: &str) -> String {
        self.replace
            .iter()
            .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    }

    /// Run `commands` in a fresh bash at the root; (success, output).
    fn shell(&self, commands: &str) -> (bool, String) {
        let mut script = String::from(
            "set -euo pipefail\n\
             trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n\
             cargo() { if [ \"${1-}\" = run ] && [ \"${2-}\" = --release ] && [ \"${3-}\" = -- ]; then shift 3; garden \"$@\"; else command cargo \"$@\"; fi; }\n",
        );
        if let Some(port) = self.redis_port {
            let _ = writeln!(
                script,
                "redis-cli() {{ command redis-cli -p {port} \"$@\"; }}"
            );
        }
        script.push_str(commands);
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = Command::new("timeout");
        command
            .args(["900", "bash", "-c", &script])
            .current_dir(&self.root)
            .env("PATH", path)
            // As a new user's shell: no log level, no target directory
            // moved elsewhere (the documents name `target/...` paths).
            .env_remove("GARDEN_LOG")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR");
        for (k, v) in &self.env {
            command.env(k, v);
        }
        match command.output() {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr),
            ),
            Err(e) => (false, format!("bash could not start: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_lines_and_text() {
        assert!(matches("a\n...\nd", "a\nb\nc\nd"));
        assert!(matches("a\n...\nd", "a\nd"));
        assert!(!matches("a\n...\nd", "a\nb"));
        assert!(matches(
            "total [..] s, [..] bars/s",
            "total 0.20 s, 24516 bars/s"
        ));
        assert!(!matches("total [..] s", "totals 0.20 s"));
        assert!(matches("x[..]", "xyz"));
        assert!(!matches("a\nb", "a\nb\nc"));
    }

    #[test]
    fn blocks_are_run_skipped_or_written_as_marked() {
        let md = "```sh\necho hi\n```\n<!-- tour: skip needs a terminal -->\n```sh\ntop\n```\n\
                  <!-- tour: write x.rs -->\n```rust\nfn main() {}\n```\n```toml\na = 1\n```\n\
                  <!-- tour: output -->\n```text\n$ echo hi\nhi\n```\n";
        let b = blocks(md);
        assert_eq!(b.len(), 4);
        assert_eq!(b[0].action, Action::Run);
        assert_eq!(b[1].action, Action::Skip("needs a terminal".into()));
        assert_eq!(b[2].action, Action::Write("x.rs".into()));
        assert_eq!(
            b[3].action,
            Action::Output {
                dir: None,
                command: "echo hi".into(),
                expected: "hi".into()
            }
        );
    }

    #[test]
    #[should_panic(expected = "unknown tour directive")]
    fn a_misspelt_directive_is_refused() {
        blocks("<!-- tour: skpi -->\n```sh\nls\n```\n");
    }
}
