//! The acknowledgement service (`--mode ack`, and the sender's side of UDP chat): every message
//! is answered with `received: <message>`. Pure.

use crate::command::is_exit_word;
use crate::notice;
use crate::text;

/// The answer to one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A blank message: no answer.
    Ignore,
    /// The acknowledgement, and the message as it was received (cleaned).
    Received { reply: String, text: String },
    /// An exit word: say goodbye (and, on TCP, close).
    Bye,
}

pub fn answer(raw: &[u8]) -> Answer {
    let text = text::clean(raw);
    if text::is_blank(&text) {
        Answer::Ignore
    } else if is_exit_word(&text) {
        Answer::Bye
    } else {
        Answer::Received {
            reply: notice::received(&text),
            text: text.into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(
            answer(b"Hola, servidor!"),
            Answer::Received {
                reply: "received: Hola, servidor!".into(),
                text: "Hola, servidor!".into()
            }
        );
        assert_eq!(answer(b"EXIT"), Answer::Bye);
        assert_eq!(answer(b" \x1b "), Answer::Ignore);
    }
}
