//! Delivery beyond "flushed": acknowledged sends with an outcome for each ([`AckLayer`]), and resume positions
//! with gap reports ([`ResumeLayer`]). Both are layers over a connector (they keep their state across
//! connections), for [`ReconnectingStream`](crate::ReconnectingStream) and the client alike; the queue policies
//! are the stream's own ([`QueuePolicy`](crate::QueuePolicy)).

mod ack;
mod resume;

pub use self::ack::{
    Ack, AckConnection, AckConnector, AckFuture, AckLayer, Acks, Outcome, DEFAULT_ACK_ATTEMPTS, DEFAULT_ACK_TIMEOUT,
    DEFAULT_ACK_WINDOW,
};
pub use self::resume::{Continuity, Position, ResumeConnection, ResumeConnector, ResumeFuture, ResumeLayer, Resumed};
