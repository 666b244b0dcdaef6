"""The admin API's Prometheus metrics: request latency by route and status code.

The route is the matched pattern (`/deployments/{deployment}`), never the raw path, so labels
stay bounded; requests that matched no route are `unmatched`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Histogram

REQUEST_SECONDS = Histogram(
    "kinvoke_admin_request_duration_seconds",
    "Admin API requests from arrival to the response, by method, route and status code",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


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
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        REQUEST_SECONDS.labels(request.method, route, str(status)).observe(time.perf_counter() - started)
