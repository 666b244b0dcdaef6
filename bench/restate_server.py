"""The real Restate server for side-by-side benchmarks: installed pinned with npm, run on loopback.

The npm package `@restatedev/restate-server` only holds a Node launcher; the server itself is a
native binary in the platform package it depends on (`@restatedev/restate-server-linux-x64`, …).
It is installed once into `.kinvoke/restate-server/` (ignored by git) and the binary is run
directly, so the measured process is the server, not Node.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.stack import stop_process_group
from tests.conftest import free_port
from tests.support.processes import REPO

RESTATE_VERSION = "1.7.12"
INSTALL_DIR = REPO / ".kinvoke" / "restate-server"
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}


def platform_package() -> str:
    """The npm package holding the binary for this machine (what the launcher picks)."""
    system, machine = platform.system().lower(), platform.machine().lower()
    if system not in ("linux", "darwin") or machine not in _ARCH:
        raise RuntimeError(f"the Restate server is not published on npm for {system}/{machine}")
    return f"@restatedev/restate-server-{system}-{_ARCH[machine]}"


def installed_version(install_dir: Path = INSTALL_DIR) -> str | None:
    pkg = install_dir / "node_modules" / platform_package() / "package.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads(pkg.read_text())["version"])
    return None


def binary_path(install_dir: Path = INSTALL_DIR) -> Path:
    return install_dir / "node_modules" / platform_package() / "bin" / "restate-server"


def install(version: str = RESTATE_VERSION, install_dir: Path = INSTALL_DIR, timeout_s: float = 600) -> Path:
    """`npm install --prefix install_dir @restatedev/restate-server@version` unless that version is
    already there; no install scripts (the package's only one is a telemetry ping). The binary."""
    binary = binary_path(install_dir)
    if installed_version(install_dir) == version and binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install the Restate server (Node >= 18)")
    install_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        npm,
        "install",
        "--prefix",
        str(install_dir),
        "--save-exact",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        f"@restatedev/restate-server@{version}",
    ]
    print(f"installing the Restate server {version} into {install_dir} ...", flush=True)
    env = {**os.environ, "SCARF_ANALYTICS": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    if installed_version(install_dir) != version or not binary.exists():
        raise RuntimeError(f"npm installed no {platform_package()}@{version} binary at {binary}")
    return binary


def version_of(binary: Path) -> str:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or out.stderr.strip()


@dataclass
class RestateServer:
    """One Restate node (all roles) on loopback: ingress, admin and node-to-node ports are free
    ports on 127.0.0.1, TCP only (no unix sockets), data in `data_dir`."""

    binary: Path
    data_dir: Path
    log_file: Path
    log_filter: str = "warn"
    ingress_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    fabric_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def config(self) -> str:
        return "\n".join(
            [
                'listen-mode = "tcp"',
                f'bind-address = "127.0.0.1:{self.fabric_port}"',
                f'advertised-address = "http://127.0.0.1:{self.fabric_port}/"',
                f'log-filter = "{self.log_filter}"',
                'log-format = "compact"',
                "log-disable-ansi-codes = true",
                "disable-telemetry = true",
                "[ingress]",
                f'bind-address = "127.0.0.1:{self.ingress_port}"',
                "[admin]",
                f'bind-address = "127.0.0.1:{self.admin_port}"',
                "disable-web-ui = true",
                "",
            ]
        )

    def start(self, timeout_s: float = 120.0) -> RestateServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "restate.toml"
        config.write_text(self.config())
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTATE_")}
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.binary),
                    "--config-file",
                    str(config),
                    "--base-dir",
                    str(self.data_dir),
                    "--node-name",
                    "bench",
                    "--no-logo",
                ],
                env=env,
                cwd=self.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the Restate server exited with {self.proc.returncode} while starting\n"
                    f"--- last lines of {self.log_file}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                admin = httpx.get(f"{self.admin}/health", timeout=2)
                ingress = httpx.get(f"{self.ingress}/restate/health", timeout=2)
                if admin.status_code == 200 and ingress.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Restate server was not ready within {timeout_s}s\n"
                    f"--- last lines of {self.log_file}:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"

    def stop(self) -> None:
        stop_process_group(self.proc, 30.0)


@contextlib.contextmanager
def restate_server(version: str = RESTATE_VERSION, keep: bool = False) -> Iterator[RestateServer]:
    """Installed if needed, started on loopback with its data in a temporary directory, stopped after."""
    binary = install(version)
    tmp = Path(tempfile.mkdtemp(prefix="restate-bench-"))
    server = RestateServer(binary, tmp / "data", tmp / "restate.log")
    try:
        yield server.start()
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
