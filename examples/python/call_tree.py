"""A call tree for the kill test: `Tree/root` calls `Holder/{key}/hold` (an exclusive handler,
so it holds the key's lock), which calls `Leaf/wait`; both wait for awakeables nobody resolves,
and the root also sends `Leaf/wait` one way (a send, which a kill leaves alone).

Serve it with: hypercorn examples.python.call_tree:app --bind 127.0.0.1:9081
"""

from __future__ import annotations

import restate

tree = restate.Service("Tree")
holder = restate.VirtualObject("Holder")
leaf = restate.Service("Leaf")


@leaf.handler()
async def wait(ctx: restate.Context, name: str) -> str:
    _, decision = ctx.awakeable(type_hint=str)
    return f"{name}: {await decision}"


@holder.handler()
async def hold(ctx: restate.ObjectContext, name: str) -> str:
    ctx.set("holding", name)
    return await ctx.service_call(wait, arg=f"held by {name}")


@holder.handler()
async def peek(ctx: restate.ObjectContext) -> str:
    """Exclusive too: it runs only once the key's lock is free."""
    return (await ctx.get("holding", type_hint=str)) or "nobody"


@tree.handler()
async def root(ctx: restate.Context, key: str) -> str:
    ctx.service_send(wait, arg="sent")
    return await ctx.object_call(hold, key=key, arg="root")


app = restate.app(services=[tree, holder, leaf])
