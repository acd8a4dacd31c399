//! Reach and continuity across connections: make-before-break rotation ([`RotateLayer`]). Endpoint rings and
//! proxies are the WebSocket connector's ([`WsConnector`](crate::WsConnector)).

mod rotate;

pub use self::rotate::{
    RotateConnector, RotateFuture, RotateLayer, RotatingConnection, Rotation, DEFAULT_OVERLAP, DEFAULT_RETIRE_TIMEOUT,
};
