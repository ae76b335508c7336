//! Codecs: what a connection's bytes mean, and how events are written to it, with no I/O.
//!
//! A codec is handed the bytes that arrived and hands back what they mean (lines, or news that
//! the client speaks another protocol); it is handed events and appends their bytes to what the
//! connection is owed. It never reads or writes a socket (h11's shape: data in, events out;
//! events in, data out), so the engine moves bytes and the chat decides, whatever the wire
//! format. Today's one format is lines of text ([`line`]); a WebSocket codec or a TLS layer
//! goes beside it, and the chat does not change.

pub mod line;
