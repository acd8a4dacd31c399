use std::net::TcpListener;
use std::time::Duration;

use async_tungstenite::tungstenite::{self, Message};
use futures_util::{SinkExt, StreamExt};

use super::WsConnection;
use crate::ws::DEFAULT_READ_BUFFER;

/// A `ReconnectingStream` keeps a connection (and room for a draining one) inline: the handle stays small.
#[test]
fn a_connection_is_a_small_handle() {
    assert!(
        std::mem::size_of::<WsConnection>() <= 96,
        "{} bytes",
        std::mem::size_of::<WsConnection>()
    );
}

/// With the small default read buffer, messages much larger than it, a burst of small ones, and a message
/// after a quiet spell (when the socket is waited on rather than read) all arrive whole and in order.
#[test]
fn messages_of_every_size_arrive_whole_through_the_small_read_buffer() {
    let sizes = [1, 125, 126, 2047, 2048, 2049, 10_000, 65_535, 65_536, 1 << 20];
    let burst = 5_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut ws = tungstenite::accept(tcp).unwrap();
        for (i, size) in sizes.iter().enumerate() {
            ws.write(Message::binary(vec![i as u8; *size])).unwrap();
        }
        for i in 0..burst {
            ws.write(Message::binary((i as u32).to_be_bytes().repeat(16))).unwrap();
        }
        ws.flush().unwrap();
        // A quiet spell, then one more; then echo what comes.
        std::thread::sleep(Duration::from_millis(50));
        ws.send(Message::text("after")).unwrap();
        loop {
            match ws.read() {
                Ok(message) if message.is_binary() => ws.send(message).unwrap(),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    async_io::block_on(async {
        let mut conn = crate::connect(format!("ws://{addr}/")).await.unwrap();
        assert_eq!(conn.config().read_buffer_size, DEFAULT_READ_BUFFER);
        for (i, size) in sizes.iter().enumerate() {
            let message = conn.next().await.unwrap().unwrap();
            assert_eq!(message.len(), *size, "message {i}");
            assert!(message.into_data().iter().all(|&byte| byte == i as u8), "message {i}");
        }
        for i in 0..burst {
            let message = conn.next().await.unwrap().unwrap();
            assert_eq!(
                message.into_data(),
                (i as u32).to_be_bytes().repeat(16),
                "burst message {i}"
            );
        }
        assert_eq!(conn.next().await.unwrap().unwrap(), Message::text("after"));
        for round in 0..100_u32 {
            conn.send(Message::binary(round.to_be_bytes().to_vec())).await.unwrap();
            let echo = conn.next().await.unwrap().unwrap();
            assert_eq!(echo.into_data(), round.to_be_bytes().to_vec(), "echo {round}");
        }
        conn.close().await.unwrap();
    });
    server.join().unwrap();
}
