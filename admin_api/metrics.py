"""The admin API's Prometheus metrics: request latency by route and status code.

The route is the matched pattern (`/deployments/{deployment}`), never the raw path, so labels
stay bounded; requests that matched no route are `unmatched`.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import Histogram

from kafka_core.observability import timed_requests

REQUEST_SECONDS = Histogram(
    "kinvoke_admin_request_duration_seconds",
    "Admin API requests from arrival to the response, by method, route and status code",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _observe(request: web.Request, status: str, seconds: float) -> None:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    REQUEST_SECONDS.labels(request.method, route, status).observe(seconds)


request_metrics = timed_requests(_observe)
