//! Static files, embedded so the binary runs from any directory.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// A file of `static/`, embedded so the binary runs from any directory,
/// served with a content hash as its ETag (unchanged files answer 304).
pub struct StaticAsset {
    body: &'static str,
    content_type: &'static str,
    etag: OnceLock<String>,
}

pub static APP_JS: StaticAsset = StaticAsset::new(
    include_str!("../../../../static/app.js"),
    "text/javascript; charset=utf-8",
);
pub static SIGHTLINE_JS: StaticAsset = StaticAsset::new(
    include_str!("../../../../static/sightline.js"),
    "text/javascript; charset=utf-8",
);
pub static FAVICON: StaticAsset = StaticAsset::new(
    include_str!("../../../../static/favicon.svg"),
    "image/svg+xml",
);
pub static STYLESHEET: StaticAsset = StaticAsset::new(
    include_str!("../../../../static/sightline.css"),
    "text/css; charset=utf-8",
);

impl StaticAsset {
    const fn new(body: &'static str, content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    fn etag(&'static self) -> &'static str {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
    }

    pub fn respond(&'static self, headers: &HeaderMap) -> Response {
        let etag = self.etag();
        let headers_out = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::ETAG, HeaderValue::from_static(etag)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
        if matches {
            (StatusCode::NOT_MODIFIED, headers_out).into_response()
        } else {
            (headers_out, self.body).into_response()
        }
    }
}
