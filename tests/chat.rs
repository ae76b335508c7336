//! The chat protocol as a user sees it over real sockets: welcome, announcements, ordering,
//! framing (CRLF, newline-less messages, half-close, blank lines), text hygiene, commands
//! and the exit words.

mod common;

use common::{Client, Server, WELCOME, intro};
use std::thread;
use std::time::{Duration, Instant};

const QUIET: Duration = Duration::from_millis(300);

#[test]
fn welcome_and_intro_come_first_and_guest_numbers_count_up() {
    let server = Server::start(&[]);
    let mut first = Client::connect(server.addr);
    first.expect_line(WELCOME);
    first.expect_line(&intro("guest1"));

    let mut second = Client::connect(server.addr);
    second.expect_line(WELCOME);
    second.expect_line(&intro("guest2"));
    first.expect_line("[SERVER] Client: guest2 connected!");
    drop(second);
    first.expect_line("[SERVER] Client: guest2 disconnected.");

    // N is never reused: the next one is guest3, not guest2 again.
    let mut third = Client::connect(server.addr);
    third.expect_line(WELCOME);
    third.expect_line(&intro("guest3"));
}

#[test]
fn custom_welcome_text() {
    let server = Server::start(&["--welcome", "Hi there, be nice"]);
    let mut c = Client::connect(server.addr);
    c.expect_line("Hi there, be nice");
    c.expect_line(&intro("guest1"));
}

#[test]
fn joins_and_leaves_are_announced_to_others_and_the_transcript() {
    let server = Server::start(&[]);
    let mut a = server.client();
    server.expect_out(&format!("[SERVER] Client: {} connected!", a.name));

    let b = server.client();
    a.expect_line(&format!("[SERVER] Client: {} connected!", b.name));
    server.expect_out(&format!("[SERVER] Client: {} connected!", b.name));

    let b_name = b.name.clone();
    drop(b);
    a.expect_line(&format!("[SERVER] Client: {b_name} disconnected."));
    server.expect_out(&format!("[SERVER] Client: {b_name} disconnected."));
    // A client never hears about its own join or leave.
    a.expect_silence(QUIET);
}

#[test]
fn big_rooms_stop_announcing_to_clients_but_the_console_records_everything() {
    let server = Server::start(&["--announce-limit", "2"]);
    let mut alice = server.named("alice");
    let mut bob = server.client(); // a room of 2: announced
    alice.expect_line(&format!("[SERVER] Client: {} connected!", bob.name));
    let carol = server.client(); // at the limit: either way
    let mut dave = server.client(); // a room of 4: never announced to clients
    let guest = dave.name.clone();
    let heard = alice.lines_until_quiet(QUIET);
    assert!(
        heard.iter().all(|l| !l.contains(&guest)),
        "join announced in a room over the limit: {heard:?}"
    );
    server.expect_out(&format!("[SERVER] Client: {guest} connected!"));

    dave.rename("dave");
    server.expect_out(&format!("[SERVER] {guest} is now known as dave"));
    dave.send("hi all");
    alice.expect_line("dave: hi all"); // messages still flow, the rename was not announced
    drop(dave);
    server.expect_out("[SERVER] Client: dave disconnected.");
    alice.expect_silence(QUIET);

    // Back to an ordinary size, announcements resume.
    drop(carol);
    alice.lines_until_quiet(QUIET);
    let bob_name = bob.name.clone();
    bob.lines_until_quiet(Duration::from_millis(50)); // read all, so closing is not a reset
    drop(bob);
    alice.expect_line(&format!("[SERVER] Client: {bob_name} disconnected."));
}

#[test]
fn message_reaches_everyone_else_and_the_transcript_but_not_the_sender() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob", "carol"]);
    room[0].send("hello everyone");
    room[1].expect_line("alice: hello everyone");
    room[2].expect_line("alice: hello everyone");
    server.expect_out("alice: hello everyone");
    room[0].expect_silence(QUIET);
}

#[test]
fn seven_clients_talking_at_once_all_see_one_order() {
    const ROUNDS: usize = 6;
    let names = ["c0", "c1", "c2", "c3", "c4", "c5", "c6"];
    let server = Server::start(&[]);
    let room = server.room(&names);

    // Every client writes its messages from its own thread at the same moment.
    let start = std::sync::Arc::new(std::sync::Barrier::new(names.len()));
    let handles: Vec<_> = room
        .into_iter()
        .map(|mut c| {
            let start = start.clone();
            thread::spawn(move || {
                start.wait();
                for round in 0..ROUNDS {
                    c.send(&format!("m{round} from {}", c.name));
                }
                let others = (names.len() - 1) * ROUNDS;
                let got: Vec<String> = (0..others).map(|_| c.line()).collect();
                (c, got)
            })
        })
        .collect();
    let views = common::joined_in_silence(handles);

    // The transcript is the one true order; each client sees it minus its own lines.
    let mut order = Vec::new();
    while order.len() < names.len() * ROUNDS {
        let line = server.out_line();
        if line.contains(" from c") {
            order.push(line);
        }
    }
    for (c, got) in &views {
        let name = &c.name;
        let expected: Vec<&String> = order
            .iter()
            .filter(|l| !l.starts_with(&format!("{name}: ")))
            .collect();
        let got: Vec<&String> = got.iter().collect();
        assert_eq!(
            got, expected,
            "{name} saw a different order (or its own lines)"
        );
    }
    // And each sender's own lines appear in the order it wrote them.
    for name in names {
        let mine: Vec<&String> = order
            .iter()
            .filter(|l| l.starts_with(&format!("{name}: ")))
            .collect();
        let want: Vec<String> = (0..ROUNDS)
            .map(|r| format!("{name}: m{r} from {name}"))
            .collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
}

#[test]
fn crlf_line_endings_are_accepted() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw(b"hello over telnet\r\n");
    room[1].expect_line("alice: hello over telnet");
    room[0].send_raw(b"/who\r\n");
    room[0].expect_line("[SERVER] 2 online: alice, bob");
}

#[test]
fn a_line_split_across_many_writes_is_one_message() {
    let server = Server::start(&["--flush-partial", "1000"]);
    let mut room = server.room(&["alice", "bob"]);
    for piece in ["he", "llo ", "wor", "ld\n"] {
        room[0].send_raw(piece.as_bytes());
        thread::sleep(Duration::from_millis(30));
    }
    room[1].expect_line("alice: hello world");
    // Two lines in one write are two messages.
    room[0].send_raw(b"one\ntwo\n");
    room[1].expect_line("alice: one");
    room[1].expect_line("alice: two");
}

#[test]
fn newline_less_message_is_delivered_after_flush_partial_quiet() {
    let server = Server::start(&["--flush-partial", "50"]);
    let mut room = server.room(&["alice", "bob"]);
    let sent = Instant::now();
    room[0].send_raw(b"no newline here");
    room[1].expect_line("alice: no newline here");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?}",
        sent.elapsed()
    );
    // The connection goes on normally afterwards.
    room[0].send("next");
    room[1].expect_line("alice: next");
    room[0].send_raw(b"again without newline");
    room[1].expect_line("alice: again without newline");
}

#[test]
fn flush_partial_zero_waits_for_the_newline_or_the_end_of_stream() {
    let server = Server::start(&["--flush-partial", "0"]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw(b"still typing");
    room[1].expect_silence(Duration::from_millis(500));
    room[0].send_raw(b", done\n");
    room[1].expect_line("alice: still typing, done");

    room[0].send_raw(b"last words");
    room[0].shutdown_write();
    room[1].expect_line("alice: last words");
    room[1].expect_line("[SERVER] Client: alice disconnected.");
}

#[test]
fn unterminated_last_line_is_delivered_at_end_of_stream() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    // Like `sock.send(input().encode()); sock.close()` right away.
    room[0].send_raw(b"goodbye cruel world");
    room[0].shutdown_write();
    room[1].expect_line("alice: goodbye cruel world");
    room[1].expect_line("[SERVER] Client: alice disconnected.");
    assert_eq!(room[0].read_to_close(), Vec::<String>::new());
}

#[test]
fn half_close_after_the_last_message_still_delivers_it_and_the_replies() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw(b"first\nlast one\n/who\n");
    room[0].shutdown_write();
    room[1].expect_line("alice: first");
    room[1].expect_line("alice: last one");
    room[1].expect_line("[SERVER] Client: alice disconnected.");
    // What was queued for the half-closed client is flushed before the close.
    assert_eq!(
        room[0].read_to_close(),
        vec!["[SERVER] 2 online: alice, bob".to_string()]
    );
}

#[test]
fn empty_and_blank_lines_are_ignored() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw(b"\n\r\n   \n\t\t\n \t \r\n");
    room[0].send("real message");
    room[1].expect_line("alice: real message");
    room[0].expect_silence(QUIET);
}

#[test]
fn invalid_utf8_becomes_replacement_characters() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw(b"caf\xff ok\n");
    // Client::line panics if the server forwards bytes that are not UTF-8.
    room[1].expect_line("alice: caf\u{FFFD} ok");
    server.expect_out("alice: caf\u{FFFD} ok");
}

#[test]
fn utf8_split_across_reads_is_kept_intact() {
    let server = Server::start(&["--flush-partial", "1000"]);
    let mut room = server.room(&["alice", "bob"]);
    // "café 5€" with both multi-byte characters cut in the middle between two writes.
    room[0].send_raw(b"caf\xc3");
    thread::sleep(Duration::from_millis(50));
    room[0].send_raw(b"\xa9 5\xe2\x82");
    thread::sleep(Duration::from_millis(50));
    room[0].send_raw(b"\xac\n");
    room[1].expect_line("alice: café 5€");
}

#[test]
fn control_characters_are_stripped_as_code_points() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    // ESC sequences (colour, title), BEL, BS, DEL, C1 (U+0085, U+009B CSI), a bidi override:
    // all removed; TAB stays; multi-byte text whose bytes look like C1 (€ = E2 82 AC,
    // Ā = C4 80) is untouched.
    let evil = "\x1b[31mred\x1b[0m \x1b]0;pwned\x07title \x08bs\x7fdel \u{85}nel \u{9b}2Jcsi \
                \u{202e}desrever\tTAB 5€ Ā";
    room[0].send(evil);
    let want = "alice: [31mred[0m ]0;pwnedtitle bsdel nel 2Jcsi desrever\tTAB 5€ Ā";
    room[1].expect_line(want);
    server.expect_out(want);
}

#[test]
fn a_lone_cr_cannot_forge_a_server_line() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw(b"hi\r[SERVER] Client: bob disconnected.\n");
    room[1].expect_line("alice: hi[SERVER] Client: bob disconnected.");
    room[0].send_raw(b"\r\r[SERVER] Error: fake\r\n");
    room[1].expect_line("alice: [SERVER] Error: fake");
}

#[test]
fn a_line_blank_after_stripping_is_ignored() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send_raw(b"\x1b\x07\x7f\n\x1b \t \x08\n\xc2\x9b\xc2\x85\n");
    room[0].send("visible");
    room[1].expect_line("alice: visible");
}

#[test]
fn nick_rename_is_announced_and_used() {
    let server = Server::start(&[]);
    let mut room = server.crowd(3);
    let old = room[0].name.clone();
    room[0].send("/nick alice");
    room[0].expect_line("[SERVER] You are now known as alice");
    room[1].expect_line(&format!("[SERVER] {old} is now known as alice"));
    room[2].expect_line(&format!("[SERVER] {old} is now known as alice"));
    server.expect_out(&format!("[SERVER] {old} is now known as alice"));
    room[0].send("it is me");
    room[1].expect_line("alice: it is me");
    // Command names are case-insensitive.
    room[0].send("/NICK Alice_2-x");
    room[0].expect_line("[SERVER] You are now known as Alice_2-x");
    room[1].expect_line("[SERVER] alice is now known as Alice_2-x");
}

#[test]
fn nick_refusals_say_why_and_are_not_announced() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob", "carol"]);
    let a = &mut room[0];

    a.send("/nick bob");
    a.expect_line("[SERVER] Error: name bob is taken");
    // Unique regardless of case: the error may echo either spelling.
    a.send("/nick BoB");
    let got = a.line();
    assert!(
        got == "[SERVER] Error: name BoB is taken" || got == "[SERVER] Error: name bob is taken",
        "{got:?}"
    );
    a.send("/nick SERVER");
    a.expect_line("[SERVER] Error: name SERVER is reserved");
    a.send("/nick server");
    let got = a.line();
    assert!(
        got == "[SERVER] Error: name server is reserved"
            || got == "[SERVER] Error: name SERVER is reserved",
        "{got:?}"
    );
    let invalid = "[SERVER] Error: invalid name: use 1 to 16 of A-Z a-z 0-9 _ -";
    for bad in ["bad!", "abcdefghijklmnopq", "héllo", "a.b", "[SERVER]"] {
        a.send(&format!("/nick {bad}"));
        assert_eq!(a.line(), invalid, "for /nick {bad}");
    }
    a.send("/nick alice");
    a.expect_line("[SERVER] Error: you are already alice");
    a.send("/nick");
    a.expect_line("[SERVER] Error: usage: /nick NAME");

    // Nobody else heard any of it, and alice is still alice.
    room[1].expect_silence(QUIET);
    room[2].expect_silence(Duration::from_millis(50));
    room[0].send("/who");
    room[0].expect_line("[SERVER] 3 online: alice, bob, carol");

    // Exactly 16 characters is fine.
    room[0].rename("abcdefghijklm_-9");
    room[1].expect_line("[SERVER] alice is now known as abcdefghijklm_-9");
    room[2].expect_line("[SERVER] alice is now known as abcdefghijklm_-9");
    // After a rename the old name is free again.
    room[2].rename("alice");
}

#[test]
fn who_lists_everyone_sorted() {
    let server = Server::start(&[]);
    let mut room = server.room(&["zed", "alice", "mike"]);
    room[2].send("/who");
    room[2].expect_line("[SERVER] 3 online: alice, mike, zed");
    room[0].expect_silence(QUIET);
    room[1].send("/WHO");
    room[1].expect_line("[SERVER] 3 online: alice, mike, zed");
}

#[test]
fn private_messages() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob", "carol"]);
    room[0].send("/msg bob meet me at  noon");
    room[1].expect_line("[PM from alice] meet me at  noon");
    room[0].expect_line("[PM to bob] meet me at  noon");
    room[2].expect_silence(QUIET);

    room[0].send("/msg nobody hello?");
    room[0].expect_line("[SERVER] Error: no such user: nobody (try /who)");
    room[0].send("/msg bob");
    room[0].expect_line("[SERVER] Error: usage: /msg NAME TEXT");
    room[0].send("/msg");
    room[0].expect_line("[SERVER] Error: usage: /msg NAME TEXT");
    room[1].expect_silence(QUIET);
    room[2].expect_silence(Duration::from_millis(50));
}

#[test]
fn me_action() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob", "carol"]);
    room[0].send("/me waves hello");
    room[1].expect_line("* alice waves hello");
    room[2].expect_line("* alice waves hello");
    server.expect_out("* alice waves hello");
    room[0].expect_silence(QUIET);
    room[0].send("/me");
    room[0].expect_line("[SERVER] Error: usage: /me TEXT");
    room[1].expect_silence(QUIET);
}

#[test]
fn help_lists_the_commands_to_the_asker_only() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send("/help");
    let lines = room[0].lines_until_quiet(QUIET);
    assert!(!lines.is_empty(), "no /help output");
    for line in &lines {
        assert!(line.starts_with("[SERVER] "), "help line {line:?}");
    }
    let all = lines.join("\n");
    for cmd in ["/nick", "/who", "/msg", "/me", "/quit"] {
        assert!(all.contains(cmd), "/help does not mention {cmd}: {lines:?}");
    }
    room[1].expect_silence(Duration::from_millis(100));
}

#[test]
fn unknown_command_points_to_help() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send("/foo bar baz");
    room[0].expect_line("[SERVER] Error: unknown command /foo (try /help)");
    room[1].expect_silence(QUIET);
}

#[test]
fn double_slash_sends_a_literal_slash() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    room[0].send("//who is there");
    room[1].expect_line("alice: /who is there");
    room[0].expect_silence(QUIET);
}

#[test]
fn every_exit_word_in_any_case_says_bye_and_closes() {
    let server = Server::start(&["--rate", "0"]);
    let mut watcher = server.named("watcher");
    let words = [
        "exit()", "exit", ":q", "#LOGOUT", "salir", "/quit", "EXIT()", "Exit", ":Q", "#logout",
        "SaLiR", "/QUIT", "  exit  ", "\t:q ",
    ];
    for word in words {
        let mut c = server.client();
        watcher.expect_line(&format!("[SERVER] Client: {} connected!", c.name));
        c.send(word);
        assert_eq!(
            c.read_to_close(),
            vec!["[SERVER] Bye!".to_string()],
            "after {word:?}"
        );
        // The exit word itself is not broadcast.
        watcher.expect_line(&format!("[SERVER] Client: {} disconnected.", c.name));
    }
    // What was queued before the goodbye is flushed first.
    let mut c = server.client();
    watcher.expect_line(&format!("[SERVER] Client: {} connected!", c.name));
    c.send_raw(b"/who\nexit\nnever delivered\n");
    assert_eq!(
        c.read_to_close(),
        vec![
            format!("[SERVER] 2 online: {}, watcher", c.name),
            "[SERVER] Bye!".to_string()
        ]
    );
    watcher.expect_line(&format!("[SERVER] Client: {} disconnected.", c.name));
    // CRLF and a newline-less exit word work too.
    let mut c = server.client();
    watcher.expect_line(&format!("[SERVER] Client: {} connected!", c.name));
    c.send_raw(b"Exit()\r\n");
    assert_eq!(c.read_to_close(), vec!["[SERVER] Bye!".to_string()]);
    watcher.expect_line(&format!("[SERVER] Client: {} disconnected.", c.name));
}

#[test]
fn exit_followed_by_more_text_is_an_ordinary_message() {
    let server = Server::start(&[]);
    let mut room = server.room(&["alice", "bob"]);
    for text in ["exit now", "exit() please", "/quitter", "salir!"] {
        room[0].send(text);
        let want = if text == "/quitter" {
            "[SERVER] Error: unknown command /quitter (try /help)".to_string()
        } else {
            format!("alice: {text}")
        };
        let who = if text == "/quitter" { 0 } else { 1 };
        room[who].expect_line(&want);
    }
    room[0].send("/who");
    room[0].expect_line("[SERVER] 2 online: alice, bob");
}
