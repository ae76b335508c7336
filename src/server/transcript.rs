//! Standard output: the transcript of the room, one line per event.
//!
//! The engine gathers a turn's lines and they are written together before the loop waits
//! again, so a reader on a pipe sees each line at once without one system call per line.
//!
//! Standard output must never stop the loop: `loopchat-server | less`, with less waiting for a
//! key, fills the pipe, and a blocking write would then freeze every client. Setting
//! `O_NONBLOCK` on descriptor 1 would leak to the shell that shares it, so for a pipe or a
//! terminal the transcript opens `/proc/self/fd/1` again: a file description of its own, which
//! may be non-blocking. What the reader does not take waits, up to [`BACKLOG`]; past that,
//! lines are counted and dropped, and the count is printed once the reader catches up. A
//! regular file is written as it is (it never makes the writer wait for a reader), and if
//! standard output goes away (`| head`), the transcript stops and the server goes on.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

use crate::notice;

/// Transcript bytes held for a reader that is not reading.
const BACKLOG: usize = 1024 * 1024;

pub struct Stdout {
    /// A non-blocking handle on the same pipe or terminal; `None` writes through `io::stdout`.
    own: Option<File>,
    pending: Vec<u8>,
    /// Lines dropped since the reader stopped keeping up.
    dropped: u64,
    on: bool,
}

impl Stdout {
    pub fn open() -> Stdout {
        Stdout {
            own: reopen_nonblocking(),
            pending: Vec::new(),
            dropped: 0,
            on: true,
        }
    }

    /// Queues `bytes` (whole lines) and writes what the reader will take.
    pub fn write(&mut self, bytes: &[u8]) {
        if !self.on {
            return;
        }
        if self.dropped > 0 && self.pending.len() <= BACKLOG / 2 {
            // The reader caught up: say, where the gap is, how many lines fell into it.
            let n = std::mem::take(&mut self.dropped);
            self.pending
                .extend_from_slice(notice::transcript_dropped(n).as_bytes());
            self.pending.push(b'\n');
        }
        // Once dropping, go on until half the backlog is read, rather than letting one line in
        // whenever a little room appears.
        if self.dropped > 0 || self.pending.len() + bytes.len() > BACKLOG {
            self.dropped += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        } else {
            self.pending.extend_from_slice(bytes);
        }
        self.flush();
    }

    /// Writes the turn's lines and empties the buffer for the next turn.
    pub fn write_transcript(&mut self, transcript: &mut Vec<u8>) {
        if !transcript.is_empty() || self.is_backlogged() {
            self.write(transcript);
        }
        transcript.clear();
    }

    /// Lines wait for a reader: the loop should come back soon to write them, since nothing
    /// else may wake it.
    pub fn is_backlogged(&self) -> bool {
        self.on && (!self.pending.is_empty() || self.dropped > 0)
    }

    fn flush(&mut self) {
        while !self.pending.is_empty() {
            let written = match self.own.as_mut() {
                Some(file) => file.write(&self.pending),
                None => io::stdout().lock().write(&self.pending),
            };
            match written {
                Ok(0) => return self.stop(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.stop(e),
            }
        }
        if self.own.is_none() {
            let _ = io::stdout().lock().flush();
        }
    }

    fn stop(&mut self, e: io::Error) {
        log::warn!("transcript off: cannot write to standard output: {e}");
        self.on = false;
        self.pending = Vec::new();
    }
}

/// A non-blocking descriptor of our own for stdout, when it is a pipe or a terminal.
fn reopen_nonblocking() -> Option<File> {
    // The link leads to the pipe or terminal itself.
    let kind = std::fs::metadata("/proc/self/fd/1").ok()?.file_type();
    if !(kind.is_fifo() || kind.is_char_device()) {
        return None;
    }
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/proc/self/fd/1")
        .inspect_err(|e| log::debug!("transcript writes may block: cannot reopen stdout: {e}"))
        .ok()
}
