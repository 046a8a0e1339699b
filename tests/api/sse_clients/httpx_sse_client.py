"""An SSE client the project did not write: httpx-sse (installed by scripts/tools
into the project's virtual environment, .local/tools/python).

Usage: httpx_sse_client.py URL BEARER_TOKEN

Prints every event the library surfaces as one JSON line, as soon as it does,
and exits after the first `order-visible`.
"""

import json
import sys

# Only the project's own virtual environment: a package the system's Python
# happens to have must not make this test pass (httpx once did).
if sys.prefix == sys.base_prefix:
    sys.exit("not run by the project's virtual environment (.local/tools/python)")
if any(p.startswith(sys.base_prefix) and p.endswith("site-packages") for p in sys.path):
    sys.exit("the system's site-packages are visible: %r" % sys.path)

import httpx
from httpx_sse import connect_sse

url, token = sys.argv[1], sys.argv[2]
with httpx.Client(timeout=None) as client:
    with connect_sse(client, "GET", url, headers={"Authorization": f"Bearer {token}"}) as source:
        for sse in source.iter_sse():
            print(json.dumps({"event": sse.event, "id": sse.id, "data": sse.data}), flush=True)
            if sse.event == "order-visible":
                break
