//! A minimal Server-Sent Events client over a raw TCP connection: one
//! HTTP/1.1 GET, chunked transfer decoding and event parsing by hand. Its
//! state per connection is a socket and a few small buffers, so one process
//! holds thousands, and it can bind a chosen loopback source address first.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One dispatched event (comment-only blocks such as heartbeats are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub id: Option<String>,
    pub data: String,
}

pub struct SseStream {
    tcp: TcpStream,
    /// `None` when the body is not chunked (read until close).
    chunked: Option<Chunked>,
    /// Decoded body bytes not yet parsed into a whole event.
    body: Vec<u8>,
    events: VecDeque<Event>,
    read_buf: Box<[u8]>,
}

/// Opens `GET path` (with a bearer token) and reads the response head.
pub async fn connect(
    server: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<SseStream> {
    connect_resuming(server, source, path, token, None).await
}

/// [`connect`], resuming after `last_event_id` when given.
pub async fn connect_resuming(
    server: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> anyhow::Result<SseStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("Failed to bind source address {ip}"))?;
    }
    let mut tcp = socket
        .connect(server)
        .await
        .with_context(|| format!("Failed to connect to {server}"))?;
    tcp.set_nodelay(true)?;

    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(id) = last_event_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes()).await?;

    let mut read_buf = vec![0u8; 2048].into_boxed_slice();
    let mut head = Vec::new();
    let body_start = loop {
        let n = tcp.read(&mut read_buf).await?;
        if n == 0 {
            bail!("connection closed before the response head");
        }
        head.extend_from_slice(&read_buf[..n]);
        if let Some(pos) = find(&head, b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > 64 * 1024 {
            bail!("response head too long");
        }
    };
    let text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    let status = text.lines().next().unwrap_or_default().trim().to_owned();
    if !status.starts_with("http/1.1 200") {
        bail!("GET {path} answered `{status}`");
    }
    let chunked = text
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut stream = SseStream {
        tcp,
        chunked: chunked.then(Chunked::default),
        body: Vec::new(),
        events: VecDeque::new(),
        read_buf,
    };
    stream.feed(&head[body_start..])?;
    Ok(stream)
}

impl SseStream {
    /// The next event, or `None` once the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            if self.chunked.as_ref().is_some_and(|c| c.done) {
                return Ok(None);
            }
            let n = self.tcp.read(&mut self.read_buf).await?;
            if n == 0 {
                return Ok(None);
            }
            let buf = std::mem::take(&mut self.read_buf);
            let fed = self.feed(&buf[..n]);
            self.read_buf = buf;
            fed?;
        }
    }

    /// Reads until an event of this kind arrives.
    pub async fn expect(&mut self, kind: &str) -> anyhow::Result<Event> {
        loop {
            match self.next().await? {
                Some(event) if event.kind == kind => return Ok(event),
                Some(_) => {}
                None => bail!("stream closed before `{kind}`"),
            }
        }
    }

    fn feed(&mut self, input: &[u8]) -> anyhow::Result<()> {
        match &mut self.chunked {
            Some(chunked) => chunked.decode(input, &mut self.body)?,
            None => self.body.extend_from_slice(input),
        }
        parse_events(&mut self.body, &mut self.events);
        Ok(())
    }
}

/// Incremental `Transfer-Encoding: chunked` decoder.
#[derive(Default)]
struct Chunked {
    pending: Vec<u8>,
    /// Bytes of chunk data still to come; `None` while reading a size line.
    remaining: Option<usize>,
    /// The CRLF after a chunk's data is still to come.
    crlf: bool,
    done: bool,
}

impl Chunked {
    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.pending.extend_from_slice(input);
        let mut at = 0;
        while !self.done {
            let rest = &self.pending[at..];
            if self.crlf {
                if rest.len() < 2 {
                    break;
                }
                if &rest[..2] != b"\r\n" {
                    bail!("malformed chunk: no CRLF after the data");
                }
                at += 2;
                self.crlf = false;
            } else if let Some(remaining) = self.remaining {
                if rest.is_empty() {
                    break;
                }
                let take = remaining.min(rest.len());
                out.extend_from_slice(&rest[..take]);
                at += take;
                if take == remaining {
                    self.remaining = None;
                    self.crlf = true;
                } else {
                    self.remaining = Some(remaining - take);
                }
            } else {
                let Some(eol) = find(rest, b"\r\n") else {
                    if rest.len() > 1024 {
                        bail!("malformed chunk size line");
                    }
                    break;
                };
                let line = std::str::from_utf8(&rest[..eol]).context("chunk size line")?;
                let size_hex = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_hex, 16)
                    .with_context(|| format!("malformed chunk size `{size_hex}`"))?;
                at += eol + 2;
                if size == 0 {
                    self.done = true;
                } else {
                    self.remaining = Some(size);
                }
            }
        }
        self.pending.drain(..at);
        Ok(())
    }
}

/// Moves every complete event (ended by a blank line) out of `body`.
fn parse_events(body: &mut Vec<u8>, out: &mut VecDeque<Event>) {
    let mut start = 0;
    while let Some(pos) = find(&body[start..], b"\n\n") {
        let block = String::from_utf8_lossy(&body[start..start + pos]);
        start += pos + 2;
        let mut kind = None;
        let mut id = None;
        let mut data: Option<String> = None;
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => kind = Some(value.to_owned()),
                "id" => id = Some(value.to_owned()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
        if kind.is_some() || data.is_some() {
            out.push_back(Event {
                kind: kind.unwrap_or_else(|| "message".to_owned()),
                id,
                data: data.unwrap_or_default(),
            });
        }
    }
    body.drain(..start);
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The order id in an `order-visible` event's data.
pub fn order_id(event: &Event) -> Option<uuid::Uuid> {
    let data: serde_json::Value = serde_json::from_str(&event.data).ok()?;
    data.get("id")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_chunks_split_anywhere() {
        let mut wire = Vec::new();
        for piece in [
            "retry: 1000\nevent: ready\nid: 4\n",
            "data: {\"cursor\":\"4\"}\n\n",
            ": heartbeat\n\n",
        ] {
            wire.extend_from_slice(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes());
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        for split in 0..wire.len() {
            let mut chunked = Chunked::default();
            let mut body = Vec::new();
            let mut events = VecDeque::new();
            for part in [&wire[..split], &wire[split..]] {
                chunked.decode(part, &mut body).unwrap();
                parse_events(&mut body, &mut events);
            }
            assert!(chunked.done, "split at {split}");
            assert_eq!(
                events.into_iter().collect::<Vec<_>>(),
                vec![Event {
                    kind: "ready".into(),
                    id: Some("4".into()),
                    data: "{\"cursor\":\"4\"}".into()
                }],
                "split at {split}"
            );
        }
    }
}
