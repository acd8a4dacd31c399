//! Reach and continuity across connections: make-before-break rotation ([`RotateLayer`]) and redundant
//! connections ([`Redundant`]). Endpoint rings and
//! proxies are the WebSocket connector's ([`WsConnector`](crate::WsConnector)).

mod redundant;
mod rotate;

pub use self::redundant::{Redundant, RedundantConnection, RedundantFuture, DEFAULT_DEDUPE_WINDOW};
pub use self::rotate::{
    RotateConnector, RotateFuture, RotateLayer, RotatingConnection, Rotation, DEFAULT_OVERLAP, DEFAULT_RETIRE_TIMEOUT,
};
