//! One connection as the engine sees it: what it sent that is not yet a line, what it is owed,
//! and where it stands with the limits. The socket itself is the event loop's, carried along
//! as an opaque `S` so that one table holds everything about a connection; a TLS connection's
//! bytes pass through its session ([`crate::tls`]) on their way in and out.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use super::Socket;
use super::flow::Pace;
use crate::codec::Codec;
use crate::rate::Bucket;
use crate::tls::{Plain, Session, Tls};

/// Output capacity kept after a flush. A busy room refills every client's buffer each turn:
/// freeing and growing it again cost a third of the server's time in the benchmark (page
/// faults, copies on growth). A buffer past this size, left by a long backlog, is given back;
/// an idle client's buffer never grows this far.
const OUT_KEEP: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// In the room: read, framed, delivered to.
    Open,
    /// Out of the room: its last lines are being written, its input is discarded.
    Closing,
    /// All written and our end of the stream sent: waiting for the client to close its own,
    /// its input still discarded.
    Draining,
    /// Done: handed back to the event loop to be closed, before the next poll.
    Closed,
}

/// Where a connection's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Read when the socket says so (or the loop does). `drained`: the last read found the
    /// socket empty; until then, a pause in the client's input may be the server's doing (rate
    /// limit, fair share), not the client's.
    Ready { drained: bool },
    /// Not read while its own queue is long (see `Engine::pause_mark`): what it sends would
    /// only add to what it has not read.
    Paused,
    /// Waiting its turn for the room's budget, with input not yet taken.
    Waiting,
    /// The peer closed its side; what it sent is still being handled.
    Ended,
}

/// Where a connection's writing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writing {
    /// Nothing to write, or written and not yet owed more.
    Idle,
    /// On the list of connections to write this turn.
    Listed,
    /// The last write hit WouldBlock: wait for the socket to say it is writable.
    Blocked,
}

pub struct Peer<S> {
    pub socket: S,
    pub addr: SocketAddr,
    /// Tells this connection's timers from those of an earlier one with the same key.
    pub generation: u64,
    pub state: State,
    /// The wire format: lines in, events out.
    pub codec: Codec,
    /// The TLS session between the socket and the codec, for a client that started one. Boxed:
    /// a session is kilobytes, and plain connections pay only for the pointer.
    pub tls: Option<Box<Session>>,
    /// Bytes owed to the client, not yet taken by its socket.
    pub owed: Owed,
    pub reading: Reading,
    pub lines: Lines,
    /// When bytes last arrived: the start of a flush-partial quiet.
    pub last_input: Instant,
    /// When the socket last took bytes: a closing client is given time while it keeps reading.
    pub last_output: Instant,
    /// Timer kinds that have an entry in the deadline heap (one bit each).
    pub timers: u8,
    pub writing: Writing,
    /// Already on the list of connections whose queue overflowed.
    pub overflowed: bool,
}

impl<S> Peer<S> {
    pub fn new(
        socket: S,
        addr: SocketAddr,
        generation: u64,
        codec: Codec,
        lines: Lines,
        now: Instant,
    ) -> Peer<S> {
        Peer {
            socket,
            addr,
            generation,
            state: State::Open,
            codec,
            tls: None,
            owed: Owed {
                bytes: Vec::new(),
                refused_since: None,
                pace: Pace::Keeping,
            },
            reading: Reading::Ready { drained: false },
            lines,
            last_input: now,
            last_output: now,
            timers: 0,
            writing: Writing::Idle,
            overflowed: false,
        }
    }

    /// Whether bytes wait for the socket: what the client is owed, or what its TLS session has
    /// to send of its own (the handshake, a key update, an alert).
    pub fn wants_write(&self) -> bool {
        !self.owed.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }
}

/// What one read of a connection's socket found.
pub enum Got {
    Bytes(usize),
    /// The TLS handshake is done; no bytes yet.
    Secured,
    /// Nothing now (WouldBlock): the next event says when there is more.
    Nothing,
    /// The end of the stream: the client closed its side.
    End,
    Failed(io::Error),
}

/// What writing a connection's queue did, for the engine's books.
pub struct Wrote {
    /// The queue's length before.
    pub before: usize,
    /// Bytes the socket took.
    pub bytes: usize,
    /// The socket refused more while bytes were still owed.
    pub blocked: bool,
    /// It was behind and its queue emptied: it keeps up again.
    pub caught_up: bool,
    pub error: Option<io::Error>,
}

impl<S: Socket> Peer<S> {
    /// Reads what the socket has (decrypted, over TLS), up to `buf`'s length, and notes where
    /// reading stands.
    pub fn read(&mut self, buf: &mut [u8]) -> Got {
        loop {
            let read = match self.tls.as_deref_mut() {
                None => self.socket.read(buf).map(|n| match n {
                    0 => Plain::End,
                    n => Plain::Bytes(n),
                }),
                Some(tls) => tls.read(&mut Io(&mut self.socket), buf),
            };
            return match read {
                Ok(Plain::End) => Got::End,
                Ok(Plain::Secured) => Got::Secured,
                Ok(Plain::Bytes(n)) => {
                    self.reading = Reading::Ready { drained: false };
                    Got::Bytes(n)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reading = Reading::Ready { drained: true };
                    Got::Nothing
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Got::Failed(e),
            };
        }
    }

    /// The client's first bytes were a TLS ClientHello: from now on its bytes pass through a
    /// session. Fails (after telling the client with an alert) if they are not TLS after all.
    pub fn start_tls(&mut self, tls: &Tls, first: &[u8]) -> io::Result<()> {
        let session = Session::start(tls, first, &mut Io(&mut self.socket))?;
        self.tls = Some(Box::new(session));
        Ok(())
    }

    /// Writes what the client is owed until all is written or its socket is full (over TLS:
    /// encrypted a record at a time, then written, and a closing connection's close_notify
    /// last). The engine settles its books (the room's budget, the counters, who is too slow)
    /// from the result; `bytes` counts what the client was owed, not the records' overhead.
    pub fn write_owed(&mut self, now: Instant) -> Wrote {
        let before = self.owed.len();
        let was_behind = self.owed.pace == Pace::Behind;
        let mut wrote = Wrote {
            before,
            bytes: 0,
            blocked: false,
            caught_up: false,
            error: None,
        };
        let closing = self.state == State::Closing;
        // What was written (or encrypted), `wrote.bytes`, is taken off the queue once at the
        // end, not after every write: over TLS that is one record at a time, and each `took`
        // moves the rest of the queue.
        loop {
            let written = match self.tls.as_deref_mut() {
                None if wrote.bytes == before => break,
                None => self
                    .socket
                    .write(&self.owed.bytes[wrote.bytes..])
                    .inspect(|&n| wrote.bytes += n),
                Some(tls) => {
                    wrote.bytes += tls.encrypt(&self.owed.bytes[wrote.bytes..], closing);
                    if !tls.wants_write() {
                        break;
                    }
                    tls.write_tls(&mut Io(&mut self.socket))
                }
            };
            match written {
                Ok(0) => {
                    wrote.error = Some(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(_) => self.last_output = now,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writing = Writing::Blocked;
                    wrote.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    wrote.error = Some(e);
                    break;
                }
            }
        }
        self.owed.took(wrote.bytes);
        if wrote.blocked {
            self.owed.refused_since.get_or_insert(now);
        }
        wrote.caught_up = was_behind && self.owed.pace == Pace::Keeping;
        wrote
    }
}

/// What a connection is owed, since when its socket refuses more, and whether the room waits
/// for it.
pub struct Owed {
    pub bytes: Vec<u8>,
    /// Since when the socket has refused bytes without the queue emptying in between: how long
    /// the client has not kept up.
    pub refused_since: Option<Instant>,
    pub pace: Pace,
}

impl Owed {
    /// The socket took `n` bytes of what is owed. A client that has taken everything keeps up.
    fn took(&mut self, n: usize) {
        self.bytes.drain(..n);
        if self.bytes.is_empty() {
            self.pace = Pace::Keeping;
            self.refused_since = None;
            if self.bytes.capacity() > OUT_KEEP {
                self.bytes = Vec::new();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A client's lines as the limits see them. Kept apart from the codec, so that a line can be
/// counted while the codec still lends it out.
pub struct Lines {
    /// The rate budget; `None` when `--rate 0`.
    pub bucket: Option<Bucket>,
    /// When the last line arrived: the start of an idle period.
    pub last: Instant,
}

impl Lines {
    pub fn new(bucket: Option<Bucket>, now: Instant) -> Lines {
        Lines { bucket, last: now }
    }

    /// Counts a line against the budget.
    pub fn record(&mut self, now: Instant) {
        if let Some(bucket) = self.bucket.as_mut() {
            bucket.spend();
        }
        self.last = now;
    }
}

/// A connection's socket as rustls reads and writes it.
struct Io<'a, S>(&'a mut S);

impl<S: Socket> io::Read for Io<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Socket> io::Write for Io<'_, S> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write(bytes)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
