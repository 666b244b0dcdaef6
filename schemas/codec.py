"""Avro codecs for every Kafka record kinvoke writes.

Records use Avro *single-object encoding* (marker 0xC3 0x01, the schema's 8-byte CRC-64-AVRO
fingerprint little-endian, then the binary datum), so any tool replaying a topic can tell which
schema a value was written with; the `.avsc` files under `schemas/avro/` are the public contract.

Commands produced directly may instead use the Confluent Schema Registry wire format (0x00, a
4-byte big-endian schema id, the binary datum): its first byte can never start a kinvoke record,
so `framing_of` tells the two apart from the first byte. Fetching the writer schema by id is I/O
and lives below the processor (`kafka_core/schema_registry.py`); resolving the datum into the
current schema is here (`decode_resolved`).
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = 0x00
CONFLUENT_HEADER = 5  # magic byte + 4-byte big-endian schema id
_AVRO_DIR = files("schemas").joinpath("avro")


class DecodeError(ValueError):
    """A record that is not a kinvoke Avro record (or not of the expected schema)."""


def _parse_dir(folder: Traversable) -> dict[str, Any]:
    """All .avsc files of `folder` parsed together (schemas reference each other by full name)."""
    named: dict[str, Any] = {}
    pending = sorted((p for p in folder.iterdir() if p.name.endswith(".avsc")), key=lambda p: p.name)
    # Resolve references by retrying files whose dependencies are not parsed yet.
    for _ in range(len(pending) + 1):
        left = []
        for path in pending:
            try:
                parse_schema(json.loads(path.read_text()), named_schemas=named)
            except fastavro.schema.UnknownType:
                left.append(path)
        if not left:
            return named
        pending = left
    raise RuntimeError(f"unresolvable Avro schemas in {folder}: {[p.name for p in pending]}")


@cache
def _named_schemas() -> dict[str, Any]:
    """The current schemas: what kinvoke writes and reads into."""
    return _parse_dir(_AVRO_DIR)


def named_schemas() -> dict[str, Any]:
    """The current schemas by full name, parsed (a copy)."""
    return dict(_named_schemas())


@cache
def schema(name: str) -> Any:
    """The parsed schema of a record by its full name, e.g. `kinvoke.Command`."""
    return _record_schema(_named_schemas(), name)


def _record_schema(named: dict[str, Any], name: str) -> Any:
    if name not in named:
        raise KeyError(f"no Avro schema named {name!r}; known: {sorted(named)}")
    return parse_schema(named[name], named_schemas=dict(named))


def _fingerprint_of(parsed: Any) -> bytes:
    fp_hex = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    return struct.pack("<Q", int(fp_hex, 16))


@cache
def _fingerprint(name: str) -> bytes:
    return _fingerprint_of(schema(name))


@cache
def _writers() -> dict[bytes, tuple[str, Any]]:
    """Every record schema kinvoke has written with, by fingerprint: the current ones and those
    of every release (`avro/released/<version>/`), so a record written by an older kinvoke is
    read with the schema it was written with and resolved into the current one."""
    out: dict[bytes, tuple[str, Any]] = {}
    released = _AVRO_DIR.joinpath("released")
    folders = (
        sorted((d for d in released.iterdir() if d.is_dir()), key=lambda d: d.name)
        if released.is_dir()
        else []
    )
    for folder in folders:
        named = _parse_dir(folder)
        for name, definition in named.items():
            if definition.get("type") == "record":
                parsed = _record_schema(named, name)
                out[_fingerprint_of(parsed)] = (name, parsed)
    for name, definition in _named_schemas().items():
        if definition.get("type") == "record":
            out[_fingerprint(name)] = (name, schema(name))  # the reader itself: no resolution needed
    return out


@cache
def header(name: str) -> bytes:
    """What every record of schema `name` starts with: the marker and the schema's fingerprint."""
    return MAGIC + _fingerprint(name)


def encode(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(_fingerprint(name))
    fastavro.schemaless_writer(buf, schema(name), record)
    return buf.getvalue()


def _writer_of(data: bytes) -> tuple[str, Any]:
    if len(data) < 10 or data[:2] != MAGIC:
        raise DecodeError("not an Avro single-object encoded record (missing 0xC3 0x01 marker)")
    found = _writers().get(data[2:10])
    if found is None:
        raise DecodeError(f"unknown Avro schema fingerprint {data[2:10].hex()}")
    return found


def schema_name_of(data: bytes) -> str:
    return _writer_of(data)[0]


def decode(name: str, data: bytes) -> dict[str, Any]:
    """Union branches that are records come back as `(full name, dict)` tuples."""
    found, writer = _writer_of(data)
    if found != name:
        raise DecodeError(f"expected a {name} record, got {found}")
    reader = schema(name)
    try:
        datum = fastavro.schemaless_reader(
            io.BytesIO(data[10:]),
            writer,
            None if writer is reader else reader,
            return_record_name=True,
            return_record_name_override=True,
        )
    except Exception as e:  # fastavro raises several types on truncated/garbage input
        raise DecodeError(f"undecodable {name} record: {e}") from e
    if not isinstance(datum, dict):
        raise DecodeError(f"undecodable {name} record: not a record")
    return datum


def framing_of(data: bytes) -> str:
    """The framing of a record: `kinvoke` (single-object encoding, starts C3 01), `confluent`
    (Schema Registry wire format, starts 00 and a 4-byte schema id) or `unknown`."""
    if data[:2] == MAGIC:
        return "kinvoke"
    if len(data) >= CONFLUENT_HEADER and data[0] == CONFLUENT_MAGIC:
        return "confluent"
    return "unknown"


def confluent_schema_id(data: bytes) -> int:
    """The schema id of a record in the Confluent Schema Registry wire format."""
    if framing_of(data) != "confluent":
        raise DecodeError("not in the Confluent Schema Registry wire format (0x00 + 4-byte schema id)")
    return int.from_bytes(data[1:CONFLUENT_HEADER], "big")


def parse_writer_schema(text: str, references: dict[str, str] | None = None) -> Any:
    """A writer schema as a registry stores it (JSON text), with the schemas it references
    (by name, as JSON text): a DecodeError if it is not an Avro schema."""
    named: dict[str, Any] = {}
    try:
        for ref in (references or {}).values():
            parse_schema(json.loads(ref), named_schemas=named)
        parse_schema(json.loads(text), named_schemas=dict(named))  # checks it
        # Self-contained, as the reader is (see `_expanded`).
        return parse_schema(_inline(json.loads(text), named))
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as e:
        raise DecodeError(f"not an Avro schema: {e}") from e


def decode_resolved(name: str, writer: Any, payload: bytes) -> dict[str, Any]:
    """A datum written with `writer` (a schema kinvoke did not write, e.g. from a schema registry)
    read as the current schema `name` by Avro schema resolution."""
    try:
        datum = fastavro.schemaless_reader(
            io.BytesIO(payload),
            writer,
            _expanded(name),
            return_record_name=True,
            return_record_name_override=True,
        )
    except Exception as e:  # resolution errors and truncated/garbage input alike
        raise DecodeError(f"undecodable {name} record: {e}") from e
    if not isinstance(datum, dict):
        raise DecodeError(f"undecodable {name} record: not a record")
    return datum


@cache
def _expanded(name: str) -> Any:
    """The reader for foreign writers: fastavro resolves a self-contained writer only against a
    self-contained reader (named types referenced by name are not looked up across the two)."""
    return parse_schema(json.loads(schema_json(name)))


@cache
def schema_json(name: str) -> str:
    """The current schema `name` as one self-contained JSON document (every named type defined
    inline where first used): what a producer outside kinvoke registers or compiles."""
    named = _named_schemas()
    return json.dumps(_inline(named[name], named))


def _inline(definition: Any, named: dict[str, Any]) -> Any:
    """`definition` with the named types it references by name (from `named`) defined inline."""
    defined: set[str] = set()

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return walk(named[node]) if node in named and node not in defined else node
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            defined.add(node["name"])
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key.startswith("__"):
                continue  # fastavro's bookkeeping
            if key == "fields":
                out[key] = [{**f, "type": walk(f["type"])} for f in value]
            elif key in ("type", "items", "values"):
                out[key] = walk(value)
            else:
                out[key] = value
        return out

    return walk(definition)
