"""`kinvoke dev` typed twice: the second refuses in one line (its lock in the same directory, or
the ports taken) and the first keeps serving, untouched. Its banner means ready."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from kafka_core.inspect import group_partitions, quiet_admin
from schemas.settings import Settings
from tests.conftest import session_broker_kind
from tests.integration.test_dev_command import _components, dev_command, skip_without_kafka, start_dev
from tests.support.processes import REPO

pytestmark = pytest.mark.integration


def _serving(ports: dict[str, int]) -> None:
    assert httpx.get(f"http://127.0.0.1:{ports['admin']}/health", timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{ports['ingress']}/restate/health", timeout=5).status_code == 200


def _second(env: dict[str, str], kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(dev_command(kind), cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_a_second_dev_refuses_and_the_first_keeps_serving(tmp_path: Path) -> None:
    kind = session_broker_kind()
    skip_without_kafka(kind)
    first = start_dev(tmp_path / "first", kind)
    try:
        first.wait_ready()
        # Ready means ready: the components answer and the processor has every partition.
        _serving(first.ports)
        settings = Settings(bootstrap_servers=f"127.0.0.1:{first.ports['broker']}")
        assert group_partitions(quiet_admin(settings), "dev-test", "kinvoke.commands") == set(range(8))
        before = {name: pid for name, (pid, _) in _components(first.proc.pid).items()}
        assert sorted(before) == ["admin", "ingress", "processor"]

        # The same directory: the lock says who runs there.
        same = _second(first.env, kind)
        assert same.returncode == 1, same
        assert same.stdout == ""
        lock = tmp_path / "first" / "dev.lock"
        assert same.stderr == (
            f"kinvoke dev: another kinvoke dev (pid {first.proc.pid}) is running with {lock.parent} "
            f"(lock {lock}); stop it first, or give this one another KINVOKE_BROKER_DATA_DIR\n"
        )

        # Another directory, the same ports: refused before anything starts.
        elsewhere = {**first.env, "KINVOKE_BROKER_DATA_DIR": str(tmp_path / "second" / kind)}
        ports = _second(elsewhere, kind)
        assert ports.returncode == 1, ports
        p = first.ports
        assert ports.stderr == (
            f"kinvoke dev: ports in use: broker 127.0.0.1:{p['broker']} (KINVOKE_BROKER_PORT), "
            f"admin 127.0.0.1:{p['admin']} (KINVOKE_ADMIN_PORT), ingress 127.0.0.1:{p['ingress']} "
            "(KINVOKE_INGRESS_PORT); stop what uses them or choose others\n"
        )
        assert not (tmp_path / "second" / kind).exists()

        # The first one is untouched: same components, still serving, one banner.
        assert first.proc.poll() is None, first.log()
        assert {name: pid for name, (pid, _) in _components(first.proc.pid).items()} == before
        _serving(first.ports)
        assert first.log().count("kinvoke dev: admin http://") == 1
    finally:
        code = first.stop()
    assert code == 0, first.log()
