"""Services for the semantics tests (tests/integration/test_semantics.py): a terminal error with
metadata and callers that observe or propagate it, and a virtual object whose exclusive handler
can take its time, so attach, output and idempotency-key retention can be seen while it runs."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import restate
from restate.exceptions import TerminalError

METADATA = {"reason": "invalid-name", "field": "name"}

meta_failing = restate.Service("MetaFailing")


@meta_failing.handler()
async def fail(ctx: restate.Context, message: str) -> str:
    raise TerminalError(message, 422, metadata=METADATA)


meta_caller = restate.Service("MetaCaller")


@meta_caller.handler()
async def observe(ctx: restate.Context, message: str) -> dict[str, Any]:
    """What the caller sees of its callee's terminal error."""
    try:
        await ctx.service_call(fail, arg=message)
    except TerminalError as e:
        return {"code": e.status_code, "message": e.message, "metadata": e.metadata}
    return {}


@meta_caller.handler()
async def propagate(ctx: restate.Context, message: str) -> str:
    """The callee's terminal error becomes the caller's own outcome."""
    return await ctx.service_call(fail, arg=message)


tally = restate.VirtualObject("Tally")


@tally.handler()
async def bump(ctx: restate.ObjectContext, delay_ms: int) -> int:
    """Exclusive: counts its runs per key after a durable sleep of `delay_ms`."""
    if delay_ms:
        await ctx.sleep(timedelta(milliseconds=delay_ms))
    n = ((await ctx.get("n", type_hint=int)) or 0) + 1
    ctx.set("n", n)
    return n


@tally.handler()
async def hold(ctx: restate.ObjectContext, seconds: float) -> str:
    """Plain waiting inside one attempt: the invocation stays running for `seconds`."""
    await asyncio.sleep(seconds)
    return f"held {seconds}s"


app = restate.app(services=[meta_failing, meta_caller, tally])
