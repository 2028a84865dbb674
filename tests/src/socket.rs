//! A small `graphql-transport-ws` client for the subscription tests: it answers the server's pings and reports
//! close codes.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{Message, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use futures::{SinkExt, StreamExt};

/// How long a test waits for any one message.
const PATIENCE: Duration = Duration::from_secs(15);
/// The socket's read and write buffers. tungstenite's default read buffer, 128 KiB, is zeroed before every read:
/// with the benchmark's 1,000 sockets that zeroing was a fifth of the load generator's CPU. The server's messages
/// are a few hundred bytes.
const BUFFER_BYTES: usize = 4 * 1024;

/// One socket to the server's `/graphql`.
pub struct Socket {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server sent next.
#[derive(Debug)]
pub enum Received {
    Message(Value),
    Closed(Option<u16>),
}

impl Socket {
    /// Opens a socket speaking `graphql-transport-ws`, without sending anything.
    pub async fn open(address: &str) -> Self {
        let url = format!("{}/graphql", address.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("a socket request");
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
        let config = WebSocketConfig::default().read_buffer_size(BUFFER_BYTES).write_buffer_size(BUFFER_BYTES);
        let (stream, response) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), false).await.expect("the socket opens");
        assert_eq!(
            response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()),
            Some("graphql-transport-ws")
        );
        Self { stream }
    }

    /// Opens a socket and sends `connection_init` with this access token, without waiting for the answer.
    pub async fn init(address: &str, token: &str) -> Self {
        let mut socket = Self::open(address).await;
        socket
            .send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }))
            .await;
        socket
    }

    /// Opens a socket, authenticated with this access token, and waits for the acknowledgement.
    pub async fn connect(address: &str, token: &str) -> Self {
        let mut socket = Self::init(address, token).await;
        match socket.receive().await {
            Received::Message(message) if message["type"] == "connection_ack" => socket,
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    pub async fn send(&mut self, message: Value) {
        self.stream.send(Message::Text(message.to_string().into())).await.expect("send");
    }

    /// Starts an operation under `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } }))
            .await;
    }

    /// The next message or the close, answering pings on the way; panics after [`PATIENCE`].
    pub async fn receive(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.stream.next()).await.expect("the server answers in time");
            match next {
                None => return Received::Closed(None),
                Some(Err(_)) => return Received::Closed(None),
                Some(Ok(Message::Close(frame))) => return Received::Closed(frame.map(|f| f.code.into())),
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).expect("JSON");
                    if message["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Received::Message(message);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next message's text, answering pings on the way; `None` once the socket closed or failed. For a reader
    /// that parses only what it needs of many messages (the benchmark's subscribers).
    pub async fn receive_text(&mut self) -> Option<Utf8Bytes> {
        /// Only the message's type, borrowed: deciding whether it is a ping allocates nothing.
        #[derive(Deserialize)]
        struct Kind<'a> {
            #[serde(rename = "type", borrow)]
            kind: &'a str,
        }
        loop {
            match self.stream.next().await? {
                Ok(Message::Text(text)) => {
                    if serde_json::from_str::<Kind<'_>>(&text).is_ok_and(|message| message.kind == "ping") {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(text);
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next message or the close as the server sent it: pings too, unanswered.
    pub async fn receive_unanswered(&mut self) -> Received {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.stream.next()).await.expect("the server answers in time");
            match next {
                None | Some(Err(_)) => return Received::Closed(None),
                Some(Ok(Message::Close(frame))) => return Received::Closed(frame.map(|f| f.code.into())),
                Some(Ok(Message::Text(text))) => return Received::Message(serde_json::from_str(&text).expect("JSON")),
                Some(Ok(_)) => {}
            }
        }
    }

    /// The payload of the next `next` message, which must be for `id`.
    pub async fn next_payload(&mut self, id: &str) -> Value {
        match self.receive().await {
            Received::Message(message) if message["type"] == "next" && message["id"] == id => {
                message["payload"].clone()
            }
            other => panic!("expected an event for {id}, got {other:?}"),
        }
    }

    /// The close code the server ends the socket with, within [`PATIENCE`].
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            if let Received::Closed(code) = self.receive().await {
                return code;
            }
        }
    }
}
