//! Attacker and witness tools for the team-event stream: a client that
//! opens `Directory.Watch` on any practitioner it names (as a client with
//! the wrong role would try), a webhook receiver that keeps every body it
//! is sent, and a reader of a stopped node's audit log, to check what the
//! node wrote about each attempt.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use crate::{ClientCert, TestNode, v1};

/// How long a test waits for one event or delivery.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Opens a watch on `practitioner_id` as `client`: the stream, or the
/// node's refusal.
pub async fn try_watch(
    node: &TestNode,
    client: &ClientCert,
    practitioner_id: &str,
    after_cursor: &str,
) -> Result<tonic::Streaming<v1::TeamEvent>, tonic::Status> {
    node.directory(client)
        .await
        .watch(v1::WatchRequest {
            practitioner_id: practitioner_id.into(),
            after_cursor: after_cursor.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The stream's next event, within [`EVENT_WAIT`].
pub async fn next_event(stream: &mut tonic::Streaming<v1::TeamEvent>) -> v1::TeamEvent {
    tokio::time::timeout(EVENT_WAIT, stream.next())
        .await
        .expect("an event within the deadline")
        .expect("stream open")
        .expect("event")
}

/// A webhook receiver on `127.0.0.1`: accepts every POST with 200 and
/// hands on its body.
pub struct WebhookSink {
    pub port: u16,
    bodies: mpsc::Receiver<String>,
}

impl WebhookSink {
    pub async fn start() -> WebhookSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (sender, bodies) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let Some(body) = read_post(&mut socket).await else {
                    continue;
                };
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = socket.shutdown().await;
                if sender.send(body).await.is_err() {
                    return;
                }
            }
        });
        WebhookSink { port, bodies }
    }

    /// The next body delivered, within [`EVENT_WAIT`].
    pub async fn next_body(&mut self) -> String {
        tokio::time::timeout(EVENT_WAIT, self.bodies.recv())
            .await
            .expect("a delivery within the deadline")
            .expect("receiver running")
    }
}

/// One request's body (by its Content-Length); `None` if cut short.
async fn read_post(socket: &mut tokio::net::TcpStream) -> Option<String> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = socket.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        data.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())
                    .flatten()
            })?;
            if body.len() >= length {
                return Some(body[..length].to_owned());
            }
        }
    }
}

/// Every audit entry of a stopped node's store, in order (the harness's one
/// reader of a stopped log).
pub use crate::attacker::audit_events as stored_audit_events;
