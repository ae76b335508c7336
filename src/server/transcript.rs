//! Standard output: the transcript of the room, one line per event.
//!
//! The engine gathers a turn's lines and they are written together before the loop waits
//! again, so a reader on a pipe sees each line at once without one system call per line. If
//! stdout goes away (`loopchat-server | head`), the transcript stops and the server goes on.

use std::io::{self, Write};

pub struct Stdout {
    on: bool,
}

impl Default for Stdout {
    fn default() -> Stdout {
        Stdout { on: true }
    }
}

impl Stdout {
    pub fn write(&mut self, bytes: &[u8]) {
        if !self.on || bytes.is_empty() {
            return;
        }
        let mut stdout = io::stdout().lock();
        if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
            log::warn!("transcript off: cannot write to standard output: {e}");
            self.on = false;
        }
    }

    /// Writes the turn's lines and empties the buffer for the next turn.
    pub fn write_transcript(&mut self, transcript: &mut Vec<u8>) {
        self.write(transcript);
        transcript.clear();
    }
}
