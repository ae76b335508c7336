//! TLS for the generator's line clients (`loadgen --tls`): one rustls client session per
//! connection, driven by the generator's mio loop as loopchat drives its server sessions (no
//! thread, no second loop), trusting the one certificate the benchmark gave the server.
//!
//! rustls's buffered `ClientConnection`. Its `read_tls` takes at most 4 KiB a call, so the
//! generator reads the socket into its own large buffer and hands the session slices of it
//! ([`Session::receive`]): a read system call per 4 KiB cost the generator about a tenth more
//! CPU per delivery in a fan-out to 1,000 clients.

use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The client side of TLS, loaded once and shared by every session.
pub struct Tls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Tls {
    /// Trusts the certificates of the PEM file `ca` and nothing else; the server must present
    /// one for `ip`, the address the generator connects to. The *ring* provider, as loopchat's.
    pub fn load(ca: &Path, ip: IpAddr) -> Result<Tls, String> {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca {}: no certificate in the file", ca.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every client stands for a different person: each pays a full handshake, none resumes
        // with a ticket another client got.
        config.resumption = Resumption::disabled();
        Ok(Tls {
            config: Arc::new(config),
            name: ServerName::from(ip),
        })
    }

    /// A new session; its ClientHello waits to be written ([`Session::send`]).
    pub fn session(&self) -> Result<Session, String> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map(|conn| Session { conn })
            .map_err(|e| format!("tls: {e}"))
    }
}

/// One connection's session.
pub struct Session {
    conn: ClientConnection,
}

impl Session {
    /// Decrypts `cipher`, what the socket gave, and hands every run of plaintext to `plain`.
    /// An error (a certificate refused, a broken record, the server's alert) ends the
    /// connection. After the server's close_notify the rest is ignored: its end of the stream
    /// follows.
    pub fn receive(
        &mut self,
        mut cipher: &[u8],
        plain: &mut impl FnMut(&[u8]),
    ) -> Result<(), String> {
        while !cipher.is_empty() {
            // Its buffers never fill: what each call took is decrypted and handed on below.
            match self.conn.read_tls(&mut cipher) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("tls: {e}")),
            }
            self.conn
                .process_new_packets()
                .map_err(|e| format!("tls: {e}"))?;
            let mut reader = self.conn.reader();
            while let Ok(chunk) = reader.fill_buf()
                && !chunk.is_empty()
            {
                let n = chunk.len();
                plain(chunk);
                reader.consume(n);
            }
        }
        Ok(())
    }

    /// Encrypts as much of `plaintext` as the session takes (none until the handshake is done),
    /// removing it, and writes what the session holds to `socket` until the socket refuses
    /// (`WouldBlock`) or the session has nothing left.
    pub fn send(&mut self, plaintext: &mut Vec<u8>, socket: &mut impl Write) -> io::Result<()> {
        loop {
            if !plaintext.is_empty() && !self.conn.is_handshaking() {
                let taken = self.conn.writer().write(plaintext)?;
                plaintext.drain(..taken);
            }
            if !self.conn.wants_write() {
                return Ok(());
            }
            if let Err(e) = self.conn.write_tls(socket)
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
        }
    }

    /// Whether the session has bytes for the socket (its next handshake flight, an alert).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};
    use std::io::Read;

    /// Against rustls's own server, in memory: what the client queued before the handshake
    /// arrives after it, and the server's lines decrypt whatever the pieces they come in.
    #[test]
    fn lines_pass_both_ways_whatever_the_reads() {
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        let ca = std::env::temp_dir().join(format!("loopchat-bench-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, made.cert.pem()).unwrap();
        let tls = Tls::load(&ca, [127, 0, 0, 1].into());
        std::fs::remove_file(&ca).unwrap();
        let mut client = tls.unwrap().session().unwrap();
        let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![made.cert.der().clone()], key)
            .unwrap();
        let mut server = ServerConnection::new(Arc::new(config)).unwrap();

        let mut out = b"hello\n".to_vec();
        let (mut wire, mut heard, mut said, mut got) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for piece in 1..=40 {
            client.send(&mut out, &mut wire).unwrap();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                server.read_tls(&mut rest).unwrap();
                server.process_new_packets().unwrap();
            }
            let _ = server.reader().read_to_end(&mut heard);
            if !server.is_handshaking() {
                let line = format!("line {piece}\n");
                server.writer().write_all(line.as_bytes()).unwrap();
                said.extend_from_slice(line.as_bytes());
            }
            wire.clear();
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
            for chunk in wire.chunks(piece) {
                client
                    .receive(chunk, &mut |p| got.extend_from_slice(p))
                    .unwrap();
            }
            wire.clear();
        }
        assert_eq!(heard, b"hello\n");
        // One round trip: the client's Finished and its line go out in the second round.
        assert!(said.starts_with(b"line 2\n"));
        assert_eq!(got, said);
        assert!(out.is_empty() && !client.wants_write());
    }
}
