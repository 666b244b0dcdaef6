"""An example Restate Python SDK deployment, used by the README, docker-compose and the tests.

Serve it with: hypercorn examples.python.services:app --bind 127.0.0.1:9080
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

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


@greeter.handler()
async def nap(ctx: restate.Context, millis: int) -> str:
    """A durable sleep: the timer lives on the server, so the handler suspends meanwhile."""
    await ctx.sleep(timedelta(milliseconds=millis))
    return f"rested {millis}ms"


@greeter.handler()
async def approval(ctx: restate.Context, name: str) -> str:
    """Waits for an external decision: an awakeable resolved through the ingress."""
    _, decision = ctx.awakeable(type_hint=str)
    return f"{name}: {await decision}"


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


signup = restate.Workflow("Signup")


@signup.main()
async def run(ctx: restate.WorkflowContext, email: str) -> dict:
    """Runs once per workflow key; waits on a durable promise that a shared handler completes."""
    ctx.set("status", "awaiting-confirmation")
    code = await ctx.promise("confirmation", type_hint=str).value()
    ctx.set("status", "confirmed")
    return {"email": email, "confirmed_with": code}


@signup.handler()
async def confirm(ctx: restate.WorkflowSharedContext, code: str) -> str:
    await ctx.promise("confirmation", type_hint=str).resolve(code)
    return "resolved"


@signup.handler()
async def status(ctx: restate.WorkflowSharedContext) -> str:
    return (await ctx.get("status", type_hint=str)) or "unknown"


caller = restate.Service("Caller")


@caller.handler()
async def call_greet(ctx: restate.Context, name: str) -> str:
    """A request-response call to another service: suspends until the callee's result arrives."""
    greeting = await ctx.service_call(greet, arg=name)
    return f"Greeter said: {greeting}"


@caller.handler()
async def send_greet(ctx: restate.Context, name: str) -> str:
    """A one-way send: returns the callee's invocation id without waiting for it."""
    handle = ctx.service_send(greet, arg=name)
    return await handle.invocation_id()


@caller.handler()
async def add_twice(ctx: restate.Context, key: str) -> int:
    """Two calls to a virtual object's exclusive handler, one after the other."""
    await ctx.object_call(add, key=key, arg=1)
    return await ctx.object_call(add, key=key, arg=1)


@caller.handler()
async def call_failing(ctx: restate.Context, message: str) -> str:
    """A callee's terminal error surfaces in the caller as a TerminalError."""
    return await ctx.service_call(terminal, arg=message)


app = restate.app(services=[greeter, failing, counter, signup, caller])
