//! A minimal Server-Sent Events client for tests: frames as a spec-following
//! client sees them (event, id, data, retry, comments).

use reqwest::Response;
use serde_json::Value;

use crate::WAIT;

/// One Server-Sent Events frame.
#[derive(Clone, Debug, Default)]
pub struct SseFrame {
    pub event: Option<String>,
    pub id: Option<String>,
    /// `data:` lines joined with `\n`.
    pub data: Option<String>,
    pub retry: Option<u64>,
    /// Comment lines (`: …`), without the colon.
    pub comments: Vec<String>,
}

impl SseFrame {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("frame has data"))
            .expect("frame data is JSON")
    }

    fn is_empty(&self) -> bool {
        self.event.is_none()
            && self.id.is_none()
            && self.data.is_none()
            && self.retry.is_none()
            && self.comments.is_empty()
    }

    fn is_empty_but_comments(&self) -> bool {
        self.event.is_none() && self.id.is_none() && self.data.is_none() && self.retry.is_none()
    }

    /// Only comments (a heartbeat) or only `retry:`: nothing a client dispatches.
    pub fn is_dispatched(&self) -> bool {
        self.event.is_some() || self.data.is_some()
    }
}

/// A minimal SSE parser over a streaming response body.
pub struct SseStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: Vec<u8>,
    frame: SseFrame,
}

impl SseStream {
    pub fn new(response: Response) -> Self {
        use futures::StreamExt;
        Self {
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map(|b| b.to_vec()))
                .boxed(),
            buffer: Vec::new(),
            frame: SseFrame::default(),
        }
    }

    /// The next frame, heartbeats included; `None` when the stream ends.
    pub async fn next_frame(&mut self) -> Option<SseFrame> {
        use futures::StreamExt;
        loop {
            while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8(line).expect("SSE is UTF-8");
                if line.is_empty() {
                    let frame = std::mem::take(&mut self.frame);
                    if !frame.is_empty() {
                        return Some(frame);
                    }
                    continue;
                }
                if let Some(comment) = line.strip_prefix(':') {
                    self.frame.comments.push(comment.trim_start().to_owned());
                    // A comment line on its own (a heartbeat: no blank line
                    // follows it) is a frame of its own.
                    if self.frame.comments.len() == 1 && self.frame.is_empty_but_comments() {
                        return Some(std::mem::take(&mut self.frame));
                    }
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                match field {
                    "event" => self.frame.event = Some(value),
                    "id" => self.frame.id = Some(value),
                    "retry" => self.frame.retry = Some(value.parse().expect("retry is a number")),
                    "data" => {
                        self.frame.data = Some(match self.frame.data.take() {
                            Some(before) => format!("{before}\n{value}"),
                            None => value,
                        })
                    }
                    other => panic!("unexpected SSE field {other:?}"),
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(e)) => panic!("SSE stream failed: {e}"),
                // What is left without a blank line (e.g. a closing `retry:`
                // hint) is still shown, as a frame nothing dispatches.
                None => {
                    let rest = std::mem::take(&mut self.frame);
                    return (!rest.is_empty()).then_some(rest);
                }
            }
        }
    }

    /// The next frame a client would dispatch (skips heartbeats), within [`WAIT`].
    pub async fn next_event(&mut self) -> SseFrame {
        tokio::time::timeout(WAIT, async {
            loop {
                let frame = self.next_frame().await.expect("SSE stream ended");
                if frame.is_dispatched() {
                    return frame;
                }
            }
        })
        .await
        .expect("no SSE event arrived in time")
    }

    /// The next `order-visible` event; any other event fails the test.
    pub async fn next_order_visible(&mut self) -> SseFrame {
        let frame = self.next_event().await;
        assert_eq!(
            frame.event.as_deref(),
            Some("order-visible"),
            "expected order-visible, got {frame:?}"
        );
        frame
    }
}

/// The order id an `order-visible` frame announces.
pub fn visible_id(frame: &SseFrame) -> String {
    frame.json()["id"]
        .as_str()
        .expect("order-visible data has an id")
        .to_owned()
}
