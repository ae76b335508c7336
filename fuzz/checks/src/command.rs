//! The client and console parsers: no panic, and the properties of the format that can be
//! stated without restating the parser.

use loopchat::command::{self, Command, ConsoleCommand, is_exit_word};
use loopchat::text;

/// Input: one line, as received. It is parsed as the server does (cleaned, skipped if blank)
/// and also raw, since the parsers take any `&str`.
pub fn command(data: &[u8]) {
    let cleaned = text::clean(data);
    assert!(
        cleaned.chars().all(text::is_safe),
        "unsafe text: {cleaned:?}"
    );
    assert_eq!(
        text::clean(cleaned.as_bytes()),
        cleaned,
        "clean is idempotent"
    );
    if !text::is_blank(&cleaned) {
        client_line(&cleaned);
        console_line(&cleaned);
    }
    let raw = String::from_utf8_lossy(data);
    client_line(&raw);
    console_line(&raw);
}

/// The command word of `/word ...`, if the line is a command at all.
fn command_word(line: &str) -> Option<&str> {
    let body = line.trim_start().strip_prefix('/')?;
    let word = body.split(char::is_whitespace).next()?;
    (!word.is_empty() && !word.starts_with('/')).then_some(word)
}

/// One word: not empty, no whitespace.
fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.contains(char::is_whitespace)
}

fn client_line(line: &str) {
    let parsed = command::parse(line);
    // The exit words end a session, alone on the line, in any case.
    if is_exit_word(line) {
        assert_eq!(parsed, Command::Quit, "{line:?}");
    }
    let word = command_word(line);
    match &parsed {
        Command::Say(text) => {
            assert!(word.is_none(), "{line:?}: a command taken as a message");
            // A message is the line itself, or with the slash of `//` removed: never altered.
            let unescaped = line.strip_prefix("//").map(|rest| format!("/{rest}"));
            assert!(
                *text == line || unescaped.as_deref() == Some(*text),
                "{line:?} became {text:?}"
            );
        }
        Command::Me(text) => {
            assert!(!text.trim().is_empty() && !text.starts_with(char::is_whitespace));
            assert!(
                line.ends_with(text),
                "{line:?}: /me text is the rest of the line"
            );
            assert_eq!(command::parse(&format!("/me {text}")), Command::Me(text));
        }
        Command::Nick(name) => {
            assert!(is_word(name), "{line:?}: nick {name:?}");
            assert_eq!(
                command::parse(&format!("/nick {name}")),
                Command::Nick(name)
            );
        }
        Command::Msg { to, text } => {
            assert!(is_word(to), "{line:?}: to {to:?}");
            assert!(
                !text.is_empty() && text.trim() == *text,
                "{line:?}: {text:?}"
            );
            assert_eq!(
                command::parse(&format!("/msg {to} {text}")),
                Command::Msg { to, text },
            );
        }
        Command::Unknown(name) => {
            assert_eq!(Some(*name), word, "{line:?}");
            let known = [
                "nick", "who", "msg", "me", "help", "quit", "join", "part", "rooms", "topic",
                "history",
            ];
            assert!(!known.iter().any(|k| k.eq_ignore_ascii_case(name)));
        }
        Command::Join(room) => {
            assert!(is_word(room), "{line:?}: join {room:?}");
            assert_eq!(
                command::parse(&format!("/join {room}")),
                Command::Join(room)
            );
        }
        Command::Who(Some(room)) | Command::Part(Some(room)) | Command::History(Some(room)) => {
            assert!(is_word(room) && room.starts_with('#'), "{line:?}: {room:?}");
        }
        Command::Topic { room, text } => {
            assert!(
                room.is_none_or(|r| is_word(r) && r.starts_with('#')),
                "{line:?}"
            );
            assert!(
                text.is_none_or(|t| !t.is_empty() && t.trim() == t),
                "{line:?}"
            );
        }
        Command::Who(None)
        | Command::Part(None)
        | Command::History(None)
        | Command::Rooms
        | Command::Help
        | Command::Usage(_) => {
            assert!(word.is_some(), "{line:?}: not a command");
        }
        Command::Quit => {
            let quit = word.is_some_and(|w| w.eq_ignore_ascii_case("quit"));
            assert!(quit || is_exit_word(line), "{line:?}: not a way to leave");
        }
    }
    // Command names are case-insensitive: the same line in upper case means the same thing.
    if let Some(w) = word
        && !matches!(parsed, Command::Unknown(_))
    {
        let upper = line.replacen(w, &w.to_ascii_uppercase(), 1);
        assert_eq!(
            std::mem::discriminant(&command::parse(&upper)),
            std::mem::discriminant(&parsed),
            "{line:?} and {upper:?}"
        );
    }
    // `//x` sends `/x`, whatever x is.
    let escaped = format!("//{line}");
    assert_eq!(command::parse(&escaped), Command::Say(&escaped[1..]));
    assert_eq!(
        command::parse_console(&escaped),
        ConsoleCommand::Say(&escaped[1..])
    );
}

fn console_line(line: &str) {
    let parsed = command::parse_console(line);
    let word = command_word(line);
    match &parsed {
        ConsoleCommand::Say(text) => {
            assert!(word.is_none(), "{line:?}: a command taken as a message");
            let unescaped = line.strip_prefix("//").map(|rest| format!("/{rest}"));
            assert!(*text == line || unescaped.as_deref() == Some(*text));
        }
        ConsoleCommand::Kick(name) => {
            assert!(is_word(name), "{line:?}: kick {name:?}");
            assert_eq!(
                command::parse_console(&format!("/kick {name}")),
                ConsoleCommand::Kick(name)
            );
        }
        ConsoleCommand::Unknown(name) => {
            assert_eq!(Some(*name), word, "{line:?}");
            let known = ["who", "stats", "kick", "shutdown", "help", "say", "rooms"];
            assert!(!known.iter().any(|k| k.eq_ignore_ascii_case(name)));
        }
        ConsoleCommand::SayIn { room, text } => {
            assert!(is_word(room) && room.starts_with('#'), "{line:?}: {room:?}");
            assert!(
                !text.is_empty() && line.trim_end().ends_with(text),
                "{line:?}: the text is the rest of the line"
            );
        }
        ConsoleCommand::Who(_)
        | ConsoleCommand::Rooms
        | ConsoleCommand::Stats
        | ConsoleCommand::Shutdown
        | ConsoleCommand::Help
        | ConsoleCommand::Usage(_) => {
            assert!(word.is_some(), "{line:?}: not a command");
        }
    }
}
