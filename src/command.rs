//! Line to command: what a client's line, or an operator's console line, asks for. Pure.
//!
//! # Format
//!
//! A line starting with `/` is a command (`/nick bob`); anything else is a message. `//x`
//! sends the message `/x`. The exit words of the coursework clients (`exit()`, `exit`, `:q`,
//! `#LOGOUT`, `salir`) work alone on a line, in any case, like `/quit`.

/// What a client asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A message for the room.
    Say(&'a str),
    /// An action: `/me waves` shows as `* alice waves`.
    Me(&'a str),
    Nick(&'a str),
    /// Everyone online, or the members of a room.
    Who(Option<&'a str>),
    Msg {
        to: &'a str,
        text: &'a str,
    },
    /// Join a room (creating it), or switch to one already joined.
    Join(&'a str),
    /// Leave a room; the current one if none is named.
    Part(Option<&'a str>),
    Rooms,
    /// Show a room's topic (`text` is `None`) or set it; the current room if none is named.
    Topic {
        room: Option<&'a str>,
        text: Option<&'a str>,
    },
    /// Replay a room's history again; the current room if none is named.
    History(Option<&'a str>),
    Help,
    Quit,
    /// A `/word` that is not a command.
    Unknown(&'a str),
    /// A command without the argument it needs; holds the usage to show.
    Usage(&'static str),
}

/// What the operator typed on the server's console.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsoleCommand<'a> {
    /// Text for every client, shown as `SERVER: text`.
    Say(&'a str),
    /// Text for one room.
    SayIn {
        room: &'a str,
        text: &'a str,
    },
    Who(Option<&'a str>),
    Rooms,
    Stats,
    Kick(&'a str),
    Shutdown,
    Help,
    Unknown(&'a str),
    Usage(&'static str),
}

/// The words that end a session, from the coursework clients this server replaces.
pub const EXIT_WORDS: [&str; 6] = ["exit()", "exit", ":q", "#LOGOUT", "salir", "/quit"];

/// Whether a line is an exit word: alone on the line, in any case.
pub fn is_exit_word(line: &str) -> bool {
    let word = line.trim();
    EXIT_WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

pub const USAGE_NICK: &str = "/nick NAME";
pub const USAGE_MSG: &str = "/msg NAME TEXT";
pub const USAGE_ME: &str = "/me TEXT";
pub const USAGE_KICK: &str = "/kick NAME";
pub const USAGE_JOIN: &str = "/join #ROOM";
pub const USAGE_PART: &str = "/part [#ROOM]";
pub const USAGE_SAY: &str = "/say #ROOM TEXT";

/// Parses a client's line (already cleaned and not blank).
pub fn parse(line: &str) -> Command<'_> {
    if is_exit_word(line) {
        return Command::Quit;
    }
    let Some((name, rest)) = split_command(line) else {
        return Command::Say(unescape(line));
    };
    let arg = rest.trim();
    // Commands are rare next to messages: a lowercase copy of the name costs nothing here.
    match name.to_ascii_lowercase().as_str() {
        "nick" => one_word(arg).map_or(Command::Usage(USAGE_NICK), Command::Nick),
        "who" => Command::Who(room_arg(arg)),
        "msg" => match arg.split_once(char::is_whitespace) {
            Some((to, text)) => Command::Msg {
                to,
                text: text.trim_start(),
            },
            None => Command::Usage(USAGE_MSG),
        },
        "me" if arg.is_empty() => Command::Usage(USAGE_ME),
        "me" => Command::Me(rest.trim_start()),
        "join" => one_word(arg).map_or(Command::Usage(USAGE_JOIN), Command::Join),
        "part" if arg.is_empty() => Command::Part(None),
        "part" => one_word(arg).map_or(Command::Usage(USAGE_PART), |r| Command::Part(Some(r))),
        "rooms" => Command::Rooms,
        "topic" => match arg.split_once(char::is_whitespace) {
            _ if arg.is_empty() => Command::Topic {
                room: None,
                text: None,
            },
            _ if !arg.starts_with('#') => Command::Topic {
                room: None,
                text: Some(arg),
            },
            Some((room, text)) => Command::Topic {
                room: Some(room),
                text: Some(text.trim_start()),
            },
            None => Command::Topic {
                room: Some(arg),
                text: None,
            },
        },
        "history" => Command::History(room_arg(arg)),
        "help" => Command::Help,
        "quit" => Command::Quit,
        _ => Command::Unknown(name),
    }
}

/// Parses a line typed on the operator console.
pub fn parse_console(line: &str) -> ConsoleCommand<'_> {
    let Some((name, rest)) = split_command(line) else {
        return ConsoleCommand::Say(unescape(line));
    };
    let arg = rest.trim();
    match name.to_ascii_lowercase().as_str() {
        "who" => ConsoleCommand::Who(room_arg(arg)),
        "rooms" => ConsoleCommand::Rooms,
        "say" => match arg.split_once(char::is_whitespace) {
            Some((room, text)) if room.starts_with('#') => ConsoleCommand::SayIn {
                room,
                text: text.trim_start(),
            },
            _ => ConsoleCommand::Usage(USAGE_SAY),
        },
        "stats" => ConsoleCommand::Stats,
        "kick" => one_word(arg).map_or(ConsoleCommand::Usage(USAGE_KICK), ConsoleCommand::Kick),
        "shutdown" => ConsoleCommand::Shutdown,
        "help" => ConsoleCommand::Help,
        _ => ConsoleCommand::Unknown(name),
    }
}

/// Splits `/name rest` into its parts; `None` for messages, including `//escaped` ones.
fn split_command(line: &str) -> Option<(&str, &str)> {
    let body = line.trim_start().strip_prefix('/')?;
    if body.starts_with('/') || body.is_empty() || body.starts_with(char::is_whitespace) {
        return None;
    }
    Some(body.split_once(char::is_whitespace).unwrap_or((body, "")))
}

/// `//text` is the escape for a message that starts with a slash.
fn unescape(line: &str) -> &str {
    line.strip_prefix('/')
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or(line)
}

/// A room named as the first word (`/who #rust`); other words keep the old meaning of the
/// command without an argument.
fn room_arg(arg: &str) -> Option<&str> {
    let word = arg.split_whitespace().next()?;
    word.starts_with('#').then_some(word)
}

/// The argument if it is exactly one word.
fn one_word(arg: &str) -> Option<&str> {
    (!arg.is_empty() && !arg.contains(char::is_whitespace)).then_some(arg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;

    #[test]
    fn messages_and_escapes() {
        assert_eq!(parse("hello"), Say("hello"));
        assert_eq!(parse("//etc/passwd"), Say("/etc/passwd"));
        assert_eq!(parse("/ spaced"), Say("/ spaced"));
        assert_eq!(parse("exit now"), Say("exit now"));
    }

    #[test]
    fn exit_words_in_any_case_alone_on_the_line() {
        for w in [
            "exit()",
            "EXIT",
            " :q ",
            "#logout",
            "Salir",
            "/QUIT",
            "/quit bye all",
        ] {
            assert_eq!(parse(w), Quit, "{w:?}");
        }
    }

    #[test]
    fn commands_and_their_arguments() {
        assert_eq!(parse("/NICK bob"), Nick("bob"));
        assert_eq!(parse("/nick"), Usage(USAGE_NICK));
        assert_eq!(parse("/nick two words"), Usage(USAGE_NICK));
        assert_eq!(parse("/who"), Who(None));
        assert_eq!(parse("/who everyone"), Who(None), "as before rooms");
        assert_eq!(parse("/who #Rust"), Who(Some("#Rust")));
        assert_eq!(
            parse("/msg bob  hi there"),
            Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(parse("/msg bob"), Usage(USAGE_MSG));
        assert_eq!(parse("/me waves  twice"), Me("waves  twice"));
        assert_eq!(parse("/me"), Usage(USAGE_ME));
        assert_eq!(parse("/help"), Help);
        assert_eq!(parse("/dance now"), Unknown("dance"));
    }

    #[test]
    fn room_commands() {
        assert_eq!(parse("/join #rust"), Join("#rust"));
        assert_eq!(parse("/JOIN rust"), Join("rust"), "the room checks names");
        assert_eq!(parse("/join"), Usage(USAGE_JOIN));
        assert_eq!(parse("/join #a #b"), Usage(USAGE_JOIN));
        assert_eq!(parse("/part"), Part(None));
        assert_eq!(parse("/part #rust"), Part(Some("#rust")));
        assert_eq!(parse("/part #a #b"), Usage(USAGE_PART));
        assert_eq!(parse("/rooms"), Rooms);
        assert_eq!(parse("/history"), History(None));
        assert_eq!(parse("/history #rust"), History(Some("#rust")));
        let topic = |room, text| Topic { room, text };
        assert_eq!(parse("/topic"), topic(None, None));
        assert_eq!(parse("/topic #rust"), topic(Some("#rust"), None));
        assert_eq!(
            parse("/topic lifetimes  today"),
            topic(None, Some("lifetimes  today"))
        );
        assert_eq!(
            parse("/topic #rust  #1 topic"),
            topic(Some("#rust"), Some("#1 topic"))
        );
    }

    #[test]
    fn console_commands() {
        assert_eq!(parse_console("hola"), ConsoleCommand::Say("hola"));
        assert_eq!(parse_console("/kick bob"), ConsoleCommand::Kick("bob"));
        assert_eq!(parse_console("/kick"), ConsoleCommand::Usage(USAGE_KICK));
        assert_eq!(parse_console("/shutdown"), ConsoleCommand::Shutdown);
        assert_eq!(parse_console("/who"), ConsoleCommand::Who(None));
        assert_eq!(parse_console("/who #a"), ConsoleCommand::Who(Some("#a")));
        assert_eq!(parse_console("/rooms"), ConsoleCommand::Rooms);
        assert_eq!(
            parse_console("/say #a  hi all"),
            ConsoleCommand::SayIn {
                room: "#a",
                text: "hi all"
            }
        );
        assert_eq!(parse_console("/say hi"), ConsoleCommand::Usage(USAGE_SAY));
        assert_eq!(parse_console("/stats"), ConsoleCommand::Stats);
        assert_eq!(parse_console("/nope"), ConsoleCommand::Unknown("nope"));
    }
}
