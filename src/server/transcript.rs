//! Standard output: the transcript of the room, one line per event.
//!
//! Lines are gathered during a loop turn and written together before the loop waits again, so
//! a reader on a pipe sees each line at once without one system call per line. If stdout goes
//! away (`loopchat-server | head`), the transcript stops and the server goes on.

use std::io::{self, Write};

pub struct Transcript {
    pending: Vec<u8>,
    on: bool,
}

impl Transcript {
    /// `quiet` keeps only the lines printed with [`Transcript::always`].
    pub fn new(quiet: bool) -> Transcript {
        Transcript {
            pending: Vec::new(),
            on: !quiet,
        }
    }

    pub fn line(&mut self, line: &str) {
        if self.on {
            self.pending.extend_from_slice(line.as_bytes());
            self.pending.push(b'\n');
        }
    }

    /// A line printed even with `-q`, at once (the `Listening on` line that scripts wait for).
    pub fn always(&mut self, line: &str) {
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
        self.flush();
    }

    /// Writes what the turn produced.
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut stdout = io::stdout().lock();
        if let Err(e) = stdout
            .write_all(&self.pending)
            .and_then(|()| stdout.flush())
        {
            log::warn!("transcript off: cannot write to standard output: {e}");
            self.on = false;
        }
        self.pending.clear();
    }
}
