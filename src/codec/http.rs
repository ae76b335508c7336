//! The HTTP door's request head: bytes in until the blank line, parsed with `httparse`, within a
//! size bound. Pure: no sockets, no clocks (the engine times the head out like slowloris).
//!
//! Only what the door needs is kept: the method, the path and the headers, owned, so that the
//! reader's buffer can go as soon as the request is whole.

/// The largest request head taken: a browser's is well under 2 KiB; cookies for another
/// service on the same host can add some.
pub const MAX_HEAD: usize = 8 * 1024;
/// The most header lines taken.
const MAX_HEADERS: usize = 48;

/// A request, as far as the door reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of this name (lowercase), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header holds this token, regardless of case
    /// (`Connection: keep-alive, Upgrade`).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// What the bytes so far make.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// More bytes are needed.
    Incomplete,
    /// A whole request; the bytes after its head are left in the input.
    Request(Request),
    /// Not a request the door takes: answer with this status and close.
    Bad(u16),
}

/// Collects one request head.
#[derive(Debug, Default)]
pub struct HeadReader {
    buf: Vec<u8>,
}

impl HeadReader {
    /// Takes bytes from `input` up to the end of the head, and says what they make.
    pub fn feed(&mut self, input: &mut &[u8]) -> Head {
        // The end may straddle two reads: look again from a little before the new bytes.
        let from = self.buf.len().saturating_sub(3);
        let room = MAX_HEAD.saturating_sub(self.buf.len());
        let take = input.len().min(room);
        self.buf.extend_from_slice(&input[..take]);
        let Some(end) = find(&self.buf[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
            *input = &input[take..];
            return if self.buf.len() >= MAX_HEAD {
                Head::Bad(431)
            } else {
                Head::Incomplete
            };
        };
        // Give back what came after the head (a WebSocket client may send right away).
        let extra = self.buf.len() - end;
        *input = &input[take - extra..];
        let head = std::mem::take(&mut self.buf);
        parse(&head[..end])
    }

    pub fn held(&self) -> usize {
        self.buf.len()
    }
}

fn parse(head: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Head::Bad(400),
        Err(httparse::Error::TooManyHeaders) => return Head::Bad(431),
        Err(_) => return Head::Bad(400),
    }
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Head::Bad(400);
    };
    let headers = request
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_owned();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    Head::Request(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether a connection's first bytes are the start of an HTTP request: a whole request line
/// (`GET /path HTTP/1.1`) in them. A chat line never looks like this by accident, and a client
/// that sends the line in pieces is taken for a chat client (browsers send it whole).
pub fn starts_request(first: &[u8]) -> bool {
    let Some(end) = first.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let line = &first[..end];
    super::line::is_http_request(line.strip_suffix(b"\r").unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` `step` at a time; the head, and the bytes left after it.
    fn feed_all(bytes: &[u8], step: usize) -> (Head, Vec<u8>) {
        let mut r = HeadReader::default();
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            let mut input = &bytes[at..end];
            let head = r.feed(&mut input);
            at = end - input.len();
            if head != Head::Incomplete {
                return (head, bytes[at..].to_vec());
            }
        }
        (Head::Incomplete, Vec::new())
    }

    const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost:1234\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n\x81\x82";

    #[test]
    fn a_head_is_read_however_it_is_cut_and_what_follows_is_left() {
        for step in [1, 2, 3, 7, 64, UPGRADE.len()] {
            let (head, rest) = feed_all(UPGRADE, step);
            let Head::Request(r) = head else {
                panic!("step {step}: {head:?}");
            };
            assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/"));
            assert_eq!(r.header("upgrade"), Some("websocket"));
            assert!(r.has_token("connection", "upgrade"));
            assert!(!r.has_token("connection", "close"));
            assert_eq!(rest, b"\x81\x82", "step {step}");
        }
    }

    #[test]
    fn too_large_or_malformed_heads_are_refused() {
        let mut r = HeadReader::default();
        let big = vec![b'a'; MAX_HEAD + 10];
        let mut input = &big[..];
        assert_eq!(r.feed(&mut input), Head::Bad(431));
        assert!(r.held() <= MAX_HEAD);
        let mut r = HeadReader::default();
        assert_eq!(
            r.feed(&mut &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..]),
            Head::Bad(400)
        );
    }

    #[test]
    fn only_a_whole_request_line_opens_the_door() {
        assert!(starts_request(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(starts_request(b"POST /x HTTP/1.0\n"));
        assert!(!starts_request(b"GET / HTTP/1.1"), "not yet a whole line");
        assert!(!starts_request(b"hello there\n"));
        assert!(!starts_request(b"get / http/1.1\n"));
    }
}
