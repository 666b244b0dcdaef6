"""kinvoke against itself: the same stack under two (or more) settings, interleaved on one machine.

Not a test: numbers for a change that a setting switches, measured where other processes may load
the machine (their drift is larger than many effects worth measuring: pair the variants by round).
Starts one kinvoke as bench/compare does (Apache Kafka, admin, ingress, one processor, the bench
SDK deployment), then every round, for every variant in turn (the order alternates from round to
round, so a drift in the machine's load falls on both), restarts admin, ingress and processor with
the variant's KINVOKE_* settings and runs the workloads with bench/compare's client and CPU
accounting. Reports per workload and variant: req/s min / median / max over the rounds and CPU ms
per call by process (median, and the total's min / median / max).

    .venv/bin/python -m bench.ab --variant c64:KINVOKE_INVOKER_CONCURRENCY_PER_DEPLOYMENT=64 \\
        --variant c16:KINVOKE_INVOKER_CONCURRENCY_PER_DEPLOYMENT=16 --rounds 3 --workloads greet-c64

A variant's settings replace the other variants' (a setting only one variant names is unset for
the others: kinvoke's default).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Callable, Sequence

from bench.compare import (
    APP,
    BY_NAME,
    REQUEST_TIMEOUT_S,
    SERVICES,
    Part,
    Run,
    System,
    component_part,
    http_workload,
    percentile,
    popen_part,
    serving,
    warm_up,
)
from bench.procstat import idle_cores, wait_quiet
from bench.stack import kinvoke_stack
from tests.support.processes import Component


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """`name:KEY=VALUE[,KEY=VALUE...]` -> (name, settings)."""
    name, _, rest = text.partition(":")
    settings = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    if not name or not all(k.startswith("KINVOKE_") for k in settings):
        raise argparse.ArgumentTypeError(f"expected name:KINVOKE_X=value[,...], got {text!r}")
    return name, settings


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--variant", type=parse_variant, action="append", required=True, help="name:KINVOKE_X=v,..."
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per workload run")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each run")
    p.add_argument(
        "--workloads",
        nargs="+",
        default=["greet-c16", "greet-c64", "steps10-c16"],
        choices=[n for n, w in BY_NAME.items() if w.kind == "call"],
    )
    args = p.parse_args(argv)
    args.requests, args.send_count, args.drain_timeout = None, 0, REQUEST_TIMEOUT_S
    return args


def switch(
    system: System, components: dict[str, Component], settings: dict[str, str], every: set[str]
) -> None:
    """Restart admin, ingress and processor(s) with `settings` (and without the other settings of
    `every`, the names all variants set); back when a call succeeds."""
    for c in components.values():
        c.stop()
    for c in components.values():
        for name in every:
            c.env.pop(name, None)
        c.env.update(settings)
        c.start()
    if not serving(system, timeout_s=120):
        raise RuntimeError(f"not serving 120 s after switching to {settings}")
    system.refresh()
    warm_up(system, 6.0)
    wait_quiet(system.trees, 0.0, margin_cores=0.1, max_s=20)
    system.idle = idle_cores(system.trees)


def report(runs: list[Run], variants: list[str], workloads: list[str]) -> str:
    lines = [
        "| workload | variant | req/s min / median / max | p50 ms (median) "
        "| CPU ms/call total min / median / max | CPU ms/call by process (median) | errors |",
        "|" + "---|" * 7,
    ]
    for wl in workloads:
        for v in variants:
            mine = [r for r in runs if r.workload == wl and r.system == v and r.ok]
            if not mine:
                continue
            rps = sorted(r.rps for r in mine)
            totals = sorted(sum(r.cpu_ms_per_call().values()) for r in mine)
            procs = list(mine[0].cpu)
            by_proc = {p: statistics.median(r.cpu_ms_per_call()[p] for r in mine) for p in procs}
            p50 = statistics.median(1000 * percentile(r.latencies, 0.5) for r in mine)
            lines.append(
                f"| {wl} | {v} | {rps[0]:.0f} / {statistics.median(rps):.0f} / {rps[-1]:.0f} | {p50:.1f} "
                f"| {totals[0]:.2f} / {statistics.median(totals):.2f} / {totals[-1]:.2f} "
                f"| {' · '.join(f'{p} {x:.2f}' for p, x in by_proc.items())} "
                f"| {sum(r.errors for r in mine)} |"
            )
    if len(variants) == 2:
        lines += ["", paired(runs, variants, workloads)]
    return "\n".join(lines)


def paired(runs: list[Run], variants: list[str], workloads: list[str]) -> str:
    """Per round, the second variant's figure over the first's: what the machine's drift moves
    between rounds cancels out. A process the setting cannot change (the SDK deployment) shows how
    much the drift moves within a round."""
    a, b = variants
    by = {(r.round, r.workload, r.system): r for r in runs if r.ok}
    lines = [f"Paired by round, {b} / {a}: median (min–max), rounds where {b} is lower", ""]
    for wl in workloads:
        pairs = [
            (by[rnd, wl, a], by[rnd, wl, b]) for rnd, w, v in by if w == wl and v == a and (rnd, wl, b) in by
        ]
        if not pairs:
            continue
        cells = []
        metrics: dict[str, Callable[[Run], float]] = {"req/s": lambda r: r.rps}
        metrics |= {f"CPU {p}": (lambda r, p=p: r.cpu_ms_per_call()[p]) for p in pairs[0][0].cpu}
        for label, f in metrics.items():
            ratios = sorted(f(y) / f(x) for x, y in pairs if f(x) > 0)
            if ratios:
                lower = sum(q < 1 for q in ratios)
                spread = f"({ratios[0]:.2f}–{ratios[-1]:.2f})"
                cells.append(f"{label} {statistics.median(ratios):.3f} {spread} {lower}/{len(ratios)}")
        lines.append(f"- {wl}: " + " · ".join(cells))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    variants: list[tuple[str, dict[str, str]]] = args.variant
    every = {name for _, settings in variants for name in settings}
    runs: list[Run] = []
    sdk: dict[str, int | str | bool] = {"keep_alive_max_requests": 2**31 - 1}
    with kinvoke_stack("kafka", APP, SERVICES, sdk_settings=sdk) as stack:
        broker, d = stack.broker, stack.deployment
        parts = {"kafka": Part(lambda: broker.pid, lambda: None, broker.restart)}
        parts |= {n: component_part(c) for n, c in stack.components.items()}
        parts["sdk"] = popen_part(lambda: d.proc, d.restart)
        system = System("kinvoke", stack.ingress, stack.admin, parts, {})
        components = stack.components
        for rnd in range(1, args.rounds + 1):
            order = variants if rnd % 2 else list(reversed(variants))
            for name, settings in order:
                switch(system, components, settings, every)
                for wl in args.workloads:
                    run = asyncio.run(http_workload(system, BY_NAME[wl], rnd, args))
                    run.system = name
                    wait_quiet(system.trees, system.idle, max_s=20)
                    runs.append(run)
                    cpu = " · ".join(f"{p} {x:.2f}" for p, x in run.cpu_ms_per_call().items())
                    print(
                        f"  round {rnd} {wl:12s} {name:10s} {run.rps:7.1f} req/s  "
                        f"errors {run.errors}  CPU ms/call {cpu}",
                        flush=True,
                    )
    print()
    print(report(runs, [n for n, _ in variants], args.workloads), flush=True)


if __name__ == "__main__":
    main()
