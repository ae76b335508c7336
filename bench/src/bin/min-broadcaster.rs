//! The practical ceiling: one mio loop relaying every complete line to every other client.
//! No names, no limits, no validation; output is batched per client and written once per turn.

use loopchat_bench::baseline::{self, Lines};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, ErrorKind, Read, Write};

const LISTENER: Token = Token(usize::MAX);

struct Client {
    stream: TcpStream,
    lines: Lines,
    out: Vec<u8>,
    dead: bool,
}

fn main() -> io::Result<()> {
    let opts = baseline::parse_args("min-broadcaster", None);
    let mut listener = TcpListener::bind(opts.addr)?;
    baseline::announce(listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut clients: Slab<Client> = Slab::new();
    let mut scratch = vec![0u8; 64 * 1024];
    // Clients with queued output, flushed once per turn right before polling.
    let mut dirty: Vec<usize> = Vec::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept(&listener, &poll, &mut clients, &opts.welcome, &mut dirty);
                continue;
            }
            let key = ev.token().0;
            if ev.is_readable() {
                read(key, &mut clients, &mut scratch, &mut dirty);
            }
            if ev.is_writable() && clients.contains(key) {
                dirty.push(key);
            }
        }
        flush(&mut clients, &mut dirty);
        // Sweep after the batch so no event or relay loop can name a reused slab key.
        let dead: Vec<usize> = clients
            .iter()
            .filter(|(_, c)| c.dead)
            .map(|(k, _)| k)
            .collect();
        for key in dead {
            let mut c = clients.remove(key);
            let _ = poll.registry().deregister(&mut c.stream);
        }
    }
}

fn accept(
    listener: &TcpListener,
    poll: &Poll,
    clients: &mut Slab<Client>,
    welcome: &Option<String>,
    dirty: &mut Vec<usize>,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = clients.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut stream, Token(entry.key()), interest)
                    .is_err()
                {
                    continue;
                }
                let out = welcome
                    .as_ref()
                    .map(|w| format!("{w}\n").into_bytes())
                    .unwrap_or_default();
                if !out.is_empty() {
                    dirty.push(entry.key());
                }
                entry.insert(Client {
                    stream,
                    lines: Lines::default(),
                    out,
                    dead: false,
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors: the ceiling has no limits to enforce, so just report it.
                eprintln!("min-broadcaster: accept: {e}");
                return;
            }
        }
    }
}

fn read(key: usize, clients: &mut Slab<Client>, scratch: &mut [u8], dirty: &mut Vec<usize>) {
    loop {
        let Some(c) = clients.get_mut(key).filter(|c| !c.dead) else {
            return;
        };
        match c.stream.read(scratch) {
            Ok(0) => c.dead = true,
            Ok(n) => {
                let mut lines = std::mem::take(&mut c.lines);
                lines.feed(&scratch[..n], |chunk| {
                    for (k, other) in clients.iter_mut() {
                        if k != key && !other.dead {
                            if other.out.is_empty() {
                                dirty.push(k);
                            }
                            other.out.extend_from_slice(chunk);
                        }
                    }
                });
                clients[key].lines = lines;
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => c.dead = true,
        }
        return;
    }
}

fn flush(clients: &mut Slab<Client>, dirty: &mut Vec<usize>) {
    for key in dirty.drain(..) {
        let Some(c) = clients.get_mut(key) else {
            continue;
        };
        while !c.out.is_empty() && !c.dead {
            match c.stream.write(&c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                // Stays queued; the writable edge puts it back on the dirty list.
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => c.dead = true,
            }
        }
    }
}
