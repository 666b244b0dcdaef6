"""The local Kafka-compatible broker (noida-db) used by `kinvoke dev` and the tests.

We run the binary shipped inside the wheel directly: the `noida-db` console script is a wrapper
whose child survives a kill of the wrapper.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import structlog
from confluent_kafka.admin import AdminClient

log = structlog.get_logger(__name__)


def broker_binary() -> Path:
    try:
        return Path(str(files("noida_db").joinpath("noida-db")))
    except ModuleNotFoundError as e:  # pragma: no cover - install problem
        raise RuntimeError("the local broker is not installed: pip install 'kinvoke[broker]'") from e


def wait_for_broker(bootstrap: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    admin = AdminClient({"bootstrap.servers": bootstrap})
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
            time.sleep(0.05)
    raise TimeoutError(f"Kafka broker at {bootstrap} did not answer within {timeout_s}s: {last}")


@dataclass
class LocalBroker:
    data_dir: Path
    port: int = 9092
    host: str = "127.0.0.1"
    log_file: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> LocalBroker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        cmd = [
            str(broker_binary()),
            "start",
            "--only",
            "kafka",
            "--host",
            self.host,
            "--kafka-port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        log.info("broker.starting", pid=self._proc.pid, bootstrap=self.bootstrap, data_dir=str(self.data_dir))
        try:
            wait_for_broker(self.bootstrap, timeout_s)
        except TimeoutError:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM makes the broker save its state before exiting."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        log.info("broker.stopped", bootstrap=self.bootstrap)
