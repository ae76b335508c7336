//! Plumbing shared by the baseline servers, so that they differ only in their concurrency model.

use std::io::Write;
use std::net::SocketAddr;

/// The baselines' welcome line (loopchat's generator ignores it; it only proves the path).
pub const WELCOME: &str = "Welcome to a loopchat benchmark baseline";

pub struct Opts {
    pub addr: SocketAddr,
    /// Sent (with LF) to each client on connect, if any.
    pub welcome: Option<String>,
}

/// Parses `-H/--host`, `-p/--port` (0 = any free port) and `--welcome TEXT` (empty: none);
/// exits 2 on a usage error like loopchat does.
pub fn parse_args(name: &str, default_welcome: Option<&str>) -> Opts {
    let mut o = getopts::Options::new();
    o.optopt("H", "host", "address to listen on (127.0.0.1)", "ADDR");
    o.optopt("p", "port", "port, 0 = any free port (1234)", "PORT");
    o.optopt("", "welcome", "line sent on connect, empty = none", "TEXT");
    o.optflag("h", "help", "print this help");
    let usage = |err: &dyn std::fmt::Display| -> ! {
        eprintln!(
            "{name}: {err}\n{}",
            o.usage(&format!("Usage: {name} [options]"))
        );
        std::process::exit(2)
    };
    let m = o
        .parse(std::env::args().skip(1))
        .unwrap_or_else(|e| usage(&e));
    if m.opt_present("h") {
        println!("{}", o.usage(&format!("Usage: {name} [options]")));
        std::process::exit(0);
    }
    let host = m.opt_str("H").unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = m
        .opt_str("p")
        .map_or(Ok(1234), |p| p.parse())
        .unwrap_or_else(|e| usage(&e));
    let ip = host
        .trim_matches(['[', ']'])
        .parse()
        .unwrap_or_else(|e| usage(&e));
    let welcome = match m.opt_str("welcome") {
        Some(w) if w.is_empty() => None,
        Some(w) => Some(w),
        None => default_welcome.map(str::to_string),
    };
    Opts {
        addr: SocketAddr::new(ip, port),
        welcome,
    }
}

/// Prints loopchat's first transcript line, which the driver waits for to learn the port.
pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[SERVER] Listening on {addr}");
    let _ = out.flush();
}

/// Reassembles lines across reads and hands out complete ones in as few chunks as possible:
/// every baseline relays whole lines so that concurrent senders never interleave mid-line.
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Feeds freshly read bytes; calls `deliver` once with all the complete lines they finish.
    pub fn feed(&mut self, data: &[u8], deliver: impl FnOnce(&[u8])) {
        if self.partial.is_empty() {
            let end = complete_len(data);
            if end > 0 {
                deliver(&data[..end]);
            }
            self.partial.extend_from_slice(&data[end..]);
        } else {
            self.partial.extend_from_slice(data);
            let end = complete_len(&self.partial);
            if end > 0 {
                deliver(&self.partial[..end]);
                self.partial.drain(..end);
            }
        }
    }
}

fn complete_len(data: &[u8]) -> usize {
    data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn delivers_only_complete_lines() {
        let mut l = Lines::default();
        let mut got = Vec::new();
        for chunk in [&b"he"[..], b"llo\nwor", b"ld", b"\n", b"a\nb\nc"] {
            l.feed(chunk, |c| got.push(String::from_utf8(c.to_vec()).unwrap()));
        }
        assert_eq!(got, ["hello\n", "world\n", "a\nb\n"]);
    }
}
