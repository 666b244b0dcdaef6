"""The ingress' Prometheus metrics: request latency by status code and kind of request.

The kind is what the path asked for (call, send, attach, output, lookup, awakeable, health, metrics,
preflight), set by the handler that recognised it; requests refused before that are `other`.
Labels stay bounded whatever paths clients send.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Histogram

from kafka_core.observability import timed_requests

KIND_KEY = web.RequestKey("kinvoke_request_kind", str)

REQUEST_SECONDS = Histogram(
    "kinvoke_ingress_request_duration_seconds",
    "Ingress requests from arrival to the response, by kind of request and status code",
    ["kind", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def set_kind(request: web.Request, kind: str) -> None:
    request[KIND_KEY] = kind


def _observe(request: web.Request, status: str, seconds: float) -> None:
    REQUEST_SECONDS.labels(request.get(KIND_KEY, "other"), status).observe(seconds)


request_metrics = timed_requests(_observe)
