"""The pieces the benchmarks start on loopback: an SDK deployment under hypercorn and a whole
kinvoke (broker, admin, ingress, processors, deployment registered).

Every piece exposes the pids of its processes, so a benchmark can read their CPU time and memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kafka_core.kafka import create_topics
from kinvoke.broker import Broker, start_broker
from schemas.settings import Settings
from tests.conftest import free_port
from tests.support.processes import REPO, Component, wait_for_port

DEFAULT_APP = "examples.python.services:app"


@dataclass
class SdkDeployment:
    """`python -m hypercorn APP --bind 127.0.0.1:PORT [--config TOML]`: hypercorn's defaults (one
    worker) but for the `settings` given, which go to a TOML config file (e.g.
    `{"keep_alive_max_requests": N}`)."""

    app: str = DEFAULT_APP
    log: Path | None = None
    settings: dict[str, int | str | bool] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _config: Path | None = field(default=None, init=False)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "hypercorn", self.app, "--bind", f"127.0.0.1:{self.port}"]
        if self.settings:
            if self._config is None:
                fd, path = tempfile.mkstemp(prefix="hypercorn-", suffix=".toml")
                with os.fdopen(fd, "w") as f:
                    f.writelines(f"{k} = {json.dumps(v)}\n" for k, v in self.settings.items())
                self._config = Path(path)
            cmd += ["--config", str(self._config)]
        return cmd

    def start(self, timeout_s: float = 30.0) -> SdkDeployment:
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its worker process is stopped with it (killpg)
            )
        finally:
            if not isinstance(out, int):
                out.close()
        wait_for_port("127.0.0.1", self.port, timeout_s, self.proc)
        return self

    def stop(self) -> None:
        stop_process_group(self.proc, 10.0)
        if self._config is not None:
            self._config.unlink(missing_ok=True)
            self._config = None

    def restart(self) -> SdkDeployment:
        """Same port, so registered URIs stay valid."""
        self.stop()
        return self.start()


def stop_process_group(proc: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM to a child started in its own session, SIGKILL to its whole group after `timeout_s`."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # it and its workers
        proc.wait(5)


def register(admin: str, ingress: str, uri: str, services: list[str], timeout_s: float = 30.0) -> None:
    """`POST {admin}/deployments {"uri": uri}`, then wait until the ingress knows `services`."""
    r = httpx.post(f"{admin}/deployments", json={"uri": uri}, timeout=timeout_s)
    if r.status_code >= 300:
        raise RuntimeError(f"registering {uri} at {admin} failed: {r.status_code} {r.text}")
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            known = httpx.get(f"{ingress}/restate/health", timeout=5).json().get("services", [])
            if all(s in known for s in services):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ingress at {ingress} never saw {services}")
        time.sleep(0.1)


@dataclass
class KinvokeStack:
    """A running kinvoke on loopback with one SDK deployment registered."""

    ingress: str
    admin: str
    bootstrap: str
    broker: Broker
    components: dict[str, Component]  # admin, ingress, processor (processor-N when several)
    deployment: SdkDeployment
    tmp: Path

    def pids(self) -> dict[str, int]:
        """Process name -> pid: the broker, admin, ingress, processor(s) and the SDK deployment."""
        out: dict[str, int] = {}
        if self.broker.pid is not None:
            out[str(getattr(self.broker, "name", "broker"))] = self.broker.pid
        for name, c in self.components.items():
            if c.proc is not None:
                out[name] = c.proc.pid
        out["sdk"] = self.deployment.pid
        return out


def _free_port_besides(taken: set[int]) -> int:
    """A free port not in `taken` (added to it)."""
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port


@contextlib.contextmanager
def kinvoke_stack(
    kind: str = "kafka",
    app: str = DEFAULT_APP,
    services: tuple[str, ...] = ("Greeter",),
    processors: int = 1,
    log_level: str = "warning",
    keep: bool = False,
    sdk_settings: dict[str, int | str | bool] | None = None,
) -> Iterator[KinvokeStack]:
    """Broker + admin + ingress + processor(s) + SDK deployment, all on loopback, torn down after
    (its temporary directory too, unless `keep`)."""
    tmp = Path(tempfile.mkdtemp(prefix="kinvoke-bench-"))
    broker: Broker | None = None
    parts: dict[str, Component] = {}
    deployment = SdkDeployment(app, log=tmp / "sdk.log", settings=sdk_settings or {})
    try:
        # Free ports are only probed, not held: keep them apart from the deployment's (chosen
        # already, bound later) and from each other, or two pieces may be given one port.
        taken = {deployment.port}
        broker_port, admin_port, ingress_port = (_free_port_besides(taken) for _ in range(3))
        broker = start_broker(kind, tmp / "broker", broker_port, tmp / "broker.log")
        env = {
            "KINVOKE_BOOTSTRAP_SERVERS": broker.bootstrap,
            "KINVOKE_ADMIN_PORT": str(admin_port),
            "KINVOKE_INGRESS_PORT": str(ingress_port),
            "KINVOKE_LOG_LEVEL": log_level,
            "KINVOKE_STATE_DIR": str(tmp / "state"),
            **({"KINVOKE_RECOVERY_BARRIER": "1"} if kind == "local" else {}),
        }
        create_topics(Settings(bootstrap_servers=broker.bootstrap))
        parts["admin"] = Component("admin", env, tmp, admin_port)
        parts["ingress"] = Component("ingress", env, tmp, ingress_port)
        for i in range(processors):
            log_dir = tmp / f"processor-{i + 1}"  # Component names its log files after the command
            log_dir.mkdir()
            parts["processor" if processors == 1 else f"processor-{i + 1}"] = Component(
                "processor", env, log_dir
            )
        for c in parts.values():
            c.start()
        deployment.start()
        admin, ingress = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{ingress_port}"
        register(admin, ingress, deployment.uri, list(services))
        yield KinvokeStack(ingress, admin, broker.bootstrap, broker, parts, deployment, tmp)
    finally:
        deployment.stop()
        for c in parts.values():
            c.stop()
        if broker is not None:
            broker.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
