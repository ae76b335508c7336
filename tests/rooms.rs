//! Named rooms and their history as users see them over real sockets: who gets which line,
//! what /join, /part, /rooms, /who #room, /topic and /history answer, the limits and their
//! reasons, the operator console and UDP in a server with rooms, the big-room policy per room,
//! and a replay that is paced for a slow reader instead of getting it dropped.
//!
//! Lines of #lobby look exactly as they did before rooms; lines of any other room start with
//! `[#room] `; replayed messages carry `[history HH:MM:SS] ` (UTC) after that.

mod common;

use common::{Client, Server, SockOpts, WELCOME, intro};
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const LOBBY: &str = "#lobby";

/// A command nobody else hears the answer to: see [`drain`].
const SYNC: &str = "/sync";
const SYNC_REPLY: &str = "[SERVER] Error: unknown command /sync (try /help)";

const LAST_ROOM: &str = "[SERVER] Error: you cannot leave your last room: /join another first";
const ROOM_NAME_INVALID: &str =
    "[SERVER] Error: invalid room name: use # and 1 to 32 of A-Z a-z 0-9 _ -";
const SERVER_ROOMS_FULL: &str =
    "[SERVER] Error: the server has all the rooms it allows, join one of /rooms";
const TOO_MANY_ROOMS: &str =
    "[SERVER] Error: you are in 10 rooms, the most allowed: /part one first";

// ----- helpers -----

/// Clients named in order, in #lobby, every join and rename notice already read.
fn clients<const N: usize>(server: &Server, names: [&str; N]) -> [Client; N] {
    match server.room(&names).try_into() {
        Ok(all) => all,
        Err(_) => unreachable!("Server::room returns one client per name"),
    }
}

/// Every line `c` has been sent so far. It sends a command only it hears the answer to and
/// returns what came before the answer: a client's lines arrive in the order the server made
/// them, so a line routed to `c` by anything the server did before is in the list.
fn drain(c: &mut Client) -> Vec<String> {
    c.send(SYNC);
    let mut lines = Vec::new();
    loop {
        let line = c.line();
        if line == SYNC_REPLY {
            return lines;
        }
        lines.push(line);
    }
}

/// Asserts that `c` has been sent nothing it has not read yet.
fn assert_nothing_more(c: &mut Client) {
    let name = c.name.clone();
    assert_eq!(
        drain(c),
        Vec::<String>::new(),
        "{name} got lines it should not"
    );
}

/// A line of `room` as a client sees it: as before rooms in the lobby, `[#room] ` before it in
/// any other room.
fn in_room(room: &str, line: &str) -> String {
    if room == LOBBY {
        line.to_owned()
    } else {
        format!("[{room}] {line}")
    }
}

fn you_joined(room: &str, here: usize) -> String {
    let line = format!("[SERVER] You joined {room} ({here} here); what you type goes to {room}");
    in_room(room, &line)
}

fn end_of_history(room: &str, messages: usize) -> String {
    let s = if messages == 1 { "" } else { "s" };
    in_room(
        room,
        &format!("[SERVER] End of history ({messages} message{s})"),
    )
}

fn you_left(room: &str, now_in: &str) -> String {
    let line = format!("[SERVER] You left {room}; what you type goes to {now_in} now");
    in_room(room, &line)
}

fn no_topic(room: &str) -> String {
    in_room(room, "[SERVER] No topic is set")
}

fn no_such_room(room: &str) -> String {
    format!("[SERVER] Error: no such room: {room} (try /rooms)")
}

fn not_in_room(room: &str) -> String {
    format!("[SERVER] Error: you are not in {room} (try /join {room})")
}

/// Sends `/join room` and returns every line up to and including the end of the replay.
fn join_lines(c: &mut Client, room: &str) -> Vec<String> {
    c.send(&format!("/join {room}"));
    let mut lines = Vec::new();
    loop {
        let line = c.line();
        let end = line.contains("[SERVER] End of history (");
        lines.push(line);
        if end {
            return lines;
        }
    }
}

/// `/join` of a room without topic or history (a new one, say): `here` members with `c`.
fn join_plain(c: &mut Client, room: &str, here: usize) {
    assert_eq!(
        join_lines(c, room),
        [
            you_joined(room, here),
            no_topic(room),
            end_of_history(room, 0)
        ],
        "{} joining {room}",
        c.name
    );
}

/// Sends `line` and asserts the next line `c` gets is `reply`.
fn ask(c: &mut Client, line: &str, reply: &str) {
    c.send(line);
    c.expect_line(reply);
}

/// Asserts that `line` is the replay of a message: `[#room] [history HH:MM:SS] said` (no
/// room part in the lobby), the time of day in UTC within two minutes of now.
fn assert_replayed(line: &str, room: &str, said: &str) {
    let head = in_room(room, "[history ");
    let time = line
        .strip_prefix(&head)
        .and_then(|rest| rest.get(..8).zip(rest.get(8..)))
        .and_then(|(time, rest)| (rest == format!("] {said}")).then_some(time))
        .unwrap_or_else(|| panic!("not the replay of {said:?} in {room}: {line:?}"));
    let hms: Option<Vec<u64>> = time
        .split(':')
        .map(|p| {
            let digits = p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
            digits.then(|| p.parse().unwrap())
        })
        .collect();
    let (h, m, s) = match hms.as_deref() {
        Some(&[h, m, s]) if h < 24 && m < 60 && s < 60 => (h, m, s),
        _ => panic!("no HH:MM:SS time in {line:?}"),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400;
    let shown = h * 3600 + m * 60 + s;
    let apart = now.abs_diff(shown);
    let apart = apart.min(86_400 - apart); // around midnight
    assert!(
        apart <= 120,
        "{line:?}: {time} is not the time of day in UTC (now {:02}:{:02}:{:02})",
        now / 3600,
        now / 60 % 60,
        now % 60
    );
}

// ----- who gets what -----

#[test]
fn each_room_hears_only_its_own_messages_and_the_transcript_hears_them_all() {
    let server = Server::start(&[]);
    let [mut l1, mut l2, mut l3, mut b1, mut b2, mut g1, mut g2] =
        clients(&server, ["l1", "l2", "l3", "b1", "b2", "g1", "g2"]);

    // #lobby: l1, l2, l3. #blue: b1, b2 and l3 (who is in two rooms). #green: g1, g2.
    join_plain(&mut b1, "#blue", 1);
    join_plain(&mut b2, "#blue", 2);
    join_plain(&mut l3, "#blue", 3);
    b1.expect_line("[#blue] [SERVER] b2 joined");
    b1.expect_line("[#blue] [SERVER] l3 joined");
    b2.expect_line("[#blue] [SERVER] l3 joined");
    join_plain(&mut g1, "#green", 1);
    join_plain(&mut g2, "#green", 2);
    g1.expect_line("[#green] [SERVER] g2 joined");
    // One at a time (l1 sees each), so that everyone's view has one order.
    for c in [&mut b1, &mut b2, &mut g1, &mut g2] {
        c.send("/part #lobby");
        l1.expect_line(&format!("[SERVER] {} left", c.name));
    }
    // Joins were announced in their room only; parting the lobby is a lobby line.
    let left = |names: &[&str]| -> Vec<String> {
        names.iter().map(|n| format!("[SERVER] {n} left")).collect()
    };
    let then = |mut lines: Vec<String>, last: String| {
        lines.push(last);
        lines
    };
    assert_eq!(drain(&mut l2), left(&["b1", "b2", "g1", "g2"]));
    assert_eq!(drain(&mut l3), left(&["b1", "b2", "g1", "g2"]));
    assert_eq!(drain(&mut b1), [you_left(LOBBY, "#blue")]);
    assert_eq!(
        drain(&mut b2),
        then(left(&["b1"]), you_left(LOBBY, "#blue"))
    );
    assert_eq!(
        drain(&mut g1),
        then(left(&["b1", "b2"]), you_left(LOBBY, "#green"))
    );
    assert_eq!(
        drain(&mut g2),
        then(left(&["b1", "b2", "g1"]), you_left(LOBBY, "#green"))
    );

    // Each message reaches exactly its room's other members, as the next line they read.
    l1.send("hi lobby");
    l2.expect_line("l1: hi lobby");
    l3.expect_line("l1: hi lobby");
    b1.send("hi blue");
    b2.expect_line("[#blue] b1: hi blue");
    l3.expect_line("[#blue] b1: hi blue");
    g1.send("hi green");
    g2.expect_line("[#green] g1: hi green");
    // l3 joined #blue last, so that is where it types, until it switches back.
    l3.send("blue from l3");
    b1.expect_line("[#blue] l3: blue from l3");
    b2.expect_line("[#blue] l3: blue from l3");
    ask(
        &mut l3,
        "/join #lobby",
        "[SERVER] What you type goes to #lobby now",
    );
    l3.send("lobby from l3");
    l1.expect_line("l3: lobby from l3");
    l2.expect_line("l3: lobby from l3");
    g2.send("/me waves");
    g1.expect_line("[#green] * g2 waves");
    b2.send("/me waves too");
    b1.expect_line("[#blue] * b2 waves too");
    l3.expect_line("[#blue] * b2 waves too");

    // Nobody got anything else: no copy outside the room, no echo to the sender.
    for c in [
        &mut l1, &mut l2, &mut l3, &mut b1, &mut b2, &mut g1, &mut g2,
    ] {
        assert_nothing_more(c);
    }

    // The transcript has every room, each line with its room, in the order they happened.
    for line in [
        "[#blue] [SERVER] b2 joined",
        "[#blue] [SERVER] l3 joined",
        "[#green] [SERVER] g2 joined",
        "[SERVER] b1 left",
        "[SERVER] g2 left",
        "l1: hi lobby",
        "[#blue] b1: hi blue",
        "[#green] g1: hi green",
        "[#blue] l3: blue from l3",
        "l3: lobby from l3",
        "[#green] * g2 waves",
        "[#blue] * b2 waves too",
    ] {
        server.expect_out(line);
    }
}

#[test]
fn a_client_that_never_types_a_command_sees_the_lobby_exactly_as_before_rooms() {
    // Every join announced at once (--no-web): the exact lines of a lobby before rooms. With
    // the web door open a silent client is announced when it first speaks (tests/nc.rs).
    let server = Server::start(&[]);
    // Two clients like the coursework's: they send text and an exit word, nothing else.
    let mut plain = Client::connect(server.addr);
    plain.expect_line(WELCOME);
    plain.expect_line(&intro("guest1"));
    plain.name = "guest1".into();
    let mut other = server.client();
    plain.expect_line("[SERVER] Client: guest2 connected!");
    let mut dev1 = server.client();
    let mut dev2 = server.client();
    for c in [&mut plain, &mut other] {
        c.expect_line("[SERVER] Client: guest3 connected!");
    }
    for c in [&mut plain, &mut other, &mut dev1] {
        c.expect_line("[SERVER] Client: guest4 connected!");
    }

    // guest3 and guest4 are busy in #dev (while staying in the lobby).
    join_plain(&mut dev1, "#dev", 1);
    join_plain(&mut dev2, "#dev", 2);
    dev1.expect_line("[#dev] [SERVER] guest4 joined");
    ask(
        &mut dev1,
        "/topic busy",
        "[#dev] [SERVER] guest3 set the topic: busy",
    );
    dev2.expect_line("[#dev] [SERVER] guest3 set the topic: busy");
    dev1.send("dev talk");
    dev2.expect_line("[#dev] guest3: dev talk");
    dev2.send("/me codes");
    dev1.expect_line("[#dev] * guest4 codes");

    // A plain line goes to the lobby, which everyone is still in.
    plain.send("hi");
    for c in [&mut other, &mut dev1, &mut dev2] {
        c.expect_line("guest1: hi");
    }
    ask(
        &mut dev1,
        "/join #lobby",
        "[SERVER] What you type goes to #lobby now",
    );
    dev1.send("back in the lobby");
    for c in [&mut plain, &mut other, &mut dev2] {
        c.expect_line("guest3: back in the lobby");
    }
    dev2.send("more dev talk");
    dev1.expect_line("[#dev] guest4: more dev talk");
    other.send("hello");
    for c in [&mut plain, &mut dev1, &mut dev2] {
        c.expect_line("guest2: hello");
    }

    // Leaving the old ways: the lobby hears it in the old words.
    other.send(":q");
    assert_eq!(other.read_to_close(), ["[SERVER] Bye!"]);
    for c in [&mut plain, &mut dev1, &mut dev2] {
        c.expect_line("[SERVER] Client: guest2 disconnected.");
    }
    dev2.lines_until_quiet(Duration::from_millis(50)); // all read: closing is not a reset
    drop(dev2);
    plain.expect_line("[SERVER] Client: guest4 disconnected.");
    dev1.expect_line("[SERVER] Client: guest4 disconnected.");
    dev1.expect_line("[#dev] [SERVER] Client: guest4 disconnected.");

    // Everything the plain client got was read above, line by line: nothing from #dev, no
    // "[#" line, nothing new.
    plain.send("#LOGOUT");
    let rest = plain.read_to_close();
    assert_eq!(rest, ["[SERVER] Bye!"]);
    dev1.expect_line("[SERVER] Client: guest1 disconnected.");
}

// ----- /join, /history -----

#[test]
fn join_shows_the_room_its_topic_and_its_past_messages_with_their_time() {
    let server = Server::start(&[]);
    let [mut alice, mut bob, mut carol] = clients(&server, ["alice", "bob", "carol"]);

    join_plain(&mut alice, "#rust", 1);
    alice.send("first");
    alice.send("/me thinks");
    ask(
        &mut alice,
        "/topic borrowing",
        "[#rust] [SERVER] alice set the topic: borrowing",
    );
    let carol_sees = join_lines(&mut carol, "#rust");
    assert_eq!(carol_sees.len(), 5, "{carol_sees:?}");
    assert_eq!(carol_sees[0], you_joined("#rust", 2));
    assert_eq!(carol_sees[1], "[#rust] [SERVER] Topic: borrowing");
    assert_replayed(&carol_sees[2], "#rust", "alice: first");
    assert_replayed(&carol_sees[3], "#rust", "* alice thinks");
    assert_eq!(carol_sees[4], end_of_history("#rust", 2));
    alice.expect_line("[#rust] [SERVER] carol joined");
    ask(&mut carol, "/part", &you_left("#rust", LOBBY));
    alice.expect_line("[#rust] [SERVER] carol left");
    alice.send("second");
    assert_nothing_more(&mut alice); // "second" is in the history before bob asks

    // Only messages come back (an action too), not the topic change nor carol's join and leave.
    let bob_sees = join_lines(&mut bob, "#rust");
    assert_eq!(bob_sees.len(), 6, "{bob_sees:?}");
    assert_eq!(bob_sees[0], you_joined("#rust", 2));
    assert_eq!(bob_sees[1], "[#rust] [SERVER] Topic: borrowing");
    assert_replayed(&bob_sees[2], "#rust", "alice: first");
    assert_replayed(&bob_sees[3], "#rust", "* alice thinks");
    assert_replayed(&bob_sees[4], "#rust", "alice: second");
    assert_eq!(bob_sees[5], end_of_history("#rust", 3));
    alice.expect_line("[#rust] [SERVER] bob joined");

    // /history replays again on demand; the lobby's history has its old look.
    bob.send("/history");
    for said in ["alice: first", "* alice thinks", "alice: second"] {
        assert_replayed(&bob.line(), "#rust", said);
    }
    bob.expect_line(&end_of_history("#rust", 3));
    ask(
        &mut bob,
        "/join #lobby",
        "[SERVER] What you type goes to #lobby now",
    );
    bob.send("in the lobby");
    alice.expect_line("bob: in the lobby");
    carol.expect_line("bob: in the lobby");
    carol.send("/history");
    assert_replayed(&carol.line(), LOBBY, "bob: in the lobby");
    carol.expect_line(&end_of_history(LOBBY, 1));
    ask(&mut carol, "/history #rust", &not_in_room("#rust"));
    ask(&mut carol, "/history #nowhere", &no_such_room("#nowhere"));
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_nothing_more(c);
    }
}

#[test]
fn history_keeps_only_the_last_k_messages() {
    let server = Server::start(&["--history", "2"]);
    let [mut alice, mut bob] = clients(&server, ["alice", "bob"]);
    join_plain(&mut alice, "#r", 1);
    for m in ["m1", "m2", "m3", "m4", "m5"] {
        alice.send(m);
    }
    assert_nothing_more(&mut alice);
    let seen = join_lines(&mut bob, "#r");
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[..2], [you_joined("#r", 2), no_topic("#r")]);
    assert_replayed(&seen[2], "#r", "alice: m4");
    assert_replayed(&seen[3], "#r", "alice: m5");
    assert_eq!(seen[4], end_of_history("#r", 2));
}

#[test]
fn history_0_replays_nothing_but_still_ends_the_replay() {
    let server = Server::start(&["--history", "0"]);
    let [mut alice, mut bob] = clients(&server, ["alice", "bob"]);
    join_plain(&mut alice, "#r", 1);
    alice.send("said before bob came");
    assert_nothing_more(&mut alice);
    join_plain(&mut bob, "#r", 2);
    bob.send("/history");
    bob.expect_line(&end_of_history("#r", 0));
    bob.send("/history #lobby");
    bob.expect_line(&end_of_history(LOBBY, 0));
}

// ----- /part, switching -----

#[test]
fn part_leaves_a_room_but_never_the_last_one_and_an_empty_room_is_gone() {
    let server = Server::start(&[]);
    let [mut alice, mut bob, mut carol] = clients(&server, ["alice", "bob", "carol"]);
    join_plain(&mut alice, "#a", 1);
    join_plain(&mut alice, "#b", 1);
    join_plain(&mut bob, "#a", 2);
    alice.expect_line("[#a] [SERVER] bob joined");
    join_plain(&mut bob, "#b", 2);
    alice.expect_line("[#b] [SERVER] bob joined");

    // /part alone leaves the room alice types in (#b); she types in #a, joined before it.
    ask(&mut alice, "/part", &you_left("#b", "#a"));
    bob.expect_line("[#b] [SERVER] alice left");
    alice.send("still here");
    bob.expect_line("[#a] alice: still here");
    // A named room, the lobby included.
    ask(&mut alice, "/part #lobby", &you_left(LOBBY, "#a"));
    bob.expect_line("[SERVER] alice left");
    carol.expect_line("[SERVER] alice left");
    ask(&mut alice, "/part #b", &not_in_room("#b"));
    ask(&mut alice, "/part #nowhere", &no_such_room("#nowhere"));
    ask(&mut alice, "/part nowhere", ROOM_NAME_INVALID);
    // #a is all she has left.
    ask(&mut alice, "/part", LAST_ROOM);
    ask(&mut alice, "/part #a", LAST_ROOM);
    alice.send("still in #a");
    bob.expect_line("[#a] alice: still in #a");
    // Back to the lobby, then out of #a.
    join_plain(&mut alice, LOBBY, 3);
    bob.expect_line("[SERVER] alice joined");
    carol.expect_line("[SERVER] alice joined");
    ask(&mut alice, "/part #a", &you_left("#a", LOBBY));
    bob.expect_line("[#a] [SERVER] alice left");

    // carol's own room, with a topic and a message, vanishes when she leaves it.
    join_plain(&mut carol, "#tmp", 1);
    carol.send("soon gone");
    ask(
        &mut carol,
        "/topic temporary",
        "[#tmp] [SERVER] carol set the topic: temporary",
    );
    carol.send("/rooms");
    for line in [
        "[SERVER] 4 rooms:",
        "[SERVER]   #lobby (3)",
        "[SERVER]   #a (1)",
        "[SERVER]   #b (1)",
        "[SERVER]   #tmp (1): temporary",
    ] {
        carol.expect_line(line);
    }
    ask(&mut carol, "/part", &you_left("#tmp", LOBBY));
    carol.send("/rooms");
    for line in [
        "[SERVER] 3 rooms:",
        "[SERVER]   #lobby (3)",
        "[SERVER]   #a (1)",
        "[SERVER]   #b (1)",
    ] {
        carol.expect_line(line);
    }
    ask(&mut carol, "/topic #tmp", &no_such_room("#tmp"));
    ask(&mut carol, "/who #tmp", &no_such_room("#tmp"));
    // A new room of that name: no topic, no history.
    join_plain(&mut carol, "#tmp", 1);
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_nothing_more(c);
    }
}

#[test]
fn join_of_a_room_you_are_in_switches_where_you_type() {
    let server = Server::start(&[]);
    let [mut alice, mut bob] = clients(&server, ["alice", "bob"]);
    join_plain(&mut alice, "#x", 1);
    join_plain(&mut alice, "#y", 1);
    join_plain(&mut bob, "#x", 2);
    alice.expect_line("[#x] [SERVER] bob joined");
    join_plain(&mut bob, "#y", 2);
    alice.expect_line("[#y] [SERVER] bob joined");

    alice.send("to y");
    bob.expect_line("[#y] alice: to y");
    // Rooms are found regardless of case and shown as first written.
    ask(
        &mut alice,
        "/join #X",
        "[#x] [SERVER] What you type goes to #x now",
    );
    alice.send("to x");
    bob.expect_line("[#x] alice: to x");
    ask(
        &mut alice,
        "/join #lobby",
        "[SERVER] What you type goes to #lobby now",
    );
    alice.send("to lobby");
    bob.expect_line("alice: to lobby");
    // A switch is no join: no replay for alice, no announcement for bob.
    assert_nothing_more(&mut alice);
    assert_nothing_more(&mut bob);

    join_plain(&mut bob, "#Mixed", 1);
    let seen = join_lines(&mut alice, "#mixed");
    assert_eq!(
        seen,
        [
            you_joined("#Mixed", 2),
            no_topic("#Mixed"),
            end_of_history("#Mixed", 0)
        ]
    );
    bob.expect_line("[#Mixed] [SERVER] alice joined");
}

// ----- /rooms, /who #room, /topic -----

#[test]
fn rooms_who_and_topic() {
    let server = Server::start(&[]);
    let [mut alice, mut bob, mut carol, mut dave] =
        clients(&server, ["alice", "bob", "carol", "dave"]);
    join_plain(&mut bob, "#rust", 1);
    join_plain(&mut alice, "#rust", 2);
    bob.expect_line("[#rust] [SERVER] alice joined");
    join_plain(&mut carol, "#Go", 1);

    // A member sets the topic: the room's members see it, nobody else does.
    let set = "[#rust] [SERVER] alice set the topic: lifetimes and borrowing";
    ask(&mut alice, "/topic #rust lifetimes and borrowing", set);
    bob.expect_line(set);
    server.expect_out(set);
    ask(
        &mut carol,
        "/topic simple",
        "[#Go] [SERVER] carol set the topic: simple",
    );
    // Anyone may read a topic; only a member may set it.
    ask(
        &mut alice,
        "/topic",
        "[#rust] [SERVER] Topic: lifetimes and borrowing",
    );
    ask(
        &mut dave,
        "/topic #rust",
        "[#rust] [SERVER] Topic: lifetimes and borrowing",
    );
    ask(&mut dave, "/topic #rust hijacked", &not_in_room("#rust"));
    ask(&mut dave, "/topic", &no_topic(LOBBY));
    ask(&mut dave, "/topic #nope", &no_such_room("#nope"));

    // The busiest room first, then by name; each with its members and topic.
    dave.send("/rooms");
    for line in [
        "[SERVER] 3 rooms:",
        "[SERVER]   #lobby (4)",
        "[SERVER]   #rust (2): lifetimes and borrowing",
        "[SERVER]   #Go (1): simple",
    ] {
        dave.expect_line(line);
    }
    ask(&mut dave, "/who #rust", "[SERVER] 2 in #rust: alice, bob");
    ask(&mut dave, "/who #go", "[SERVER] 1 in #Go: carol");
    ask(
        &mut dave,
        "/who #lobby",
        "[SERVER] 4 in #lobby: alice, bob, carol, dave",
    );
    ask(
        &mut dave,
        "/who",
        "[SERVER] 4 online: alice, bob, carol, dave",
    );
    ask(&mut dave, "/who #nope", &no_such_room("#nope"));
    ask(&mut dave, "/who #no.pe", ROOM_NAME_INVALID);
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        assert_nothing_more(c);
    }
}

// ----- limits -----

#[test]
fn room_names_and_the_rooms_per_client_are_limited_with_reasons() {
    let server = Server::start(&["--rate", "0"]);
    let mut alice = server.named("alice");
    let long = format!("#{}", "x".repeat(33));
    for bad in ["rust", "#", "##x", "#a,b", "#no.dots", "#é", long.as_str()] {
        ask(&mut alice, &format!("/join {bad}"), ROOM_NAME_INVALID);
    }
    ask(
        &mut alice,
        "/join #a b",
        "[SERVER] Error: usage: /join #ROOM",
    );
    ask(&mut alice, "/join", "[SERVER] Error: usage: /join #ROOM");
    // 32 characters after the # is the most.
    join_plain(&mut alice, &format!("#{}", "x".repeat(32)), 1);

    // The lobby, that one and eight more make ten.
    for r in 2..=9 {
        join_plain(&mut alice, &format!("#r{r}"), 1);
    }
    ask(&mut alice, "/join #eleventh", TOO_MANY_ROOMS);
    ask(&mut alice, "/topic #eleventh", &no_such_room("#eleventh"));
    alice.send("/rooms");
    alice.expect_line("[SERVER] 10 rooms:");
    assert_eq!(
        alice.lines_until_quiet(Duration::from_millis(100)).len(),
        10
    );
    // Switching needs no new place.
    ask(
        &mut alice,
        "/join #r5",
        "[#r5] [SERVER] What you type goes to #r5 now",
    );
    ask(
        &mut alice,
        "/join #lobby",
        "[SERVER] What you type goes to #lobby now",
    );
    // Leaving one makes room.
    ask(&mut alice, "/part #r5", &you_left("#r5", LOBBY));
    join_plain(&mut alice, "#eleventh", 1);
    ask(&mut alice, "/join #r5", TOO_MANY_ROOMS);
}

#[test]
fn the_server_refuses_a_new_room_past_its_limit_but_existing_ones_stay_open() {
    const MAX: usize = 1024; // config::rooms::MAX, the lobby included
    const PER: usize = 9; // rooms each client adds besides the lobby
    let server = Server::start(&["--rate", "0", "--announce-limit", "0"]);
    let mut made = 1; // the lobby
    let mut crowd = Vec::new();
    while made < MAX {
        let mut c = server.client();
        let n = PER.min(MAX - made);
        let joins: String = (0..n)
            .map(|i| format!("/join #c{}r{i}\n", crowd.len()))
            .collect();
        c.send_raw(joins.as_bytes());
        for i in 0..n {
            let room = format!("#c{}r{i}", crowd.len());
            c.expect_line(&you_joined(&room, 1));
            c.expect_line(&no_topic(&room));
            c.expect_line(&end_of_history(&room, 0));
        }
        made += n;
        crowd.push(c);
    }
    let last = crowd.last_mut().unwrap();
    ask(last, "/join #one-more", SERVER_ROOMS_FULL);
    ask(last, "/topic #one-more", &no_such_room("#one-more"));
    assert_eq!(join_lines(last, "#c0r0")[0], you_joined("#c0r0", 2));
    // /rooms names the busiest hundred and counts the rest.
    last.send("/rooms");
    last.expect_line(&format!("[SERVER] {MAX} rooms:"));
    let listed = last.lines_until_quiet(Duration::from_millis(100));
    assert_eq!(listed.len(), 101);
    let everyone = crowd.len();
    assert_eq!(
        listed[..2],
        [
            format!("[SERVER]   #lobby ({everyone})"),
            "[SERVER]   #c0r0 (2)".into()
        ]
    );
    assert_eq!(listed[100], format!("[SERVER]   and {} more", MAX - 100));
    // A room emptied is a room free.
    ask(&mut crowd[0], "/part #c0r1", &you_left("#c0r1", "#c0r8"));
    join_plain(crowd.last_mut().unwrap(), "#one-more", 1);
}

// ----- the operator console -----

#[test]
fn console_say_reaches_one_room_and_kick_is_announced_in_every_room_of_the_client() {
    let mut server = Server::start_with_console(&[]);
    let [mut alice, mut bob, mut carol, mut dave] =
        clients(&server, ["alice", "bob", "carol", "dave"]);
    join_plain(&mut alice, "#ops", 1);
    join_plain(&mut bob, "#ops", 2);
    alice.expect_line("[#ops] [SERVER] bob joined");
    ask(&mut bob, "/part #lobby", &you_left(LOBBY, "#ops"));
    for c in [&mut alice, &mut carol, &mut dave] {
        c.expect_line("[SERVER] bob left");
    }

    // /say #room: that room's members only, kept in its history.
    server.console("/say #ops deploy at noon");
    alice.expect_line("[#ops] SERVER: deploy at noon");
    bob.expect_line("[#ops] SERVER: deploy at noon");
    server.expect_out("[#ops] SERVER: deploy at noon");
    assert_nothing_more(&mut carol);
    // Plain console text: everyone, bob too though he left the lobby; in no room's history.
    server.console("hello everyone");
    for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
        c.expect_line("SERVER: hello everyone");
    }
    server.expect_out("SERVER: hello everyone");
    server.console("/say #nope hi");
    server.expect_out(&no_such_room("#nope"));
    server.console("/say hi");
    server.expect_out("[SERVER] Error: usage: /say #ROOM TEXT");

    // /rooms and /who #room answer on standard output only.
    server.console("/rooms");
    server.expect_out("[SERVER] 2 rooms:");
    assert_eq!(server.out_line(), "[SERVER]   #lobby (3)");
    assert_eq!(server.out_line(), "[SERVER]   #ops (2)");
    server.console("/who #ops");
    server.expect_out("[SERVER] 2 in #ops: alice, bob");
    server.console("/who");
    server.expect_out("[SERVER] 4 online: alice, bob, carol, dave");
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_nothing_more(c);
    }

    let seen = join_lines(&mut dave, "#ops");
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[..2], [you_joined("#ops", 3), no_topic("#ops")]);
    assert_replayed(&seen[2], "#ops", "SERVER: deploy at noon");
    assert_eq!(seen[3], end_of_history("#ops", 1));
    alice.expect_line("[#ops] [SERVER] dave joined");
    bob.expect_line("[#ops] [SERVER] dave joined");

    // alice is in #lobby and #ops: each room hears she is gone, once.
    server.console("/kick alice");
    assert_eq!(
        alice.read_to_close(),
        ["[SERVER] You have been kicked by the operator."]
    );
    let gone = "[SERVER] Client: alice disconnected (kicked by operator)";
    let gone_ops = format!("[#ops] {gone}");
    carol.expect_line(gone);
    bob.expect_line(&gone_ops);
    dave.expect_line(gone);
    dave.expect_line(&gone_ops);
    server.expect_out(gone);
    server.expect_out(&gone_ops);
    for c in [&mut bob, &mut carol, &mut dave] {
        assert_nothing_more(c);
    }
}

// ----- UDP -----

#[test]
fn a_datagram_goes_to_the_lobby_only() {
    let server = Server::start(&["--udp"]);
    let udp = server.udp_addr();
    let [mut alice, mut bob] = clients(&server, ["alice", "bob"]);
    join_plain(&mut bob, "#quiet", 1);
    ask(&mut bob, "/part #lobby", &you_left(LOBBY, "#quiet"));
    alice.expect_line("[SERVER] bob left");

    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(common::WAIT)).unwrap();
    let from = peer.local_addr().unwrap();
    peer.send_to(b"hola lobby\n", udp).unwrap();
    let mut answer = [0u8; 512];
    let (n, _) = peer
        .recv_from(&mut answer)
        .expect("no answer to the datagram");
    assert_eq!(&answer[..n], b"received: hola lobby\n");

    let said = format!("{from}: hola lobby");
    alice.expect_line(&said);
    server.expect_out(&said);
    assert_nothing_more(&mut bob);
    // It is a lobby message like any other: in the lobby's history.
    alice.send("/history");
    assert_replayed(&alice.line(), LOBBY, &said);
    alice.expect_line(&end_of_history(LOBBY, 1));
}

// ----- big rooms -----

#[test]
fn the_announce_limit_applies_to_each_room_by_its_own_size() {
    let server = Server::start(&["--announce-limit", "2"]);
    // Five guests; past two, arrivals in the lobby went to stdout only. Read what came.
    let mut c: Vec<Client> = (0..5).map(|_| server.client()).collect();
    for client in c.iter_mut() {
        drain(client);
    }
    let [g1, g2, g3, g4, g5] = &mut c[..] else {
        unreachable!()
    };

    join_plain(g1, "#big", 1);
    join_plain(g2, "#big", 2);
    g1.expect_line("[#big] [SERVER] guest2 joined"); // a room of 2: announced
    join_plain(g3, "#big", 3); // a room of 3: stdout only
    server.expect_out("[#big] [SERVER] guest3 joined");
    join_plain(g4, "#small", 1);
    join_plain(g5, "#small", 2);
    g4.expect_line("[#small] [SERVER] guest5 joined");
    g3.send("hi big");
    g1.expect_line("[#big] guest3: hi big"); // messages flow whatever the size
    g2.expect_line("[#big] guest3: hi big");
    for client in [&mut *g1, &mut *g2, &mut *g4, &mut *g5] {
        assert_nothing_more(client);
    }

    // A leave counts the leaver: out of a room of 3, stdout only; out of a room of 2, told.
    ask(g3, "/part", &you_left("#big", LOBBY));
    server.expect_out("[#big] [SERVER] guest3 left");
    assert_nothing_more(g1);
    ask(g2, "/part", &you_left("#big", LOBBY));
    g1.expect_line("[#big] [SERVER] guest2 left");
}

// ----- replay and flow control -----

/// Filler lines are about 190 bytes: 50 of them fit in a room's history (16 KiB with 64 bytes
/// of overhead each) and in one replay.
fn filler_text(room: usize, i: usize) -> String {
    format!("r{room} m{i:02} {}", "f".repeat(180))
}

/// Nine rooms #r1..#r9, each with 50 messages of history from `filler` (who stays in them).
fn nine_full_rooms(server: &Server) -> Client {
    let mut filler = server.named("filler");
    let mut all = String::new();
    for r in 1..=9 {
        all.push_str(&format!("/join #r{r}\n"));
        for i in 0..50 {
            all.push_str(&filler_text(r, i));
            all.push('\n');
        }
    }
    filler.send_raw(all.as_bytes());
    filler.expect_line(&you_joined("#r1", 1));
    filler.expect_eventually(&end_of_history("#r9", 0));
    assert_nothing_more(&mut filler); // every message is in before anyone joins
    filler
}

/// A client whose receive buffer is tiny, so that what it has not read stays in the server.
fn small_window_client(server: &Server) -> Client {
    let opts = SockOpts {
        rcvbuf: Some(4096),
        ..SockOpts::default()
    };
    Server::greet(Client::connect_with(server.addr, opts).expect("connect"))
}

/// Reads lines slowly, pausing `pause` after every `per` lines, until `ends` replays have
/// ended. Fails, with what the server printed about the client, if they never do.
fn read_slowly(
    server: &Server,
    c: &mut Client,
    per: usize,
    pause: Duration,
    ends: usize,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut ended = 0;
    while ended < ends {
        let asked = Instant::now();
        let Some(line) = c.try_line(common::WAIT) else {
            let what = if asked.elapsed() < common::WAIT {
                "the server closed the connection"
            } else {
                "nothing more came"
            };
            let mut said = Vec::new();
            while let Some(out) = server.try_out_line(Duration::from_millis(100)) {
                if out.starts_with(&format!("[SERVER] Client: {} disconnected", c.name)) {
                    said.push(out);
                }
            }
            panic!(
                "{}: {what} after {ended} of {ends} replays ({} lines); last: {:?}; \
                 stdout: {said:?}",
                c.name,
                lines.len(),
                &lines[lines.len().saturating_sub(1)..]
            );
        };
        ended += usize::from(line.contains("[SERVER] End of history ("));
        lines.push(line);
        if lines.len() % per == 0 {
            std::thread::sleep(pause);
        }
    }
    lines
}

#[test]
fn joining_ten_full_rooms_while_reading_slowly_is_paced_not_dropped() {
    // The nine replays are about 100 KB, more than --max-pending (64 KiB): the server must
    // pace them by what the reader takes, not queue them all and drop it as too slow.
    let mut server = Server::start_with_console(&["--rate", "0", "--max-pending", "65536"]);
    let mut filler = nine_full_rooms(&server);
    let mut reader = small_window_client(&server);
    filler.expect_prefix("[SERVER] Client: guest2 connected!");

    let joins: String = (1..=9).map(|r| format!("/join #r{r}\n")).collect();
    reader.send_raw(joins.as_bytes());
    // About 100 KB/s.
    let lines = read_slowly(&server, &mut reader, 4, Duration::from_millis(10), 9);
    assert_eq!(lines.len(), 9 * 53);
    for (r, replay) in (1..=9).zip(lines.chunks(53)) {
        let room = format!("#r{r}");
        assert_eq!(replay[0], you_joined(&room, 2));
        assert_eq!(replay[1], no_topic(&room));
        for (i, line) in replay[2..52].iter().enumerate() {
            assert_replayed(line, &room, &format!("filler: {}", filler_text(r, i)));
        }
        assert_eq!(replay[52], end_of_history(&room, 50));
    }

    // Still connected, still served, and so is everyone else.
    assert_nothing_more(&mut reader);
    reader.send("caught up");
    filler.expect_eventually("[#r9] guest2: caught up");
    assert_nobody_dropped(&mut server);
}

#[test]
fn asking_for_history_again_and_again_while_reading_is_paced_not_dropped() {
    // 500 replays of about 11 KB: far more than --max-pending (256 KiB) and than the kernel's
    // buffers. The reader reads all the time, a couple of MB/s; the server must take its
    // commands only as fast as it reads their answers, never queue it to a drop (as
    // config::rooms::replay_bytes promises: no replay takes a reading client past the cap).
    const REPLAYS: usize = 500;
    let mut server = Server::start_with_console(&["--rate", "0"]);
    let mut filler = nine_full_rooms(&server);
    let mut reader = small_window_client(&server);
    filler.expect_prefix("[SERVER] Client: guest2 connected!");
    let mut asks: String = (1..=9).map(|r| format!("/join #r{r}\n")).collect();
    for i in 0..REPLAYS {
        asks.push_str(&format!("/history #r{}\n", i % 9 + 1));
    }
    reader.send_raw(asks.as_bytes());
    let lines = read_slowly(
        &server,
        &mut reader,
        32,
        Duration::from_millis(4),
        9 + REPLAYS,
    );
    let ends: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("[SERVER] End of history ("))
        .collect();
    assert!(
        ends.iter()
            .all(|l| l.ends_with("] [SERVER] End of history (50 messages)")),
        "a replay was cut short"
    );
    assert_eq!(lines.len(), 9 * 53 + REPLAYS * 51);

    assert_nothing_more(&mut reader);
    assert_nobody_dropped(&mut server);
}

/// The server is up and, by its console's `/stats`, has dropped nobody as too slow.
fn assert_nobody_dropped(server: &mut Server) {
    server.console("/stats");
    let drops = server.expect_out_prefix("[SERVER]   dropped ");
    assert!(
        drops.starts_with("[SERVER]   dropped 0 too slow,"),
        "{drops}"
    );
    assert!(server.exited().is_none(), "the server exited");
}
