//! Raw line to safe text: UTF-8 repair and the removal of characters that would let one
//! client take control of another's terminal. Pure.
//!
//! A chat line ends up printed in somebody's terminal, where `ESC [ 2 J` clears the screen,
//! `ESC ] 0 ;` sets the window title and a lone CR rewinds the line so that the text after it
//! hides the sender's name. So every control character but TAB is removed, as a code point:
//! the C1 controls U+0080..U+009F are two bytes in UTF-8 and must not be confused with the
//! continuation bytes of other characters.

use std::borrow::Cow;

/// Turns one received line into text that is safe to show: invalid UTF-8 becomes U+FFFD and
/// unsafe characters are removed. Borrows when there is nothing to change (the common case).
pub fn clean(line: &[u8]) -> Cow<'_, str> {
    if line
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        // Printable ASCII: valid UTF-8 by construction, nothing to remove.
        return Cow::Borrowed(std::str::from_utf8(line).expect("ASCII is UTF-8"));
    }
    let text = String::from_utf8_lossy(line);
    if text.chars().all(is_safe) {
        return text;
    }
    Cow::Owned(text.chars().filter(|&c| is_safe(c)).collect())
}

/// Whether a character may reach another client's terminal.
pub fn is_safe(c: char) -> bool {
    if c == '\t' {
        return true;
    }
    // `is_control` is Unicode's Cc: C0, DEL and C1.
    !c.is_control() && !is_bidi_control(c) && !matches!(c, '\u{2028}' | '\u{2029}')
}

/// The invisible characters that reorder text: with them `alice: hi` can be made to display
/// as something else entirely ("Trojan Source", CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether a line has anything worth sending once cleaned.
pub fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            clean(b"hello\tworld"),
            Cow::Borrowed("hello\tworld")
        ));
    }

    #[test]
    fn escapes_and_controls_are_removed() {
        assert_eq!(clean(b"\x1b[2Jhi\x07\x7f"), "[2Jhi");
        assert_eq!(clean(b"bob\r[SERVER] fake"), "bob[SERVER] fake");
        // U+009B is the one-character CSI; U+00E9 shares its continuation-byte range.
        assert_eq!(clean("\u{9b}31mcaf\u{e9}".as_bytes()), "31mcaf\u{e9}");
        assert_eq!(clean("a\u{202e}b\u{2066}c".as_bytes()), "abc");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(clean(b"ol\xe9 \xff"), "ol\u{fffd} \u{fffd}");
        assert_eq!(clean("señal 😀".as_bytes()), "señal 😀");
    }

    #[test]
    fn blank_lines() {
        assert!(is_blank(&clean(b" \t \x1b")));
        assert!(!is_blank(&clean(b" x ")));
    }
}
