"""Idle CPU of a whole `kinvoke dev` stack (Apache Kafka, admin, ingress, processor).

Not a test: a number for the notes (the target is 3% of one core). Starts `kinvoke dev` on free
ports with its data in a temporary directory, waits for its banner and a settling period, then
reads every process's CPU time from /proc over the measured window.

    .venv/bin/python -m bench.idle --seconds 60
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path

from bench.procstat import cpu_seconds, process_tree
from tests.integration.test_dev_command import start_dev


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw if w]
    if "kinvoke.cli" in words:
        return "kinvoke " + words[words.index("kinvoke.cli") + 1]
    return "Apache Kafka" if words and words[0].endswith("java") else " ".join(words)[:40]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="measured window")
    p.add_argument("--settle", type=float, default=20.0, help="seconds after the banner before measuring")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="kinvoke-idle-"))
    dev = start_dev(base, "kafka")
    try:
        dev.wait_ready()
        time.sleep(args.settle)
        pids = process_tree(dev.proc.pid)
        before = {pid: cpu_seconds([pid]) for pid in pids}
        started = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - started
        total = 0.0
        for pid in pids:
            share = (cpu_seconds([pid]) - before[pid]) / elapsed * 100
            total += share
            print(f"{share:6.2f}%  {_command(pid)}")
        print(f"{total:6.2f}%  of one core, the whole stack, idle for {elapsed:.0f}s")
    finally:
        dev.proc.send_signal(signal.SIGINT)
        dev.proc.wait(60)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
