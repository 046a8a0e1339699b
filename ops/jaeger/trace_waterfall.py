#!/usr/bin/env python3
"""One trace from Jaeger's query API, drawn as a waterfall page (HTML).

    python3 ops/jaeger/trace_waterfall.py http://127.0.0.1:16686 <trace id> trace.html

The Jaeger that `scripts/services start jaeger` builds from its Go module
serves the query API but no UI (the UI's assets are built apart, from
jaeger-ui): this draws a trace from `GET /api/traces/<id>` instead, one row
per span under its parent, coloured by process. docs/OPERATIONS.md (Traces)
shows one, taken with headless Chromium. Python's standard library only.
"""
import html, json, sys, urllib.request

base, trace_id, out = sys.argv[1], sys.argv[2], sys.argv[3]
data = json.load(urllib.request.urlopen(f"{base}/api/traces/{trace_id}"))["data"][0]
procs = {k: v["serviceName"] for k, v in data["processes"].items()}
spans = data["spans"]
by_id = {s["spanID"]: s for s in spans}
children = {}
roots = []
for s in spans:
    parent = next((r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF" and r["spanID"] in by_id), None)
    (children.setdefault(parent, []) if parent else roots).append(s)
order = []
def walk(s, depth):
    order.append((s, depth))
    for c in sorted(children.get(s["spanID"], []), key=lambda c: c["startTime"]):
        walk(c, depth + 1)
for r in sorted(roots, key=lambda s: s["startTime"]):
    walk(r, 0)
t0 = min(s["startTime"] for s in spans)
t1 = max(s["startTime"] + s["duration"] for s in spans)
total = max(t1 - t0, 1)
palette = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6"]
services = sorted(set(procs.values()))
color = {name: palette[i % len(palette)] for i, name in enumerate(services)}
rows = []
for s, depth in order:
    svc = procs[s["processID"]]
    left = (s["startTime"] - t0) / total * 100
    width = max(s["duration"] / total * 100, 0.3)
    tags = {t["key"]: t["value"] for t in s.get("tags", [])}
    detail = " ".join(f"{k}={tags[k]}" for k in ("order_id", "outbox_id", "method", "path", "messaging.nats.delivered") if k in tags)
    rows.append(
        f'<tr><td class="svc" style="color:{color[svc]}">{html.escape(svc)}</td>'
        f'<td class="op" style="padding-left:{8 + depth * 16}px">{html.escape(s["operationName"])}'
        f'<div class="tags">{html.escape(detail)}</div></td>'
        f'<td class="bar"><div style="margin-left:{left:.2f}%;width:{width:.2f}%;background:{color[svc]}"></div>'
        f'<span style="margin-left:{left:.2f}%">{s["duration"] / 1000:.2f} ms</span></td></tr>')
legend = " ".join(f'<span style="color:{color[n]}">■ {html.escape(n)}</span>' for n in services)
page = f"""<!doctype html><meta charset="utf-8"><title>trace {trace_id}</title>
<style>body{{font:13px system-ui,sans-serif;margin:20px;color:#222}}h1{{font-size:17px;margin:0 0 4px}}
.meta{{color:#555;margin-bottom:12px}}table{{border-collapse:collapse;width:100%}}td{{border-bottom:1px solid #eee;padding:4px 6px;vertical-align:top}}
.svc{{white-space:nowrap;font-weight:600;width:210px}}.op{{width:330px;font-family:ui-monospace,monospace}}.tags{{color:#777;font-size:11px}}
.bar div{{height:12px;border-radius:2px}}.bar span{{font-size:11px;color:#555;display:block}}</style>
<h1>Trace {trace_id}</h1>
<div class="meta">{len(spans)} spans, {len(services)} processes, {total / 1000:.1f} ms — from Jaeger's query API, <code>GET /api/traces/{trace_id}</code></div>
<div class="meta">{legend}</div>
<table>{''.join(rows)}</table>"""
open(out, "w").write(page)
print(out)
