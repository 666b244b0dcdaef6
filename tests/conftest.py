"""Shared fixtures: a real Kafka broker per test session.

Which broker:
- default: Apache Kafka (the jars `./scripts/setup.sh` fetched), on free loopback ports, its data
  and log (`kafka.log`) in pytest's tmp dir;
- `KINVOKE_TEST_BROKER=local`: the pip-only emulator noida-db (machines without Java);
- `KINVOKE_TEST_BOOTSTRAP=host:port`: a broker someone else runs (tests that restart the broker
  are skipped then).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kinvoke.broker import Broker, BrokerError, start_broker, wait_for_broker

# Quick tests that still cover the broker and the SDK (`./scripts/test.sh -m smoke`): CI runs
# them on the emulator too. Paths relative to tests/.
SMOKE = ("unit/", "integration/test_invoker_sdk.py", "integration/test_dev_command.py")
TESTS = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (`timeout`, a CI runner giving up) ends the session like Ctrl-C does, so fixtures
    still stop the brokers and processes they started instead of leaving them behind."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, interrupt)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            rel = item.path.resolve().relative_to(TESTS).as_posix()
        except ValueError:
            continue
        if rel.startswith(SMOKE):
            item.add_marker(pytest.mark.smoke)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_broker_kind() -> str:
    """KINVOKE_TEST_BROKER: "kafka" (default) or "local"."""
    kind = os.environ.get("KINVOKE_TEST_BROKER") or "kafka"
    if kind not in ("kafka", "local"):
        pytest.fail(f"KINVOKE_TEST_BROKER={kind!r}: expected kafka or local", pytrace=False)
    return kind


@pytest.fixture(scope="session")
def _session_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker | None]:
    """The broker this session started, None when KINVOKE_TEST_BOOTSTRAP names one."""
    given = os.environ.get("KINVOKE_TEST_BOOTSTRAP")
    if given:
        wait_for_broker(given)
        yield None
        return
    kind = session_broker_kind()
    base: Path = tmp_path_factory.mktemp("broker")
    log_file = base / f"{kind}.log"
    try:
        broker = start_broker(kind, base / kind, free_port(), log_file, timeout_s=90.0)
    except BrokerError as e:
        hint = "" if kind == "local" else "\n(no Java >= 17? KINVOKE_TEST_BROKER=local uses the emulator)"
        pytest.fail(f"the test broker did not start: {e}{hint}", pytrace=False)
    # The processors the tests start work around an emulator quirk with this (see processor/).
    barrier = os.environ.get("KINVOKE_RECOVERY_BARRIER")
    if kind == "local":
        os.environ["KINVOKE_RECOVERY_BARRIER"] = "1"
    try:
        yield broker
    finally:
        broker.stop()
        if kind == "local":
            if barrier is None:
                os.environ.pop("KINVOKE_RECOVERY_BARRIER", None)
            else:
                os.environ["KINVOKE_RECOVERY_BARRIER"] = barrier


@pytest.fixture(scope="session")
def kafka_bootstrap(_session_broker: Broker | None) -> str:
    """host:port of a real broker: the one named by KINVOKE_TEST_BOOTSTRAP, else the session's."""
    if _session_broker is None:
        return os.environ["KINVOKE_TEST_BOOTSTRAP"]
    return _session_broker.bootstrap


@pytest.fixture
def kafka_broker(_session_broker: Broker | None) -> Iterator[Broker]:
    """The session's broker, for tests that stop and start it (`stop()`, `start()`; its data dir
    and port stay). Running again after the test whatever the test did. Skipped when the tests use
    KINVOKE_TEST_BOOTSTRAP."""
    if _session_broker is None:
        pytest.skip("restarts the broker: not with KINVOKE_TEST_BOOTSTRAP")
    yield _session_broker
    if not _session_broker.is_running():
        try:
            _session_broker.start(90.0)
        except BrokerError as e:
            pytest.fail(f"the test broker did not start again: {e}", pytrace=False)


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic namespace per test, so tests sharing one broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"
