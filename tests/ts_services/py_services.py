"""The Python SDK side of the TypeScript tests (tests/integration/test_typescript_sdk.py): a service
the TypeScript deployment calls, and handlers that call the TypeScript services.

Serve it with: hypercorn tests.ts_services.py_services:app --bind 127.0.0.1:9081
"""

from __future__ import annotations

import json

import restate

bridge = restate.Service("PyBridge")


@bridge.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    return f"Hello {name} from Python"


@bridge.handler()
async def call_ts(ctx: restate.Context, name: str) -> str:
    """Python -> TypeScript: a request-response call to `TsGreeter/greet`."""
    raw = await ctx.generic_call("TsGreeter", "greet", json.dumps(name).encode())
    return f"Python got: {json.loads(raw)}"


@bridge.handler()
async def add_ts(ctx: restate.Context, key: str) -> int:
    """Python -> a TypeScript virtual object: `TsCounter/<key>/add` with delta 10."""
    raw = await ctx.generic_call("TsCounter", "add", b"10", key=key)
    return int(json.loads(raw))


app = restate.app(services=[bridge])
