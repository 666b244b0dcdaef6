"""A ledger virtual object for the fault tests: every applied operation leaves its id in the
object's state, so an operation applied twice (or lost) shows in the ledger itself.

Serve it (with the example services) with: hypercorn examples.python.ledger:app --bind 127.0.0.1:9080
"""

from __future__ import annotations

import asyncio

import restate

from examples.python.services import caller, counter, failing, greeter, signup

ledger = restate.VirtualObject("Ledger")


@ledger.handler()
async def apply(ctx: restate.ObjectContext, op: dict) -> dict:
    """Add `op["amount"]` to the balance and record `op["id"]` (exclusive: one at a time per key).

    `op["sleep_ms"]` (optional) holds the attempt open at the deployment before it touches the
    state (plain waiting, not durable), so tests can crash or stop things mid-attempt. Answers the
    new balance and this operation's position in the ledger (1-based). Every attempt prints a
    line (the deployment's log shows which attempts reached it)."""
    print(f"ledger.apply {op['id']} attempt started", flush=True)
    if op.get("sleep_ms"):
        await asyncio.sleep(op["sleep_ms"] / 1000)
    balance = (await ctx.get("balance", type_hint=int)) or 0
    ops = (await ctx.get("ops", type_hint=list)) or []
    ops.append(op["id"])
    balance += int(op["amount"])
    ctx.set("ops", ops)
    ctx.set("balance", balance)
    return {"balance": balance, "position": len(ops)}


@ledger.handler(kind="shared")
async def read(ctx: restate.ObjectSharedContext) -> dict:
    return {
        "balance": (await ctx.get("balance", type_hint=int)) or 0,
        "ops": (await ctx.get("ops", type_hint=list)) or [],
    }


app = restate.app(services=[ledger, greeter, failing, counter, signup, caller])
