//! docs/protocol.md promises every line the server can send; src/notice.rs holds every one of
//! them. This test holds the two in agreement, in both directions, so that neither can change
//! without the other.

use std::fs;

/// Lines of src/notice.rs that are not the protocol: the one on stderr.
const NOT_PROTOCOL: [&str; 1] = ["loopchat-server: {what}"];

/// Every string literal of src/notice.rs (comments and `, ` joints aside), as templates:
/// `{name}` marks where a value goes.
fn templates() -> Vec<String> {
    let code = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/notice.rs")).unwrap();
    let mut found = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(start) = rest.find('"') {
            let end = start
                + 1
                + rest[start + 1..]
                    .find('"')
                    .expect("literal ends on its line");
            let literal = &rest[start + 1..end];
            if literal.chars().any(char::is_alphabetic) && !NOT_PROTOCOL.contains(&literal) {
                found.push(literal.to_owned());
            }
            rest = &rest[end + 1..];
        }
    }
    assert!(
        found.len() > 40,
        "found only {} literals in notice.rs",
        found.len()
    );
    found
}

/// The fixed parts of a template, in order.
fn fragments(template: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        parts.push(&rest[..open]);
        let close = open + rest[open..].find('}').unwrap();
        rest = &rest[close + 1..];
    }
    parts.push(rest);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Whether `text` holds the fragments in order (and, if `whole`, starts with the first and
/// ends with the last).
fn matches(text: &str, template: &str, whole: bool) -> bool {
    let parts = fragments(template);
    if whole && !(template.starts_with('{') || text.starts_with(parts[0])) {
        return false;
    }
    if whole && !(template.ends_with('}') || text.ends_with(parts[parts.len() - 1])) {
        return false;
    }
    let mut at = 0;
    parts.iter().all(|part| match text[at..].find(part) {
        Some(i) => {
            at += i + part.len();
            true
        }
        None => false,
    })
}

fn doc() -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/protocol.md")).unwrap()
}

#[test]
fn every_line_the_server_can_send_is_in_the_protocol_document() {
    let doc = doc();
    let missing: Vec<String> = templates()
        .into_iter()
        .filter(|t| !doc.lines().any(|line| matches(line, t, false)))
        .collect();
    assert!(
        missing.is_empty(),
        "in src/notice.rs but not in docs/protocol.md: {missing:#?}"
    );
}

#[test]
fn every_server_line_in_the_document_is_one_the_server_sends() {
    let templates = templates();
    let doc = doc();
    // The quoted server lines: `[SERVER] ...` in backquotes, and the lines of text blocks.
    let quoted = doc.split('`').skip(1).step_by(2).chain(doc.lines());
    // The bare prefixes are named in the text; they are not lines.
    let unknown: Vec<&str> = quoted
        .filter(|q| q.starts_with("[SERVER] ") && !["[SERVER] ", "[SERVER] Error: "].contains(q))
        .filter(|q| !templates.iter().any(|t| matches(q, t, true)))
        .collect();
    assert!(
        unknown.is_empty(),
        "in docs/protocol.md but not sent by the server: {unknown:#?}"
    );
}
