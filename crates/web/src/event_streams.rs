//! Event streams served without hyper's per-connection buffers.
//!
//! hyper keeps an 8 KiB read buffer and an 8 KiB write buffer for every
//! HTTP/1 connection for as long as it lives. Most connections of an
//! instance are idle SSE streams that hear a notice now and then, so those
//! buffers were most of what a stream cost. When a connection's *first*
//! request is a plain `GET` of an event stream path (HTTP/1.1, no body, no
//! upgrade, the head complete and alone in what arrived), the accept loop
//! hands it here instead: the head is parsed (httparse, hyper's own parser)
//! into a request for the same router, and the response is written straight
//! to the socket — each event as soon as it is produced, several at once
//! when several are ready — then the connection closes (`connection:
//! close`; an event stream ends only when one side goes away). Anything
//! else, and any head this does not take whole, is served by hyper with the
//! bytes read so far put back in front ([`Rewind`]).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// The longest head read here; a longer one goes to hyper (with its own,
/// larger limit).
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most; with more, hyper takes the request.
const MAX_HEADERS: usize = 64;
/// Bytes gathered into one write when several events are ready at once (a
/// replay's pages), instead of one write per event.
const COALESCE: usize = 16 * 1024;

/// What the first bytes of a connection turned out to be.
pub enum FirstRequest {
    /// A request for an event stream, parsed, for [`serve`].
    Stream(Box<Request<Body>>),
    /// Anything else: for hyper, starting with the bytes already read.
    Other(Vec<u8>),
    /// The client closed before sending anything.
    Closed,
}

/// Reads a connection's first request head, as far as needed to tell an
/// event stream request (a `GET` of one of `paths`) from anything else:
/// usually one read. Reads nothing past the head it was sent with.
pub async fn read_first(stream: &mut TcpStream, paths: &[&str]) -> io::Result<FirstRequest> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            if buf.len() >= MAX_HEAD {
                return Ok(FirstRequest::Other(buf));
            }
            buf.reserve(buf.len());
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(if buf.is_empty() {
                FirstRequest::Closed
            } else {
                FirstRequest::Other(buf)
            });
        }
        match may_be_stream(&buf, paths) {
            Some(false) => return Ok(FirstRequest::Other(buf)),
            None => continue,
            Some(true) => {}
        }
        match parse(&buf) {
            Parsed::Partial => continue,
            Parsed::Stream(request) => return Ok(FirstRequest::Stream(request)),
            Parsed::Other => return Ok(FirstRequest::Other(buf)),
        }
    }
}

/// Whether the request line starts `GET <path>` with one of `paths`
/// (`None`: too few bytes yet to tell).
fn may_be_stream(buf: &[u8], paths: &[&str]) -> Option<bool> {
    let mut undecided = false;
    for path in paths {
        let line = [b"GET ".as_slice(), path.as_bytes()].concat();
        let n = buf.len().min(line.len());
        if buf[..n] != line[..n] {
            continue;
        }
        match buf.get(line.len()) {
            None => undecided = true,
            Some(b' ' | b'?') => return Some(true),
            Some(_) => {}
        }
    }
    if undecided { None } else { Some(false) }
}

enum Parsed {
    Partial,
    Stream(Box<Request<Body>>),
    Other,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    match head.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        // Only a head that came alone: pipelined bytes after it are hyper's.
        Ok(httparse::Status::Complete(len)) if len == buf.len() => {
            request(&head).map_or(Parsed::Other, |r| Parsed::Stream(Box::new(r)))
        }
        _ => Parsed::Other,
    }
}

/// The request for the router, or `None` when hyper should take it (a body,
/// an upgrade, HTTP/1.0, anything it would need to interpret).
fn request(head: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    if head.method? != "GET" || head.version? != 1 {
        return None;
    }
    let uri: Uri = head.path?.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for h in head.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::EXPECT,
        ]
        .contains(&name)
        {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let mut request = Request::new(Body::empty());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Some(request)
}

/// Answers `request` through `router` and writes the response to `stream`
/// until its body ends or the client goes away; then closes the connection.
pub async fn serve(
    mut stream: TcpStream,
    router: Router,
    request: Box<Request<Body>>,
    peer: SocketAddr,
) {
    let mut request = *request;
    request.extensions_mut().insert(ConnectInfo(peer));
    // Boxed, so the routing's state is freed once the response is made
    // instead of sizing this connection's task for as long as it streams.
    let Ok(response) = Box::pin(router.oneshot(request)).await;
    if let Err(e) = write_response(&mut stream, response).await {
        tracing::debug!(error = %e, "event stream connection ended with an error");
    }
    let _ = stream.shutdown().await;
}

async fn write_response(
    stream: &mut TcpStream,
    response: axum::response::Response,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let no_body = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    let chunked = !no_body && length.is_none();

    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    let mut out = out.into_bytes();
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
        out.extend_from_slice(format!("date: {date}\r\n").as_bytes());
    }
    match (no_body, length) {
        (true, _) => {}
        (false, Some(n)) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        (false, None) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    // The head is written: its headers and extensions (a request id among
    // them) would otherwise stay for as long as the stream lives.
    drop(parts);
    if no_body {
        return stream.write_all(&out).await;
    }

    let mut data = body.into_data_stream();
    let (mut reader, mut writer) = stream.split();
    // A client sends nothing on an event stream; what it does send is
    // thrown away, and its end (or a reset) ends the stream.
    let mut sink = [0u8; 64];
    let mut ended = false;
    loop {
        // Whatever is ready now leaves in this write.
        while !ended && out.len() < COALESCE {
            match data.next().now_or_never() {
                Some(Some(Ok(chunk))) => frame(&mut out, &chunk, chunked),
                Some(Some(Err(e))) => return Err(io::Error::other(e)),
                Some(None) => {
                    ended = true;
                    if chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                }
                None => break,
            }
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
            // Nothing held between events.
            out = Vec::new();
        }
        if ended {
            return writer.flush().await;
        }
        tokio::select! {
            next = data.next() => match next {
                Some(Ok(chunk)) => frame(&mut out, &chunk, chunked),
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => {
                    ended = true;
                    if chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                }
            },
            read = reader.read(&mut sink) => match read {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            },
        }
    }
}

/// Appends `chunk` to `out`, framed as an HTTP/1.1 chunk when `chunked`.
fn frame(out: &mut Vec<u8>, chunk: &Bytes, chunked: bool) {
    // An empty chunk would end a chunked body.
    if chunk.is_empty() {
        return;
    }
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(chunk);
    }
}

/// A connection for hyper with the bytes [`read_first`] took put back in
/// front of what the socket still holds.
pub struct Rewind {
    read: Option<Bytes>,
    inner: TcpStream,
}

impl Rewind {
    pub fn new(inner: TcpStream, read: Vec<u8>) -> Self {
        Self {
            read: (!read.is_empty()).then(|| Bytes::from(read)),
            inner,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut read) = self.read.take() {
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read.split_to(n));
            if !read.is_empty() {
                self.read = Some(read);
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATHS: &[&str] = &["/api/events"];

    #[test]
    fn only_a_get_of_a_stream_path_is_taken() {
        assert_eq!(
            may_be_stream(b"GET /api/events HTTP/1.1\r\n", PATHS),
            Some(true)
        );
        assert_eq!(
            may_be_stream(b"GET /api/events?x=1 HTTP", PATHS),
            Some(true)
        );
        assert_eq!(may_be_stream(b"GET /api/ev", PATHS), None);
        assert_eq!(may_be_stream(b"GET /api/events", PATHS), None);
        assert_eq!(
            may_be_stream(b"GET /api/eventsx HTTP/1.1", PATHS),
            Some(false)
        );
        assert_eq!(
            may_be_stream(b"POST /api/orders HTTP/1.1", PATHS),
            Some(false)
        );
        assert_eq!(may_be_stream(b"G", PATHS), None);
        assert_eq!(may_be_stream(b"X", PATHS), Some(false));
    }

    #[test]
    fn a_head_with_a_body_or_pipelined_bytes_goes_to_hyper() {
        let plain = b"GET /api/events HTTP/1.1\r\nhost: x\r\ncookie: a=b\r\n\r\n";
        let Parsed::Stream(request) = parse(plain) else {
            panic!("a plain GET is taken");
        };
        assert_eq!(request.uri().path(), "/api/events");
        assert_eq!(request.headers()["cookie"], "a=b");
        assert!(matches!(parse(&plain[..20]), Parsed::Partial));
        let pipelined = [plain.as_slice(), b"GET / HTTP/1.1\r\n\r\n"].concat();
        assert!(matches!(parse(&pipelined), Parsed::Other));
        let body = b"GET /api/events HTTP/1.1\r\ncontent-length: 2\r\n\r\n";
        assert!(matches!(parse(body), Parsed::Other));
        let old = b"GET /api/events HTTP/1.0\r\n\r\n";
        assert!(matches!(parse(old), Parsed::Other));
        let upgrade = b"GET /api/events HTTP/1.1\r\nupgrade: websocket\r\n\r\n";
        assert!(matches!(parse(upgrade), Parsed::Other));
    }

    #[test]
    fn chunks_are_framed_and_empty_ones_skipped() {
        let mut out = Vec::new();
        frame(&mut out, &Bytes::from_static(b"data: x\n\n"), true);
        frame(&mut out, &Bytes::new(), true);
        assert_eq!(out, b"9\r\ndata: x\n\n\r\n");
    }
}
