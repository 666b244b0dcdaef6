"""The example services plus a 10-step handler, for the side-by-side benchmark (bench/compare.py).

Serve it with: hypercorn examples.python.bench_services:app --bind 127.0.0.1:9080
"""

from __future__ import annotations

import restate

from examples.python.services import counter, greeter

bench = restate.Service("BenchRun")


@bench.handler()
async def ten_steps(ctx: restate.Context, start: int) -> int:
    """Ten durable `ctx.run` steps, one after the other."""
    total = start
    for i in range(10):

        async def step(i: int = i, total: int = total) -> int:
            return total + i

        total = await ctx.run_typed(f"step-{i}", step)
    return total


app = restate.app(services=[greeter, counter, bench])
