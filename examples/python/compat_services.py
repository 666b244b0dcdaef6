"""Two versions of one Restate Python SDK endpoint, for the Restate-compatibility tests
(tests/integration/test_restate_compat.py): `app` and `app_v2` serve different services at the
same URI, as a redeployed service would.

- `app`: Tally (object: `add`, shared `get`), Echo (`length`), Gone (`ping`);
- `app_v2`: Tally, Echo (`length`, `upper`), Fresh (`ping`) — Gone is no longer offered.

Serve one with: hypercorn examples.python.compat_services:app --bind 127.0.0.1:9080
"""

from __future__ import annotations

import restate

tally = restate.VirtualObject("Tally")


@tally.handler()
async def add(ctx: restate.ObjectContext, delta: int) -> int:
    """Exclusive: raises on a missing input (None), the way a typed handler given no body does."""
    count = (await ctx.get("count", type_hint=int)) or 0
    ctx.set("count", count + delta)
    return count + delta


@tally.handler(kind="shared")
async def get(ctx: restate.ObjectSharedContext) -> int:
    return (await ctx.get("count", type_hint=int)) or 0


echo = restate.Service("Echo")


@echo.handler()
async def length(ctx: restate.Context, text: str) -> int:
    """The size of what arrived: large inputs without a large output."""
    return len(text)


gone = restate.Service("Gone")


@gone.handler(name="ping")
async def gone_ping(ctx: restate.Context) -> str:
    return "pong from v1"


echo_v2 = restate.Service("Echo")


@echo_v2.handler(name="length")
async def length_v2(ctx: restate.Context, text: str) -> int:
    return len(text)


@echo_v2.handler()
async def upper(ctx: restate.Context, text: str) -> str:
    return text.upper()


fresh = restate.Service("Fresh")


@fresh.handler(name="ping")
async def fresh_ping(ctx: restate.Context) -> str:
    return "pong from v2"


app = restate.app(services=[tally, echo, gone])
app_v2 = restate.app(services=[tally, echo_v2, fresh])
