"""How soon state and in-flight invocations come back after every kinvoke process is killed.

Not a test: numbers for the notes. Starts Apache Kafka, kinvoke (admin, ingress, one processor)
and the example SDK deployment on loopback; builds Counter state, then leaves invocations in
flight — durable sleeps (`Greeter/nap`, suspended on a server-side timer) and running attempts
(`Greeter/slow`, inside the handler) — and stops every kinvoke process:

  - kill: SIGKILL (no flush, no leaving the group, open transactions left behind),
  - stop: SIGTERM (a clean shutdown),

then starts them again and measures, from the restart: the ingress answering a call, the Counter
state read back intact, and every in-flight invocation completed (attached through the ingress).
The broker and the deployment keep running, as they would when kinvoke's hosts are restarted.

    .venv/bin/python -m bench.kill_all --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx

from bench.stack import KinvokeStack, kinvoke_stack

KEYS = 20
ADDS_PER_KEY = 5


async def _send(client: httpx.AsyncClient, ingress: str, path: str, body: object) -> str:
    r = await client.post(f"{ingress}/{path}/send", json=body)
    r.raise_for_status()
    return str(r.json()["invocationId"])


async def _attach(client: httpx.AsyncClient, ingress: str, inv: str, deadline: float) -> float:
    """Seconds (monotonic clock) when `inv`'s output was read; retries while kinvoke restarts."""
    while True:
        try:
            r = await client.get(f"{ingress}/restate/invocation/{inv}/attach", timeout=30)
            if r.status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{inv} did not complete")
        await asyncio.sleep(0.2)


async def _wait_call(ingress: str, deadline: float) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                r = await client.post(f"{ingress}/Greeter/greet", json="probe")
                if r.status_code == 200:
                    return time.monotonic()
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the ingress never answered a call")
            await asyncio.sleep(0.05)


async def _state_ok(ingress: str, expected: int, deadline: float) -> float:
    async with httpx.AsyncClient(timeout=5) as client:
        while True:
            try:
                values = [
                    (await client.post(f"{ingress}/Counter/k{k}/get", json=None)).json() for k in range(KEYS)
                ]
                if all(v == expected for v in values):
                    return time.monotonic()
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Counter state did not come back")
            await asyncio.sleep(0.05)


async def one_round(stack: KinvokeStack, how: str, round_no: int, in_flight: int) -> dict[str, float]:
    ingress = stack.ingress
    async with httpx.AsyncClient(timeout=30) as client:
        for k in range(KEYS):
            for _ in range(ADDS_PER_KEY):
                r = await client.post(f"{ingress}/Counter/k{k}/add", json=1)
                r.raise_for_status()
        naps = [await _send(client, ingress, "Greeter/nap", 4000) for _ in range(in_flight)]
        slows = [await _send(client, ingress, "Greeter/slow", 3.0) for _ in range(in_flight // 4)]
    await asyncio.sleep(1.0)  # the attempts are running (slow) or suspended on their timers (nap)
    kinvoke = [c for name, c in stack.components.items()]
    for c in kinvoke:
        c.kill() if how == "kill" else c.stop()
    restarted = time.monotonic()
    for c in kinvoke:
        c.start(timeout_s=120)
    deadline = restarted + 180
    expected = ADDS_PER_KEY * round_no
    called, state = await asyncio.gather(
        _wait_call(ingress, deadline), _state_ok(ingress, expected, deadline)
    )
    async with httpx.AsyncClient() as client:
        done = await asyncio.gather(*(_attach(client, ingress, i, deadline) for i in naps + slows))
    return {
        "call": called - restarted,
        "state": state - restarted,
        "in_flight": max(done) - restarted,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2, help="rounds per way of stopping")
    p.add_argument(
        "--in-flight",
        type=int,
        default=40,
        help="durable sleeps in flight (and a quarter as many running attempts)",
    )
    args = p.parse_args()
    results: dict[str, list[dict[str, float]]] = {"kill": [], "stop": []}
    with kinvoke_stack(services=("Greeter", "Counter")) as stack:
        n = 0
        for _ in range(args.rounds):
            for how in ("kill", "stop"):
                n += 1
                r = asyncio.run(one_round(stack, how, n, args.in_flight))
                results[how].append(r)
                print(f"{how:4} round {n}: " + "  ".join(f"{k} {v:.1f}s" for k, v in r.items()), flush=True)
    print(
        f"\nseconds from the restart ({args.in_flight} durable sleeps"
        f" + {args.in_flight // 4} running attempts in flight)"
    )
    print(f"{'':6}{'call answered':>16}{'state back':>14}{'in-flight done':>17}   (median, max)")
    for how, rows in results.items():
        cells = [
            f"{statistics.median(r[k] for r in rows):.1f}, {max(r[k] for r in rows):.1f}"
            for k in ("call", "state", "in_flight")
        ]
        print(f"{how:6}{cells[0]:>16}{cells[1]:>14}{cells[2]:>17}")


if __name__ == "__main__":
    main()
