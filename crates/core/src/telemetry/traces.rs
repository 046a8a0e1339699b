//! Traces across the processes (issue #27): one trace per order, from the
//! web's HTTP request through the relay's hand-over and the bus to the
//! projector's bulk write, refresh and notice — even when those run in three
//! processes (`--roles web`, `--roles relay`, `--roles projector`).
//!
//! Exported over OTLP (HTTP/protobuf) only when `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set. Unset, the default, no
//! layer is installed and every function here returns at once: no span
//! context is read, nothing is stored with an event (the outbox's
//! `traceparent` stays NULL), nothing is added to a NATS message.
//!
//! How a context crosses each boundary (W3C trace context, `traceparent`):
//! - web → outbox: the write side hands [`current_traceparent`] to
//!   `outbox::append` (`NewEvent::traceparent`), which stores it — the
//!   request's span (a `traceparent` the client sent is continued, see
//!   `web`'s trace layer) — with the event, in the order's transaction.
//! - relay → bus: for each event a `relay.publish` span, a child of the
//!   stored context, and the event goes on carrying *that* span's context;
//!   NATS carries it in the message's `traceparent` header.
//! - bus → projector: on NATS a `bus.deliver` span from the moment the
//!   stream stored the message to its arrival at the projector; then for
//!   each event a `projector.project` span with `projector.bulk`,
//!   `projector.refresh` and `projector.notice` under it.
//!
//! Why one span per event beside the batch's span: a batch carries many
//! orders, each with its trace, and a span has one parent. The batch's own
//! span (`relay.batch`, `project`) stays in no order's trace,
//! with a *link* to every event's context (so from a batch one reaches its
//! orders); each order's trace gets short spans of its own covering the
//! batch's steps, so opening one order's trace shows its whole path without
//! the other orders of its batch. The per-event spans cost a few
//! microseconds each, and only while traces are exported. (The SDK keeps at
//! most 128 links per span: a larger batch's span links to its first 128.)

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::outbox::OutboxEvent;

/// The header (NATS) and the outbox column that carry a context.
pub const TRACEPARENT: &str = "traceparent";

/// The exporting provider, once installed (see [`install`]).
static PROVIDER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Whether spans are exported (`OTEL_EXPORTER_OTLP_ENDPOINT` was set at start).
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Whether the environment names an OTLP endpoint (for traces or for all).
pub fn endpoint_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// `OTEL_SERVICE_NAME`, or `sightline-<roles>` (`sightline-web`,
/// `sightline-relay-projector`, …), so a trace shows which process did what.
pub fn service_name(roles: &[crate::config::Role]) -> String {
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.trim().is_empty()
    {
        return name;
    }
    let roles: Vec<String> = roles
        .iter()
        .map(|r| format!("{r:?}").to_lowercase())
        .collect();
    format!("sightline-{}", roles.join("-"))
}

/// Builds the OTLP exporter and the provider (batching on its own thread)
/// and returns the tracer for the `tracing` layer. The exporter reads
/// `OTEL_EXPORTER_OTLP_*` (endpoint, headers, timeout) itself.
pub(super) fn install(service: &str) -> anyhow::Result<SdkTracer> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("sightline");
    let _ = PROVIDER.set((provider, tracer.clone()));
    Ok(tracer)
}

/// Sends what is still buffered and stops the exporter (at the end of
/// `main`; blocks up to the exporter's timeout).
pub fn shutdown() {
    if let Some((provider, _)) = PROVIDER.get()
        && let Err(e) = provider.shutdown()
    {
        eprintln!("sightline: flushing traces at shutdown: {e}");
    }
}

/// The current span's context as a `traceparent`, when spans are exported
/// and there is one (what the write side gives `outbox::append` to store).
pub fn current_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    traceparent_of(&Span::current())
}

/// `span`'s context as a `traceparent` (`None` if it has none).
pub fn traceparent_of(span: &Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    format_traceparent(span_ref.span_context())
}

fn format_traceparent(sc: &SpanContext) -> Option<String> {
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The context a `traceparent` names (an empty one if it is malformed).
pub fn context_from(traceparent: &str) -> Context {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// The context of an incoming request's `traceparent` header, to continue
/// the caller's trace (W3C trace context).
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent.filter(|_| exporting()) {
        let cx = context_from(traceparent);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}

/// The target of the spans kept out of the traces (logged as before): the
/// relay's `relay_batch` runs on every wake-up and poll, most of them
/// claiming nothing, and each would be a trace of one span; the relay opens
/// `relay.batch` ([`batch_span`]) once it has claimed events instead.
pub const UNEXPORTED: &str = "sightline_core::relay::polls";

/// A span `name` for a batch of `events`, linked to each event's context
/// (a disabled span, costing nothing, when nothing is exported).
pub fn batch_span(name: &'static str, events: &[OutboxEvent]) -> Span {
    if !exporting() {
        return Span::none();
    }
    let span = tracing::info_span!("batch", otel.name = name, events = events.len());
    link_events(&span, events);
    span
}

/// Links `batch` (a span of a whole batch) to every event's context.
pub fn link_events(batch: &Span, events: &[OutboxEvent]) {
    if !exporting() {
        return;
    }
    for event in events {
        if let Some(traceparent) = &event.traceparent {
            let cx = context_from(traceparent);
            batch.add_link(cx.span().span_context().clone());
        }
    }
}

/// One span per event, each in its event's own trace (see the module's
/// comment); empty when nothing is exported. A span ends when this is
/// dropped.
pub struct EventSpans(Vec<Span>);

impl EventSpans {
    /// `name` for each event with a context, a child of that context.
    pub fn start(name: &'static str, events: &[OutboxEvent]) -> Self {
        if !exporting() {
            return Self(Vec::new());
        }
        Self(
            events
                .iter()
                .map(|event| {
                    let Some(traceparent) = &event.traceparent else {
                        return Span::none();
                    };
                    let span = tracing::info_span!(
                        parent: None,
                        "event",
                        otel.name = name,
                        order_id = %event.aggregate_id,
                        order_version = event.aggregate_version,
                        outbox_id = event.id,
                        event_type = %event.event_type,
                    );
                    let _ = span.set_parent(context_from(traceparent));
                    span
                })
                .collect(),
        )
    }

    /// A child span `name` of each (a step of the batch, e.g. the bulk write).
    pub fn step(&self, name: &'static str) -> Self {
        Self(
            self.0
                .iter()
                .map(|parent| {
                    if parent.is_none() {
                        Span::none()
                    } else {
                        tracing::info_span!(parent: parent, "step", otel.name = name)
                    }
                })
                .collect(),
        )
    }

    /// `events` with each one's context replaced by its span's, so the next
    /// hop continues from this one (borrowed as they are, without a copy,
    /// when nothing is exported).
    pub fn hand_on<'a>(&self, events: &'a [OutboxEvent]) -> Cow<'a, [OutboxEvent]> {
        if self.0.is_empty() {
            return Cow::Borrowed(events);
        }
        events
            .iter()
            .zip(&self.0)
            .map(|(event, span)| {
                let mut event = event.clone();
                if let Some(traceparent) = traceparent_of(span) {
                    event.traceparent = Some(traceparent);
                }
                event
            })
            .collect()
    }
}

/// The bus's hop for one message, as a span in the event's trace: from
/// `stored` (when the stream stored it) to now (its arrival here), a child
/// of `traceparent` (the relay's `relay.publish`). Returns the hop's own
/// context for the projector to continue from. `None` when nothing is
/// exported or the message carried no context.
pub fn bus_hop(
    traceparent: Option<&str>,
    stored: SystemTime,
    subject: &str,
    delivered: i64,
) -> Option<String> {
    let (_, tracer) = PROVIDER.get()?;
    let parent = context_from(traceparent?);
    if !parent.span().span_context().is_valid() {
        return None;
    }
    let mut span = tracer
        .span_builder("bus.deliver")
        .with_kind(SpanKind::Consumer)
        .with_start_time(stored)
        .with_attributes([
            KeyValue::new("messaging.system", "nats"),
            KeyValue::new("messaging.destination.name", subject.to_owned()),
            KeyValue::new("messaging.nats.delivered", delivered),
        ])
        .start_with_context(tracer, &parent);
    let hop = format_traceparent(span.span_context());
    span.end();
    hop
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;

    #[test]
    fn a_traceparent_reads_back_as_the_same_context() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = context_from(traceparent);
        assert_eq!(
            format_traceparent(cx.span().span_context()).as_deref(),
            Some(traceparent)
        );
        for malformed in ["", "not a traceparent", "00-0000-0000-01"] {
            assert!(!context_from(malformed).span().span_context().is_valid());
        }
    }

    #[test]
    fn a_process_is_named_after_its_roles() {
        if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|n| !n.trim().is_empty()) {
            return; // the environment names it (as it should win)
        }
        assert_eq!(service_name(&[Role::Web]), "sightline-web");
        assert_eq!(
            service_name(&[Role::Relay, Role::Projector]),
            "sightline-relay-projector"
        );
    }

    /// Unit tests install no exporter: the default, where nothing is read,
    /// stored or copied.
    #[test]
    fn without_an_exporter_nothing_is_read_stored_or_copied() {
        assert!(!exporting());
        let _request = tracing::info_span!("request").entered();
        assert_eq!(current_traceparent(), None);
        let events = vec![OutboxEvent {
            id: 1,
            event_id: uuid::Uuid::new_v4(),
            event_type: "OrderPlaced".to_owned(),
            schema_version: 2,
            aggregate_id: uuid::Uuid::new_v4(),
            aggregate_version: 1,
            user_id: uuid::Uuid::new_v4(),
            payload: serde_json::json!({}),
            created_at: chrono::Utc::now(),
            relay_attempt: 0,
            traceparent: None,
        }];
        let spans = EventSpans::start("relay.publish", &events);
        assert!(spans.0.is_empty());
        assert!(matches!(spans.hand_on(&events), Cow::Borrowed(_)));
        assert!(batch_span("relay.batch", &events).is_none());
        // Not in the JSON a bus carries: NATS has it in a header.
        let mut traced = events[0].clone();
        traced.traceparent =
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned());
        let json = serde_json::to_value(&traced).unwrap();
        assert!(json.get("traceparent").is_none(), "{json}");
    }
}
