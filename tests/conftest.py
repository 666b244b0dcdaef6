"""Shared fixtures: a real Kafka broker per test session (or the one in KINVOKE_TEST_BOOTSTRAP)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kinvoke.broker import LocalBroker, wait_for_broker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: the one named by KINVOKE_TEST_BOOTSTRAP, else a fresh local one."""
    given = os.environ.get("KINVOKE_TEST_BOOTSTRAP")
    if given:
        wait_for_broker(given)
        yield given
        return
    data_dir: Path = tmp_path_factory.mktemp("broker")
    broker = LocalBroker(data_dir=data_dir, port=free_port(), log_file=data_dir / "broker.log").start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic namespace per test, so tests sharing one broker never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}"
