"""`kinvoke dev` (the README's first command) starts everything and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.support.processes import REPO, wait_for_port

pytestmark = pytest.mark.integration


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    ports = {"broker": free_port(), "admin": free_port(), "ingress": free_port()}
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "KINVOKE_BROKER_PORT": str(ports["broker"]),
        "KINVOKE_BROKER_DATA_DIR": str(tmp_path / "broker"),
        "KINVOKE_ADMIN_PORT": str(ports["admin"]),
        "KINVOKE_INGRESS_PORT": str(ports["ingress"]),
        "KINVOKE_PROCESSOR_GROUP_ID": "dev-test",
    }
    env.pop("KINVOKE_BOOTSTRAP_SERVERS", None)
    log = open(tmp_path / "dev.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "kinvoke.cli", "dev"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port("127.0.0.1", ports["admin"], 60, proc)
        wait_for_port("127.0.0.1", ports["ingress"], 60, proc)
        assert httpx.get(f"http://127.0.0.1:{ports['admin']}/health").status_code == 200
        version = httpx.get(f"http://127.0.0.1:{ports['admin']}/version").json()
        assert version["ingress_endpoint"] == f"http://127.0.0.1:{ports['ingress']}/"
        assert httpx.get(f"http://127.0.0.1:{ports['ingress']}/restate/health").json() == {"services": []}
        assert _listening(ports["broker"])
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = proc.wait(60)
    assert code == 0, (tmp_path / "dev.log").read_text()
    deadline = time.monotonic() + 10
    while any(_listening(p) for p in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_listening(p) for p in ports.values()), "something kept listening after Ctrl-C"
