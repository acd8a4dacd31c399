//! A feed server that requires auth and subscriptions, for handshake tests.
//!
//! Protocol (JSON text frames): the client sends `{"type":"auth","token":T}`; the server answers
//! `{"type":"auth_ok"}`, or `{"type":"auth_failed"}` when T is in `bad_tokens`. Then each
//! `{"type":"subscribe","channel":C}` is answered `{"type":"subscribed","channel":C}` (unless `confirm` is
//! false). Once every channel in `channels` is subscribed the server sends `updates` updates
//! `{"type":"update","seq":N}` per connection and echoes any other text. Connection `i` is dropped (TCP, no
//! close handshake) after its updates when `drop_after_updates(i)`.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::Message;
use futures::StreamExt;
use serde_json::{json, Value};

use super::server::{serve, Server};

#[derive(Clone)]
pub struct Feed {
    pub channels: Vec<&'static str>,
    pub bad_tokens: Vec<&'static str>,
    pub confirm: bool,
    pub updates: u64,
    /// Connections (by index) dropped right after their updates.
    pub drop_connections: Vec<usize>,
    /// Connections (by index) dropped right after echoing their first user message.
    pub drop_after_echo: Vec<usize>,
}

impl Default for Feed {
    fn default() -> Self {
        Self {
            channels: vec!["trades", "book"],
            bad_tokens: vec!["bad"],
            confirm: true,
            updates: 3,
            drop_connections: vec![],
            drop_after_echo: vec![],
        }
    }
}

/// Each connection's log of what the client sent, as `conn <i>: <text>`.
pub fn feed_server(feed: Feed) -> Server {
    serve(move |tcp, index, log: Arc<Mutex<Vec<String>>>| {
        let feed = feed.clone();
        async move {
            let Ok(mut ws) = async_tungstenite::accept_async(tcp).await else {
                return;
            };
            let mut subscribed: Vec<String> = Vec::new();
            let mut authed = false;
            let mut updates_sent = false;
            while let Some(Ok(message)) = ws.next().await {
                let Ok(text) = message.to_text() else {
                    continue;
                };
                log.lock().unwrap().push(format!("conn {index}: {text}"));
                let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
                match value["type"].as_str() {
                    Some("auth") => {
                        let token = value["token"].as_str().unwrap_or("");
                        if feed.bad_tokens.contains(&token) {
                            let _ = ws.send(Message::text(json!({"type": "auth_failed"}).to_string())).await;
                        } else {
                            authed = true;
                            let _ = ws.send(Message::text(json!({"type": "auth_ok"}).to_string())).await;
                        }
                    }
                    Some("subscribe") if authed => {
                        let channel = value["channel"].as_str().unwrap_or("").to_owned();
                        if feed.confirm {
                            let ack = json!({"type": "subscribed", "channel": channel}).to_string();
                            let _ = ws.send(Message::text(ack)).await;
                        }
                        subscribed.push(channel);
                    }
                    _ if !authed => {
                        let _ = ws
                            .send(Message::text(
                                json!({"type": "error", "reason": "not authenticated"}).to_string(),
                            ))
                            .await;
                    }
                    _ => {
                        let _ = ws.send(Message::text(text.to_owned())).await;
                        if feed.drop_after_echo.contains(&index) {
                            return;
                        }
                    }
                }
                let all = feed.channels.iter().all(|c| subscribed.iter().any(|s| s == c));
                if all && !updates_sent {
                    updates_sent = true;
                    for seq in 0..feed.updates {
                        let update = json!({"type": "update", "conn": index, "seq": seq}).to_string();
                        let _ = ws.send(Message::text(update)).await;
                    }
                    if feed.drop_connections.contains(&index) {
                        return;
                    }
                }
            }
        }
    })
}

/// Whether a message is a JSON object with this `type`.
pub fn is_type(message: &stream_tungstenite::tungstenite::Message, kind: &str) -> bool {
    message
        .to_text()
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .is_some_and(|v| v["type"] == kind)
}
