//! TLS on the chat port: the certificate, rustls's settings, and the layer that sits between a
//! connection's socket and its codec.
//!
//! A TLS connection is an ordinary connection whose bytes pass through a rustls session: what
//! the socket gives is decrypted before the codec sees it, and what the connection is owed
//! (plaintext, in its own queue) is encrypted only as fast as the socket takes it. The session
//! does no I/O of its own: the connection hands it the socket when the loop says the socket is
//! ready, as it would read or write a plain socket, so TLS needs no thread and no second loop.
//!
//! rustls's buffered `ServerConnection` is used (rustls's `tlsserver-mio` example has the same
//! shape); its unbuffered API is sans-IO too, but still changes between releases. Its buffers are
//! bounded here, not left at their defaults (see [`SENDABLE`]).

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Encrypted bytes a session holds for the socket, at most (rustls's default is 64 KiB per
/// connection). One full record keeps the socket busy; the rest of what a client is owed stays
/// plaintext in its own queue, where `--max-pending` and the flow control count it.
pub const SENDABLE: usize = 16 * 1024;

/// The server's side of TLS, loaded once at start-up and shared by every session.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
    /// `--tls-only`: a client that does not start TLS is refused.
    pub only: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("only", &self.only).finish()
    }
}

/// The cryptography of both the server and the bundled client: *ring*, which builds with
/// nothing but a C compiler, where aws-lc-rs, rustls's default, wants CMake and a longer build.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; why not, if it cannot be read or holds none.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the file (PEM expected)".into());
    }
    Ok(certs)
}

impl Tls {
    /// The certificate chain and key from PEM files. TLS 1.2 and 1.3 with rustls's safe
    /// defaults, and the [`provider`] both ends use.
    pub fn load(cert: &Path, key: &Path, only: bool) -> Result<Tls, String> {
        let chain =
            certificates(cert).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("--tls-key does not fit --tls-cert: {e}"))?;
        Ok(Tls {
            config: Arc::new(config),
            only,
        })
    }
}

/// What a read of a TLS connection found, beside a would-block or an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Plain {
    /// Decrypted bytes, in the caller's buffer.
    Bytes(usize),
    /// The handshake has just completed: from now on the client is a client of the chat.
    Secured,
    /// The client ended the session (close_notify) or its stream.
    End,
}

/// One TLS connection's session.
pub struct Session {
    conn: ServerConnection,
    /// [`Plain::Secured`] has been reported.
    secured: bool,
    /// Our close_notify is queued: nothing more is encrypted.
    closed: bool,
}

impl Session {
    /// A session that starts with the bytes already read from the socket (its ClientHello,
    /// which told the connection apart from a plain one). `socket` only takes the alert that
    /// tells the client why, if those bytes are not TLS after all.
    pub fn start<T: Write>(tls: &Tls, first: &[u8], socket: &mut T) -> io::Result<Session> {
        let mut conn = ServerConnection::new(Arc::clone(&tls.config)).map_err(invalid)?;
        conn.set_buffer_limit(Some(SENDABLE));
        let mut session = Session {
            conn,
            secured: false,
            closed: false,
        };
        let mut rest = first;
        while !rest.is_empty() {
            session.conn.read_tls(&mut rest)?;
            session.process(socket)?;
        }
        Ok(session)
    }

    /// Reads the client's next plaintext into `buf`: what the session already holds, else what
    /// the socket has, decrypted. Errors as a socket's: `WouldBlock` only when the socket is
    /// empty, as edge triggering requires.
    pub fn read<T: Read + Write>(&mut self, socket: &mut T, buf: &mut [u8]) -> io::Result<Plain> {
        loop {
            // Before any plaintext that came in the same packet as the client's Finished.
            if !self.secured && !self.conn.is_handshaking() {
                self.secured = true;
                return Ok(Plain::Secured);
            }
            match self.conn.reader().read(buf) {
                Ok(0) => return Ok(Plain::End),
                Ok(n) => return Ok(Plain::Bytes(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A stream that ended without close_notify: a chat client gone is gone.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Plain::End),
                Err(e) => return Err(e),
            }
            // Only with nothing decrypted left, so rustls's own plaintext buffer never fills.
            if self.conn.read_tls(socket)? == 0 {
                return Ok(Plain::End);
            }
            self.process(socket)?;
        }
    }

    /// Decrypts what was read. On an error rustls queues an alert; it is sent at once, once, and
    /// the connection is done.
    fn process<T: Write>(&mut self, socket: &mut T) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.conn.write_tls(socket);
            return Err(invalid(e));
        }
        Ok(())
    }

    /// Encrypts as much of `plaintext` as the session's buffer takes ([`SENDABLE`]), none
    /// before the handshake is done; returns how much it took. `closing`: once everything is
    /// taken, close_notify follows, so that the client knows it has the last byte.
    pub fn encrypt(&mut self, plaintext: &[u8], closing: bool) -> usize {
        if self.conn.is_handshaking() || self.closed {
            return 0;
        }
        let taken = match plaintext {
            [] => 0,
            bytes => self.conn.writer().write(bytes).unwrap_or(0),
        };
        if closing && taken == plaintext.len() {
            self.conn.send_close_notify();
            self.closed = true;
        }
        taken
    }

    /// Whether the session has bytes for the socket: records of the handshake, alerts, or
    /// encrypted output.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes what the session has for the socket; `WouldBlock` as the socket says it.
    pub fn write_tls<T: Write>(&mut self, socket: &mut T) -> io::Result<usize> {
        self.conn.write_tls(socket)
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
