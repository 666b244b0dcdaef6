"""A Restate Python SDK endpoint for requests and results near Restate's 32 MiB body limit
(tests/integration/test_large_bodies.py): `Big/echo` returns its input, `Big/echo_run` returns it
through `ctx.run`, so the input, a journaled side effect and the output are each a large record;
`Big/double` returns it twice.

Serve it with: hypercorn examples.python.large_bodies:app --bind 127.0.0.1:9080
"""

from __future__ import annotations

import restate

big = restate.Service("Big")


@big.handler()
async def echo(ctx: restate.Context, text: str) -> str:
    return text


@big.handler(name="echo_run")
async def echo_run(ctx: restate.Context, text: str) -> str:
    async def copy() -> str:
        return text

    return await ctx.run_typed("copy", copy)


@big.handler()
async def double(ctx: restate.Context, text: str) -> str:
    """An output twice the input: over a record limit the input was under."""
    return text + text


app = restate.app(services=[big])
