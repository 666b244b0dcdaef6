"""An example Restate Python SDK deployment, used by the README, docker-compose and the tests.

Serve it with: hypercorn examples.python.services:app --bind 127.0.0.1:9080
"""

from __future__ import annotations

import asyncio

import restate
from restate.exceptions import TerminalError

greeter = restate.Service("Greeter")


@greeter.handler()
async def greet(ctx: restate.Context, name: str) -> str:
    return f"Hello {name}"


@greeter.handler()
async def steps(ctx: restate.Context, start: int) -> int:
    """Three durable steps: each result is journaled, so a retry never redoes a finished step."""
    total = start
    for i in (1, 2, 3):

        async def step(i: int = i, total: int = total) -> int:
            return total + i

        total = await ctx.run_typed(f"step-{i}", step)
    return total


@greeter.handler()
async def slow(ctx: restate.Context, seconds: float) -> str:
    """Plain (not durable) waiting inside an attempt: lets tests crash things mid-attempt."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}s"


failing = restate.Service("Failing")


@failing.handler()
async def terminal(ctx: restate.Context, message: str) -> str:
    raise TerminalError(message, 418)


@failing.handler()
async def flaky(ctx: restate.Context, message: str) -> str:
    raise RuntimeError(f"flaky: {message}")


counter = restate.VirtualObject("Counter")


@counter.handler()
async def add(ctx: restate.ObjectContext, delta: int) -> int:
    """Exclusive: one `add` per key at a time, so read-modify-write needs no care."""
    count = (await ctx.get("count", type_hint=int)) or 0
    ctx.set("count", count + delta)
    return count + delta


@counter.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return (await ctx.get("count", type_hint=int)) or 0


app = restate.app(services=[greeter, failing, counter])
