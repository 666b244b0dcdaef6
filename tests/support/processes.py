"""Running kinvoke's components as real, separate OS processes for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def wait_for_port(
    host: str, port: int, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s}s")


@dataclass
class Component:
    """`python -m kinvoke.cli <name>` with KINVOKE_* settings in its environment."""

    name: str
    env: dict[str, str]
    log_dir: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    def start(self, timeout_s: float = 60.0) -> Component:
        self.starts += 1
        log = open(self.log_dir / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115
        env = {**os.environ, **self.env, "PYTHONPATH": str(REPO), "KINVOKE_LOG_FORMAT": "json"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kinvoke.cli", self.name],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if self.port is not None:
            try:
                wait_for_port("127.0.0.1", self.port, timeout_s, self.proc)
            except (RuntimeError, TimeoutError) as e:
                # Fail with the reason: the process's own last lines, not only its exit code.
                lines = [ln for ln in self.log_text().splitlines() if not ln.startswith("%")]
                raise type(e)(f"{self.name}: {e}; its log ends with:\n" + "\n".join(lines[-40:])) from e
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no flush, no leaving the consumer group."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob(f"{self.name}-*.log"))
        )
