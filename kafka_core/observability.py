"""What the admin API and the ingress share for operators: `/metrics` (Prometheus text format,
the process' default registry) and the health report that says whether Kafka is reachable and
whether this process' registry view is current."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# How long a health check waits for the registry view to reach the metadata topic's end.
REGISTRY_CHECK_TIMEOUT_S = 2.0


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def timed_requests(observe: Callable[[web.Request, str, float], None]) -> Middleware:
    """An aiohttp middleware calling `observe(request, status, seconds)` for every request,
    whether it was answered, raised an HTTP error or failed (500)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
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
            observe(request, str(status), time.perf_counter() - started)

    return middleware


async def metrics(request: web.Request) -> web.Response:
    body = await asyncio.to_thread(generate_latest, REGISTRY)
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})


async def health_report(
    problem: str | None, catch_up: Callable[[float], None] | None, timeout_s: float = REGISTRY_CHECK_TIMEOUT_S
) -> dict[str, Any]:
    """`problem`: why the process' Kafka clients cannot work (None: they can). `catch_up`: the
    registry view's (MetadataView.catch_up): it asks the broker for the metadata topic's end and
    waits until the view has applied it, so it proves both that Kafka answers now and that the
    view is current. Returns `{"healthy", "kafka": {"reachable", "problem"}, "registry":
    {"current", "problem"}}`."""
    registry_problem: str | None = None
    if catch_up is None:
        registry_problem = "no registry view"
    else:
        try:
            await asyncio.to_thread(catch_up, timeout_s)
        except (TimeoutError, RuntimeError) as e:
            registry_problem = str(e)
    return {
        "healthy": problem is None and registry_problem is None,
        "kafka": {"reachable": problem is None, "problem": problem},
        "registry": {"current": registry_problem is None, "problem": registry_problem},
    }
