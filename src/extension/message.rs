//! [`MessageView`]: what the metrics and logging hooks read of a message.

use async_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// What [`Metrics`](super::Metrics) and [`Logging`](super::Logging) read of a message: its kind, its payload
/// length, its text (for logging) and, for a Close frame, its code.
///
/// Implemented for tungstenite's [`Message`] (text is logged; binary, ping and pong payloads only by length;
/// a Close frame's reason as text), for `String` and [`Utf8Bytes`] (text), and for `Vec<u8>` and [`Bytes`]
/// (length only). Implement it for your own message type to count and log it.
pub trait MessageView {
    /// A short name for the kind of message (`"text"`, `"binary"`, `"ping"`, ...).
    fn kind(&self) -> &'static str;

    /// The payload length in bytes.
    fn payload_len(&self) -> usize;

    /// The text to log (after redaction and truncation), or `None` to log the length only (the default).
    fn text(&self) -> Option<&str> {
        None
    }

    /// The close code if this message is a Close frame; `None` otherwise (the default).
    ///
    /// A connection that yields a Close frame and then ends counts as closed with that code, as a
    /// [`WsConnection`](crate::WsConnection) ending with a server Close does.
    fn close_code(&self) -> Option<u16> {
        None
    }
}

impl MessageView for Message {
    fn kind(&self) -> &'static str {
        match self {
            Message::Text(_) => "text",
            Message::Binary(_) => "binary",
            Message::Ping(_) => "ping",
            Message::Pong(_) => "pong",
            Message::Close(_) => "close",
            Message::Frame(_) => "frame",
        }
    }

    #[inline]
    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        match self {
            Message::Text(text) => Some(text.as_str()),
            Message::Close(Some(frame)) => Some(frame.reason.as_str()),
            _ => None,
        }
    }

    #[inline]
    fn close_code(&self) -> Option<u16> {
        match self {
            // 1005: "no status received", as for a Close frame without a code.
            Message::Close(frame) => Some(frame.as_ref().map_or(1005, |frame| u16::from(frame.code))),
            _ => None,
        }
    }
}

impl MessageView for String {
    fn kind(&self) -> &'static str {
        "text"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        Some(self)
    }
}

impl MessageView for Utf8Bytes {
    fn kind(&self) -> &'static str {
        "text"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }

    fn text(&self) -> Option<&str> {
        Some(self.as_str())
    }
}

impl MessageView for Vec<u8> {
    fn kind(&self) -> &'static str {
        "binary"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }
}

impl MessageView for Bytes {
    fn kind(&self) -> &'static str {
        "binary"
    }

    fn payload_len(&self) -> usize {
        self.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_kinds_lengths_texts_and_close_codes() {
        let frame = async_tungstenite::tungstenite::protocol::CloseFrame {
            code: 1001.into(),
            reason: "bye".into(),
        };
        type Case = (Message, &'static str, usize, Option<&'static str>, Option<u16>);
        let cases: [Case; 6] = [
            (Message::text("hi"), "text", 2, Some("hi"), None),
            (Message::binary(vec![1, 2, 3]), "binary", 3, None, None),
            (Message::Ping(Bytes::from_static(b"p")), "ping", 1, None, None),
            (Message::Pong(Bytes::new()), "pong", 0, None, None),
            (Message::Close(Some(frame)), "close", 3, Some("bye"), Some(1001)),
            (Message::Close(None), "close", 0, None, Some(1005)),
        ];
        for (message, kind, len, text, code) in cases {
            assert_eq!(
                (
                    message.kind(),
                    message.payload_len(),
                    message.text(),
                    message.close_code()
                ),
                (kind, len, text, code)
            );
        }
        assert_eq!(String::from("ab").text(), Some("ab"));
        assert_eq!(vec![1u8].text(), None);
        assert_eq!(Bytes::from_static(b"abc").payload_len(), 3);
    }
}
