"""CPU time and memory of running processes (and their descendants), read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces): field 3 onwards."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, for every process visible now."""
    out: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                out[int(fields[1])].append(int(entry.name))
    return out


def process_tree(pid: int, children: Mapping[int, list[int]] | None = None) -> list[int]:
    """`pid` and all its descendants alive now (e.g. hypercorn and its worker processes)."""
    children = children if children is not None else children_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident set size now (the second field of /proc/<pid>/statm)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return total


class Trees:
    """Named process trees (e.g. "kafka", "processor", "sdk"), resolved once."""

    def __init__(self, roots: Mapping[str, int]) -> None:
        children = children_map()
        self.pids = {name: process_tree(pid, children) for name, pid in roots.items()}

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pids) for name, pids in self.pids.items()}

    def rss(self) -> dict[str, int]:
        return {name: rss_bytes(pids) for name, pids in self.pids.items()}


class RssSampler:
    """Samples the trees' RSS in a thread until stopped; keeps the peak of each."""

    def __init__(self, trees: Trees, interval_s: float = 0.2) -> None:
        self.trees = trees
        self.interval_s = interval_s
        self.peak: dict[str, int] = dict.fromkeys(trees.pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            for name, value in self.trees.rss().items():
                self.peak[name] = max(self.peak[name], value)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for name, value in self.trees.rss().items():  # one last sample at the end
            self.peak[name] = max(self.peak[name], value)


def wait_quiet(
    trees: Trees, idle_cores: float, margin_cores: float = 0.05, interval_s: float = 0.5, max_s: float = 60.0
) -> tuple[float, dict[str, float]]:
    """Until the trees use at most `idle_cores + margin_cores` of CPU for two intervals in a row.
    Returns the time (perf_counter) the quiet period began and the CPU times then."""
    last_t, last = time.perf_counter(), trees.cpu()
    quiet_since: tuple[float, dict[str, float]] | None = None
    deadline = last_t + max_s
    while True:
        time.sleep(interval_s)
        now_t, now = time.perf_counter(), trees.cpu()
        rate = (sum(now.values()) - sum(last.values())) / (now_t - last_t)
        if rate <= idle_cores + margin_cores:
            if quiet_since is not None:
                return quiet_since
            quiet_since = (last_t, last)
        else:
            quiet_since = None
        if now_t > deadline:
            return now_t, now
        last_t, last = now_t, now


def idle_cores(trees: Trees, seconds: float = 2.0) -> float:
    """The trees' CPU use (in cores) over `seconds` of doing nothing."""
    t0, c0 = time.perf_counter(), sum(trees.cpu().values())
    time.sleep(seconds)
    return (sum(trees.cpu().values()) - c0) / (time.perf_counter() - t0)
