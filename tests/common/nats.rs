//! nats-server for the black-box tests: started on a free port of 127.0.0.1 with JetStream
//! storing in a directory of its own (or without JetStream), killed and restarted on the same
//! port and store, killed by its PID and its directory removed when dropped.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::{WAIT, have};

/// A nats-server this test started.
pub struct NatsServer {
    bin: PathBuf,
    /// The running process; `None` after [`NatsServer::kill`].
    child: Option<Child>,
    port: u16,
    /// The store (`-sd`), the ports file and the log.
    dir: PathBuf,
    jetstream: bool,
}

impl NatsServer {
    /// A server with JetStream, or `None` (having said why) where nats-server is not installed.
    pub fn start() -> Option<NatsServer> {
        NatsServer::launch(true)
    }

    pub fn start_without_jetstream() -> Option<NatsServer> {
        NatsServer::launch(false)
    }

    fn launch(jetstream: bool) -> Option<NatsServer> {
        let Some(bin) = binary() else {
            eprintln!("SKIPPED: nats-server is not installed (.ci/run installs it)");
            return None;
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "loopchat-nats-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = NatsServer {
            bin,
            child: None,
            port: 0,
            dir,
            jetstream,
        };
        // Port -1: the server picks a free one and writes it to its ports file, so no other
        // process can take it between our choosing it and the server binding it.
        let child = server.spawn("-1");
        server.port = server.read_ports_file(child.id());
        server.child = Some(child);
        server.until_accepting();
        Some(server)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the server with SIGKILL (by its PID): no goodbye to its clients, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, on the same port and with the same store, once it accepts
    /// connections; kills it first if it runs.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(self.spawn(&self.port.to_string()));
        self.until_accepting();
    }

    fn spawn(&self, port: &str) -> Child {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-a", "127.0.0.1", "-p", port])
            .arg("--ports_file_dir")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.log())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(&self.dir);
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()))
    }

    fn log(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// The port in the ports file of the server with this PID (`{"nats":["nats://H:P"]}`).
    fn read_ports_file(&self, pid: u32) -> u16 {
        let file = self.dir.join(format!("nats-server_{pid}.ports"));
        let port = |text: &str| {
            let ports: serde_json::Value = serde_json::from_str(text).ok()?;
            let url = ports["nats"][0].as_str()?;
            url.rsplit(':').next()?.parse().ok()
        };
        self.within(&format!("{} to say its port", file.display()), || {
            std::fs::read_to_string(&file)
                .ok()
                .as_deref()
                .and_then(port)
        })
    }

    /// Waits until a connection gets the server's INFO.
    fn until_accepting(&self) {
        self.within("nats-server to accept connections", || {
            let mut stream = TcpStream::connect_timeout(&self.addr(), WAIT).ok()?;
            stream.set_read_timeout(Some(WAIT)).ok()?;
            let mut start = [0; 5];
            stream.read_exact(&mut start).ok()?;
            (&start == b"INFO ").then_some(())
        });
    }

    /// Polls `ready` until it gives a value; panics with the server's log after [`WAIT`].
    fn within<T>(&self, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = ready() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; its log:\n{}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Debian installs nats-server in /usr/sbin, which a user's PATH may lack.
fn binary() -> Option<PathBuf> {
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.is_file() {
        return Some(debian.to_path_buf());
    }
    have("nats-server").then(|| PathBuf::from("nats-server"))
}
