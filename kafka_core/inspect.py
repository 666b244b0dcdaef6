"""kinvoke's topics for humans: decoded records, tails, and one-line errors for the debugging CLI.

Every kinvoke value is Avro single-object encoded, so a record can be decoded without knowing
where it came from (the fingerprint names its schema); journal frames inside are service-protocol
messages. This module turns both into plain JSON-able values (payloads as JSON where they are JSON,
`*_at_ms` times as ISO 8601), reads topics without joining a group, and says in one line why it
cannot (broker unreachable, unknown topic or partition) instead of a librdkafka traceback.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from google.protobuf.descriptor import FieldDescriptor

from kafka_core.kafka import client_config, poll_batch, tail_consumer
from kafka_core.schema_registry import RegistryUnavailable, UnknownSchema, WriterSchemas, client_from_settings
from schemas import codec
from schemas.records import Command
from schemas.service_protocol import Frame, ProtocolViolation, decode_message
from schemas.settings import Settings

# The topics `kinvoke topics tail` knows, by their name after the prefix.
TOPIC_KINDS = ("commands", "changelog", "results", "metadata", "commands.dlq")
DLQ_HEADER = "kinvoke.dlq."
# Protobuf fields holding a time in ms since the epoch (Sleep's wake-up, OneWayCall's invoke_time).
_PROTO_TIMES = {"wake_up_time", "invoke_time"}
# Avro fields holding bytes that are whole service-protocol frames.
_FRAME_FIELDS = {"frame", "new_entries"}


class InspectError(Exception):
    """Why a debugging command cannot do what it was asked, in one line for the terminal."""


# -- values for humans ----------------------------------------------------------------------------


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC with milliseconds (None and 0 stay None)."""
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def content(raw: bytes) -> Any:
    """A payload: its JSON value if it is JSON, its text if it is UTF-8, else `{"base64": …}`."""
    if not raw:
        return ""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _is_time(name: str) -> bool:
    return name.endswith("_at_ms") or name == "timestamp_ms"


def _time_name(name: str) -> str:
    return name.removesuffix("_ms")


def humanize(value: Any, name: str = "") -> Any:
    """An Avro datum (as `codec.decode` returns it) as plain JSON-able values: union branches
    become `{"type": ShortName, …}`, bytes become `content()` (journal frames are decoded),
    `*_at_ms` fields become ISO times named without `_ms`."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
        return {"type": value[0].rsplit(".", 1)[-1], **humanize(value[1])}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if _is_time(k) and (v is None or isinstance(v, int)):
                out[_time_name(k)] = iso(v)
            else:
                out[k] = humanize(v, k)
        return out
    if isinstance(value, list):
        return [humanize(v, name) for v in value]
    if isinstance(value, bytes):
        if name in _FRAME_FIELDS:
            return decode_frame(value)
        return content(value)
    return value


def message_name(ty: int) -> str:
    """`INPUT_COMMAND` → `InputCommand`; unknown types as hex."""
    frame = Frame(ty, 0, b"")
    if frame.name.startswith("0x"):
        return frame.name
    return "".join(part.capitalize() for part in frame.name.split("_"))


def decode_frame(raw: bytes) -> dict[str, Any]:
    """A journal entry (one service-protocol frame) as `{"type": "RunCommand", <fields>}`."""
    try:
        frame = Frame.parse(raw)
        message = decode_message(frame)
    except ProtocolViolation as e:
        return {"type": "undecodable", "error": str(e), "raw": content(raw)}
    return {"type": message_name(frame.type), **_proto(message)}


def _proto(message: Any) -> dict[str, Any]:
    return {fd.name: _proto_field(fd, v) for fd, v in message.ListFields()}


def _proto_field(fd: FieldDescriptor, value: Any) -> Any:
    if fd.is_repeated:
        items = [_proto_scalar(fd, v) for v in value]
        if fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.name == "Header":
            names = [h.get("key") for h in items]
            if len(set(names)) == len(names):  # headers as {name: value} when names are unique
                return {h.get("key"): h.get("value", "") for h in items}
        return items
    return _proto_scalar(fd, value)


def _proto_scalar(fd: FieldDescriptor, value: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        kind = fd.message_type.name
        if kind == "Value":
            return content(value.content)
        if kind == "Void":
            return None
        if kind == "StateKeys":
            return [content(k) for k in value.keys]
        return _proto(value)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return content(value)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return fd.enum_type.values_by_number[value].name if value in fd.enum_type.values_by_number else value
    if fd.name in _PROTO_TIMES:
        return iso(value)
    return value


def decode_value(raw: bytes, schemas: WriterSchemas | None = None) -> tuple[str, Any]:
    """Any kinvoke record value: (what it is, its humanized content). A command is named by its
    body (`Invoke`, `AttemptEnded`, …) with the command's timestamp inside. A command in the
    Schema Registry wire format is decoded with the writer schema from `schemas`."""
    if codec.framing_of(raw) == "confluent":
        name, datum = Command.avro_name, _decode_confluent(raw, schemas)
    else:
        name = codec.schema_name_of(raw)
        datum = codec.decode(name, raw)
    if name == Command.avro_name:
        body_name, body = datum["body"]
        return body_name.rsplit(".", 1)[-1], {"timestamp": iso(datum["timestamp_ms"]), **humanize(body)}
    return name.rsplit(".", 1)[-1], humanize(datum)


def _decode_confluent(raw: bytes, schemas: WriterSchemas | None) -> dict[str, Any]:
    schema_id = codec.confluent_schema_id(raw)
    if schemas is None:
        raise codec.DecodeError(
            f"Schema Registry wire format (schema id {schema_id}): decoded with KINVOKE_SCHEMA_REGISTRY_URL"
        )
    try:
        writer = schemas.get(schema_id)
    except (UnknownSchema, RegistryUnavailable) as e:
        raise codec.DecodeError(str(e)) from e
    return codec.decode_resolved(Command.avro_name, writer, raw[codec.CONFLUENT_HEADER :])


# -- records ----------------------------------------------------------------------------------


@dataclass
class HumanRecord:
    """One record of a kinvoke topic, decoded: what `kinvoke topics tail` prints."""

    topic: str
    partition: int
    offset: int
    timestamp: str | None
    key: str | None
    kind: str  # the value's record name (`Invoke`, `InvocationStatus`, …), `tombstone`, `undecodable`
    value: Any
    headers: dict[str, str] = field(default_factory=dict)
    dlq: dict[str, str] = field(default_factory=dict)  # the `kinvoke.dlq.*` headers, without prefix

    def to_json(self) -> dict[str, Any]:
        out = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": self.timestamp,
            "key": self.key,
            "kind": self.kind,
            "value": self.value,
        }
        if self.headers:
            out["headers"] = self.headers
        if self.dlq:
            out["dlq"] = self.dlq
        return out

    def render(self) -> str:
        """One line (a small block for dead letters), without the unset fields."""
        value = "" if self.value is None else " " + json.dumps(compact(self.value), ensure_ascii=False)
        line = (
            f"{self.topic}[{self.partition}]@{self.offset} {self.timestamp or '-'} key={self.key} {self.kind}"
        )
        lines = [line + value]
        if self.dlq:
            reason = self.dlq.get("reason", "?")
            d = self.dlq
            origin = f"{d.get('topic', '?')}[{d.get('partition', '?')}]@{d.get('offset', '?')}"
            lines.append(f"    dead-lettered from {origin}: {reason}")
        if self.headers:
            lines.append(f"    headers {json.dumps(self.headers, ensure_ascii=False)}")
        return "\n".join(lines)


def compact(value: Any) -> Any:
    """For one line: unset fields (None, empty) left out; a text of several lines (a stack
    trace) shortened to its last line."""
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if isinstance(value, str) and "\n" in value.strip():
        lines = [ln for ln in value.splitlines() if ln.strip()]
        return f"… ({len(lines) - 1} lines) {lines[-1].strip()}"
    return value


def _key(kind: str, raw: bytes | None) -> str | None:
    if raw is None:
        return None
    if kind in ("commands", "commands.dlq") and len(raw) == 8:
        return f"0x{raw.hex()}"  # the 8-byte partition key (schemas/partitioner.py)
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return f"0x{raw.hex()}"


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def human_record(
    kind: str,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    schemas: WriterSchemas | None = None,
) -> HumanRecord:
    """Decode one record of the kinvoke topic `kind` (one of TOPIC_KINDS)."""
    plain: dict[str, str] = {}
    dlq: dict[str, str] = {}
    for name, v in headers or []:
        if name.startswith(DLQ_HEADER):
            dlq[name.removeprefix(DLQ_HEADER)] = _text(v)
        else:
            plain[name] = _text(v)
    if value is None:
        what, decoded = "tombstone", None
    else:
        try:
            what, decoded = decode_value(value, schemas)
        except codec.DecodeError as e:
            what, decoded = "undecodable", {"error": str(e), "raw": content(value)}
    return HumanRecord(
        topic, partition, offset, iso(timestamp_ms), _key(kind, key), what, decoded, plain, dlq
    )


# -- Kafka, quietly -------------------------------------------------------------------------------


class _QuietLogger:
    """librdkafka's own log lines are dropped: these tools report problems in one line."""

    def log(self, level: int, fmt: str, *args: Any) -> None:
        pass


def quiet_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Without librdkafka's log, and never creating a topic it asks about (a broker with
    auto.create.topics.enable would create a mistyped one for a producer-type client)."""
    return client_config(settings, **{"logger": _QuietLogger(), "allow.auto.create.topics": False, **extra})


def check_reachable(settings: Settings, timeout_s: float = 3.0) -> None:
    """Raises InspectError unless some bootstrap server accepts a TCP connection: librdkafka
    would otherwise retry silently until its timeout and end with a less telling error."""
    errors = []
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as e:
            errors.append(f"{server.strip()}: {e.strerror if isinstance(e, OSError) and e.strerror else e}")
    why = errors[0].split(": ", 1)[-1] if len(errors) == 1 else "; ".join(errors)
    raise InspectError(
        f"cannot reach Kafka at {settings.bootstrap_servers} (KINVOKE_BOOTSTRAP_SERVERS): {why}"
    )


def kafka_message(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return f"{err.name()}: {err.str()}"
    return str(exc)


def partition_count(settings: Settings, topic: str, timeout_s: float = 10.0) -> int:
    """The partitions of `topic`, or InspectError (broker unreachable, no such topic)."""
    check_reachable(settings)
    admin = AdminClient(quiet_config(settings))
    try:
        meta = admin.list_topics(timeout=timeout_s)  # all topics: asking for one may create it
    except KafkaException as e:
        raise InspectError(
            f"cannot read the metadata of {topic} from {settings.bootstrap_servers}: {kafka_message(e)}"
        ) from None
    found = meta.topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise InspectError(
            f"no topic {topic} on {settings.bootstrap_servers} (is KINVOKE_TOPIC_PREFIX="
            f"{settings.topic_prefix!r} right? `kinvoke topics create` creates them)"
        )
    return len(found.partitions)


def check_partitions(topic: str, count: int, partitions: list[int]) -> None:
    bad = [p for p in partitions if not 0 <= p < count]
    if bad:
        raise InspectError(
            f"topic {topic} has {count} partition{'s' if count != 1 else ''} (0-{count - 1}): "
            f"no partition {', '.join(map(str, bad))}"
        )


def resolve_topic(settings: Settings, name: str) -> tuple[str, str]:
    """(kind, full name) of `name`, given as `commands` or with its prefix (`kinvoke.commands`)."""
    prefix = settings.topic_prefix + "."
    kind = name.removeprefix(prefix) if name.startswith(prefix) else name
    if kind not in TOPIC_KINDS:
        raise InspectError(
            f"unknown kinvoke topic {name!r}: expected one of {', '.join(TOPIC_KINDS)} "
            f"(or with the prefix, e.g. {prefix}commands)"
        )
    return kind, f"{settings.topic_prefix}.{kind}"


@dataclass
class TailOptions:
    partitions: list[int] | None = None  # None: all
    from_beginning: bool = False
    last: int = 10  # without from_beginning: start this many offsets before each partition's end
    max_records: int | None = None
    follow: bool = False
    timeout_s: float = 60.0  # without follow: a bound on reaching the end


def tail(
    settings: Settings, name: str, options: TailOptions, stop: Callable[[], bool] = lambda: False
) -> Iterator[HumanRecord]:
    """The decoded records of a kinvoke topic (read_committed, as the processors read it), in
    offset order per partition: all of them, or the last `options.last` of each partition; ends
    at the partitions' ends unless `follow` (then when `stop()` says so)."""
    kind, topic = resolve_topic(settings, name)
    count = partition_count(settings, topic)
    partitions = options.partitions if options.partitions is not None else list(range(count))
    check_partitions(topic, count, partitions)
    extra: dict[str, Any] = {
        "enable.partition.eof": True,
        "logger": _QuietLogger(),
        "allow.auto.create.topics": False,
    }
    registry = client_from_settings(settings)
    schemas = WriterSchemas(registry) if registry is not None else None
    with tail_consumer(settings, f"{settings.topic_prefix}-inspect", **extra) as consumer:
        assignment = []
        ends: dict[int, int] = {}  # partition -> its end when we started
        for p in partitions:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10.0, cached=False
                )
            except KafkaException as e:
                raise InspectError(f"cannot read the offsets of {topic}[{p}]: {kafka_message(e)}") from None
            # Transaction markers take offsets too (one per transaction and partition): going back
            # twice as far finds the last N records unless most transactions were aborted.
            start = low if options.from_beginning else max(low, high - 2 * options.last)
            assignment.append(TopicPartition(topic, p, start))
            if high > start:
                ends[p] = high
        consumer.assign(assignment)
        # Without from_beginning, a partition's records up to its end are held back until the
        # end is reached, and only the last `options.last` of them are shown.
        held: dict[int, deque[HumanRecord]] = {
            p: deque(maxlen=options.last) for p in ends if not options.from_beginning
        }
        pending = set(ends)
        deadline = time.monotonic() + options.timeout_s
        out = _Counted(options.max_records)
        while (pending or options.follow) and not stop() and not out.full:
            if not options.follow and time.monotonic() > deadline:
                raise InspectError(
                    f"reading {topic} partitions {sorted(pending)} to their end took over "
                    f"{options.timeout_s:.0f}s"
                )
            for msg in poll_batch(consumer, 0.2, 500):
                err = msg.error()
                partition = msg.partition() or 0
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise InspectError(f"reading {topic}: {err.name()}: {err.str()}")
                    pending.discard(partition)
                    yield from out.take(held.pop(partition, ()))
                    continue
                record = _from_message(kind, msg, schemas)
                if partition in held and record.offset < ends[partition]:
                    held[partition].append(record)
                    continue
                yield from out.take(held.pop(partition, ()))
                yield from out.take([record])
                if out.full:
                    return


@dataclass
class _Counted:
    """Passes records on until `limit` (None: no limit) have gone."""

    limit: int | None
    seen: int = 0

    @property
    def full(self) -> bool:
        return self.limit is not None and self.seen >= self.limit

    def take(self, records: Iterable[HumanRecord]) -> Iterator[HumanRecord]:
        for record in records:
            if self.full:
                return
            self.seen += 1
            yield record


def _from_message(kind: str, msg: Message, schemas: WriterSchemas | None = None) -> HumanRecord:
    _, ts = msg.timestamp()
    headers = msg.headers() or []
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    return human_record(
        kind,
        msg.topic() or "",
        msg.partition() or 0,
        msg.offset() or 0,
        ts if ts and ts > 0 else None,
        msg.key(),
        msg.value(),
        pairs,
        schemas,
    )


# -- consumer groups --------------------------------------------------------------------------


def quiet_admin(settings: Settings) -> AdminClient:
    return AdminClient(quiet_config(settings))


def group_partitions(admin: AdminClient, group: str, topic: str, timeout_s: float = 2.0) -> set[int] | None:
    """The partitions of `topic` assigned in `group` while it is stable, None while it is not
    (rebalancing, empty, or the broker did not answer in time)."""
    with contextlib.suppress(KafkaException, TimeoutError, ValueError):
        futures = admin.describe_consumer_groups([group], request_timeout=timeout_s)
        description = futures[group].result(timeout_s)
        if description.state != ConsumerGroupState.STABLE:
            return None
        return {
            tp.partition
            for member in description.members
            for tp in (member.assignment.topic_partitions if member.assignment else [])
            if tp.topic == topic
        }
    return None
