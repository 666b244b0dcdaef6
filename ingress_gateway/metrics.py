"""The ingress' Prometheus metrics: request latency by status code and kind of request.

The kind is what the path asked for (call, send, attach, output, lookup, awakeable, health, metrics,
preflight), set by the handler that recognised it; requests refused before that are `other`.
Labels stay bounded whatever paths clients send.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Histogram

KIND_KEY = web.RequestKey("kinvoke_request_kind", str)

REQUEST_SECONDS = Histogram(
    "kinvoke_ingress_request_duration_seconds",
    "Ingress requests from arrival to the response, by kind of request and status code",
    ["kind", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def set_kind(request: web.Request, kind: str) -> None:
    request[KIND_KEY] = kind


@web.middleware
async def request_metrics(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        kind = request.get(KIND_KEY, "other")
        REQUEST_SECONDS.labels(kind, str(status)).observe(time.perf_counter() - started)
