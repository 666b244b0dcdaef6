"""A real schema registry for the integration tests: Apicurio Registry, serving the Confluent
Schema Registry REST API under /apis/ccompat/v7.

scripts/setup.sh unpacks its published Quarkus build (scripts/schema-registry/pom.xml) into
.kinvoke/schema-registry/; this runs its runner jar on loopback with the same Java as Kafka, its
H2 database in a file of the test's own (so a registry stopped and started again, an outage, keeps
its schemas) and its access log on, which tells what the clients asked.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from kinvoke.broker import BrokerError, find_java
from tests.conftest import free_port
from tests.support.processes import REPO

INSTALL = REPO / ".kinvoke" / "schema-registry"
API = "/apis/ccompat/v7"
# `... "apicurio-registry.access method="GET" path="/apis/ccompat/v7/schemas/ids/1?x=y" ...`
_ACCESS = re.compile(r'apicurio-registry\.access method="(\w+)" path="' + re.escape(API) + r'([^"?]*)')


def runner_jar_or_skip() -> Path:
    """The runner jar setup.sh unpacked; skips without it (fails in CI, where it must run)."""
    jars = sorted(INSTALL.glob("apicurio-registry-app-*-runner.jar"))
    if (INSTALL / "COMPLETE").exists() and jars:
        return jars[-1]
    reason = (
        "Apicurio Registry is not installed in .kinvoke/schema-registry/ "
        "(./scripts/setup.sh fetches it with Maven; its output says why it could not)"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the schema registry test: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Apicurio:
    """One registry on a fixed loopback port, so it can be stopped and started again."""

    jar: Path
    work_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        """What a Confluent client is given: the compatibility API's root."""
        return f"http://127.0.0.1:{self.port}{API}"

    def start(self, timeout_s: float = 90.0) -> Apicurio:
        try:
            java = find_java()
        except BrokerError as e:
            raise RuntimeError(f"Apicurio Registry needs Java >= 17: {e}") from e
        self.starts += 1
        log = open(self.work_dir / f"apicurio-{self.starts}.log", "wb")  # noqa: SIM115
        env = {
            **os.environ,
            "REGISTRY_DATASOURCE_URL": f"jdbc:h2:file:{self.work_dir / 'h2' / 'registry'}",
            "ENABLE_ACCESS_LOG": "true",
        }
        self.proc = subprocess.Popen(
            [
                java,
                "-Xmx256m",
                "-Dquarkus.http.host=127.0.0.1",
                f"-Dquarkus.http.port={self.port}",
                "-jar",
                str(self.jar),
            ],
            cwd=self.work_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Apicurio Registry exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/subjects", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"Apicurio Registry did not answer within {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def subjects(self) -> list[str]:
        answer = httpx.get(f"{self.url}/subjects", timeout=10)
        answer.raise_for_status()
        subjects: list[str] = answer.json()
        return subjects

    def requests(self) -> list[str]:
        """What clients asked, from the access log: e.g. `GET /schemas/ids/1` (no query)."""
        return [f"{m[1]} {m[2]}" for m in _ACCESS.finditer(self.log_text())]

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.work_dir.glob("apicurio-*.log")))

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
