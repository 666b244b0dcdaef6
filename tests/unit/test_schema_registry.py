"""Commands in the Confluent Schema Registry wire format: told apart from kinvoke's own framing,
read with the current Command schema by Avro resolution from the writer schema the registry gives
for the id; an unknown id is a reason to dead-letter, a registry that cannot answer is not.

The registry is the stand-in of tests/support/schema_registry.py (Confluent REST API answers);
the client and the serializer are confluent-kafka's own.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import pytest
from pydantic import SecretStr

from kafka_core.schema_registry import (
    RegistryUnavailable,
    UnknownSchema,
    WriterSchemas,
    client_from_settings,
)
from processor.decoding import CommandDecoder
from schemas import codec
from schemas.records import (
    Barrier,
    Command,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    ServiceType,
)
from schemas.settings import Settings
from tests.support.fake_kafka import FakeMessage
from tests.support.schema_registry import FakeSchemaRegistry, run_schema_registry

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

TOPIC = "t.commands"


def _invoke(**fields: Any) -> Command:
    body = {
        "invocation_id": "inv_1abc",
        "target": InvocationTarget(service="Greeter", handler="greet", service_ty=ServiceType.SERVICE),
        "argument": b'"Ada"',
        "invoked_by": InvokedBy(kind=InvokedByKind.INGRESS),
        **fields,
    }
    return Command(timestamp_ms=1_700_000_000_000, body=Invoke(**body))


@pytest.fixture
def registry() -> Iterator[FakeSchemaRegistry]:
    with run_schema_registry() as r:
        yield r


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _decoder(url: str, clock: Clock | None = None, **settings: Any) -> CommandDecoder:
    client = client_from_settings(Settings(schema_registry_url=url, **settings))
    assert client is not None
    return CommandDecoder(WriterSchemas(client, clock or Clock()))


def _serialize(url: str, command: Command) -> bytes:
    """What a producer outside kinvoke writes: confluent-kafka's AvroSerializer, schema registered
    under `<topic>-value` (TopicNameStrategy)."""
    client = client_from_settings(Settings(schema_registry_url=url))
    serializer = AvroSerializer(client, codec.schema_json("kinvoke.Command"))
    data = serializer(command.to_avro(), SerializationContext(TOPIC, MessageField.VALUE))
    assert data is not None
    return data


def _framed(schema_id: int, writer: dict[str, Any], datum: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), datum)
    return buf.getvalue()


def _msg(data: bytes, offset: int = 0) -> FakeMessage:
    return FakeMessage(TOPIC, 0, offset, None, data)


# -- framing -----------------------------------------------------------------------------------


def test_the_two_framings_are_told_apart_by_the_first_byte() -> None:
    own = _invoke().encode()
    assert own[:2] == b"\xc3\x01" and codec.framing_of(own) == "kinvoke"
    barrier = Command(timestamp_ms=1, body=Barrier(owner="o", nonce="n")).encode()
    assert codec.framing_of(barrier) == "kinvoke"  # every kinvoke record starts C3, never 00
    confluent = b"\x00\x00\x00\x01\x02" + b"payload"
    assert codec.framing_of(confluent) == "confluent" and codec.confluent_schema_id(confluent) == 258
    for other in (b"", b"\x00\x00\x00\x01", b"not avro", b"\xc3", b"{}"):
        assert codec.framing_of(other) == "unknown"
    with pytest.raises(codec.DecodeError):
        codec.confluent_schema_id(own)


def test_the_published_command_schema_is_self_contained_and_is_kinvokes() -> None:
    published = json.loads(codec.schema_json("kinvoke.Command"))
    parsed = fastavro.parse_schema(published)  # no named type left undefined
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, _invoke().to_avro())
    assert Command.from_avro(codec.decode_resolved("kinvoke.Command", parsed, buf.getvalue())) == _invoke()


# -- decoding ----------------------------------------------------------------------------------


def test_a_command_from_the_avro_serializer_decodes(registry: FakeSchemaRegistry) -> None:
    command = _invoke(idempotency_key="k1", reply_to_results=True)
    data = _serialize(registry.url, command)
    assert codec.framing_of(data) == "confluent"
    assert registry.subjects == {f"{TOPIC}-value": [codec.confluent_schema_id(data)]}
    decoder = _decoder(registry.url)
    assert decoder.prefetch([_msg(command.encode()), _msg(data)]) is None
    assert decoder.decode(data) == command
    assert decoder.decode(command.encode()) == command  # kinvoke's own framing still works
    fetched = registry.requests.count(f"GET /schemas/ids/{codec.confluent_schema_id(data)}")
    decoder.prefetch([_msg(data)] * 3)
    assert registry.requests.count(f"GET /schemas/ids/{codec.confluent_schema_id(data)}") == fetched == 1


def test_a_writer_schema_with_other_fields_is_resolved_into_the_current_one(
    registry: FakeSchemaRegistry,
) -> None:
    """A producer's schema without fields kinvoke added since (they take their defaults) and with
    a field of its own (ignored) still reads as today's Command."""
    writer = json.loads(codec.schema_json("kinvoke.Command"))
    invoke = writer["fields"][1]["type"][0]
    assert invoke["name"] == "kinvoke.Invoke"
    # Fields that define no named type used elsewhere in the schema (those must stay defined).
    dropped = {"execute_at_ms", "ack_to_results", "idempotency_key", "headers"}
    invoke["fields"] = [f for f in invoke["fields"] if f["name"] not in dropped]
    invoke["fields"].append({"name": "producer_note", "type": "string", "default": ""})
    schema_id = registry.register(f"{TOPIC}-value", json.dumps(writer))
    datum = _invoke().to_avro()
    datum["body"] = {k: v for k, v in datum["body"].items() if k not in dropped} | {"producer_note": "hi"}
    data = _framed(schema_id, writer, datum)
    decoder = _decoder(registry.url)
    assert decoder.prefetch([_msg(data)]) is None
    decoded = decoder.decode(data)
    assert decoded == _invoke()  # defaults for the missing fields, the extra one dropped
    assert isinstance(decoded.body, Invoke)
    assert decoded.body.idempotency_key is None and decoded.body.headers == []


def test_a_writer_schema_that_does_not_resolve_is_a_decode_error(registry: FakeSchemaRegistry) -> None:
    other = {"type": "record", "name": "acme.Order", "fields": [{"name": "id", "type": "string"}]}
    schema_id = registry.register("orders-value", json.dumps(other))
    data = _framed(schema_id, other, {"id": "o-1"})
    decoder = _decoder(registry.url)
    assert decoder.prefetch([_msg(data)]) is None
    with pytest.raises(codec.DecodeError, match="undecodable kinvoke.Command"):
        decoder.decode(data)


def test_an_unknown_schema_id_is_a_reason_to_dead_letter(registry: FakeSchemaRegistry) -> None:
    data = b"\x00" + struct.pack(">I", 4242) + b"\x02"
    decoder = _decoder(registry.url)
    assert decoder.prefetch([_msg(data)]) is None  # nothing to wait for: the registry answered
    with pytest.raises(codec.DecodeError, match="schema id 4242 is not in the schema registry"):
        decoder.decode(data)


def test_a_schema_that_is_not_avro_is_a_reason_to_dead_letter(registry: FakeSchemaRegistry) -> None:
    schema_id = registry.register("x-value", 'syntax = "proto3"; message M {}', "PROTOBUF")
    with pytest.raises(UnknownSchema, match="PROTOBUF schema, not Avro"):
        WriterSchemas(client_from_settings(Settings(schema_registry_url=registry.url))).get(schema_id)  # type: ignore[arg-type]


def test_without_a_registry_configured_the_reason_names_the_setting() -> None:
    decoder = CommandDecoder(None)
    data = b"\x00\x00\x00\x00\x07\x02"
    assert decoder.prefetch([_msg(data)]) is None
    with pytest.raises(codec.DecodeError, match="KINVOKE_SCHEMA_REGISTRY_URL"):
        decoder.decode(data)
    assert client_from_settings(Settings()) is None
    assert client_from_settings(Settings(schema_registry_url="")) is None
    with pytest.raises(ValueError, match="is not http:// or https://"):
        Settings(schema_registry_url="http://a:8081,registry:8081")


# -- a registry that cannot answer ----------------------------------------------------------------


def test_a_registry_that_is_down_holds_the_record_and_is_asked_again_after_a_backoff() -> None:
    clock = Clock()
    with run_schema_registry() as registry:
        data = _serialize(registry.url, _invoke())
        url = registry.url
    # Stopped: connections to it are refused.
    decoder = _decoder(url, clock, schema_registry_timeout_s=2)
    own = _msg(_invoke().encode(), 0)
    assert decoder.prefetch([own, _msg(data, 1), _msg(data, 2)]) == 1  # wait from the first that needs it
    with pytest.raises(RegistryUnavailable, match="next try in"):
        assert decoder.schemas is not None
        decoder.schemas.get(1)  # backing off: no request at all
    # The registry is back (same schemas, same port is not guaranteed: a new client on the new URL
    # stands for the operator's restart; the backoff itself is checked on the old one above).
    with run_schema_registry() as back:
        back.register(f"{TOPIC}-value", codec.schema_json("kinvoke.Command"))
        decoder = _decoder(back.url, clock)
        assert decoder.prefetch([own, _msg(data, 1)]) is None
        assert decoder.decode(data) == _invoke()


def test_a_failing_registry_is_unavailable_not_unknown_and_backs_off() -> None:
    clock = Clock()
    with run_schema_registry(FakeSchemaRegistry(failing=True)) as registry:
        schemas = WriterSchemas(client_from_settings(Settings(schema_registry_url=registry.url)), clock)  # type: ignore[arg-type]
        with pytest.raises(RegistryUnavailable, match="answered 500"):
            schemas.get(1)
        with pytest.raises(RegistryUnavailable):
            schemas.get(1)
        assert registry.requests.count("GET /schemas/ids/1") == 1  # the second was backed off
        registry.failing = False
        registry.register("s", codec.schema_json("kinvoke.Command"))
        clock.now += 0.6  # past the first backoff (0.5 s)
        assert schemas.get(1) is not None
        assert registry.requests.count("GET /schemas/ids/1") == 2


def test_credentials_from_the_settings_are_sent_and_a_refusal_is_not_a_dead_letter() -> None:
    with run_schema_registry(FakeSchemaRegistry(basic_auth="kinvoke:s3cret")) as registry:
        schema_id = registry.register("s", codec.schema_json("kinvoke.Command"))
        right = Settings(
            schema_registry_url=registry.url,
            schema_registry_username="kinvoke",
            schema_registry_password=SecretStr("s3cret"),
        )
        assert WriterSchemas(client_from_settings(right)).get(schema_id) is not None  # type: ignore[arg-type]
        wrong = right.model_copy(update={"schema_registry_password": SecretStr("nope")})
        with pytest.raises(RegistryUnavailable, match="401"):
            WriterSchemas(client_from_settings(wrong)).get(schema_id)  # type: ignore[arg-type]
        assert "s3cret" not in repr(right)


def test_an_https_registry_with_its_own_ca_is_configured(tmp_path: Path) -> None:
    import certifi

    url = "https://registry.internal:8081"
    client = client_from_settings(
        Settings(schema_registry_url=url, schema_registry_ssl_ca_location=certifi.where())
    )
    assert client is not None
    with pytest.raises(OSError):  # the file is what the client's TLS context loads
        client_from_settings(
            Settings(schema_registry_url=url, schema_registry_ssl_ca_location=str(tmp_path / "missing.pem"))
        )


def test_a_writer_schema_with_references_is_read(registry: FakeSchemaRegistry) -> None:
    """Schema references (a named type registered under a subject of its own) are fetched too."""
    whole = json.loads(codec.schema_json("kinvoke.Command"))
    invoke = whole["fields"][1]["type"][0]
    target = next(f for f in invoke["fields"] if f["name"] == "target")
    target_definition, target["type"] = target["type"], "kinvoke.InvocationTarget"
    registry.register("kinvoke.InvocationTarget", json.dumps(target_definition))
    reference = {"name": "kinvoke.InvocationTarget", "subject": "kinvoke.InvocationTarget", "version": 1}
    schema_id = registry.register(f"{TOPIC}-value", json.dumps(whole), references=[reference])
    data = _framed(schema_id, json.loads(codec.schema_json("kinvoke.Command")), _invoke().to_avro())
    decoder = _decoder(registry.url)
    assert decoder.prefetch([_msg(data)]) is None
    assert decoder.decode(data) == _invoke()
    assert "GET /subjects/kinvoke.InvocationTarget/versions/1" in registry.requests
