//! HTTP/1.1 written by hand on a TCP connection, for requests an HTTP client library will not send: a body that
//! announces more than it delivers, or one that trickles in.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TestApp;

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawAnswer {
    /// The status code of the status line.
    pub status: u16,
    /// Everything after the head, de-chunked if it was sent in chunks.
    pub body: String,
}

impl RawAnswer {
    /// The body as JSON (`Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The first error's `extensions.code` in a JSON body.
    pub fn error_code(&self) -> Option<String> {
        self.json().pointer("/errors/0/extensions/code").and_then(Value::as_str).map(str::to_owned)
    }
}

impl TestApp {
    /// Sends `POST /graphql` with `headers` (each `Name: value`), then `sent` and nothing more, and reads the answer
    /// (at most 10 s): the server must answer from what it has, without waiting for the rest of an announced body.
    pub async fn post_raw_http(&self, headers: &[&str], sent: &[u8]) -> RawAnswer {
        let address = self.address.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let mut head = format!("POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n");
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("send the head");
        // The server may answer, and stop reading, before all of this is sent.
        let _ = stream.write_all(sent).await;
        let read = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut stream)).await;
        read.expect("an answer within 10 s")
    }
}

/// Reads one answer: its head, then a body of its `content-length`, or chunks up to the last, or up to the end.
async fn read_answer(stream: &mut TcpStream) -> RawAnswer {
    let mut received = Vec::new();
    let mut buffer = [0; 16 * 1024];
    loop {
        if let Some(answer) = complete_answer(&received) {
            return answer;
        }
        let read = stream.read(&mut buffer).await.unwrap_or(0);
        if read == 0 {
            return complete_answer(&received).unwrap_or_else(|| parse(&received, None));
        }
        received.extend_from_slice(&buffer[..read]);
    }
}

/// The answer in `received`, if all of it is there.
fn complete_answer(received: &[u8]) -> Option<RawAnswer> {
    let text = String::from_utf8_lossy(received);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_ascii_lowercase())
        })
    };
    if let Some(length) = header("content-length") {
        let length: usize = length.parse().expect("a content-length");
        (body.len() >= length).then(|| parse(received, Some(&body[..length])))
    } else if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        body.ends_with("0\r\n\r\n").then(|| parse(received, Some(&dechunk(body))))
    } else {
        None
    }
}

fn parse(received: &[u8], body: Option<&str>) -> RawAnswer {
    let text = String::from_utf8_lossy(received);
    let status_line = text.lines().next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = body.map(str::to_owned).unwrap_or_else(|| text.split_once("\r\n\r\n").unwrap_or_default().1.to_owned());
    RawAnswer { status, body }
}

/// A chunked body's data.
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        data.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    data
}
