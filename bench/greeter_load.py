"""Closed-loop HTTP load on Greeter.greet through the ingress; prints req/s, p50 and p99.

Not a test: numbers for the notes. By default it starts everything itself on loopback (Apache
Kafka, admin, ingress, one processor, the example SDK deployment; `--broker local` for the
emulator); with --ingress it loads an already running kinvoke whose registry has the example
deployment.

    .venv/bin/python -m bench.greeter_load --requests 2000 --concurrency 1 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Iterator

import aiohttp

from bench.stack import kinvoke_stack


async def closed_loop(url: str, total: int, concurrency: int, duration_s: float) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    issued = 0
    deadline = time.monotonic() + duration_s
    body = json.dumps("bench").encode()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal issued, errors
        while issued < total and time.monotonic() < deadline:
            issued += 1
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as resp:
                await resp.read()
                if resp.status != 200:
                    errors += 1
                    continue
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return latencies, errors


def report(concurrency: int, latencies: list[float], errors: int, elapsed: float) -> None:
    if not latencies:
        print(f"concurrency={concurrency}: no successful requests ({errors} errors)")
        return
    q = statistics.quantiles(latencies, n=100)
    print(
        f"concurrency={concurrency:3d}  requests={len(latencies):6d}  errors={errors}  "
        f"req/s={len(latencies) / elapsed:8.1f}  p50={q[49] * 1000:7.2f} ms  p99={q[98] * 1000:7.2f} ms",
        flush=True,
    )


@contextlib.contextmanager
def local_stack(kind: str = "kafka") -> Iterator[str]:
    """Broker + admin + ingress + processor + SDK deployment, all on loopback, torn down after."""
    with kinvoke_stack(kind) as stack:
        yield stack.ingress


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ingress", help="an already running ingress, e.g. http://127.0.0.1:8080")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--duration", type=float, default=30.0, help="max seconds per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--broker", choices=["kafka", "local"], default="kafka", help="the broker to start")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        ingress = args.ingress or stack.enter_context(local_stack(args.broker))
        url = f"{ingress.rstrip('/')}/Greeter/greet"
        asyncio.run(closed_loop(url, 50, 4, 10))  # warm-up: connections, consumer fetch sessions
        for c in args.concurrency:
            t0 = time.perf_counter()
            latencies, errors = asyncio.run(closed_loop(url, args.requests, c, args.duration))
            report(c, latencies, errors, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
