//! CORS for frontends on other origins: an allowlist with credentials.
//!
//! `CORS_ALLOWED_ORIGINS` names exact origins (`https://shop.example.com`).
//! A request whose `Origin` is on the list goes through tower-http's
//! [`CorsLayer`] (preflights answered, `Access-Control-Allow-Origin` echoing
//! the origin, `Access-Control-Allow-Credentials: true`); every other request
//! is served exactly as without CORS — no `Access-Control-*` header at all,
//! and an `OPTIONS` preflight gets the usual 405. With an empty list the
//! layer does nothing.
//!
//! The CSRF check (`auth::session::check_same_origin`) treats the same
//! origins as allowed, so a credentialed `POST` from a listed frontend works.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, Request, Response, header};
use futures::TryFutureExt;
use futures::future::Either;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

use sightline_core::config::Settings;

/// Request headers a frontend may send.
const ALLOWED_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::AUTHORIZATION,
    HeaderName::from_static("x-consistency-token"),
    HeaderName::from_static("last-event-id"),
];

/// Response headers a frontend may read.
const EXPOSED_HEADERS: [HeaderName; 4] = [
    header::LOCATION,
    HeaderName::from_static("x-read-source"),
    HeaderName::from_static("x-request-id"),
    header::RETRY_AFTER,
];

/// The layer for `settings`; a no-op when no origin is allowed.
pub fn layer(settings: &Settings) -> AllowlistLayer {
    let origins: Vec<HeaderValue> = settings
        .cors_origins()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.clone()))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .max_age(Duration::from_secs(600));
    AllowlistLayer {
        origins: origins.into(),
        cors,
    }
}

/// [`CorsLayer`] applied only to requests from an allowed origin.
#[derive(Clone)]
pub struct AllowlistLayer {
    origins: Arc<[HeaderValue]>,
    cors: CorsLayer,
}

impl<S: Clone> Layer<S> for AllowlistLayer {
    type Service = Allowlist<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Allowlist {
            origins: self.origins.clone(),
            cors: self.cors.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Allowlist<S> {
    origins: Arc<[HeaderValue]>,
    cors: CorsLayer,
    inner: S,
}

type Plain<F, B> = futures::future::MapOk<F, fn(Response<B>) -> Response<B>>;

/// Responses differ by `Origin` once CORS is on: say so to caches, so a
/// cached same-origin answer (without CORS headers) is not reused for a
/// frontend, nor the other way round.
fn vary_on_origin<B>(mut response: Response<B>) -> Response<B> {
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
    response
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Allowlist<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Either<
        <Cors<S> as Service<Request<ReqBody>>>::Future,
        Either<Plain<S::Future, ResBody>, S::Future>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service made ready is the one that serves; a clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if self.origins.is_empty() {
            return Either::Right(Either::Right(inner.call(request)));
        }
        let allowed = request
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|origin| self.origins.contains(origin));
        if allowed {
            Either::Left(self.cors.layer(inner).call(request))
        } else {
            Either::Right(Either::Left(
                inner
                    .call(request)
                    .map_ok(vary_on_origin as fn(Response<ResBody>) -> Response<ResBody>),
            ))
        }
    }
}
