//! TLS for the black-box tests: a certificate made at test time (rcgen), the flags that give it
//! to the server, and a line client that speaks TLS (rustls over a blocking socket).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::WAIT;

/// A self-signed certificate for `localhost`, 127.0.0.1 and ::1, in PEM files of its own
/// directory, removed when dropped.
pub struct Certs {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl Certs {
    pub fn new() -> Certs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        let made = rcgen::generate_simple_self_signed(names).expect("make a certificate");
        let dir = std::env::temp_dir().join(format!(
            "loopchat-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        Certs {
            dir,
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    /// `--tls-cert FILE --tls-key FILE`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// A client configuration that trusts this certificate and nothing else.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a TLS connection ended, as its client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The server sent close_notify: the client knows it has every byte.
    CloseNotify,
    /// The stream ended without close_notify (a truncation, as far as TLS can tell).
    Truncated,
    /// Still open after the wait.
    Open,
}

/// A chat client over TLS, reading lines with a deadline like [`super::Client`].
pub struct TlsClient {
    pub stream: StreamOwned<ClientConnection, TcpStream>,
    buf: Vec<u8>,
    pub name: String,
}

impl TlsClient {
    /// Connects and completes the handshake, verifying the server against `certs`.
    pub fn connect(addr: SocketAddr, certs: &Certs) -> TlsClient {
        let tcp = TcpStream::connect_timeout(&addr, WAIT).expect("connect to server");
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(certs.client_config(), name).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake with the server");
        }
        TlsClient {
            stream,
            buf: Vec::new(),
            name: String::new(),
        }
    }

    /// Reads the welcome and the intro, and records the client's name.
    pub fn greeted(mut self) -> TlsClient {
        assert_eq!(self.line(), super::WELCOME);
        self.name = super::name_from_intro(&self.line());
        self
    }

    pub fn send(&mut self, text: &str) {
        self.stream
            .write_all(format!("{text}\n").as_bytes())
            .expect("send to server");
        self.stream.flush().unwrap();
    }

    pub fn line(&mut self) -> String {
        self.try_line(WAIT)
            .unwrap_or_else(|| panic!("{}: no line from server in time", self.name))
    }

    pub fn try_line(&mut self, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(String::from_utf8(line[..i].to_vec()).expect("UTF-8 from server"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self.fill(left) {
                Ok(true) => {}
                _ => return None,
            }
        }
    }

    /// Skips lines until one equals `want`.
    pub fn expect_eventually(&mut self, want: &str) {
        while self.line() != want {}
    }

    /// Reads everything until the server ends the connection (or `within` passes): the lines,
    /// and how it ended.
    pub fn read_to_end(&mut self, within: Duration) -> (Vec<String>, End) {
        let deadline = Instant::now() + within;
        let end = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break End::Open;
            }
            match self.fill(left) {
                Ok(true) => {}
                Ok(false) => break End::CloseNotify,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break End::Truncated,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break End::Open,
                Err(e) => panic!("reading to the end: {e}"),
            }
        };
        let text = String::from_utf8(std::mem::take(&mut self.buf)).expect("UTF-8");
        (text.lines().map(String::from).collect(), end)
    }

    /// One read; `Ok(false)` at close_notify.
    fn fill(&mut self, wait: Duration) -> io::Result<bool> {
        self.stream.sock.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk)? {
            0 => Ok(false),
            n => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
        }
    }
}
