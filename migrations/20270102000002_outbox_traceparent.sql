-- The W3C trace context (`traceparent`: version-traceid-spanid-flags) of
-- the request that wrote the event, so the relay and the projector — other
-- processes, later — continue that request's trace (docs/OPERATIONS.md,
-- Traces). NULL when no trace was being exported (OTEL_EXPORTER_OTLP_ENDPOINT
-- unset, the default): then nothing is stored and nothing is continued.
ALTER TABLE outbox ADD COLUMN traceparent text;
