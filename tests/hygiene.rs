//! Repository hygiene: no tracked text file cites what a reader cannot follow. That is a path
//! of the machine the project was written on (a home or work directory, a scratch file), a
//! file outside the repository (the coursework's texts, private notes), or a numbered issue of
//! a tracker the reader cannot see. Cite a project file, a public source (a URL, or an
//! upstream `owner/repo issue #N`), or say it in plain words.
//!
//! The files are those `git ls-files` lists, read as they are in the working tree; binary
//! files and Cargo.lock are skipped. Without git (or outside a checkout) the test prints
//! `SKIPPED: ...` and passes.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Files not scanned, each with its reason.
const SKIPPED_FILES: &[&str] = &[
    "Cargo.lock",
    // Its examples of what is flagged.
    "tests/hygiene.rs",
];

/// Absolute paths of this machine, and files outside the repository. Matched in lower case.
/// Spelled in parts, so that this file names none of them itself.
const FORBIDDEN: &[(&str, &str)] = &[
    (
        concat!("/", "work/"),
        "an absolute path of the machine the project was written on",
    ),
    (
        concat!("/", "root/"),
        "an absolute path of the machine the project was written on",
    ),
    (
        concat!("/", "home/"),
        "an absolute path of the machine the project was written on",
    ),
    (
        concat!("/", "tmp/"),
        "a scratch file of the machine the project was written on",
    ),
    (concat!("..", "/shared"), "a file outside the repository"),
    (concat!("shared", "/notes"), "a file outside the repository"),
    (
        concat!("shared", "/seeds"),
        "a file outside the repository (the coursework's texts)",
    ),
    (concat!("anchors", ".md"), "a file outside the repository"),
];

/// Why `line` of `file` cites something a reader cannot follow, if it does.
fn problem(line: &str) -> Option<String> {
    let lower = line.to_lowercase();
    if let Some((pattern, why)) = FORBIDDEN.iter().find(|(p, _)| lower.contains(p)) {
        return Some(format!("{pattern:?}: {why}"));
    }
    let near = |at: usize| lower[at..].chars().take(10).collect::<String>();
    if let Some(at) = numbered_issue(&lower) {
        return Some(format!(
            "{:?}: a numbered issue of a tracker the reader cannot see",
            near(at)
        ));
    }
    issues_path(&lower).map(|at| format!("{:?}: an issue file outside the repository", near(at)))
}

/// Where `lower` mentions `issue 4`, `issue #4`, `issues 3` or `issue-4` (any case, as the
/// caller lowered it), unless an upstream repository is named just before (`ngircd/ngircd
/// issue #344`). `issuer` and the like do not count.
fn numbered_issue(lower: &str) -> Option<usize> {
    lower.match_indices("issue").map(|(at, _)| at).find(|&at| {
        let rest = lower[at + "issue".len()..].trim_start_matches('s');
        let rest = rest.trim_start_matches([' ', '-', '#']);
        let starts_word = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric();
        starts_word
            && rest.starts_with(|c: char| c.is_ascii_digit())
            && !after_upstream_repo(&lower[..at])
    })
}

/// Whether `before` ends with `owner/repo ` (or `owner/repo's `): a public repository's issue.
fn after_upstream_repo(before: &str) -> bool {
    let before = before.trim_end();
    let before = before.strip_suffix("'s").unwrap_or(before);
    let word = before
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    let mut parts = word.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Where `lower` has an `issues/` path, unless it is a public repository's page
/// (`github.com/owner/repo/issues/N`).
fn issues_path(lower: &str) -> Option<usize> {
    lower
        .match_indices("issues/")
        .map(|(at, _)| at)
        .find(|&at| {
            let before = &lower[..at];
            let public = before.rfind("github.com/").is_some_and(|host| {
                let path = &before[host + "github.com/".len()..];
                path.ends_with('/') && path.matches('/').count() == 2 && !path.starts_with('/')
            });
            !public
        })
}

/// The tracked files, or `None` (with the reason printed) when git cannot list them.
fn tracked_files() -> Option<Vec<String>> {
    let out = match Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(ROOT)
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            println!(
                "SKIPPED: git ls-files failed (not a checkout?): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Err(e) => {
            println!("SKIPPED: git is not available: {e}");
            return None;
        }
    };
    let list = String::from_utf8(out.stdout).expect("git ls-files printed UTF-8");
    Some(
        list.split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn no_tracked_file_cites_what_a_reader_cannot_follow() {
    let Some(files) = tracked_files() else {
        return;
    };
    let mut problems = Vec::new();
    let mut scanned = 0;
    for file in files
        .iter()
        .filter(|f| !SKIPPED_FILES.contains(&f.as_str()))
    {
        // A tracked file deleted in the working tree, or a binary one: nothing to read.
        let Ok(bytes) = std::fs::read(Path::new(ROOT).join(file)) else {
            continue;
        };
        if bytes.contains(&0) {
            continue;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        scanned += 1;
        for (n, line) in text.lines().enumerate() {
            if let Some(why) = problem(line) {
                problems.push(format!("{file}:{}: {why}\n    {}", n + 1, line.trim()));
            }
        }
    }
    assert!(scanned > 100, "only {scanned} text files scanned");
    assert!(
        problems.is_empty(),
        "{} line(s) cite what a reader cannot follow:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_patterns_catch_what_they_should_and_only_that() {
    let flagged = |line: &str| problem(line).is_some();
    // Paths outside the project are put together here, so that this file names none itself.
    let outside = format!(
        "see {}",
        ["", "work", "shared", "seeds", "003.txt"].join("/")
    );
    let sibling = format!("copied from {}", ["..", "shared", "notes.md"].join("/"));
    let notes = format!("as {}.md says", "anchors");
    let scratch = format!("written to {}", ["", "tmp", "out.txt"].join("/"));
    let homes = format!(
        "in {} or {}",
        ["", "root", ".cargo"].join("/"),
        ["", "home", "me"].join("/")
    );
    for bad in [
        outside.as_str(),
        sibling.as_str(),
        notes.as_str(),
        homes.as_str(),
        scratch.as_str(),
        "the benchmark of issue 4",
        "(Issue 3)",
        "per issue #12",
        "issues 3 and 4",
        "issue-5's targets",
        "see issues/004.md",
    ] {
        assert!(flagged(bad), "not flagged: {bad:?}");
    }
    for good in [
        "the server's own or its issuer's",
        "a known problem (ngircd/ngircd issue #344)",
        "https://github.com/tokio-rs/mio/issues/1234",
        "the issue's criteria",
        "files in /tmp are removed",
        "/usr/sbin/nats-server",
        "shared, not copied",
    ] {
        assert!(!flagged(good), "flagged: {good:?}");
    }
}
