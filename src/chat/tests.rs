//! The chat driven with no sockets: each test says what happened and checks the events, as the
//! line codec renders them, and who gets them.

use super::*;
use crate::claims::{Mode, Outcome};
use crate::codec::line;
use crate::command::parse;

/// When every test's messages are said: 2026-11-28 20:05:09 UTC.
const AT: u64 = 1_795_896_309;

fn limits(announce: usize, history: usize) -> Limits {
    Limits {
        announce,
        history,
        replay_bytes: rooms::HISTORY_BYTES,
        node: None,
    }
}

fn chat() -> Chat {
    Chat::new("Welcome!", limits(100, 50))
}

/// Clients 1..=n, joined, with what that printed forgotten.
fn with_members(n: usize) -> Chat {
    let mut c = chat();
    for id in 1..=n {
        c.join(id, false, &mut Vec::new());
    }
    c
}

/// What a line from client `id` produces, rendered.
fn say(c: &mut Chat, id: ClientId, line: &str) -> Vec<(To, String)> {
    let mut out = Vec::new();
    c.handle(id, parse(line), AT, &mut out);
    rendered(out)
}

fn console(c: &mut Chat, line: &str) -> Vec<(To, String)> {
    let mut out = Vec::new();
    c.console(command::parse_console(line), AT, &mut out);
    rendered(out)
}

fn rendered(out: Vec<Delivery>) -> Vec<(To, String)> {
    out.into_iter()
        .map(|d| (d.to, line::render(&d.event)))
        .collect()
}

fn out(to: To, line: &str) -> (To, String) {
    (to, line.to_owned())
}

fn room(c: &Chat, name: &str) -> RoomId {
    c.find(name).unwrap()
}

fn in_room(room: RoomId, except: ClientId) -> To {
    To::Room {
        room,
        except: Some(except),
    }
}

const LOBBY: To = To::Room {
    room: LOBBY_ID,
    except: None,
};

// ----- one room: what loopchat did before rooms, byte for byte -----

#[test]
fn join_welcomes_and_announces() {
    let mut c = with_members(1);
    let mut o = Vec::new();
    c.join(2, false, &mut o);
    assert_eq!(
        rendered(o),
        [
            out(To::One(2), "Welcome!"),
            out(To::One(2), &notice::intro("guest2")),
            out(in_room(LOBBY_ID, 2), "[SERVER] Client: guest2 connected!"),
        ]
    );
}

#[test]
fn messages_go_to_the_others_in_the_lobby() {
    let mut c = with_members(2);
    assert_eq!(
        say(&mut c, 1, "hi"),
        [out(in_room(LOBBY_ID, 1), "guest1: hi")]
    );
    assert_eq!(
        say(&mut c, 2, "/me waves"),
        [out(in_room(LOBBY_ID, 2), "* guest2 waves")]
    );
}

#[test]
fn names_are_unique_regardless_of_case_and_checked_first() {
    let mut c = with_members(2);
    say(&mut c, 1, "/nick Alice");
    assert_eq!(
        say(&mut c, 2, "/nick alice"),
        [out(To::One(2), "[SERVER] Error: name alice is taken")]
    );
    assert_eq!(
        say(&mut c, 2, "/nick server"),
        [out(To::One(2), "[SERVER] Error: name server is reserved")]
    );
    assert_eq!(
        say(&mut c, 2, "/nick a.b"),
        [out(To::One(2), notice::NAME_INVALID)]
    );
    assert_eq!(
        say(&mut c, 1, "/nick ALICE"),
        [
            out(To::One(1), "[SERVER] You are now known as ALICE"),
            out(in_room(LOBBY_ID, 1), "[SERVER] Alice is now known as ALICE"),
        ]
    );
    assert_eq!(c.directory.find("alice"), Some(1));
}

#[test]
fn private_messages_and_who() {
    let mut c = with_members(3);
    say(&mut c, 2, "/nick bob");
    assert_eq!(
        say(&mut c, 1, "/msg BOB psst"),
        [
            out(To::One(2), "[PM from guest1] psst"),
            out(To::One(1), "[PM to bob] psst")
        ]
    );
    assert_eq!(
        say(&mut c, 1, "/msg nobody x"),
        [out(
            To::One(1),
            "[SERVER] Error: no such user: nobody (try /who)"
        )]
    );
    assert_eq!(
        say(&mut c, 1, "/who"),
        [out(To::One(1), "[SERVER] 3 online: bob, guest1, guest3")]
    );
}

#[test]
fn quit_says_bye_and_leaves() {
    let mut c = with_members(2);
    let mut o = Vec::new();
    assert_eq!(c.handle(1, parse("EXIT()"), AT, &mut o), After::Close);
    assert_eq!(
        rendered(o),
        [
            out(To::One(1), notice::BYE),
            out(
                in_room(LOBBY_ID, 1),
                "[SERVER] Client: guest1 disconnected."
            )
        ]
    );
    assert!(!c.contains(1));
    assert_eq!(c.members(LOBBY_ID).unwrap().collect::<Vec<_>>(), [2]);
}

#[test]
fn big_rooms_announce_to_the_transcript_only() {
    let mut c = Chat::new("hi", limits(2, 50));
    let mut o = Vec::new();
    for id in 1..=3 {
        c.join(id, false, &mut o);
    }
    c.leave(3, Some("idle for 5 s"), &mut o);
    c.leave(2, None, &mut o);
    let announcements: Vec<To> = rendered(o)
        .into_iter()
        .filter(|(_, line)| line.starts_with("[SERVER] Client:"))
        .map(|(to, _)| to)
        .collect();
    assert_eq!(
        announcements,
        [
            in_room(LOBBY_ID, 1),
            in_room(LOBBY_ID, 2),
            To::Transcript,
            To::Transcript,
            in_room(LOBBY_ID, 2)
        ]
    );
}

#[test]
fn console_talks_to_everyone_kicks_and_shuts_down() {
    let mut c = with_members(2);
    assert_eq!(console(&mut c, "hola"), [out(To::All, "SERVER: hola")]);
    let mut o = Vec::new();
    assert_eq!(
        c.console(ConsoleCommand::Kick("GUEST2"), AT, &mut o),
        ConsoleAfter::Close(2)
    );
    assert_eq!(
        rendered(o),
        [
            out(To::One(2), notice::KICKED),
            out(
                in_room(LOBBY_ID, 2),
                "[SERVER] Client: guest2 disconnected (kicked by operator)"
            ),
        ]
    );
    assert_eq!(
        c.console(ConsoleCommand::Shutdown, AT, &mut Vec::new()),
        ConsoleAfter::Shutdown
    );
}

#[test]
fn udp_posts_go_to_the_lobby() {
    let mut c = with_members(1);
    say(&mut c, 1, "/join #rust");
    let mut o = Vec::new();
    c.relay("127.0.0.1:9".parse().unwrap(), "by udp", AT, &mut o);
    assert_eq!(rendered(o), [out(LOBBY, "127.0.0.1:9: by udp")]);
}

// ----- rooms -----

#[test]
fn joining_a_room_shows_topic_history_and_the_end_of_the_replay() {
    let mut c = with_members(3);
    assert_eq!(
        say(&mut c, 1, "/join #Rust"),
        [
            out(
                To::One(1),
                "[#Rust] [SERVER] You joined #Rust (1 here); what you type goes to #Rust"
            ),
            out(To::One(1), "[#Rust] [SERVER] No topic is set"),
            out(To::One(1), "[#Rust] [SERVER] End of history (0 messages)"),
            // Nobody else is there: the transcript alone has it.
            out(in_room(1, 1), "[#Rust] [SERVER] guest1 joined"),
        ]
    );
    let rust = room(&c, "#rust");
    say(&mut c, 1, "/topic ownership");
    assert_eq!(
        say(&mut c, 1, "first"),
        [out(in_room(rust, 1), "[#Rust] guest1: first")]
    );
    say(&mut c, 1, "/me thinks");
    assert_eq!(
        say(&mut c, 2, "/join #RUST"),
        [
            out(
                To::One(2),
                "[#Rust] [SERVER] You joined #Rust (2 here); what you type goes to #Rust"
            ),
            out(To::One(2), "[#Rust] [SERVER] Topic: ownership"),
            out(To::One(2), "[#Rust] [history 20:05:09] guest1: first"),
            out(To::One(2), "[#Rust] [history 20:05:09] * guest1 thinks"),
            out(To::One(2), "[#Rust] [SERVER] End of history (2 messages)"),
            out(in_room(rust, 2), "[#Rust] [SERVER] guest2 joined"),
        ]
    );
    // Messages now go to #Rust; the lobby does not see them, and keeps its own.
    assert_eq!(
        say(&mut c, 2, "hi"),
        [out(in_room(rust, 2), "[#Rust] guest2: hi")]
    );
    assert_eq!(
        say(&mut c, 3, "lobby"),
        [out(in_room(LOBBY_ID, 3), "guest3: lobby")]
    );
    let members = |r| {
        let mut m: Vec<ClientId> = c.members(r).unwrap().collect();
        m.sort_unstable();
        m
    };
    assert_eq!(members(rust), [1, 2]);
    assert_eq!(
        members(LOBBY_ID),
        [1, 2, 3],
        "joining does not leave the lobby"
    );
}

#[test]
fn join_of_a_room_one_is_in_switches_to_it() {
    let mut c = with_members(1);
    say(&mut c, 1, "/join #a");
    let a = room(&c, "#a");
    assert_eq!(
        say(&mut c, 1, "/join #lobby"),
        [out(To::One(1), "[SERVER] What you type goes to #lobby now")]
    );
    assert_eq!(
        say(&mut c, 1, "x"),
        [out(in_room(LOBBY_ID, 1), "guest1: x")]
    );
    say(&mut c, 1, "/join #A");
    assert_eq!(say(&mut c, 1, "y"), [out(in_room(a, 1), "[#a] guest1: y")]);
}

#[test]
fn part_leaves_announces_and_empty_rooms_vanish() {
    let mut c = with_members(2);
    say(&mut c, 1, "/join #a");
    say(&mut c, 2, "/join #a");
    say(&mut c, 1, "before");
    let a = room(&c, "#a");
    assert_eq!(
        say(&mut c, 2, "/part"),
        [
            out(
                To::One(2),
                "[#a] [SERVER] You left #a; what you type goes to #lobby now"
            ),
            out(in_room(a, 2), "[#a] [SERVER] guest2 left"),
        ]
    );
    assert_eq!(
        say(&mut c, 2, "back"),
        [out(in_room(LOBBY_ID, 2), "guest2: back")]
    );
    assert_eq!(
        say(&mut c, 2, "/part #a"),
        [out(
            To::One(2),
            "[SERVER] Error: you are not in #a (try /join #a)"
        )]
    );
    say(&mut c, 1, "/part #a");
    assert_eq!(
        say(&mut c, 2, "/topic #a"),
        [out(
            To::One(2),
            "[SERVER] Error: no such room: #a (try /rooms)"
        )]
    );
    // Made again, it starts empty: its history went with it.
    let joined = say(&mut c, 2, "/join #a");
    assert_eq!(joined[2].1, "[#a] [SERVER] End of history (0 messages)");
    assert_eq!(
        say(&mut c, 1, "/part #lobby"),
        [out(To::One(1), notice::LAST_ROOM)],
        "nobody is left with no room"
    );
    say(&mut c, 2, "/part #lobby");
    assert_eq!(
        c.members(LOBBY_ID).unwrap().collect::<Vec<_>>(),
        [1],
        "the lobby stays"
    );
    assert_eq!(
        say(&mut c, 2, "/part"),
        [out(To::One(2), notice::LAST_ROOM)]
    );
}

#[test]
fn room_names_and_limits_are_refused_with_the_reason() {
    let mut c = with_members(1);
    for bad in ["rust", "#", "#a b", "#é", &format!("#{}", "x".repeat(33))] {
        let line = format!("/join {bad}");
        let refused = say(&mut c, 1, &line);
        let expect = if bad.contains(' ') {
            notice::usage(command::USAGE_JOIN)
        } else {
            notice::ROOM_NAME_INVALID.to_owned()
        };
        assert_eq!(refused, [(To::One(1), expect)], "{bad:?}");
    }
    for n in 1..PER_CLIENT {
        say(&mut c, 1, &format!("/join #r{n}"));
    }
    assert_eq!(c.rooms_of(1).count(), PER_CLIENT);
    assert_eq!(
        say(&mut c, 1, "/join #more"),
        [out(To::One(1), &notice::too_many_rooms(PER_CLIENT))]
    );
    // Rooms on the server: the last client to make one is refused.
    let mut id = 2;
    while c.rooms.len() < rooms::MAX {
        c.join(id, false, &mut Vec::new());
        let line = format!("/join #s{}", c.rooms.len());
        say(&mut c, id, &line);
        id += 1;
    }
    c.join(id, false, &mut Vec::new());
    assert_eq!(
        say(&mut c, id, "/join #onemore"),
        [out(To::One(id), notice::SERVER_ROOMS_FULL)]
    );
    assert_eq!(
        say(&mut c, id, "/join #s10").len(),
        4,
        "joining one that exists works"
    );
}

#[test]
fn topics_are_shown_to_anyone_and_set_by_members() {
    let mut c = with_members(3);
    say(&mut c, 1, "/join #a");
    say(&mut c, 2, "/join #a");
    let a = room(&c, "#a");
    assert_eq!(
        say(&mut c, 1, "/topic #a #1 in borrowing"),
        [
            out(
                To::One(1),
                "[#a] [SERVER] guest1 set the topic: #1 in borrowing"
            ),
            out(
                in_room(a, 1),
                "[#a] [SERVER] guest1 set the topic: #1 in borrowing"
            ),
        ]
    );
    assert_eq!(
        say(&mut c, 3, "/topic #a"),
        [out(To::One(3), "[#a] [SERVER] Topic: #1 in borrowing")]
    );
    assert_eq!(
        say(&mut c, 3, "/topic #a mine now"),
        [out(
            To::One(3),
            "[SERVER] Error: you are not in #a (try /join #a)"
        )]
    );
    assert_eq!(
        say(&mut c, 3, "/topic"),
        [out(To::One(3), "[SERVER] No topic is set")]
    );
    assert_eq!(
        say(&mut c, 3, "/topic #nope"),
        [out(
            To::One(3),
            "[SERVER] Error: no such room: #nope (try /rooms)"
        )]
    );
}

#[test]
fn rooms_and_who_in_a_room() {
    let mut c = with_members(3);
    say(&mut c, 1, "/join #b");
    say(&mut c, 2, "/join #b");
    say(&mut c, 3, "/join #a");
    say(&mut c, 3, "/topic lambdas");
    assert_eq!(
        say(&mut c, 1, "/rooms"),
        [
            out(To::One(1), "[SERVER] 3 rooms:"),
            out(To::One(1), "[SERVER]   #lobby (3)"),
            out(To::One(1), "[SERVER]   #b (2)"),
            out(To::One(1), "[SERVER]   #a (1): lambdas"),
        ]
    );
    assert_eq!(
        say(&mut c, 3, "/who #B"),
        [out(To::One(3), "[SERVER] 2 in #b: guest1, guest2")]
    );
    assert_eq!(
        console(&mut c, "/who #a"),
        [out(To::Transcript, "[SERVER] 1 in #a: guest3")]
    );
    assert_eq!(console(&mut c, "/rooms").len(), 4);
}

#[test]
fn rooms_beyond_the_listed_are_counted() {
    let mut c = chat();
    for id in 1..=rooms::LISTED + 5 {
        c.join(id, false, &mut Vec::new());
        say(&mut c, id, &format!("/join #r{id}"));
    }
    let lines = say(&mut c, 1, "/rooms");
    assert_eq!(lines.len(), 1 + rooms::LISTED + 1);
    assert_eq!(lines[0].1, format!("[SERVER] {} rooms:", rooms::LISTED + 6));
    assert_eq!(lines.last().unwrap().1, "[SERVER]   and 6 more");
}

#[test]
fn renames_and_departures_reach_every_room_of_the_client() {
    let mut c = with_members(2);
    say(&mut c, 1, "/join #a");
    say(&mut c, 2, "/join #a");
    let a = room(&c, "#a");
    assert_eq!(
        say(&mut c, 1, "/nick ann"),
        [
            out(To::One(1), "[SERVER] You are now known as ann"),
            out(in_room(LOBBY_ID, 1), "[SERVER] guest1 is now known as ann"),
            out(in_room(a, 1), "[#a] [SERVER] guest1 is now known as ann"),
        ]
    );
    let mut o = Vec::new();
    c.leave(1, Some("idle for 5 s"), &mut o);
    assert_eq!(
        rendered(o),
        [
            out(
                in_room(LOBBY_ID, 1),
                "[SERVER] Client: ann disconnected (idle for 5 s)"
            ),
            out(
                in_room(a, 1),
                "[#a] [SERVER] Client: ann disconnected (idle for 5 s)"
            ),
        ]
    );
    assert!(c.members(a).unwrap().eq([2]));
}

#[test]
fn the_console_speaks_to_one_room() {
    let mut c = with_members(1);
    say(&mut c, 1, "/join #a");
    let a = room(&c, "#a");
    assert_eq!(
        console(&mut c, "/say #A hello room"),
        [out(
            To::Room {
                room: a,
                except: None
            },
            "[#a] SERVER: hello room"
        )]
    );
    assert_eq!(
        console(&mut c, "/say #zz hi"),
        [out(
            To::Transcript,
            "[SERVER] Error: no such room: #zz (try /rooms)"
        )]
    );
    // It is kept for those who join later.
    let replay = say(&mut c, 1, "/history");
    assert_eq!(replay[0].1, "[#a] [history 20:05:09] SERVER: hello room");
    assert_eq!(replay[1].1, "[#a] [SERVER] End of history (1 message)");
}

// ----- history -----

#[test]
fn history_keeps_messages_not_noise_and_replays_on_request() {
    let mut c = with_members(2);
    say(&mut c, 1, "one");
    say(&mut c, 1, "/nick ann");
    say(&mut c, 2, "/me two");
    c.relay(
        "127.0.0.1:9".parse().unwrap(),
        "three",
        AT + 61,
        &mut Vec::new(),
    );
    say(&mut c, 1, "/msg guest2 private");
    assert_eq!(
        say(&mut c, 2, "/history #lobby"),
        [
            out(To::One(2), "[history 20:05:09] guest1: one"),
            out(To::One(2), "[history 20:05:09] * guest2 two"),
            out(To::One(2), "[history 20:06:10] 127.0.0.1:9: three"),
            out(To::One(2), "[SERVER] End of history (3 messages)"),
        ]
    );
    assert_eq!(
        say(&mut c, 2, "/history #nope"),
        [out(
            To::One(2),
            "[SERVER] Error: no such room: #nope (try /rooms)"
        )]
    );
}

#[test]
fn history_is_bounded_by_k_and_off_at_zero() {
    let mut c = Chat::new("hi", limits(100, 2));
    c.join(1, false, &mut Vec::new());
    for n in 0..5 {
        say(&mut c, 1, &format!("m{n}"));
    }
    let replay = say(&mut c, 1, "/history");
    let lines: Vec<&str> = replay.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        lines,
        [
            "[history 20:05:09] guest1: m3",
            "[history 20:05:09] guest1: m4",
            "[SERVER] End of history (2 messages)"
        ]
    );
    let mut c = Chat::new("hi", limits(100, 0));
    c.join(1, false, &mut Vec::new());
    say(&mut c, 1, "lost");
    assert_eq!(
        say(&mut c, 1, "/history"),
        [out(To::One(1), "[SERVER] End of history (0 messages)")]
    );
}

#[test]
fn a_replay_is_bounded_in_bytes() {
    let mut c = Chat::new(
        "hi",
        Limits {
            replay_bytes: 3 * (6 + 190 + rooms::HISTORY_ENTRY_OVERHEAD),
            ..limits(100, 50)
        },
    );
    c.join(1, false, &mut Vec::new());
    for _ in 0..50 {
        say(&mut c, 1, &"x".repeat(190));
    }
    let replay = say(&mut c, 1, "/history");
    assert_eq!(replay.len(), 4);
    assert_eq!(replay[3].1, "[SERVER] End of history (3 messages)");
}

// ----- quiet clients (the web door open, greeted before saying anything) -----

#[test]
fn a_quiet_client_is_nobody_until_it_speaks() {
    let mut c = with_members(1);
    let mut o = Vec::new();
    c.join(2, true, &mut o);
    let told: Vec<(To, String)> = rendered(o).into_iter().skip(2).collect();
    assert_eq!(
        told,
        [out(To::Transcript, "[SERVER] Client: guest2 connected!")],
        "the operator sees it, the room does not"
    );
    assert_eq!(
        say(&mut c, 1, "/who"),
        [out(To::One(1), "[SERVER] 1 online: guest1")]
    );
    assert_eq!(say(&mut c, 1, "/rooms")[1].1, "[SERVER]   #lobby (1)");
    // It reads the lobby all the same.
    assert!(c.members(LOBBY_ID).unwrap().any(|id| id == 2));

    // Its first line makes it known, to the members only (the transcript had it).
    let mut o = Vec::new();
    c.receive(2, b"hello", AT, &mut o);
    assert_eq!(
        rendered(o),
        [
            out(
                To::Members {
                    room: LOBBY_ID,
                    except: Some(2)
                },
                "[SERVER] Client: guest2 connected!"
            ),
            out(in_room(LOBBY_ID, 2), "guest2: hello"),
        ]
    );
    assert_eq!(say(&mut c, 1, "/rooms")[1].1, "[SERVER]   #lobby (2)");

    // One that leaves quiet leaves on the transcript only.
    c.join(3, true, &mut Vec::new());
    let mut o = Vec::new();
    c.leave(3, None, &mut o);
    assert_eq!(
        rendered(o),
        [out(To::Transcript, "[SERVER] Client: guest3 disconnected.")]
    );
    assert_eq!(say(&mut c, 1, "/rooms")[1].1, "[SERVER]   #lobby (2)");
}

// ----- nodes of a cluster: gossip between two chats, as the bus would carry it -----

/// A node of a cluster whose bus has no JetStream: names are qualified by node.
fn node(name: &str) -> Chat {
    let mut c = Chat::new(
        "Welcome!",
        Limits {
            node: Some(name.to_owned()),
            ..limits(100, 50)
        },
    );
    c.names(Outcome::Mode(Mode::Qualified), &mut Vec::new());
    c
}

/// Carries what `from` (node `from_node`) has for the other nodes to `to`, its presence
/// included if it changed: what `to` delivers to its members.
fn carry(from: &mut Chat, from_node: &str, to: &mut Chat) -> Vec<(To, String)> {
    let mut gossip = from.take_gossip();
    if from.presence_changed() {
        gossip.extend(crate::cluster::presence_parts(1, from.presence()));
    }
    let mut out = Vec::new();
    for g in gossip {
        to.gossip(from_node, g, AT, &mut out);
    }
    rendered(out)
}

#[test]
fn nodes_share_rooms_names_and_private_messages() {
    let (mut a, mut b) = (node("a"), node("b"));
    a.join(1, false, &mut Vec::new());
    b.join(1, false, &mut Vec::new());
    say(&mut a, 1, "/nick alice");
    say(&mut b, 1, "/nick bob");
    carry(&mut a, "a", &mut b);
    carry(&mut b, "b", &mut a);

    // A line in the lobby reaches the other node's members, under a name that says its node.
    say(&mut a, 1, "hola");
    assert_eq!(carry(&mut a, "a", &mut b), [out(LOBBY, "alice@a: hola")]);
    assert_eq!(
        say(&mut b, 1, "/who"),
        [out(To::One(1), "[SERVER] 2 online: alice@a, bob@b")]
    );

    // A room made on one node is known on the other, with its topic and history.
    say(&mut a, 1, "/join #rust");
    say(&mut a, 1, "/topic borrowing");
    say(&mut a, 1, "first");
    carry(&mut a, "a", &mut b);
    let rooms = say(&mut b, 1, "/rooms");
    assert!(
        rooms.contains(&out(To::One(1), "[SERVER]   #rust (1): borrowing")),
        "{rooms:?}"
    );
    let joined = say(&mut b, 1, "/join #rust");
    assert!(
        joined
            .iter()
            .any(|(_, l)| l == "[#rust] [history 20:05:09] alice@a: first"),
        "{joined:?}"
    );
    assert!(joined.contains(&out(
        To::One(1),
        "[#rust] [SERVER] You joined #rust (2 here); what you type goes to #rust"
    )));
    let heard = carry(&mut b, "b", &mut a);
    assert!(
        heard.contains(&out(
            To::Room {
                room: room(&a, "#rust"),
                except: None
            },
            "[#rust] [SERVER] bob@b joined"
        )),
        "{heard:?}"
    );

    // Private messages find their node; a name on no node is nobody.
    assert_eq!(
        say(&mut a, 1, "/msg BOB@b psst"),
        [out(To::One(1), "[PM to bob@b] psst")]
    );
    assert_eq!(
        carry(&mut a, "a", &mut b),
        [out(To::One(1), "[PM from alice@a] psst")]
    );
    assert_eq!(
        say(&mut a, 1, "/msg carol@c hi"),
        [out(
            To::One(1),
            "[SERVER] Error: no such user: carol@c (try /who)"
        )]
    );

    // A node that is gone takes its people with it; a room only they were in goes too.
    say(&mut a, 1, "/join #solo");
    carry(&mut a, "a", &mut b);
    assert!(b.find("#solo").is_ok());
    b.forget_node("a");
    assert_eq!(
        say(&mut b, 1, "/who"),
        [out(To::One(1), "[SERVER] 1 online: bob@b")]
    );
    assert!(b.find("#solo").is_err(), "nobody is in #solo any more");
    assert!(b.find("#rust").is_ok(), "bob is still in #rust");
}

#[test]
fn a_node_alone_tells_nobody() {
    let mut c = with_members(2);
    say(&mut c, 1, "hi");
    assert!(c.take_gossip().is_empty());
    assert!(!c.presence_changed());
}

#[test]
fn a_claimed_name_is_given_only_once_the_bus_grants_it() {
    let mut c = Chat::new(
        "Welcome!",
        Limits {
            node: Some("a".to_owned()),
            ..limits(100, 50)
        },
    );
    c.join(1, false, &mut Vec::new());
    c.join(2, false, &mut Vec::new());
    assert_eq!(
        say(&mut c, 1, "/nick alice"),
        [out(To::One(1), notice::NAMES_UNCHECKED)],
        "not before the bus has said how names are kept"
    );
    c.names(Outcome::Mode(Mode::Claimed), &mut Vec::new());
    assert!(say(&mut c, 1, "/nick alice").is_empty(), "asked of the bus");
    assert_eq!(c.take_claims(), (vec![(1, "alice".to_owned())], vec![]));
    let mut o = Vec::new();
    c.names(
        Outcome::Claimed {
            id: 1,
            name: "alice".into(),
        },
        &mut o,
    );
    assert_eq!(
        rendered(o),
        [
            out(To::One(1), "[SERVER] You are now known as alice"),
            out(
                in_room(LOBBY_ID, 1),
                "[SERVER] guest1@a is now known as alice"
            ),
        ]
    );
    // Refused: another node has it.
    say(&mut c, 2, "/nick bob");
    let mut o = Vec::new();
    c.names(
        Outcome::Refused {
            id: 2,
            name: "bob".into(),
            taken: true,
        },
        &mut o,
    );
    assert_eq!(
        rendered(o),
        [out(To::One(2), "[SERVER] Error: name bob is taken")]
    );
    // Leaving gives the name back; a guest name was never claimed.
    c.take_claims();
    c.leave(1, None, &mut Vec::new());
    c.leave(2, None, &mut Vec::new());
    assert_eq!(c.take_claims(), (vec![], vec!["alice".to_owned()]));
}
