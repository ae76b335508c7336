//! Binding the sockets (shared with other processes under `--reuseport`), accepting
//! connections, and staying alive when the process runs out of file descriptors. (Who may come
//! in, the caps in all and per address, is the engine's rule: `engine/admission.rs`.)
//!
//! Running out of descriptors is the classic way an edge-triggered server dies: `accept` fails
//! with EMFILE, the connection stays in the kernel's backlog, and the server either retries at
//! once forever (a busy loop) or waits for an event that never comes (a stranded backlog). Three
//! defences, after Redis, libuv and nginx:
//! 1. headroom: `--max-clients` is lowered below the descriptor limit at start-up, so the caps
//!    refuse clients politely long before `accept` can fail;
//! 2. a spare descriptor: when `accept` fails anyway, the spare is closed to make room, each
//!    waiting connection is accepted, told the server is full, and closed, and the spare is
//!    taken back;
//! 3. a pause: if even that is impossible, accepting stops for a moment and resumes on a timer,
//!    since no new event may come.

use std::fs::File;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};

use crate::notice;

/// Descriptors kept free for everything that is not a client: the listener, epoll, the waker,
/// the signal pipe, standard streams, the spare, and a refusal in flight (Redis keeps 32).
pub const RESERVED_FDS: u64 = 32;

/// How long accepting pauses when the server cannot even shed waiting connections.
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

/// At most one warning this often about running out of descriptors; the rest are counted.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The listen backlog of a `--reuseport` socket: the one mio's `TcpListener::bind` gives the
/// others (std's, 128 on Linux), so that the flag changes nothing else.
pub const BACKLOG: i32 = 128;

/// Binds the listening socket. With `reuse_port` (`--reuseport`) every process whose socket
/// sets it too, under the same user, may bind the same address, and the kernel spreads new
/// connections among them by a hash of each one's addresses. mio has no setter for
/// SO_REUSEPORT, so that socket is built with socket2 the way mio builds the others.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    if !reuse_port {
        return TcpListener::bind(addr);
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As mio does: rebinding at once after a restart, past connections in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds the UDP socket; with `reuse_port` it is shared as the TCP one is, each datagram going
/// to one process by a hash of its sender's address and port.
pub fn bind_udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    if !reuse_port {
        return UdpSocket::bind(addr);
    }
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// What the listener has next.
pub enum Next {
    Client(TcpStream, SocketAddr),
    /// Nothing is waiting.
    Drained,
    /// Out of descriptors: try again at this time.
    PauseUntil(Instant),
}

pub struct Acceptor {
    pub listener: TcpListener,
    /// A descriptor held in reserve (on /dev/null), given up to shed connections on EMFILE.
    spare: Option<File>,
    last_warning: Option<Instant>,
    shed_since_warning: u64,
}

impl Acceptor {
    pub fn new(listener: TcpListener) -> Acceptor {
        Acceptor {
            listener,
            spare: open_spare(),
            last_warning: None,
            shed_since_warning: 0,
        }
    }

    pub fn next(&mut self, now: Instant) -> Next {
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => return Next::Client(stream, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Drained,
                Err(e) if is_out_of_descriptors(&e) => return self.shed(now, &e),
                // The peer gave up before we accepted, or a signal: nothing to do with us.
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    log::error!("accept failed: {e}; pausing for {ACCEPT_PAUSE:?}");
                    return Next::PauseUntil(now + ACCEPT_PAUSE);
                }
            }
        }
    }

    /// Out of descriptors: refuse every waiting connection with the spare's slot.
    fn shed(&mut self, now: Instant, error: &io::Error) -> Next {
        let mut shed = 0;
        if self.spare.take().is_some() {
            while let Ok((stream, _)) = self.listener.accept() {
                refuse(&stream, notice::SERVER_FULL);
                shed += 1;
            }
            self.spare = open_spare();
        }
        self.shed_since_warning += shed;
        if self
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY)
        {
            log::warn!(
                "out of file descriptors ({error}): {} connections refused since the last warning",
                self.shed_since_warning
            );
            self.last_warning = Some(now);
            self.shed_since_warning = 0;
        }
        if self.spare.is_some() && shed > 0 {
            // The backlog is empty again; a new connection brings a new event.
            Next::Drained
        } else {
            Next::PauseUntil(now + ACCEPT_PAUSE)
        }
    }
}

/// Writes a one-line refusal to a socket about to be closed. The socket is fresh, so one short
/// write fits in its buffer; if it does not, the client sees only the close.
pub fn refuse(stream: &TcpStream, line: &str) {
    let mut stream = stream;
    let _ = stream.write_all(format!("{line}\n").as_bytes());
}

fn open_spare() -> Option<File> {
    File::open("/dev/null").ok()
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

/// Raises the soft descriptor limit to the hard one (as ngircd does) and returns the limit in
/// force, or `None` if it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}

/// The number of clients the descriptor limit allows, with headroom.
pub fn clients_allowed(fd_limit: u64) -> usize {
    usize::try_from(fd_limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX)
}

/// Keepalive probes sent before a silent peer is declared gone.
const KEEPALIVE_PROBES: libc::c_int = 3;
/// The longest idle time Linux takes for `TCP_KEEPIDLE` (tcp(7)); longer asks are cut to it.
const KEEPALIVE_MAX_IDLE: u64 = 32_767;

/// Turns on TCP keepalive (tcp(7)): after `idle` (at most [`KEEPALIVE_MAX_IDLE`] s) without
/// traffic the kernel probes the peer [`KEEPALIVE_PROBES`] times, `idle / 3` apart, and if none
/// is answered the next read fails with ETIMEDOUT. A peer whose machine vanished is thus gone
/// after `idle` and the probes, about twice `idle` (at least 4 s).
///
/// Keepalive only runs on an idle connection: if the peer vanished with our bytes still
/// unacknowledged, the kernel retransmits for about 15 minutes instead. `TCP_USER_TIMEOUT`,
/// set to the same total, bounds that case too (a reader with a full window still answers the
/// window probes, so it is not cut by this). mio exposes neither option, so this is setsockopt
/// on the raw descriptor.
pub fn keepalive(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let idle_secs = idle.as_secs().clamp(1, KEEPALIVE_MAX_IDLE) as libc::c_int;
    let interval = (idle_secs / 3).max(1);
    let total_ms = (idle_secs + KEEPALIVE_PROBES * interval).saturating_mul(1000);
    let options = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, interval),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES),
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, total_ms),
    ];
    for (level, name, value) in options {
        // SAFETY: the descriptor is open for the stream's lifetime, and the option value is a
        // c_int that outlives the call, with its size passed alongside.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                level,
                name,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_below_the_descriptor_limit() {
        assert_eq!(clients_allowed(64), 32);
        assert_eq!(clients_allowed(10), 0);
    }
}
