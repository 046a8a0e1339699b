//! Event streams that are a connection's first request are served by the
//! accept loop itself, without hyper's buffers (`web::event_streams`): the
//! same stream (ready, notices, resume), ended the moment the client goes
//! away, while every other request — and a stream asked for later on a
//! connection — is still hyper's.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, TestUser, WAIT, spawn_app, spawn_app_with, test_settings};

/// A connection that has sent `request` as its first bytes.
async fn send(app: &TestApp, request: &str) -> BufReader<TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.unwrap();
    BufReader::new(tcp)
}

fn stream_request(user: &TestUser, last_event_id: Option<&str>) -> String {
    let mut request = format!(
        "GET /api/events HTTP/1.1\r\nHost: sightline\r\nAccept: text/event-stream\r\n\
         Authorization: Bearer {}\r\n",
        user.token
    );
    if let Some(id) = last_event_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request + "\r\n"
}

/// The status and the head's lines, lowercased.
async fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, Vec<String>) {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.expect("read a head line");
        assert!(n > 0, "connection closed before a whole response head");
        if line == "\r\n" {
            break;
        }
        lines.push(line.trim_end().to_ascii_lowercase());
    }
    let status = lines[0][9..12].parse().expect("a status code");
    (status, lines)
}

/// A body framed by the head's `content-length`.
async fn read_body(reader: &mut BufReader<TcpStream>, head: &[String]) -> Vec<u8> {
    let length: usize = head
        .iter()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("a content-length")
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.unwrap();
    body
}

/// The next chunk of a chunked body (`None` after the last one).
async fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut size = String::new();
    reader.read_line(&mut size).await.unwrap();
    let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
    let mut data = vec![0; size + 2];
    reader.read_exact(&mut data).await.unwrap();
    assert_eq!(&data[size..], b"\r\n", "a chunk ends with CRLF");
    (size > 0).then(|| String::from_utf8(data[..size].to_vec()).unwrap())
}

/// Reads chunks until an event of `kind` (with `data` containing `needle`);
/// returns its id and data.
async fn read_event(
    reader: &mut BufReader<TcpStream>,
    kind: &str,
    needle: &str,
) -> (String, Value) {
    let mut text = String::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let chunk = read_chunk(reader).await.expect("the stream ended");
            text.push_str(&chunk);
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    event
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_owned)
                };
                if field("event: ").as_deref() == Some(kind)
                    && field("data: ").is_some_and(|d| d.contains(needle))
                {
                    let data = serde_json::from_str(&field("data: ").unwrap()).unwrap();
                    return (field("id: ").expect("an id"), data);
                }
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no `{kind}` event with {needle} within {WAIT:?}"))
}

fn has(head: &[String], line: &str) -> bool {
    head.iter().any(|l| l == line)
}

#[tokio::test]
async fn a_first_request_for_the_stream_gets_ready_notices_and_resumes() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    let mut stream = send(&app, &stream_request(&user, None)).await;
    let (status, head) = read_head(&mut stream).await;
    assert_eq!(status, 200, "{head:?}");
    assert!(has(&head, "content-type: text/event-stream"), "{head:?}");
    assert!(has(&head, "transfer-encoding: chunked"), "{head:?}");
    // hyper would keep the connection open after the stream: this is the
    // accept loop's own writer.
    assert!(has(&head, "connection: close"), "{head:?}");
    assert!(head.iter().any(|l| l.starts_with("date: ")), "{head:?}");
    let (ready, _) = read_event(&mut stream, "ready", "cursor").await;

    let order = app.place_simple_order(&user, "FAST-1").await;
    let id = order["id"].as_str().unwrap();
    let (after, data) = read_event(&mut stream, "order-visible", id).await;
    assert_eq!(data["id"], id);
    drop(stream);

    // Resuming from `ready` on a new connection replays what came after.
    let mut resumed = send(&app, &stream_request(&user, Some(&ready))).await;
    let (status, _) = read_head(&mut resumed).await;
    assert_eq!(status, 200);
    let (opening, _) = read_event(&mut resumed, "ready", "cursor").await;
    assert_eq!(opening, ready, "`ready` repeats the client's cursor");
    let (replayed, _) = read_event(&mut resumed, "order-visible", id).await;
    assert_eq!(replayed, after);
}

#[tokio::test]
async fn a_client_that_goes_away_ends_its_stream_at_once() {
    let mut settings = test_settings().await;
    // No heartbeat would notice the closed socket: only reading it can.
    settings.sse_heartbeat_secs = 3600;
    // One stream per user: the next opens only once the last has ended.
    settings.max_streams_per_user = 1;
    let app = spawn_app_with(settings).await;
    let user = app.new_user().await;

    let mut stream = send(&app, &stream_request(&user, None)).await;
    let (status, _) = read_head(&mut stream).await;
    assert_eq!(status, 200);
    read_event(&mut stream, "ready", "cursor").await;
    let mut second = send(&app, &stream_request(&user, None)).await;
    let (status, _) = read_head(&mut second).await;
    assert_eq!(status, 429, "the first stream holds the user's one place");

    drop(stream);
    let started = Instant::now();
    loop {
        let mut next = send(&app, &stream_request(&user, None)).await;
        if read_head(&mut next).await.0 == 200 {
            read_event(&mut next, "ready", "cursor").await;
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the stream outlived its client by {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn other_first_requests_and_refused_streams_are_answered_as_before() {
    let app = spawn_app().await;
    let user = app.new_user().await;

    // No session: the API's 401, framed by length, then the connection closes.
    let mut refused = send(
        &app,
        "GET /api/events HTTP/1.1\r\nHost: sightline\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await;
    let (status, head) = read_head(&mut refused).await;
    assert_eq!(status, 401, "{head:?}");
    let body = read_body(&mut refused, &head).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "unauthorized", "{body}");
    let mut rest = Vec::new();
    refused.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "nothing after the answer, then closed");

    // Pipelined behind another request, the stream is hyper's: both are
    // answered, in order, on one connection that stays open.
    let pipelined = format!(
        "GET /healthz HTTP/1.1\r\nHost: sightline\r\n\r\n{}",
        stream_request(&user, None)
    );
    let mut both = send(&app, &pipelined).await;
    let (status, head) = read_head(&mut both).await;
    assert_eq!(status, 200, "{head:?}");
    read_body(&mut both, &head).await;
    let (status, head) = read_head(&mut both).await;
    assert_eq!(status, 200, "{head:?}");
    assert!(!has(&head, "connection: close"), "{head:?}");
    read_event(&mut both, "ready", "cursor").await;
    let order = app.place_simple_order(&user, "HYPER-1").await;
    read_event(&mut both, "order-visible", order["id"].as_str().unwrap()).await;

    // A stream asked for with a body goes to hyper too, and is served.
    let with_body =
        stream_request(&user, None).replace("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n");
    let mut hyper_stream = send(&app, &with_body).await;
    let (status, head) = read_head(&mut hyper_stream).await;
    assert_eq!(status, 200, "{head:?}");
    assert!(!has(&head, "connection: close"), "{head:?}");
    read_event(&mut hyper_stream, "ready", "cursor").await;
}
