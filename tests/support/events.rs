//! A recording observer: every event, in order, with helpers to assert on them.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use stream_tungstenite::{Event, Failure};

/// An observer that records every event, with when it came; clones share the record.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// An observer feeding this recorder.
    pub fn observer(&self) -> impl FnMut(&Event) + Send + 'static {
        let events = Arc::clone(&self.events);
        move |event: &Event| events.lock().unwrap().push((Instant::now(), event.clone()))
    }

    pub fn events(&self) -> Vec<Event> {
        self.timed().into_iter().map(|(_, event)| event).collect()
    }

    /// Every event with the instant it was observed.
    pub fn timed(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.events.lock().unwrap().clear();
    }

    /// The delays of every `RetryScheduled` event, in order.
    pub fn delays(&self) -> Vec<std::time::Duration> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::RetryScheduled { delay, .. } => Some(delay),
                _ => None,
            })
            .collect()
    }

    /// How many events `pick` selects.
    pub fn count(&self, pick: impl Fn(&Event) -> bool) -> usize {
        self.events().iter().filter(|event| pick(event)).count()
    }

    /// How many attempts started.
    pub fn connecting(&self) -> usize {
        self.count(|event| matches!(event, Event::Connecting { .. }))
    }

    /// The reason of the first `Disconnected` event.
    pub fn first_disconnect(&self) -> Option<Failure> {
        self.events().into_iter().find_map(|event| match event {
            Event::Disconnected { reason, .. } => Some(reason),
            _ => None,
        })
    }

    /// The failure of the first `ConnectFailed` event.
    pub fn first_connect_failure(&self) -> Option<Failure> {
        self.events().into_iter().find_map(|event| match event {
            Event::ConnectFailed { failure } => Some(failure),
            _ => None,
        })
    }

    /// A short name per event, for asserting sequences.
    pub fn names(&self) -> Vec<&'static str> {
        self.events().iter().map(event_name).collect()
    }
}

pub fn event_name(event: &Event) -> &'static str {
    match event {
        Event::Connecting { .. } => "connecting",
        Event::Connected { .. } => "connected",
        Event::ConnectFailed { .. } => "connect-failed",
        Event::HandshakeFailed { .. } => "handshake-failed",
        Event::Disconnected { .. } => "disconnected",
        Event::RetryScheduled { .. } => "retry",
        Event::GaveUp { .. } => "gave-up",
        Event::Closed { .. } => "closed",
        _ => "other",
    }
}
