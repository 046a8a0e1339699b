"""Validates SSE event data against the OpenAPI document's schemas.

    validate_events.py <openapi.json>   < events (one JSON object a line: {"event", "data"})

Each event's `data` must match the schema the document names for its event
under `x-sse-events` (GET /api/events, 200). Uses jsonschema-rs, which
Schemathesis brings along (run with its virtualenv's python). Prints one line
per event; exits 1 on the first mismatch.
"""

import json
import sys

import jsonschema_rs

document = json.load(open(sys.argv[1]))
events = document["paths"]["/api/events"]["get"]["responses"]["200"]["x-sse-events"]
seen = 0
for line in sys.stdin:
    if not line.strip():
        continue
    event = json.loads(line)
    name = event["event"]
    if name not in events:
        print(f"event {name!r} has no schema in the document")
        sys.exit(1)
    # The component schemas refer to each other: validate inside the document.
    schema = {"$ref": events[name]["$ref"], "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    errors = [e.message for e in validator.iter_errors(event["data"])]
    if errors:
        print(f"{name}: {event['data']} does not match {events[name]['$ref']}: {errors}")
        sys.exit(1)
    print(f"{name}: ok")
    seen += 1
if seen == 0:
    print("no events")
    sys.exit(1)
