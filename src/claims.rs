//! Names unique across a cluster: each claimed in a JetStream key-value bucket, with no I/O.
//!
//! A node claims a name by publishing to the bucket's key for it with the header
//! `Nats-Expected-Last-Subject-Sequence: 0`: JetStream stores it only if nothing is stored under
//! that key, and answers with the sequence it stored it at, or with "wrong last sequence". Of
//! two nodes that race for a name, exactly one is stored first; the other is refused. A node
//! keeps its names by writing them again every [`REFRESH`] (expecting its own last sequence),
//! and releases one by purging its key. The bucket forgets anything older than [`MAX_AGE`], so
//! the names of a node that died (SIGKILL, a lost machine) are free after at most that long.
//!
//! Without JetStream on the bus (the request to make the bucket finds nobody to answer it),
//! names fall back to being qualified by their node, and the node says so at start. A request
//! to make the bucket that JetStream refuses is not that: nodes that start together race to
//! make it, and nats-server may refuse all but one ("subjects overlap with an existing
//! stream"), so the node then asks whether the bucket is there and uses it if it is.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::nats::{self, Headers, Msg};

/// The bucket, and the JetStream stream behind it (`KV_` and its name, as every NATS client
/// names a bucket's stream).
pub const BUCKET: &str = "loopchat-names";
const STREAM: &str = "KV_loopchat-names";
/// How long the bucket keeps a name that is not written again: a dead node's names are free
/// after this.
pub const MAX_AGE: Duration = Duration::from_secs(15);
/// How often a node writes its names again: three times within [`MAX_AGE`], so that one lost
/// refresh costs nothing.
pub const REFRESH: Duration = Duration::from_secs(5);
/// How long an answer from JetStream may take before the request counts as failed.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// JetStream's error code for a write whose expected last sequence was not the key's.
const WRONG_LAST_SEQUENCE: u64 = 10071;

/// How names are kept unique across the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Not known yet: the bus has not answered.
    Unknown,
    /// Claimed in the bucket: `alice` is the one alice of the cluster.
    Claimed,
    /// No JetStream: every name ends with its node (`alice@a`).
    Qualified,
}

/// What came of the node's requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The bus said how names are kept.
    Mode(Mode),
    /// The name is this node's, for client `id`.
    Claimed { id: usize, name: String },
    /// The name is not: another node has it (`taken`), or the bucket did not answer.
    Refused {
        id: usize,
        name: String,
        taken: bool,
    },
    /// A name this node held is another node's now (it could not refresh it in time, during
    /// an outage, and someone claimed it meanwhile).
    Lost { name: String },
}

enum Request {
    /// Make the bucket.
    Setup,
    /// JetStream refused to make it (`why`): is it there anyway? (Made by another node at the
    /// same moment, or by a node of another version with another configuration: used as it is.)
    Lookup {
        why: String,
    },
    Claim {
        id: usize,
        key: String,
        name: String,
    },
    Refresh {
        key: String,
    },
    /// A refresh was refused: the key may be empty (the bus restarted without its store, or
    /// the name expired during an outage), and is asked for afresh.
    Reclaim {
        key: String,
    },
}

pub struct Claims {
    /// The node's own inbox prefix: every answer comes to a subject under it.
    inbox: String,
    next: u64,
    /// Requests waiting for an answer, by the last token of their reply subject; and when
    /// they give up.
    pending: HashMap<String, (Request, Instant)>,
    /// When the first request still waiting gives up, if any: so that a turn of the loop does
    /// not look through every request to learn that none is late.
    give_up_at: Option<Instant>,
    /// The names held, by key, with their sequence in the stream (what the next write of each
    /// expects). All are written again together, every [`REFRESH`]: one timer, however many.
    held: HashMap<String, u64>,
    refresh_at: Instant,
}

impl Claims {
    pub fn new(node: &str, boot: u64) -> Claims {
        Claims {
            inbox: format!("_INBOX.{node}.{boot:x}"),
            next: 0,
            pending: HashMap::new(),
            give_up_at: None,
            held: HashMap::new(),
            refresh_at: Instant::now(),
        }
    }

    /// The subject to subscribe to for the answers.
    pub fn inbox_subject(&self) -> String {
        format!("{}.>", self.inbox)
    }

    /// The link is up: make the bucket (or find it), which also tells whether there is
    /// JetStream at all; and, after an outage, write every name held again.
    pub fn link_up(&mut self, now: Instant, out: &mut Vec<u8>) {
        let config = serde_json::json!({
            "name": STREAM,
            "subjects": [format!("$KV.{BUCKET}.>")],
            "max_msgs_per_subject": 1,
            "max_age": MAX_AGE.as_nanos() as u64,
            "storage": "memory",
            "num_replicas": 1,
            "allow_rollup_hdrs": true,
            "deny_delete": true,
            "allow_direct": true,
        });
        let subject = format!("$JS.API.STREAM.CREATE.{STREAM}");
        let reply = self.request(Request::Setup, now);
        nats::publish(
            out,
            &subject,
            Some(&reply),
            None,
            config.to_string().as_bytes(),
        );
        self.refresh_all(now, out);
    }

    /// Asks for `name` for client `id`.
    pub fn claim(&mut self, id: usize, name: &str, now: Instant, out: &mut Vec<u8>) {
        let key = name.to_ascii_lowercase();
        let reply = self.request(
            Request::Claim {
                id,
                key: key.clone(),
                name: name.to_owned(),
            },
            now,
        );
        put(out, &key, 0, &reply);
    }

    /// Gives a name back: its key is purged, and anyone may claim it.
    pub fn release(&mut self, name: &str, out: &mut Vec<u8>) {
        let key = name.to_ascii_lowercase();
        if self.held.remove(&key).is_none() {
            return;
        }
        let subject = format!("$JS.API.STREAM.PURGE.{STREAM}");
        let filter = serde_json::json!({ "filter": format!("$KV.{BUCKET}.{key}") });
        nats::publish(out, &subject, None, None, filter.to_string().as_bytes());
    }

    /// An answer on the inbox.
    pub fn answer(&mut self, msg: &Msg, now: Instant, out: &mut Vec<u8>) -> Option<Outcome> {
        let token = msg.subject.rsplit('.').next()?;
        let (request, _) = self.pending.remove(token)?;
        // 503: nobody answers `$JS.API` requests, so there is no JetStream.
        let no_responders = msg.headers.as_ref().and_then(|h| h.status) == Some(503);
        let reply: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
        let error = reply
            .get("error")
            .map(|e| e.get("err_code").and_then(serde_json::Value::as_u64));
        let seq = reply.get("seq").and_then(serde_json::Value::as_u64);
        match request {
            Request::Setup if no_responders => Some(self.qualified("no responders")),
            Request::Setup if error.is_some() => {
                let subject = format!("$JS.API.STREAM.INFO.{STREAM}");
                let why = reply.to_string();
                let reply = self.request(Request::Lookup { why }, now);
                nats::publish(out, &subject, Some(&reply), None, b"");
                None
            }
            Request::Setup => Some(self.claimed()),
            Request::Lookup { why } if no_responders || error.is_some() => {
                Some(self.qualified(&why))
            }
            Request::Lookup { why } => {
                log::debug!("the bucket is there, though making it was refused ({why})");
                Some(self.claimed())
            }
            Request::Claim { id, key, name } => match seq {
                Some(seq) if error.is_none() => {
                    if self.held.is_empty() {
                        self.refresh_at = now + REFRESH;
                    }
                    self.held.insert(key, seq);
                    Some(Outcome::Claimed { id, name })
                }
                _ => Some(Outcome::Refused {
                    id,
                    name,
                    taken: error == Some(Some(WRONG_LAST_SEQUENCE)),
                }),
            },
            Request::Refresh { key } => match (seq, error) {
                (Some(seq), None) => {
                    if let Some(held) = self.held.get_mut(&key) {
                        *held = seq;
                    }
                    None
                }
                (_, Some(Some(WRONG_LAST_SEQUENCE))) if self.held.contains_key(&key) => {
                    let reply = self.request(Request::Reclaim { key: key.clone() }, now);
                    put(out, &key, 0, &reply);
                    None
                }
                // Anything else (JetStream busy, say): the next refresh tries again.
                _ => None,
            },
            Request::Reclaim { key } => match (seq, error) {
                (Some(seq), None) => {
                    if let Some(held) = self.held.get_mut(&key) {
                        *held = seq;
                    }
                    None
                }
                (_, Some(Some(WRONG_LAST_SEQUENCE))) => {
                    self.held.remove(&key)?;
                    Some(Outcome::Lost { name: key })
                }
                _ => None,
            },
        }
    }

    /// Time passes: requests not answered in time fail, names due are written again.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<u8>) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        if self.give_up_at.is_some_and(|at| now >= at) {
            self.give_up(now, &mut outcomes);
        }
        if !self.held.is_empty() && now >= self.refresh_at {
            self.refresh_all(now, out);
        }
        outcomes
    }

    /// Requests not answered in time fail.
    fn give_up(&mut self, now: Instant, outcomes: &mut Vec<Outcome>) {
        let late: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, (_, by))| now >= *by)
            .map(|(token, _)| token.clone())
            .collect();
        for token in late {
            match self.pending.remove(&token) {
                Some((Request::Claim { id, name, .. }, _)) => outcomes.push(Outcome::Refused {
                    id,
                    name,
                    taken: false,
                }),
                Some((Request::Setup | Request::Lookup { .. }, _)) => {
                    outcomes.push(self.qualified("no answer"));
                }
                _ => {}
            }
        }
        self.give_up_at = self.pending.values().map(|(_, by)| *by).min();
    }

    /// When [`Claims::tick`] has work next.
    pub fn deadline(&self) -> Option<Instant> {
        let refresh = (!self.held.is_empty()).then_some(self.refresh_at);
        [self.give_up_at, refresh].into_iter().flatten().min()
    }

    /// The link went down: answers will not come, and the requests are given up now.
    pub fn link_down(&mut self) -> Vec<Outcome> {
        self.give_up_at = None;
        self.pending
            .drain()
            .filter_map(|(_, (request, _))| match request {
                Request::Claim { id, name, .. } => Some(Outcome::Refused {
                    id,
                    name,
                    taken: false,
                }),
                _ => None,
            })
            .collect()
    }

    fn claimed(&self) -> Outcome {
        Outcome::Mode(Mode::Claimed)
    }

    fn qualified(&self, why: &str) -> Outcome {
        log::warn!("no JetStream on the bus ({why}): names qualified by node");
        Outcome::Mode(Mode::Qualified)
    }

    /// Writes every name held again, each expecting its own last sequence.
    fn refresh_all(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.refresh_at = now + REFRESH;
        let held: Vec<(String, u64)> = self.held.iter().map(|(k, &s)| (k.clone(), s)).collect();
        for (key, seq) in held {
            let reply = self.request(Request::Refresh { key: key.clone() }, now);
            put(out, &key, seq, &reply);
        }
    }

    /// A reply subject for a new request.
    fn request(&mut self, request: Request, now: Instant) -> String {
        self.next += 1;
        let token = self.next.to_string();
        let reply = format!("{}.{token}", self.inbox);
        let by = now + ANSWER_WITHIN;
        self.pending.insert(token, (request, by));
        self.give_up_at = Some(self.give_up_at.map_or(by, |at| at.min(by)));
        reply
    }
}

/// Writes `key` to the bucket if its last sequence is `expected` (0: if it holds nothing).
fn put(out: &mut Vec<u8>, key: &str, expected: u64, reply: &str) {
    let headers = Headers::new().with("Nats-Expected-Last-Subject-Sequence", &expected.to_string());
    let subject = format!("$KV.{BUCKET}.{key}");
    nats::publish(out, &subject, Some(reply), Some(&headers), b"held");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JetStream's answer to the request last written to `out`, as the bus delivers it.
    fn answer_to(out: &[u8], payload: &str, status: Option<u16>) -> Msg {
        let text = String::from_utf8_lossy(out);
        let line = text
            .lines()
            .rfind(|l| l.starts_with("PUB ") || l.starts_with("HPUB "))
            .unwrap();
        let reply = line.split(' ').nth(2).unwrap().to_owned();
        Msg {
            subject: reply,
            sid: 9,
            reply: None,
            headers: status.map(|s| Headers {
                status: Some(s),
                ..Headers::default()
            }),
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_bucket_says_whether_names_are_claimed_or_qualified() {
        let now = Instant::now();
        let mut c = Claims::new("a", 1);
        let mut out = Vec::new();
        c.link_up(now, &mut out);
        assert!(String::from_utf8_lossy(&out).contains("$JS.API.STREAM.CREATE.KV_loopchat-names"));
        let created = answer_to(
            &out,
            r#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{}}"#,
            None,
        );
        assert_eq!(
            c.answer(&created, now, &mut out),
            Some(Outcome::Mode(Mode::Claimed))
        );

        let mut c = Claims::new("a", 1);
        let mut out = Vec::new();
        c.link_up(now, &mut out);
        let nobody = answer_to(&out, "", Some(503));
        assert_eq!(
            c.answer(&nobody, now, &mut out),
            Some(Outcome::Mode(Mode::Qualified))
        );

        let mut c = Claims::new("a", 1);
        c.link_up(now, &mut Vec::new());
        let outcomes = c.tick(now + ANSWER_WITHIN, &mut Vec::new());
        assert_eq!(
            outcomes,
            [Outcome::Mode(Mode::Qualified)],
            "no answer at all"
        );
    }

    #[test]
    fn a_bucket_another_node_made_at_the_same_moment_is_used() {
        let now = Instant::now();
        let overlap = r#"{"error":{"code":400,"err_code":10065,"description":"subjects overlap with an existing stream"}}"#;
        for (info, mode) in [
            (r#"{"config":{"name":"KV_loopchat-names"}}"#, Mode::Claimed),
            (
                r#"{"error":{"code":404,"err_code":10059,"description":"stream not found"}}"#,
                Mode::Qualified,
            ),
        ] {
            let mut c = Claims::new("b", 2);
            let mut out = Vec::new();
            c.link_up(now, &mut out);
            let refused = answer_to(&out, overlap, None);
            let mut out = Vec::new();
            assert_eq!(c.answer(&refused, now, &mut out), None, "not decided yet");
            let asked = String::from_utf8_lossy(&out).into_owned();
            assert!(
                asked.starts_with("PUB $JS.API.STREAM.INFO.KV_loopchat-names _INBOX.b.2."),
                "{asked}"
            );
            let answer = answer_to(&out, info, None);
            assert_eq!(c.answer(&answer, now, &mut out), Some(Outcome::Mode(mode)));
        }
    }

    #[test]
    fn a_claim_is_won_kept_and_released() {
        let now = Instant::now();
        let mut c = Claims::new("a", 1);
        let mut out = Vec::new();
        c.claim(7, "Alice", now, &mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(
            text.starts_with("HPUB $KV.loopchat-names.alice _INBOX.a.1.1 "),
            "{text}"
        );
        assert!(
            text.contains("Nats-Expected-Last-Subject-Sequence: 0\r\n"),
            "{text}"
        );
        let ack = answer_to(&out, r#"{"stream":"KV_loopchat-names","seq":4}"#, None);
        assert_eq!(
            c.answer(&ack, now, &mut out),
            Some(Outcome::Claimed {
                id: 7,
                name: "Alice".into()
            })
        );
        // Written again before the bucket forgets it, expecting its own last sequence.
        let mut out = Vec::new();
        assert!(c.tick(now + REFRESH, &mut out).is_empty());
        assert!(
            String::from_utf8_lossy(&out).contains("Nats-Expected-Last-Subject-Sequence: 4\r\n")
        );
        // Refused: asked for afresh (the key may be empty after a restart of the bus)...
        let wrong =
            r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 9"}}"#;
        let refused = answer_to(&out, wrong, None);
        let mut out = Vec::new();
        assert_eq!(c.answer(&refused, now, &mut out), None);
        assert!(
            String::from_utf8_lossy(&out).contains("Nats-Expected-Last-Subject-Sequence: 0\r\n")
        );
        // ...and refused again: someone else's now, lost.
        let refused = answer_to(&out, wrong, None);
        assert_eq!(
            c.answer(&refused, now, &mut out),
            Some(Outcome::Lost {
                name: "alice".into()
            })
        );
        // Releasing a name not held sends nothing.
        let mut out = Vec::new();
        c.release("alice", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_claim_another_node_holds_is_refused_as_taken() {
        let now = Instant::now();
        let mut c = Claims::new("b", 2);
        let mut out = Vec::new();
        c.claim(1, "alice", now, &mut out);
        let wrong =
            r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"}}"#;
        let refused = answer_to(&out, wrong, None);
        assert_eq!(
            c.answer(&refused, now, &mut out),
            Some(Outcome::Refused {
                id: 1,
                name: "alice".into(),
                taken: true
            })
        );
        c.claim(2, "bob", now, &mut out);
        assert_eq!(
            c.link_down(),
            [Outcome::Refused {
                id: 2,
                name: "bob".into(),
                taken: false
            }]
        );
        assert_eq!(c.deadline(), None);
    }
}
