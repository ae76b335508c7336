//! The coursework design, written fairly: one thread per client with blocking std I/O and a
//! shared, locked list of every client's stream. A line is written to each other client while
//! the list is locked, which is what keeps all clients seeing one order.

use loopchat_bench::baseline::{self, Lines};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Streams are shared, not `try_clone`d: a clone would cost a second descriptor per client.
type Clients = Arc<Mutex<Vec<(u64, Arc<TcpStream>)>>>;

fn main() -> std::io::Result<()> {
    let opts = baseline::parse_args("threaded-server", Some(baseline::WELCOME));
    let listener = TcpListener::bind(opts.addr)?;
    baseline::announce(listener.local_addr()?);
    let clients: Clients = Arc::default();
    for (id, stream) in (0u64..).zip(listener.incoming()) {
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Typically out of descriptors: back off instead of spinning.
                eprintln!("threaded-server: accept: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if let Some(w) = &opts.welcome {
            let _ = stream.write_all(format!("{w}\n").as_bytes());
        }
        let stream = Arc::new(stream);
        clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, Arc::clone(&stream)));
        let list = Arc::clone(&clients);
        let spawned = thread::Builder::new().spawn(move || serve(id, stream, &list));
        if let Err(e) = spawned {
            eprintln!("threaded-server: spawn: {e}");
            forget(id, &clients);
        }
    }
    Ok(())
}

fn serve(id: u64, stream: Arc<TcpStream>, clients: &Clients) {
    let mut buf = [0u8; 4096];
    let mut lines = Lines::default();
    loop {
        match (&*stream).read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.feed(&buf[..n], |chunk| {
                let list = clients.lock().unwrap_or_else(|e| e.into_inner());
                for (other, s) in list.iter() {
                    if *other != id {
                        // A dead peer's own thread removes it; nothing to do here.
                        let _ = (&**s).write_all(chunk);
                    }
                }
            }),
        }
    }
    forget(id, clients);
}

fn forget(id: u64, clients: &Clients) {
    clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(other, _)| *other != id);
}
