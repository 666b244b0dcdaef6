"""A Restate Python SDK deployment for the tracing test: its handler answers with the trace
context the attempt's HTTP request carried (what a deployment's own tracing would continue)."""

from __future__ import annotations

import restate

traced = restate.Service("Traced")


@traced.handler()
async def context(ctx: restate.Context, _: str) -> dict[str, str | None]:
    request = ctx.request()
    return {
        "attempt_traceparent": request.attempt_headers.get("traceparent"),
        "input_traceparent": request.headers.get("traceparent"),
    }


app = restate.app(services=[traced])
