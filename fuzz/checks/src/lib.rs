//! loopchat's fuzz targets as plain functions of the input bytes. Each panics when the code
//! under test breaks one of its properties.
//!
//! The same functions run under libFuzzer (`fuzz/fuzz_targets/*.rs`, nightly, `make fuzz`) and
//! on stable in `tests/replay.rs`, which runs every saved input of `fuzz/corpus/` and
//! `fuzz/regressions/` as part of `cargo test`. Inputs are decoded by hand with [`Input`], so
//! a saved input means the same thing for as long as this crate does.

mod command;
mod engine;
mod framer;
mod nats;
mod websocket;

pub use command::command;
pub use engine::engine;
pub use framer::framer;
pub use nats::nats;
pub use websocket::websocket;

/// The fuzzer's bytes, read as a program: small numbers and byte strings, with zeros once they
/// run out so that every input decodes to something.
pub(crate) struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.bytes.split_first() else {
            return 0;
        };
        self.bytes = rest;
        b
    }

    /// Up to `n` bytes, fewer at the end of the input.
    pub(crate) fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = rest;
        head
    }
}
