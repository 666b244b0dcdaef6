"""kinvoke on a Kafka that wants credentials: Apache Kafka with a SASL_PLAINTEXT listener
(SASL/PLAIN and SCRAM-SHA-256 users), its own broker for this module. admin, ingress and a
processor run as processes configured by a client .properties file plus the password in
`KINVOKE_KAFKA_SASL_PASSWORD`; a call goes through the stack, the password shows in no log, and
clients without credentials or with a wrong password are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from kafka_core.kafka import create_topics
from kinvoke.broker import BrokerError, KafkaBroker
from schemas.settings import Settings
from tests.conftest import free_port, session_broker_kind
from tests.support.cluster import Stack, json_lines
from tests.support.processes import REPO

pytestmark = pytest.mark.integration

BROKER_USER, BROKER_PASSWORD = "kinvoke-broker", "broker-pw-7d1e"
USER, PASSWORD = "alice", "alice-pw-93c5f"
SERVICES_APP = "examples.python.services:app"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    if session_broker_kind() != "kafka" or os.environ.get("KINVOKE_TEST_BOOTSTRAP"):
        pytest.skip("starts its own Apache Kafka with a SASL listener")
    base = tmp_path_factory.mktemp("sasl-kafka")
    broker = KafkaBroker(
        data_dir=base / "kafka",
        port=free_port(),
        log_file=base / "kafka.log",
        sasl_users={BROKER_USER: BROKER_PASSWORD, USER: PASSWORD},
    )
    try:
        broker.start(90)
    except BrokerError as e:
        pytest.fail(f"the SASL broker did not start: {e}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


def client_file(path: Path) -> Path:
    """What an operator gets from the Kafka team, minus the password (a secret from elsewhere)."""
    path.write_text(
        "# kinvoke's Kafka client\n"
        "security.protocol=SASL_PLAINTEXT\n"
        "sasl.mechanisms=SCRAM-SHA-256\n"
        f"sasl.username={USER}\n"
    )
    return path


def refusal(bootstrap: str, **props: str) -> str:
    """Why an admin client with `props` cannot read the cluster's metadata ('' if it can)."""
    errors: list[KafkaError] = []
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "error_cb": errors.append, "logger": _Quiet(), **props}
    )
    try:
        admin.list_topics(timeout=3)
    except KafkaException as e:
        admin.poll(0.5)  # serves error_cb: the reason the broker gave
        return " | ".join([str(e), *(f"{err.name()}: {err.str()}" for err in errors)])
    return ""


class _Quiet:
    def log(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_clients_without_credentials_or_with_a_wrong_password_are_refused(sasl_broker: KafkaBroker) -> None:
    bootstrap = sasl_broker.bootstrap
    sasl = {"security.protocol": "SASL_PLAINTEXT", "sasl.username": USER}
    assert refusal(bootstrap, **sasl, **{"sasl.mechanisms": "SCRAM-SHA-256", "sasl.password": PASSWORD}) == ""
    assert refusal(bootstrap, **sasl, **{"sasl.mechanisms": "PLAIN", "sasl.password": PASSWORD}) == ""

    assert refusal(bootstrap)  # PLAINTEXT against the SASL listener: the broker hangs up
    for mechanism in ("SCRAM-SHA-256", "PLAIN"):
        why = refusal(bootstrap, **sasl, **{"sasl.mechanisms": mechanism, "sasl.password": "wrong"})
        assert "_AUTHENTICATION" in why and "Authentication failed" in why, why
    unknown = {"sasl.username": "mallory", "sasl.password": PASSWORD, "sasl.mechanisms": "SCRAM-SHA-256"}
    assert "_AUTHENTICATION" in refusal(bootstrap, **{**sasl, **unknown})


@pytest.fixture
def stack(sasl_broker: KafkaBroker, topic_prefix: str, tmp_path: Path) -> Iterator[Stack]:
    config = client_file(tmp_path / "client.properties")
    env = {"KINVOKE_KAFKA_CONFIG_FILE": str(config), "KINVOKE_KAFKA_SASL_PASSWORD": PASSWORD}
    stack = Stack(
        sasl_broker.bootstrap,
        topic_prefix,
        tmp_path,
        partitions=2,
        processors={"p1": "state"},
        env_extra=env,
        app=SERVICES_APP,
    )
    # The stack's own Kafka clients (topic creation, its checks) need the credentials too.
    stack.settings = Settings(
        bootstrap_servers=sasl_broker.bootstrap,
        topic_prefix=topic_prefix,
        partitions=2,
        kafka_config_file=str(config),
        kafka_properties={"sasl.password": PASSWORD},
    )
    try:
        create_topics(stack.settings)
        stack.deployment.start()
        stack.admin.start(90)
        stack.ingress.start(90)
        stack.start_processor("p1", 90)
        yield stack
    finally:
        stack.stop()


def kinvoke_cli(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kinvoke.cli", *args],
        cwd=REPO,
        env={**os.environ, **stack.env, "PYTHONPATH": str(REPO), "KINVOKE_LOG_FORMAT": "json", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_call_goes_through_the_stack_with_credentials(stack: Stack) -> None:
    with httpx.Client(timeout=60) as client:
        reg = client.post(f"{stack.admin_url}/deployments", json={"uri": stack.deployment.uri})
        assert reg.status_code == 201, reg.text
        call = client.post(f"{stack.ingress_url}/Greeter/greet", json="SASL")
        assert call.status_code == 200, f"{call.status_code} {call.text}\n{stack.log_tails()}"
        assert call.json() == "Hello SASL"
        counter = client.post(f"{stack.ingress_url}/Counter/k/add", json=2)
        assert counter.status_code == 200, counter.text

    # The tools read the log with the same settings; a wrong password is one line and exit 1.
    tail = kinvoke_cli(stack, "topics", "tail", "metadata", "--from-beginning")
    assert tail.returncode == 0, tail.stderr
    assert "service/Greeter" in tail.stdout
    refused = kinvoke_cli(stack, "topics", "tail", "metadata", KINVOKE_KAFKA_SASL_PASSWORD="not-the-password")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "not-the-password" not in refused.stdout + refused.stderr

    # Every component said how it reaches Kafka, with the password as ***, and never the password.
    for name, component in stack.components().items():
        text = component.log_text()
        assert PASSWORD not in text, f"{name} logged the password"
        configs = [e["config"] for e in json_lines(text) if e.get("event") == "kafka.client_config"]
        assert configs, f"{name} did not log its Kafka client config"
        assert configs[0]["sasl.password"] == "***" and configs[0]["sasl.username"] == USER
        assert configs[0]["security.protocol"] == "SASL_PLAINTEXT"
