//! A socket that is not one, for driving the engine without a network: the engine's own tests
//! and the fuzz harness share it (built for tests, and with the `testing` feature).
//!
//! It hands out input in the chunks it was given, takes output until its room runs out, can
//! fail either way, and notes what a real socket would refuse.

use std::collections::VecDeque;
use std::io;

use super::Socket;

pub struct FakeSocket {
    /// The caller's number for the client, which outlives the engine's key.
    pub id: usize,
    /// What the client sent, one chunk per read at most.
    pub input: VecDeque<Vec<u8>>,
    /// The client has closed its side: reads end once `input` is taken.
    pub eof: bool,
    /// What the socket took.
    pub sent: Vec<u8>,
    /// Bytes it takes before it is full (WouldBlock): 0 is full, `usize::MAX` never is.
    pub room: usize,
    pub fail_read: bool,
    pub fail_write: bool,
    /// A read or write failed: the server may drop what it still owed.
    pub failed: bool,
    /// The server ended its direction of the stream (`shutdown_write`).
    pub fin: bool,
    /// What the server did that a socket does not allow.
    pub misuse: Option<&'static str>,
}

impl FakeSocket {
    pub fn new(id: usize) -> FakeSocket {
        FakeSocket {
            id,
            input: VecDeque::new(),
            eof: false,
            sent: Vec::new(),
            room: usize::MAX,
            fail_read: false,
            fail_write: false,
            failed: false,
            fin: false,
            misuse: None,
        }
    }
}

impl Socket for FakeSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.fail_read {
            self.failed = true;
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let Some(chunk) = self.input.front_mut() else {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        chunk.drain(..n);
        if chunk.is_empty() {
            self.input.pop_front();
        }
        Ok(n)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.fin {
            // What a real socket says; the caller reports it after the call.
            self.misuse.get_or_insert("written to after shutdown_write");
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.fail_write {
            self.failed = true;
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = bytes.len().min(self.room);
        self.sent.extend_from_slice(&bytes[..n]);
        if self.room != usize::MAX {
            self.room -= n;
        }
        Ok(n)
    }

    fn shutdown_write(&mut self) {
        if self.fin {
            self.misuse.get_or_insert("shutdown_write twice");
        }
        self.fin = true;
    }
}
