"""Kafka client configuration for a company's Kafka: every client takes the operator's librdkafka
properties (a .properties file, `KINVOKE_KAFKA_PROPERTIES`, `KINVOKE_KAFKA_<PROPERTY>`) through
`kafka_core.kafka.client_config`, secrets never show, and topic configs are settings."""

from __future__ import annotations

import ast
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigEntry
from pydantic import ValidationError
from structlog.testing import capture_logs

from kafka_core import kafka as kafka_mod
from kafka_core.kafka import (
    check_record_limits,
    client_config,
    describe_config,
    producer_config,
    raise_record_limits,
    tail_consumer,
    topic_specs,
)
from schemas.settings import (
    DEFAULT_MAX_RECORD_BYTES,
    RECORD_BATCH_OVERHEAD,
    Settings,
    parse_properties,
    redacted,
)
from tests.support.fake_kafka import FakeCluster

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _no_kafka_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's own KINVOKE_* variables must not leak into these tests."""
    import os

    for name in list(os.environ):
        if name.upper().startswith("KINVOKE_"):
            monkeypatch.delenv(name)


# -- the .properties format ------------------------------------------------------------------------


def test_java_properties_are_parsed_as_java_reads_them() -> None:
    text = "\n".join(
        [
            "# a comment",
            "! another comment",
            "",
            "security.protocol=SASL_SSL",
            "sasl.mechanism : SCRAM-SHA-512",
            "client.id   kinvoke",
            "   ssl.ca.location = /etc/ssl/ca.pem  ",
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\",
            '    username="alice" \\',
            '    password="a\\\\b";',
            "key\\=with\\:escapes=tab\\there\\u00e9",
            "empty=",
        ]
    )
    assert parse_properties(text) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "client.id": "kinvoke",
        "ssl.ca.location": "/etc/ssl/ca.pem  ",  # trailing blanks belong to the value, as in Java
        "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="alice" password="a\\b";',
        "key=with:escapes": "tab\there\u00e9",
        "empty": "",
    }


# -- where the properties come from ---------------------------------------------------------------


def test_env_prefix_variables_become_librdkafka_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINVOKE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KINVOKE_KAFKA_SASL_MECHANISMS", "SCRAM-SHA-256")
    monkeypatch.setenv("KINVOKE_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("KINVOKE_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("KINVOKE_KAFKA_SSL_CA_LOCATION", "/etc/ca.pem")
    monkeypatch.setenv("KINVOKE_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    config = client_config(Settings(), **{"group.id": "g"})
    assert config == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/ca.pem",
        "bootstrap.servers": "kafka-1:9093,kafka-2:9093",
        "message.max.bytes": DEFAULT_MAX_RECORD_BYTES,
        "group.id": "g",
    }


def test_json_properties_and_a_file_merge_the_most_specific_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "client.properties"
    path.write_text(
        "bootstrap.servers=broker.example:9093\n"
        "security.protocol=SASL_SSL\n"
        "sasl.mechanisms=PLAIN\n"
        "sasl.username=from-file\n"
        "sasl.password=from-file\n"
        "ssl.ca.location=/file/ca.pem\n"
    )
    monkeypatch.setenv("KINVOKE_KAFKA_CONFIG_FILE", str(path))
    monkeypatch.setenv(
        "KINVOKE_KAFKA_PROPERTIES", '{"sasl.username": "json", "sasl.password": "json", "linger.ms": 5}'
    )
    monkeypatch.setenv("KINVOKE_KAFKA_SASL_PASSWORD", SECRET)
    settings = Settings()
    assert settings.bootstrap_servers == "broker.example:9093"  # the file's, none set otherwise
    assert settings.kafka_properties == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "json",  # JSON over the file
        "sasl.password": SECRET,  # a variable over JSON
        "ssl.ca.location": "/file/ca.pem",
        "linger.ms": "5",  # JSON numbers are librdkafka text
    }
    monkeypatch.setenv("KINVOKE_BOOTSTRAP_SERVERS", "explicit:9092")
    assert Settings().bootstrap_servers == "explicit:9092"  # the setting wins over the file
    assert "bootstrap.servers" not in Settings().kafka_properties  # one place to read it


def test_a_java_clients_jaas_line_gives_username_and_password(tmp_path: Path) -> None:
    path = tmp_path / "java-client.properties"
    path.write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        "sasl.mechanism=SCRAM-SHA-256\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="alice" password="{SECRET}";\n'
    )
    settings = Settings(kafka_config_file=str(path))
    assert settings.kafka_properties == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "alice",
        "sasl.password": SECRET,
    }


def test_a_missing_config_file_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as e:
        Settings(kafka_config_file="/nonexistent/client.properties")
    assert "cannot read KINVOKE_KAFKA_CONFIG_FILE /nonexistent/client.properties" in str(e.value)


def test_kinvokes_own_client_settings_win_over_the_operators() -> None:
    settings = Settings(
        bootstrap_servers="b:9092",
        kafka_properties={"enable.idempotence": "false", "isolation.level": "read_uncommitted", "acks": "1"},
    )
    assert producer_config(settings)["enable.idempotence"] is True
    config = client_config(settings, **{"isolation.level": "read_committed"})
    assert config["isolation.level"] == "read_committed" and config["acks"] == "1"


def test_the_tail_consumers_and_restores_get_the_properties(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster()
    cluster.create("t", 1)
    settings = Settings(kafka_properties={"security.protocol": "SASL_SSL", "sasl.password": SECRET})
    with tail_consumer(settings, "g", cluster.consumer_factory) as consumer:
        assert consumer.config["security.protocol"] == "SASL_SSL"  # type: ignore[attr-defined]
    made: list[dict[str, Any]] = []

    def factory(config: dict[str, Any]) -> Any:
        made.append(config)
        return cluster.consumer_factory(config)

    monkeypatch.setattr(kafka_mod, "Consumer", factory)
    assert list(kafka_mod.read_to_end(settings, "t", [0])) == []
    assert made[0]["sasl.password"] == SECRET


# -- secrets never show ---------------------------------------------------------------------------


def test_secrets_are_redacted_in_reprs_and_config_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINVOKE_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("KINVOKE_KAFKA_SSL_KEY_PASSWORD", SECRET)
    monkeypatch.setenv("KINVOKE_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("KINVOKE_KAFKA_SSL_KEY_PEM", SECRET)
    monkeypatch.setenv("KINVOKE_KAFKA_SASL_USERNAME", "alice")
    settings = Settings()
    for shown in (repr(settings), str(settings)):
        assert SECRET not in shown and "'sasl.password': '***'" in shown and "alice" in shown
    dump = describe_config(client_config(settings, error_cb=print))
    assert SECRET not in str(dump) and dump["sasl.username"] == "alice"
    assert dump["sasl.password"] == dump["ssl.key.password"] == dump["ssl.key.pem"] == "***"
    assert "error_cb" not in dump
    assert redacted({"sasl.jaas.config": "x", "client.id": "c"}) == {
        "sasl.jaas.config": "***",
        "client.id": "c",
    }


def test_a_properties_file_error_does_not_echo_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.properties"
    path.mkdir()  # not readable as a file
    with pytest.raises(ValidationError) as e:
        Settings(kafka_config_file=str(path))
    assert "cannot read KINVOKE_KAFKA_CONFIG_FILE" in str(e.value)


# -- every client goes through client_config ------------------------------------------------------

CLIENTS = {"Consumer", "Producer", "AdminClient"}
BASES = {"client_config", "producer_config", "quiet_config"}
# Clients that are not kinvoke's own connection to its Kafka, with why.
EXEMPT = {
    # A subscription reads the subscribed cluster with the properties registered for it
    # (`POST /kafka-clusters`), which may be another Kafka than kinvoke's.
    ("processor/subscriptions.py", "Consumer"),
    # The readiness check of the broker `kinvoke dev` and the tests start themselves.
    ("kinvoke/broker.py", "AdminClient"),
}


def _client_calls(path: Path) -> list[tuple[str, ast.Call]]:
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CLIENTS:
            calls.append((node.func.id, node))
    return calls


def test_every_kafka_client_of_kinvoke_starts_from_client_config() -> None:
    bypassing = []
    for package in ("kafka_core", "processor", "admin_api", "ingress_gateway", "kinvoke"):
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for name, call in _client_calls(path):
                first = call.args[0] if call.args else None
                built = (
                    isinstance(first, ast.Call)
                    and isinstance(first.func, ast.Name)
                    and first.func.id in BASES
                )
                if not built and (rel, name) not in EXEMPT:
                    bypassing.append(f"{rel}:{call.lineno} {name}(…)")
    assert not bypassing, f"Kafka clients built without kafka_core.kafka.client_config: {bypassing}"


# -- topics ----------------------------------------------------------------------------------------


def test_topic_configs_go_over_kinvokes_own() -> None:
    settings = Settings(
        topic_prefix="acme",
        topic_configs={
            "*": {"min.insync.replicas": "2", "compression.type": "zstd"},
            "commands": {"retention.ms": "604800000", "compression.type": "lz4"},
        },
    )
    specs = {s.name: s.config for s in topic_specs(settings)}
    assert specs["acme.commands"] == {
        "cleanup.policy": "delete",
        "retention.ms": "604800000",
        "min.insync.replicas": "2",
        "compression.type": "lz4",
        "max.message.bytes": str(DEFAULT_MAX_RECORD_BYTES + RECORD_BATCH_OVERHEAD),
    }
    assert specs["acme.changelog"]["cleanup.policy"] == "compact"
    assert specs["acme.changelog"]["min.insync.replicas"] == "2"
    assert specs["acme.commands.dlq"]["compression.type"] == "zstd"


def test_topic_configs_come_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINVOKE_TOPIC_CONFIGS", '{"results": {"retention.ms": "3600000"}}')
    monkeypatch.setenv("KINVOKE_REPLICATION_FACTOR", "3")
    settings = Settings()
    assert settings.replication_factor == 3
    results = next(s for s in topic_specs(settings) if s.name == "kinvoke.results")
    assert results.config["retention.ms"] == "3600000"


@pytest.mark.parametrize(
    ("configs", "why"),
    [
        ({"command": {"retention.ms": "1"}}, "unknown topic 'command'"),
        ({"changelog": {"cleanup.policy": "delete"}}, "cleanup.policy of changelog is not configurable"),
        ({"*": {"cleanup.policy": "delete"}}, "cleanup.policy of * is not configurable"),
        ({"changelog": {"delete.retention.ms": "1"}}, "delete.retention.ms of changelog is not configurable"),
        (
            {"*": {"max.message.bytes": "1"}},
            "max.message.bytes of * is not configurable (KINVOKE_MAX_RECORD_BYTES",
        ),
    ],
)
def test_topic_configs_kinvoke_depends_on_are_refused(configs: dict[str, dict[str, str]], why: str) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(topic_configs=configs)
    assert why in str(e.value)


# -- record sizes ----------------------------------------------------------------------------------


def test_one_setting_sizes_every_client_and_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restate's 32 MiB bodies fit by default; KINVOKE_MAX_RECORD_BYTES moves producers, consumers
    and the topics kinvoke creates together."""
    assert Settings().max_record_bytes > 32 * 1024 * 1024
    monkeypatch.setenv("KINVOKE_MAX_RECORD_BYTES", str(64 * 1024 * 1024))
    settings = Settings()
    assert producer_config(settings)["message.max.bytes"] == 64 * 1024 * 1024
    assert client_config(settings, **{"group.id": "g"})["message.max.bytes"] == 64 * 1024 * 1024
    for spec in topic_specs(settings):
        assert spec.config["max.message.bytes"] == str(64 * 1024 * 1024 + RECORD_BATCH_OVERHEAD), spec.name


def test_a_record_size_given_as_a_kafka_property_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two settings of one limit would disagree (a producer writing what the topics refuse)."""
    monkeypatch.setenv("KINVOKE_KAFKA_MESSAGE_MAX_BYTES", "5000000")
    with pytest.raises(ValidationError) as e:
        Settings()
    assert "message.max.bytes is set by KINVOKE_MAX_RECORD_BYTES" in str(e.value)


class _RefusingAdmin:
    """An admin client of a cluster whose `commands` topic allows 1 MiB records and that refuses
    kinvoke AlterConfigs (no ACL for it)."""

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = limits

    def describe_configs(self, resources: list[Any], **_: Any) -> dict[Any, Future[Any]]:
        out: dict[Any, Future[Any]] = {}
        for res in resources:
            fut: Future[Any] = Future()
            fut.set_result(
                {"max.message.bytes": ConfigEntry("max.message.bytes", str(self.limits[res.name]))}
            )
            out[res] = fut
        return out

    def incremental_alter_configs(self, resources: list[Any], **_: Any) -> dict[Any, Future[Any]]:
        out: dict[Any, Future[Any]] = {}
        for res in resources:
            fut: Future[Any] = Future()
            fut.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")))
            out[res] = fut
        return out


def test_a_topic_kinvoke_may_not_raise_is_named_with_the_refused_size() -> None:
    """A clear line at start-up instead of 413s (or failed attempts) long after it."""
    settings = Settings(topic_prefix="acme")
    admin = _RefusingAdmin({"acme.commands": 1048588, "acme.results": 50_000_000})
    with capture_logs() as logs:
        raised = raise_record_limits(admin, settings, ["acme.commands", "acme.results"])  # type: ignore[arg-type]
    assert raised == []
    [warning] = [e for e in logs if e["event"] == "topics.record_limit_too_low"]
    assert warning["log_level"] == "error" and warning["topic"] == "acme.commands"
    assert "records over 1048588 bytes" in warning["message"]
    assert f"max.message.bytes to {DEFAULT_MAX_RECORD_BYTES + RECORD_BATCH_OVERHEAD}" in warning["message"]


def test_a_topic_kinvoke_may_not_describe_is_named_and_start_up_goes_on() -> None:
    class Blind(_RefusingAdmin):
        def describe_configs(self, resources: list[Any], **_: Any) -> dict[Any, Future[Any]]:
            out: dict[Any, Future[Any]] = {}
            for res in resources:
                fut: Future[Any] = Future()
                fut.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")))
                out[res] = fut
            return out

    with capture_logs() as logs:
        assert raise_record_limits(Blind({}), Settings(topic_prefix="acme"), ["acme.commands"]) == []  # type: ignore[arg-type]
    [warning] = [e for e in logs if e["event"] == "topics.record_limit_unknown"]
    assert "cannot read max.message.bytes of acme.commands" in warning["message"]


def test_a_component_checks_only_the_existing_topics_it_writes_and_a_silent_broker_is_one_warning() -> None:
    """`kinvoke processor`/`kinvoke ingress` started on their own check the topics they write."""

    class Listing(_RefusingAdmin):
        def __init__(self, limits: dict[str, int], down: bool = False) -> None:
            super().__init__(limits)
            self.down = down
            self.described: list[str] = []

        def list_topics(self, timeout: float) -> Any:
            if self.down:
                raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
            return SimpleNamespace(topics={name: None for name in self.limits})

        def describe_configs(self, resources: list[Any], **kw: Any) -> dict[Any, Future[Any]]:
            self.described += [r.name for r in resources]
            return super().describe_configs(resources, **kw)

    settings = Settings(topic_prefix="acme")
    admin = Listing({"acme.commands": 1048588, "acme.results": 1048588})
    with capture_logs() as logs:
        check_record_limits(settings, ["acme.commands", "acme.changelog"], admin_factory=lambda _c: admin)  # type: ignore[arg-type,return-value]
    assert admin.described == ["acme.commands"]  # results: not written by it; changelog: missing
    [error] = [e for e in logs if e["event"] == "topics.record_limit_too_low"]
    assert error["topic"] == "acme.commands" and "KINVOKE_MAX_RECORD_BYTES" in error["message"]

    with capture_logs() as logs:
        down = Listing({}, down=True)
        assert check_record_limits(settings, ["acme.commands"], admin_factory=lambda _c: down) == []  # type: ignore[arg-type,return-value]
    [warning] = [e for e in logs if e["event"] == "topics.record_limit_unchecked"]
    assert warning["log_level"] == "warning" and "broker down" in warning["message"]
