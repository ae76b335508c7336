//! The line framer against the slow and obvious reading of its specification.

use loopchat::codec::line::{Frame, Framer};

use crate::Input;

/// Owned frames, comparable across calls.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Line(Vec<u8>),
    TooLong,
}

fn own(frame: Frame<'_>) -> Got {
    match frame {
        Frame::Line(l) => Got::Line(l.to_vec()),
        Frame::TooLong => Got::TooLong,
    }
}

/// The specification: a line ends at LF, or at an end of line (quiet period, end of stream)
/// if it has any bytes; a CR before its end is dropped; longer than the cap is `TooLong`.
#[derive(Default)]
struct Model {
    line: Vec<u8>,
    frames: Vec<Got>,
}

impl Model {
    fn bytes(&mut self, max: usize, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.end(max);
            } else {
                self.line.push(b);
            }
        }
    }

    fn end(&mut self, max: usize) {
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        self.frames.push(if line.len() > max {
            Got::TooLong
        } else {
            Got::Line(line.to_vec())
        });
    }

    fn end_line(&mut self, max: usize) {
        if !self.line.is_empty() {
            self.end(max);
        }
    }
}

/// Input: the cap, then operations. Each is a byte, `kind | arg << 2`:
/// - 0, 3: a read of `arg` (0 to 63; kind 3: `4 * arg`) bytes, framed to the end;
/// - 1: a read (its length in the next byte, below 64) of which `arg & 7` frames are taken and
///   the rest handed back with `keep`, as a reader out of rate budget does (0 frames: the
///   whole read is kept unframed);
/// - 2: `end_line`, as a quiet period or the end of the stream does.
///
/// The frames must be the model's, and after a read framed to the end at most one unfinished
/// line (`max_line + 1` bytes, its CR included) may be held.
pub fn framer(data: &[u8]) {
    let mut input = Input::new(data);
    let max = usize::from(input.byte() % 24) + 1;
    let mut f = Framer::new(max);
    let mut model = Model::default();
    let mut got = Vec::new();
    while !input.is_empty() {
        let op = input.byte();
        let arg = usize::from(op >> 2);
        match op & 3 {
            kind @ (0 | 3) => {
                let len = if kind == 0 { arg } else { 4 * arg };
                let mut read = input.take(len);
                model.bytes(max, read);
                while let Some(frame) = f.next(&mut read) {
                    got.push(own(frame));
                }
                assert!(read.is_empty(), "next() returned None with input left");
                assert!(
                    f.held() <= max + 1,
                    "holds {} bytes with --max-line {max}",
                    f.held()
                );
                assert!(!f.has_line(), "a complete line left behind");
            }
            1 => {
                let len = usize::from(input.byte() % 64);
                let mut read = input.take(len);
                model.bytes(max, read);
                for _ in 0..(arg & 7) {
                    match f.next(&mut read) {
                        Some(frame) => got.push(own(frame)),
                        None => break,
                    }
                }
                f.keep(read);
            }
            _ => {
                model.end_line(max);
                f.end_line();
            }
        }
    }
    // The end of the stream: what is left is a line.
    model.end_line(max);
    f.end_line();
    let mut none: &[u8] = &[];
    while let Some(frame) = f.next(&mut none) {
        got.push(own(frame));
    }
    assert!(f.is_empty(), "bytes left after the end of the stream");
    assert_eq!(got, model.frames, "--max-line {max}");
}
