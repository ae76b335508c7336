//! The web door: what an HTTP request on the chat port gets. Pure: a request in, the bytes of
//! the answer out, and whether the connection becomes a WebSocket chat client.
//!
//! `GET /` is the chat page (embedded in the binary: no build step, no CDN); `GET /` with
//! `Upgrade: websocket` is a chat client (RFC 6455, section 4.2); `GET /metrics` is the
//! server's figures in Prometheus' text format; anything else is a short error. Every answer
//! but the upgrade closes the connection.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::codec::http::Request;
use crate::config::{MetricsAccess, Web};
use crate::engine::stats::Counters;

/// The chat page: HTML, CSS and script in one file.
pub const PAGE: &str = include_str!("web/index.html");

/// What the page may do: its own inline style and script, and a WebSocket back to this server;
/// nothing from anywhere else, and no framing by other sites.
const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
    connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// RFC 6455, section 1.3: what the accept key is made with.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the door answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send this and close.
    Close(Vec<u8>),
    /// Send this (101 Switching Protocols): the connection is a WebSocket chat client now.
    Upgrade(Vec<u8>),
}

/// Who asks, as far as the door cares.
pub struct Asker {
    /// From 127.0.0.1 or ::1: `/metrics` is open to these by default.
    pub loopback: bool,
}

/// Answers one request. `metrics` makes the figures when they are asked for.
pub fn answer(
    web: &Web,
    request: &Request,
    asker: &Asker,
    metrics: impl FnOnce() -> String,
) -> Answer {
    let path = request.path.split('?').next().unwrap_or("");
    if request.method != "GET" {
        return Answer::Close(error(405, "only GET is served here"));
    }
    match path {
        "/" | "/index.html" if request.header("upgrade").is_some() => upgrade(web, request),
        "/" | "/index.html" => {
            Answer::Close(response(200, "text/html; charset=utf-8", PAGE.as_bytes()))
        }
        "/metrics" => match web.metrics {
            MetricsAccess::Anywhere => Answer::Close(metrics_response(metrics())),
            MetricsAccess::Loopback if asker.loopback => Answer::Close(metrics_response(metrics())),
            MetricsAccess::Loopback | MetricsAccess::Off => Answer::Close(error(
                403,
                "metrics are served to this machine only (--metrics)",
            )),
        },
        _ => Answer::Close(error(404, "not found: the chat is at /")),
    }
}

/// A request the reader refused (too large, malformed).
pub fn refusal(status: u16) -> Vec<u8> {
    error(status, "a request this server does not take")
}

/// The answer to a plain-text request under `--tls-only`.
pub fn https_only() -> Vec<u8> {
    error(400, "this server takes https:// only")
}

/// The WebSocket handshake: checked, then answered with the accept key.
fn upgrade(web: &Web, request: &Request) -> Answer {
    if !request
        .header("upgrade")
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        || !request.has_token("connection", "upgrade")
    {
        return Answer::Close(error(400, "not a WebSocket handshake"));
    }
    if request.header("sec-websocket-version") != Some("13") {
        let mut answer = error(426, "WebSocket version 13 only");
        // Section 4.4: say which version is spoken, among the headers.
        let end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response has a head");
        answer.splice(end..end, *b"\r\nSec-WebSocket-Version: 13");
        return Answer::Close(answer);
    }
    let Some(key) = request.header("sec-websocket-key") else {
        return Answer::Close(error(400, "no Sec-WebSocket-Key"));
    };
    if !origin_allowed(web, request) {
        return Answer::Close(error(
            403,
            "this page's origin may not open a chat here (--ws-origin)",
        ));
    }
    let accept = base64::engine::general_purpose::STANDARD.encode(
        sha1_smol::Sha1::from(format!("{key}{WS_GUID}"))
            .digest()
            .bytes(),
    );
    Answer::Upgrade(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// A browser says which page opens a WebSocket (`Origin`); by default only this server's own
/// page may, so that another site a user visits cannot chat in their name. Clients that are
/// not browsers send no `Origin`, and are let in.
fn origin_allowed(web: &Web, request: &Request) -> bool {
    let Some(origin) = request.header("origin") else {
        return true;
    };
    let host = request.header("host").unwrap_or("");
    let same = ["http://", "https://"]
        .iter()
        .any(|scheme| origin.strip_prefix(scheme) == Some(host));
    same || web
        .origins
        .iter()
        .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
}

/// What `/metrics` shows: the figures of the console's `/stats`.
pub struct Figures {
    pub clients: usize,
    pub sockets: usize,
    pub websockets: usize,
    /// Connections with a TLS session (some of them also among `websockets`).
    pub tls: usize,
    pub rooms: usize,
    pub counters: Counters,
    pub owed: usize,
    pub holding: bool,
    pub holds: u64,
    pub held_secs: f64,
}

/// The figures in Prometheus' text exposition format, version 0.0.4.
pub fn metrics(f: &Figures) -> String {
    let c = &f.counters;
    let holding = f64::from(u8::from(f.holding));
    let drops = [
        ("too_slow", c.too_slow),
        ("idle", c.idle),
        ("error", c.errors),
    ];
    let refusals = [
        ("full", c.refused_full),
        ("per_address", c.refused_per_address),
        ("connect_rate", c.refused_rate),
    ];
    let by_reason = |counts: &[(&str, u64)]| -> Vec<(String, f64)> {
        let label = |reason| format!("{{reason=\"{reason}\"}}");
        counts.iter().map(|&(r, n)| (label(r), n as f64)).collect()
    };
    let one = |value: f64| vec![(String::new(), value)];
    let families = [
        (
            "clients",
            "gauge",
            "Chat clients connected (line and WebSocket).",
            one(f.clients as f64),
        ),
        (
            "sockets",
            "gauge",
            "Open connections, leaving ones included.",
            one(f.sockets as f64),
        ),
        (
            "websocket_clients",
            "gauge",
            "Connections that are WebSocket chat clients.",
            one(f.websockets as f64),
        ),
        (
            "tls_connections",
            "gauge",
            "Connections with a TLS session.",
            one(f.tls as f64),
        ),
        (
            "rooms",
            "gauge",
            "Rooms, the lobby included.",
            one(f.rooms as f64),
        ),
        (
            "lines_in_total",
            "counter",
            "Chat lines taken from clients.",
            one(c.lines_in as f64),
        ),
        (
            "deliveries_total",
            "counter",
            "Lines queued to clients, one per recipient.",
            one(c.lines_out as f64),
        ),
        (
            "bytes_written_total",
            "counter",
            "Bytes written to clients.",
            one(c.bytes_out as f64),
        ),
        (
            "bytes_owed",
            "gauge",
            "Bytes queued for clients and not yet written.",
            one(f.owed as f64),
        ),
        (
            "flow_holding",
            "gauge",
            "1 while flow control holds input back.",
            one(holding),
        ),
        (
            "flow_holds_total",
            "counter",
            "Times flow control started holding input back.",
            one(f.holds as f64),
        ),
        (
            "flow_held_seconds_total",
            "counter",
            "Time input was held back.",
            one(f.held_secs),
        ),
        (
            "drops_total",
            "counter",
            "Clients dropped by the server, by reason.",
            by_reason(&drops),
        ),
        (
            "refusals_total",
            "counter",
            "Connections refused, by reason.",
            by_reason(&refusals),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, samples) in families {
        let _ = writeln!(
            out,
            "# HELP loopchat_{name} {help}\n# TYPE loopchat_{name} {kind}"
        );
        for (labels, value) in samples {
            let _ = writeln!(out, "loopchat_{name}{labels} {value}");
        }
    }
    out
}

fn metrics_response(body: String) -> Vec<u8> {
    response(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        body.as_bytes(),
    )
}

fn error(status: u16, why: &str) -> Vec<u8> {
    let body = format!("{} {why}\n", reason(status));
    response(status, "text/plain; charset=utf-8", body.as_bytes())
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: {}\r\n\r\n",
        reason(status),
        body.len(),
        POLICY,
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
        }
    }

    fn web(origins: &[&str], metrics: MetricsAccess) -> Web {
        Web {
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            metrics,
        }
    }

    const LOCAL: Asker = Asker { loopback: true };
    const REMOTE: Asker = Asker { loopback: false };

    fn status(answer: &Answer) -> String {
        let (Answer::Close(bytes) | Answer::Upgrade(bytes)) = answer;
        let text = String::from_utf8_lossy(bytes);
        text.lines().next().unwrap_or("").to_owned()
    }

    fn handshake(extra: &[(&'static str, &'static str)]) -> Request {
        let mut headers = vec![
            ("Host", "localhost:1234"),
            ("Upgrade", "websocket"),
            ("Connection", "keep-alive, Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        headers.extend_from_slice(extra);
        request("GET", "/", &headers)
    }

    #[test]
    fn the_page_and_the_errors() {
        let w = web(&[], MetricsAccess::Loopback);
        let page = answer(&w, &request("GET", "/", &[]), &REMOTE, String::new);
        assert_eq!(status(&page), "HTTP/1.1 200 OK");
        let Answer::Close(bytes) = page else { panic!() };
        assert!(String::from_utf8_lossy(&bytes).contains("Content-Type: text/html"));
        let get = |path: &str| {
            status(&answer(
                &w,
                &request("GET", path, &[]),
                &REMOTE,
                String::new,
            ))
        };
        assert_eq!(get("/nope"), "HTTP/1.1 404 Not Found");
        assert_eq!(get("/?x=1"), "HTTP/1.1 200 OK");
        let post = answer(&w, &request("POST", "/", &[]), &REMOTE, String::new);
        assert_eq!(status(&post), "HTTP/1.1 405 Method Not Allowed");
    }

    #[test]
    fn the_handshake_answers_with_the_rfc_accept_key() {
        let w = web(&[], MetricsAccess::Loopback);
        let Answer::Upgrade(bytes) = answer(&w, &handshake(&[]), &REMOTE, String::new) else {
            panic!("no upgrade");
        };
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        // The example of RFC 6455, section 1.3.
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        let old = request(
            "GET",
            "/",
            &[
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "8"),
            ],
        );
        let refused = answer(&w, &old, &REMOTE, String::new);
        assert_eq!(status(&refused), "HTTP/1.1 426 Upgrade Required");
        let Answer::Close(bytes) = refused else {
            panic!()
        };
        assert!(String::from_utf8_lossy(&bytes).contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn only_this_servers_page_may_open_a_websocket_unless_allowed() {
        let w = web(&[], MetricsAccess::Loopback);
        let same = handshake(&[("Origin", "http://localhost:1234")]);
        assert!(matches!(
            answer(&w, &same, &REMOTE, String::new),
            Answer::Upgrade(_)
        ));
        let other = handshake(&[("Origin", "https://evil.example")]);
        assert_eq!(
            status(&answer(&w, &other, &REMOTE, String::new)),
            "HTTP/1.1 403 Forbidden"
        );
        let w = web(&["https://evil.example"], MetricsAccess::Loopback);
        assert!(matches!(
            answer(&w, &other, &REMOTE, String::new),
            Answer::Upgrade(_)
        ));
        let w = web(&["*"], MetricsAccess::Loopback);
        assert!(matches!(
            answer(&w, &other, &REMOTE, String::new),
            Answer::Upgrade(_)
        ));
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let counters = Counters {
            lines_in: 7,
            too_slow: 2,
            ..Counters::default()
        };
        let text = metrics(&Figures {
            clients: 3,
            sockets: 4,
            websockets: 1,
            tls: 1,
            rooms: 2,
            counters,
            owed: 10,
            holding: true,
            holds: 1,
            held_secs: 0.5,
        });
        for line in [
            "# HELP loopchat_clients Chat clients connected (line and WebSocket).",
            "# TYPE loopchat_clients gauge",
            "loopchat_clients 3",
            "loopchat_lines_in_total 7",
            "loopchat_tls_connections 1",
            "loopchat_flow_holding 1",
            "loopchat_flow_held_seconds_total 0.5",
            "# TYPE loopchat_drops_total counter",
            "loopchat_drops_total{reason=\"too_slow\"} 2",
            "loopchat_refusals_total{reason=\"connect_rate\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn metrics_are_for_this_machine_unless_opened() {
        let figures = || "loopchat_clients 3\n".to_owned();
        let metrics = request("GET", "/metrics", &[]);
        let w = web(&[], MetricsAccess::Loopback);
        let Answer::Close(bytes) = answer(&w, &metrics, &LOCAL, figures) else {
            panic!()
        };
        assert!(String::from_utf8_lossy(&bytes).ends_with("\r\n\r\nloopchat_clients 3\n"));
        assert_eq!(
            status(&answer(&w, &metrics, &REMOTE, figures)),
            "HTTP/1.1 403 Forbidden"
        );
        let w = web(&[], MetricsAccess::Anywhere);
        assert_eq!(
            status(&answer(&w, &metrics, &REMOTE, figures)),
            "HTTP/1.1 200 OK"
        );
        let w = web(&[], MetricsAccess::Off);
        assert_eq!(
            status(&answer(&w, &metrics, &LOCAL, figures)),
            "HTTP/1.1 403 Forbidden"
        );
    }
}
