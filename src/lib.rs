//! loopchat: a chat server in one single-threaded `mio` event loop.
//!
//! # Layout
//!
//! The protocol is plain data-in, data-out code that tests drive without sockets; the event loop
//! around it only moves bytes and keeps time.
//!
//! - [`config`]: command-line flags to [`config::Config`], every limit named with its reason.
//! - [`codec`]: a connection's wire format, with no I/O: [`codec::line`] frames bytes into
//!   lines (the length cap, flush-partial, recognising HTTP and TLS) and writes events as lines;
//!   [`codec::websocket`] does the same for WebSocket frames; [`codec::http`] reads a request.
//! - [`nats`]: the NATS client protocol, with no I/O: what nats-server sends decoded into ops,
//!   and the client's ops (CONNECT, PUB, HPUB, SUB, ...) written for the bus connection.
//! - [`text`]: raw line to safe text (UTF-8 repair, no terminal control characters).
//! - [`command`]: line to [`command::Command`], for clients and for the operator console.
//! - [`directory`]: who is called what, server-wide: guest names, `/nick`, finding a name.
//! - [`chat`]: what every chat command means: names, rooms, history, and who receives what.
//! - [`room`]: one room: its members, topic and history.
//! - [`cluster`]: what crosses between the nodes of a cluster on the bus (gossip, origins,
//!   sequence numbers); [`remote`]: the other nodes' clients, as their presence says;
//!   [`claims`]: names unique across the cluster, claimed in a JetStream bucket.
//! - [`history`]: a room's last messages, in a ring bounded in messages and in bytes.
//! - [`event`]: what the chat says, as typed events: who, what, which room, to whom.
//! - [`ack`]: the `received: <message>` answers of `--mode ack` and of UDP.
//! - [`service`]: what `--mode` means, behind one seam: the chat or the ack service.
//! - [`rate`]: the token bucket behind `--rate` and `--connect-rate`.
//! - [`notice`]: every line the server says in its own voice.
//! - [`engine`]: the whole server without sockets or clock: buffers, limits, timers, routing
//!   events to their recipients, the flow control (`engine/flow.rs`), and the link to the bus
//!   of a cluster (`engine/bus.rs`).
//! - [`web`]: the web door on the chat port: the chat page, the WebSocket handshake,
//!   `/metrics`.
//! - [`tls`]: TLS on the chat port: the certificate, and the rustls session that sits between
//!   a connection's socket and its codec.
//! - [`server`]: the mio shell: poll, sockets, accept limits, console, signals, stdout.
//! - [`client`]: the bundled command-line client.

pub mod ack;
pub mod chat;
pub mod claims;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod config;
pub mod directory;
pub mod engine;
pub mod event;
pub mod history;
pub mod nats;
pub mod notice;
pub mod rate;
pub mod remote;
pub mod room;
pub mod server;
pub mod service;
pub mod text;
pub mod tls;
pub mod web;
