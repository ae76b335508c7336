//! The operator console: standard input read on one helper thread, which hands each line to
//! the event loop and wakes it.
//!
//! Why a thread: epoll refuses regular files and /dev/null (`loopchat-server < cmds.txt`), and
//! a non-blocking flag set on descriptor 0 would leak to the parent shell, which shares it. A
//! blocking reader works with terminals, pipes, files and /dev/null alike. It never touches a
//! client: all client I/O stays in the loop.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::thread;

use mio::Waker;

use crate::codec::line::{Frame, Framer};

/// The longest console line; the operator is trusted, but stdin may be anything.
const MAX_CONSOLE_LINE: usize = 4096;

/// Lines read ahead before the reader waits for the loop: enough for a pasted script.
const QUEUE: usize = 64;

/// What the reader thread sends to the loop.
pub enum Input {
    Line(Vec<u8>),
    /// Standard input ended (or failed): the console is over, the server goes on.
    Closed,
}

pub struct Console {
    lines: Receiver<Input>,
    /// Held here as well as by the thread: a wake-up is only delivered while a `Waker` is
    /// alive, and the thread drops its own as soon as standard input ends.
    _waker: Arc<Waker>,
}

impl Console {
    /// Starts the reader thread. Each line is followed by a wake-up of the loop.
    pub fn start(waker: Arc<Waker>) -> io::Result<Console> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread_waker = Arc::clone(&waker);
        thread::Builder::new()
            .name("console".into())
            .spawn(move || read_stdin(&tx, &thread_waker))?;
        Ok(Console {
            lines: rx,
            _waker: waker,
        })
    }

    /// The next line the thread has read, if any. Wake-ups coalesce, so the loop drains this
    /// until it returns `None`.
    pub fn try_next(&self) -> Option<Input> {
        match self.lines.try_recv() {
            Ok(input) => Some(input),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Input::Closed),
        }
    }
}

fn read_stdin(tx: &SyncSender<Input>, waker: &Waker) {
    let mut stdin = io::stdin().lock();
    let mut framer = Framer::new(MAX_CONSOLE_LINE);
    let mut chunk = [0u8; 4096];
    let send = |input: Input| tx.send(input).is_ok() && waker.wake().is_ok();
    loop {
        let n = match stdin.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::debug!("console off: cannot read standard input: {e}");
                break;
            }
        };
        let mut input = &chunk[..n];
        while let Some(frame) = framer.next(&mut input) {
            let sent = match frame {
                Frame::Line(line) => send(Input::Line(line.to_vec())),
                Frame::TooLong => {
                    log::warn!("console line over {MAX_CONSOLE_LINE} bytes ignored");
                    true
                }
            };
            if !sent {
                return; // the loop is gone
            }
        }
    }
    framer.end_line();
    if let Some(Frame::Line(last)) = framer.next(&mut &[][..]) {
        send(Input::Line(last.to_vec()));
    }
    send(Input::Closed);
}
