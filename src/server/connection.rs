//! One client's connection (its socket, its unframed input, what it is owed) and the table of
//! connections with the lists of work to do on them before the next poll.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Instant;

use mio::net::TcpStream;
use slab::Slab;

use crate::framing::Framer;
use crate::rate::Bucket;

/// Output capacity kept after a flush. A client that once had a long queue gives the memory
/// back; one that gets a line now and then keeps a small buffer instead of reallocating.
const OUT_KEEP: usize = 4 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the room: read, framed, delivered to.
    Open,
    /// Out of the room: its last lines are being written, its input is discarded.
    Closing,
    /// Done: removed from the table before the next poll.
    Closed,
}

pub struct Connection {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    /// Tells this connection's timers from those of an earlier one with the same slab key.
    pub generation: u64,
    pub state: State,
    pub framer: Framer,
    /// Bytes owed to the client, not yet accepted by its socket.
    out: Vec<u8>,
    /// When bytes last arrived: the start of a flush-partial quiet.
    pub last_input: Instant,
    pub bytes_in: u64,
    pub lines: Lines,
    /// The peer closed its side; what it sent is being handled.
    pub eof: bool,
    /// Timer kinds that have an entry in the deadline heap (one bit each).
    pub timers: u8,
    /// On the list of connections to flush this turn.
    dirty: bool,
    /// The last write hit WouldBlock: wait for a writable event before writing again.
    write_blocked: bool,
    /// Already on the list of connections whose queue overflowed.
    overflowed: bool,
    /// Echo mode: not read until its output is written, so it cannot fill the server's memory.
    input_paused: bool,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        addr: SocketAddr,
        generation: u64,
        framer: Framer,
        bucket: Option<Bucket>,
        now: Instant,
    ) -> Connection {
        Connection {
            stream,
            addr,
            generation,
            state: State::Open,
            framer,
            out: Vec::new(),
            last_input: now,
            bytes_in: 0,
            lines: Lines {
                bucket,
                count: 0,
                last: now,
            },
            eof: false,
            timers: 0,
            dirty: false,
            write_blocked: false,
            overflowed: false,
            input_paused: false,
        }
    }

    /// Bytes owed and not yet written.
    pub fn unread(&self) -> usize {
        self.out.len()
    }

    /// Reads, retrying when a signal interrupts.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                result => return result,
            }
        }
    }

    /// Writes what is owed until it is all written (`Ok(true)`) or the socket is full
    /// (`Ok(false)`: a writable event will say when to go on).
    fn write_out(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
        Ok(true)
    }
}

/// A client's lines as the limits see them. Kept apart from the framer, so that a line can be
/// counted while the framer still lends it out.
pub struct Lines {
    /// The rate budget; `None` when `--rate 0`.
    pub bucket: Option<Bucket>,
    pub count: u64,
    /// When the last line arrived: the start of an idle period.
    pub last: Instant,
}

impl Lines {
    /// Counts a line against the budget; returns whether it is the client's first.
    pub fn record(&mut self, now: Instant) -> bool {
        if let Some(bucket) = self.bucket.as_mut() {
            bucket.spend();
        }
        self.count += 1;
        self.last = now;
        self.count == 1
    }
}

/// What a flush found.
pub enum Flushed {
    /// Everything owed was written (or nothing was owed).
    Done,
    /// The socket is full; more later.
    Blocked,
    Failed(io::Error),
}

/// The connections, keyed by slab key (which is also their mio token), and the work lists.
///
/// Nothing is removed from the slab until [`Clients::sweep`], which runs once per turn before
/// the next poll: a key freed in the middle of a batch of events could be handed to a new
/// connection while an event for the old one is still waiting in that batch.
pub struct Clients {
    pub slab: Slab<Connection>,
    max_pending: usize,
    /// Connections with output to write before the next poll.
    dirty: Vec<usize>,
    /// Connections to remove before the next poll.
    closing: Vec<usize>,
    /// Connections whose queue passed `max_pending` during a delivery; the caller drops them
    /// after the delivery, never in the middle of one.
    overflowed: Vec<usize>,
}

impl Clients {
    pub fn new(max_pending: usize) -> Clients {
        Clients {
            slab: Slab::new(),
            max_pending,
            dirty: Vec::new(),
            closing: Vec::new(),
            overflowed: Vec::new(),
        }
    }

    /// Appends a line (and its newline) to what a client is owed.
    pub fn queue(&mut self, key: usize, line: &str) {
        self.append(key, line.as_bytes(), b"\n");
    }

    /// Appends bytes as they are (echo mode).
    pub fn queue_raw(&mut self, key: usize, bytes: &[u8]) {
        self.append(key, bytes, b"");
    }

    fn append(&mut self, key: usize, bytes: &[u8], end: &[u8]) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if conn.state == State::Closed || conn.overflowed {
            return;
        }
        if conn.out.len() + bytes.len() + end.len() > self.max_pending {
            conn.overflowed = true;
            self.overflowed.push(key);
            return;
        }
        conn.out.extend_from_slice(bytes);
        conn.out.extend_from_slice(end);
        if !conn.dirty && !conn.write_blocked {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Takes the clients that overflowed since the last call.
    pub fn take_overflowed(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.overflowed)
    }

    /// The socket said it can take more: write to it this turn.
    pub fn writable(&mut self, key: usize) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        conn.write_blocked = false;
        if !conn.out.is_empty() && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Stops reading a client until its output is written.
    pub fn pause_input(&mut self, key: usize) {
        if let Some(conn) = self.slab.get_mut(key) {
            conn.input_paused = true;
        }
    }

    /// After a complete flush: whether the client's input was paused (it is resumed now).
    pub fn resume_input(&mut self, key: usize) -> bool {
        self.slab
            .get_mut(key)
            .is_some_and(|conn| std::mem::take(&mut conn.input_paused))
    }

    /// Takes the connections to flush now.
    pub fn take_dirty(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.dirty)
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Writes what a connection is owed. A closing connection whose queue is empty is done:
    /// its side of the stream is shut so the peer reads everything before the end.
    pub fn flush(&mut self, key: usize) -> Flushed {
        let Some(conn) = self.slab.get_mut(key) else {
            return Flushed::Done;
        };
        conn.dirty = false;
        if conn.state == State::Closed {
            return Flushed::Done;
        }
        match conn.write_out() {
            Ok(true) => {
                if conn.state == State::Closing {
                    let _ = conn.stream.shutdown(Shutdown::Write);
                    self.close(key);
                }
                Flushed::Done
            }
            Ok(false) => Flushed::Blocked,
            Err(e) => Flushed::Failed(e),
        }
    }

    /// Stops reading a client and closes it once its queue is written.
    pub fn linger(&mut self, key: usize) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if conn.state != State::Open {
            return;
        }
        conn.state = State::Closing;
        if !conn.dirty && !conn.write_blocked {
            // An empty queue still needs a flush: that is where the close happens.
            conn.dirty = true;
            self.dirty.push(key);
        }
    }

    /// Closes a client now, dropping whatever it is still owed.
    pub fn close(&mut self, key: usize) {
        let Some(conn) = self.slab.get_mut(key) else {
            return;
        };
        if conn.state != State::Closed {
            conn.state = State::Closed;
            conn.out = Vec::new();
            self.closing.push(key);
        }
    }

    /// Removes the closed connections; returns them so the caller can deregister them and
    /// release what they held.
    pub fn sweep(&mut self) -> impl Iterator<Item = Connection> + '_ {
        let slab = &mut self.slab;
        self.closing
            .drain(..)
            .filter_map(move |key| slab.try_remove(key))
    }
}
