//! The NATS codec (src/nats.rs) against a real nats-server, started here, with nothing between
//! them but std's blocking sockets: CONNECT, SUB, PUB and HPUB written by the codec, and what
//! the server delivers decoded by it, read in small pieces so that ops come split; a request
//! nobody answers; JetStream's API replies, read as JSON, before and after the server is killed
//! and restarted on its store. Each test prints `SKIPPED` and passes where nats-server is not
//! installed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::WAIT;
use common::nats::NatsServer;
use loopchat::nats::{self, Decoder, Headers, Msg, Op};
use serde_json::Value;

/// Where the tests' requests are answered.
const INBOX: &str = "_INBOX.test";
const INBOX_SID: u64 = 99;

/// A client connection: a socket and the codec.
struct Conn {
    stream: TcpStream,
    decoder: Decoder,
    /// Bytes read and not yet decoded, from `at`.
    unread: Vec<u8>,
    at: usize,
}

impl Conn {
    /// Connects, reads the server's INFO, says CONNECT, and waits until the server has taken
    /// it. Returns the INFO too.
    fn open(server: &NatsServer, name: &str) -> (Conn, Value) {
        let stream = TcpStream::connect_timeout(&server.addr(), WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut conn = Conn {
            stream,
            decoder: Decoder::new(1 << 20),
            unread: Vec::new(),
            at: 0,
        };
        let Op::Info(info) = conn.op() else {
            panic!("the server did not start with INFO");
        };
        let info: Value = serde_json::from_str(&info).expect("INFO is JSON");
        let max_payload = info["max_payload"].as_u64().expect("INFO has max_payload");
        conn.decoder.set_max_payload(max_payload as usize);
        conn.send(|out| nats::connect(out, name, env!("CARGO_PKG_VERSION")));
        assert_eq!(conn.sync(), [], "ops before the first PONG");
        (conn, info)
    }

    fn send(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        write(&mut out);
        self.stream.write_all(&out).expect("send");
    }

    /// Sends PING and reads to its PONG: the server has processed everything sent before, and
    /// delivered to this connection what that gives it. Returns the ops that came first.
    fn sync(&mut self) -> Vec<Op> {
        self.send(nats::ping);
        let mut before = Vec::new();
        loop {
            match self.op() {
                Op::Pong => return before,
                op => before.push(op),
            }
        }
    }

    /// The next op; panics on a protocol error, or when none comes within [`WAIT`].
    fn op(&mut self) -> Op {
        loop {
            let mut input = &self.unread[self.at..];
            let before = input.len();
            let op = self.decoder.next(&mut input);
            self.at += before - input.len();
            if let Some(op) = op {
                return op.expect("the server speaks the protocol");
            }
            // Small reads: an op of any size comes in pieces.
            let mut chunk = [0; 61];
            let n = self.stream.read(&mut chunk).expect("an op in time");
            assert!(n > 0, "the server closed the connection");
            self.unread.clear();
            self.unread.extend_from_slice(&chunk[..n]);
            self.at = 0;
        }
    }

    /// The next op, which must be a message.
    fn msg(&mut self) -> Msg {
        match self.op() {
            Op::Msg(msg) => msg,
            op => panic!("expected a message, got {op:?}"),
        }
    }

    /// Publishes a request whose answer comes to [`INBOX`] (subscribed by the caller), and
    /// returns the answer's JSON.
    fn request(&mut self, subject: &str, headers: Option<&Headers>, payload: &[u8]) -> Value {
        self.send(|out| nats::publish(out, subject, Some(INBOX), headers, payload));
        let answer = self.msg();
        assert_eq!((answer.subject.as_str(), answer.sid), (INBOX, INBOX_SID));
        serde_json::from_slice(&answer.payload).unwrap_or_else(|e| {
            let text = String::from_utf8_lossy(&answer.payload);
            panic!("{subject}: not JSON ({e}): {text}")
        })
    }
}

#[test]
fn the_codec_publishes_subscribes_and_decodes_with_nats_server() {
    let Some(server) = NatsServer::start_without_jetstream() else {
        return;
    };
    let (mut sub, info) = Conn::open(&server, "subscriber");
    assert_eq!(info["headers"], true, "{info}");
    sub.send(|out| nats::subscribe(out, "loopchat.test.>", None, 1));
    assert_eq!(sub.sync(), []);

    let (mut publisher, _) = Conn::open(&server, "publisher \"quoted\"");
    // A payload with CRLF, and what looks like an op, inside; headers with a repeated key; a
    // payload of many reads.
    let tricky = b"hello\r\nMSG fake 1 2\r\n\r\n".to_vec();
    let headers = Headers::new()
        .with("Origin", "node-a")
        .with("Seq", "1")
        .with("Origin", "again");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    publisher.send(|out| {
        nats::publish(out, "loopchat.test.plain", None, None, &tricky);
        let reply = Some("loopchat.reply.1");
        nats::publish(
            out,
            "loopchat.test.headers",
            reply,
            Some(&headers),
            b"with headers",
        );
        nats::publish(out, "loopchat.test.empty", None, Some(&Headers::new()), b"");
        nats::publish(out, "loopchat.test.big", None, None, &big);
    });
    assert_eq!(publisher.sync(), []);

    let msg = |subject: &str, reply: Option<&str>, headers: Option<&Headers>, payload: &[u8]| Msg {
        subject: subject.into(),
        sid: 1,
        reply: reply.map(Into::into),
        headers: headers.cloned(),
        payload: payload.to_vec(),
    };
    assert_eq!(sub.msg(), msg("loopchat.test.plain", None, None, &tricky));
    let with_headers = sub.msg();
    assert_eq!(
        with_headers,
        msg(
            "loopchat.test.headers",
            Some("loopchat.reply.1"),
            Some(&headers),
            b"with headers"
        )
    );
    assert_eq!(with_headers.headers.unwrap().get("origin"), Some("node-a"));
    let empty = Headers::new();
    assert_eq!(
        sub.msg(),
        msg("loopchat.test.empty", None, Some(&empty), b"")
    );
    assert_eq!(sub.msg(), msg("loopchat.test.big", None, None, &big));

    // "echo":false: a connection's own messages do not come back to it.
    publisher.send(|out| {
        nats::subscribe(out, "loopchat.echo", None, 5);
        nats::publish(out, "loopchat.echo", None, None, b"mine");
    });
    assert_eq!(publisher.sync(), []);

    // "no_responders":true: a request nobody subscribes to is answered at once, with a status.
    publisher.send(|out| {
        nats::subscribe(out, INBOX, None, INBOX_SID);
        nats::publish(out, "nobody.listens", Some(INBOX), None, b"anyone?");
        nats::unsubscribe(out, INBOX_SID, None);
    });
    let answer = publisher.msg();
    assert_eq!((answer.subject.as_str(), answer.sid), (INBOX, INBOX_SID));
    assert_eq!(answer.headers.and_then(|h| h.status), Some(503));
    assert_eq!(answer.payload, b"");
    assert_eq!(sub.sync(), [], "the subscriber got more than was sent");
    assert_eq!(sub.decoder.skipped(), 0);
}

#[test]
fn jetstream_api_replies_decode_as_json_and_outlive_a_restart() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let (mut c, info) = Conn::open(&server, "js");
    assert_eq!(info["jetstream"], true, "{info}");
    c.send(|out| nats::subscribe(out, INBOX, None, INBOX_SID));

    let account = c.request("$JS.API.INFO", None, b"");
    assert_eq!(
        account["type"], "io.nats.jetstream.api.v1.account_info_response",
        "{account}"
    );

    // A stream as a key-value bucket makes it, and a compare-and-set write into it.
    let config = br#"{"name":"KV_test","subjects":["$KV.test.>"],"max_msgs_per_subject":1}"#;
    let created = c.request("$JS.API.STREAM.CREATE.KV_test", None, config);
    assert_eq!(
        created["type"], "io.nats.jetstream.api.v1.stream_create_response",
        "{created}"
    );
    assert_eq!(created["config"]["name"], "KV_test");
    let expect =
        |seq: u64| Headers::new().with("Nats-Expected-Last-Subject-Sequence", &seq.to_string());
    let put = c.request("$KV.test.topic", Some(&expect(0)), b"first");
    assert_eq!(
        (put["stream"].as_str(), put["seq"].as_u64()),
        (Some("KV_test"), Some(1)),
        "{put}"
    );
    let stale = c.request("$KV.test.topic", Some(&expect(0)), b"second");
    assert_eq!(stale["error"]["err_code"], 10071, "{stale}");
    assert_eq!(stale["error"]["code"], 400);

    // Killed and restarted, the server has its store, on the same port.
    server.kill();
    server.restart();
    let (mut c, _) = Conn::open(&server, "js again");
    c.send(|out| nats::subscribe(out, INBOX, None, INBOX_SID));
    let stream = c.request("$JS.API.STREAM.INFO.KV_test", None, b"");
    assert_eq!(stream["state"]["messages"], 1, "{stream}");
    assert_eq!(stream["state"]["last_seq"], 1);
}
