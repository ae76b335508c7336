//! Several loopchat servers sharing their rooms through a real nats-server, started here: lines
//! crossing nodes both ways in every room and in each sender's order, names claimed across
//! nodes (and qualified by node where the bus has no JetStream), private messages across nodes,
//! the bus killed and restarted mid-chat, a node killed with SIGKILL. Each test prints
//! `SKIPPED` and passes where nats-server is not installed.

mod common;

use std::time::{Duration, Instant};

use common::nats::NatsServer;
use common::{Client, Launch, Server, WAIT};

/// A node of the cluster on `bus`.
fn node(bus: &NatsServer, name: &str) -> Server {
    let url = bus.url();
    Launch::new(&["--nats", &url, "--node", name, "--rate", "0"]).start()
}

/// A client of `server` named `nick`: on a node, `nick@node`.
fn named(server: &Server, nick: &str) -> Client {
    let mut client = server.client();
    client.send(&format!("/nick {nick}"));
    let line = client.expect_prefix("[SERVER] You are now known as ");
    client.name = line["[SERVER] You are now known as ".len()..].to_owned();
    client
}

/// The answer to a `/nick`, past the other lines of the room.
fn nick_answer(client: &mut Client) -> String {
    loop {
        let line = client.line();
        if line.starts_with("[SERVER] You are now known as ")
            || line.starts_with("[SERVER] Error: ")
        {
            return line;
        }
    }
}

/// Tries `attempt` until it gives `Ok`, `pause` apart; once `deadline` has passed, fails with
/// what the last try gave.
fn retry(deadline: Instant, pause: Duration, mut attempt: impl FnMut() -> Result<(), String>) {
    loop {
        let Err(why) = attempt() else { return };
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(pause);
    }
}

/// Sends `command` on `client` until the server's answer starts with `want` (within 3 ×
/// [`WAIT`]); `never` says what failed, given the last answer.
fn until_answer(client: &mut Client, command: &str, want: &str, never: impl Fn(&str) -> String) {
    retry(
        Instant::now() + 3 * WAIT,
        Duration::from_millis(100),
        || {
            client.send(command);
            let line = client.expect_prefix("[SERVER] ");
            if line.starts_with(want) {
                Ok(())
            } else {
                Err(never(&line))
            }
        },
    );
}

/// Waits until `/who` on `client` lists `count` people: the nodes have heard each other's
/// presence.
fn until_online(client: &mut Client, count: usize) {
    let name = client.name.clone();
    until_answer(
        client,
        "/who",
        &format!("[SERVER] {count} online: "),
        |line| format!("{name}: never {count} online, last {line:?}"),
    );
}

/// Sends `/nick NICK` on `client`, `pause` apart, until it is granted; fails after
/// `deadline` with `taken` and the last answer.
fn until_nick(client: &mut Client, nick: &str, deadline: Instant, pause: Duration, taken: &str) {
    let won = format!("[SERVER] You are now known as {nick}");
    retry(deadline, pause, || {
        client.send(&format!("/nick {nick}"));
        let line = nick_answer(client);
        if line == won {
            Ok(())
        } else {
            Err(format!("{taken}: {line:?}"))
        }
    });
}

/// Waits for the node's transcript to say its link to the bus is up and how names are kept.
fn until_linked(server: &Server) {
    server.expect_out_prefix("[SERVER] Node ");
    server.expect_out_prefix("[SERVER] Names are claimed across the cluster");
}

/// Nodes `a` and `b` on `bus`, once both are linked.
fn linked_pair(bus: &NatsServer) -> (Server, Server) {
    let (a, b) = (node(bus, "a"), node(bus, "b"));
    until_linked(&a);
    until_linked(&b);
    (a, b)
}

#[test]
fn lines_cross_nodes_both_ways_in_each_senders_order_in_every_room() {
    let Some(bus) = NatsServer::start() else {
        return;
    };
    let (a, b, c) = (node(&bus, "a"), node(&bus, "b"), node(&bus, "c"));
    for n in [&a, &b, &c] {
        until_linked(n);
    }
    let mut alice = named(&a, "alice");
    let mut bob = named(&b, "bob");
    let mut carol = named(&c, "carol");
    assert_eq!(alice.name, "alice", "a name claimed across the cluster");
    for client in [&mut alice, &mut bob, &mut carol] {
        until_online(client, 3);
    }

    // The lobby, from a to b and c, in order.
    for i in 0..50 {
        alice.send(&format!("lobby {i}"));
    }
    for reader in [&mut bob, &mut carol] {
        for i in 0..50 {
            reader.expect_eventually(&format!("alice: lobby {i}"));
        }
    }

    // A room spread over the three nodes, each sending.
    for client in [&mut alice, &mut bob, &mut carol] {
        client.send("/join #rust");
        client.expect_eventually("[#rust] [SERVER] End of history (0 messages)");
    }
    for client in [&mut alice, &mut bob, &mut carol] {
        until_in_room(client, "#rust", 3);
    }
    for i in 0..20 {
        bob.send(&format!("b{i}"));
        carol.send(&format!("c{i}"));
    }
    // Each sender's lines in its order; between senders, any interleaving.
    let mut from_b = 0;
    let mut from_c = 0;
    while from_b < 20 || from_c < 20 {
        let line = alice.line();
        if let Some(n) = line.strip_prefix("[#rust] bob: b") {
            assert_eq!(n, from_b.to_string(), "bob's lines in order");
            from_b += 1;
        } else if let Some(n) = line.strip_prefix("[#rust] carol: c") {
            assert_eq!(n, from_c.to_string(), "carol's lines in order");
            from_c += 1;
        }
    }
    // And back the other way, with a topic.
    alice.send("/topic borrow checking");
    bob.expect_eventually("[#rust] [SERVER] alice set the topic: borrow checking");
    carol.send("/rooms");
    carol.expect_eventually("[SERVER]   #rust (3): borrow checking");
}

/// Waits until `/who #room` on `client` counts `count` members.
fn until_in_room(client: &mut Client, room: &str, count: usize) {
    let (command, want) = (
        format!("/who {room}"),
        format!("[SERVER] {count} in {room}: "),
    );
    until_answer(client, &command, &want, |line| {
        format!("never {count} in {room}: {line:?}")
    });
}

#[test]
fn private_messages_and_history_cross_nodes() {
    let Some(bus) = NatsServer::start() else {
        return;
    };
    let (a, b) = linked_pair(&bus);
    let mut alice = named(&a, "alice");
    let mut bob = named(&b, "bob");
    until_online(&mut alice, 2);
    until_online(&mut bob, 2);

    alice.send("/msg bob psst");
    alice.expect_eventually("[PM to bob] psst");
    bob.expect_eventually("[PM from alice] psst");
    bob.send("/msg nobody hi");
    bob.expect_eventually("[SERVER] Error: no such user: nobody (try /who)");

    // What was said on a before bob joined the room is in b's history of it.
    alice.send("/join #news");
    alice.send("extra, extra");
    until_room_listed(&mut bob, "#news");
    bob.send("/join #news");
    bob.expect_eventually("[#news] [SERVER] End of history (1 message)");
}

/// Waits until `/rooms` on `client` lists `room`.
fn until_room_listed(client: &mut Client, room: &str) {
    retry(Instant::now() + 3 * WAIT, Duration::ZERO, || {
        client.send("/rooms");
        let lines = client.lines_until_quiet(Duration::from_millis(150));
        if lines.iter().any(|l| l.contains(room)) {
            Ok(())
        } else {
            Err(format!("{room} never listed: {lines:?}"))
        }
    });
}

#[test]
fn the_bus_killed_and_restarted_mid_chat() {
    let Some(mut bus) = NatsServer::start() else {
        return;
    };
    let (a, b) = linked_pair(&bus);
    let mut alice = named(&a, "alice");
    let mut ann = named(&a, "ann");
    let mut bob = named(&b, "bob");
    until_online(&mut alice, 3);
    until_online(&mut bob, 3);
    alice.send("before");
    bob.expect_eventually("alice: before");

    bus.kill();
    let lost = "[SERVER] Lost touch with the other servers: until it is back, only people on this server hear you";
    alice.expect_eventually(lost);
    bob.expect_eventually(lost);
    // The node's own room goes on.
    alice.send("only here");
    ann.expect_eventually("alice: only here");

    bus.restart();
    alice.expect_prefix("[SERVER] In touch with the other servers again after ");
    bob.expect_prefix("[SERVER] In touch with the other servers again after ");
    until_online(&mut bob, 3);
    alice.send("after");
    bob.expect_eventually("alice: after");
}

#[test]
fn a_node_killed_with_sigkill_leaves_the_others_in_time() {
    let Some(bus) = NatsServer::start() else {
        return;
    };
    let (a, b) = linked_pair(&bus);
    let mut alice = named(&a, "alice");
    let mut bob = named(&b, "bob");
    until_online(&mut bob, 2);
    alice.send("/join #a-only");
    until_room_listed(&mut bob, "#a-only");

    let killed = Instant::now();
    a.signal("KILL");
    let gone = "[SERVER] Node a not heard from for 7 s: its people are gone from /who";
    while b
        .try_out_line(Duration::from_secs(12))
        .expect("no word of node a")
        != gone
    {}
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    bob.send("/who");
    bob.expect_eventually("[SERVER] 1 online: bob");
    bob.send("/rooms");
    let rooms = bob.lines_until_quiet(Duration::from_millis(200));
    assert!(!rooms.iter().any(|l| l.contains("#a-only")), "{rooms:?}");
}

#[test]
fn names_collide_across_nodes_and_one_loses_with_a_clear_error() {
    let Some(bus) = NatsServer::start() else {
        return;
    };
    let (a, b) = linked_pair(&bus);
    let mut alice = named(&a, "alice");
    let mut other = b.client();
    other.send("/nick Alice");
    other.expect_eventually("[SERVER] Error: name Alice is taken");

    // Two at once, one on each node: exactly one gets it.
    let mut x = a.client();
    let mut y = b.client();
    x.send("/nick carol");
    y.send("/nick carol");
    let won = "[SERVER] You are now known as carol";
    let answers: Vec<String> = [&mut x, &mut y].into_iter().map(nick_answer).collect();
    let winners = answers.iter().filter(|l| *l == won).count();
    assert_eq!(winners, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .any(|l| l == "[SERVER] Error: name carol is taken"),
        "{answers:?}"
    );

    // A name given back is free again, on any node.
    alice.send("/nick alicia");
    alice.expect_prefix("[SERVER] You are now known as alicia");
    let deadline = Instant::now() + WAIT;
    until_nick(
        &mut other,
        "alice",
        deadline,
        Duration::from_millis(100),
        "alice never free",
    );
}

#[test]
fn a_killed_nodes_names_are_free_within_the_buckets_age() {
    let Some(bus) = NatsServer::start() else {
        return;
    };
    let (a, b) = linked_pair(&bus);
    let _alice = named(&a, "alice");
    let mut other = b.client();
    other.send("/nick alice");
    other.expect_eventually("[SERVER] Error: name alice is taken");
    let killed = Instant::now();
    a.signal("KILL");
    // The bucket's age (15 s), and a little.
    let deadline = killed + Duration::from_secs(20);
    until_nick(
        &mut other,
        "alice",
        deadline,
        Duration::from_millis(500),
        "alice still taken",
    );
    assert!(
        killed.elapsed() > Duration::from_secs(5),
        "freed before the node was gone"
    );
}

#[test]
fn without_jetstream_names_say_their_node() {
    let Some(bus) = NatsServer::start_without_jetstream() else {
        return;
    };
    let (a, b) = (node(&bus, "a"), node(&bus, "b"));
    for n in [&a, &b] {
        n.expect_out_prefix("[SERVER] Node ");
        n.expect_out(
            "[SERVER] The bus has no JetStream: names are qualified by their server (alice@node)",
        );
    }
    let mut alice = named(&a, "alice");
    let mut also = named(&b, "alice");
    assert_eq!(
        (alice.name.as_str(), also.name.as_str()),
        ("alice@a", "alice@b")
    );
    until_online(&mut also, 2);
    alice.send("hola");
    also.expect_eventually("alice@a: hola");
    also.send("/msg alice@a psst");
    alice.expect_eventually("[PM from alice@b] psst");
}
