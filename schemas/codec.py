"""Avro codecs for every Kafka record kinvoke writes.

Records use Avro *single-object encoding* (marker 0xC3 0x01, the schema's 8-byte CRC-64-AVRO
fingerprint little-endian, then the binary datum), so any tool replaying a topic can tell which
schema a value was written with; the `.avsc` files under `schemas/avro/` are the public contract.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from importlib.resources import files
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
_AVRO_DIR = files("schemas").joinpath("avro")


class DecodeError(ValueError):
    """A record that is not a kinvoke Avro record (or not of the expected schema)."""


@cache
def _named_schemas() -> dict[str, Any]:
    """All .avsc files parsed together, so schemas may reference each other by full name."""
    named: dict[str, Any] = {}
    pending = sorted((p for p in _AVRO_DIR.iterdir() if p.name.endswith(".avsc")), key=lambda p: p.name)
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
    raise RuntimeError(f"unresolvable Avro schemas: {[p.name for p in pending]}")


@cache
def schema(name: str) -> Any:
    """The parsed schema of a record by its full name, e.g. `kinvoke.Command`."""
    named = _named_schemas()
    if name not in named:
        raise KeyError(f"no Avro schema named {name!r}; known: {sorted(named)}")
    return parse_schema(named[name], named_schemas=dict(named))


@cache
def _fingerprint(name: str) -> bytes:
    fp_hex = fingerprint(to_parsing_canonical_form(schema(name)), "CRC-64-AVRO")
    return struct.pack("<Q", int(fp_hex, 16))


@cache
def _by_fingerprint() -> dict[bytes, str]:
    return {_fingerprint(n): n for n in _named_schemas() if _named_schemas()[n].get("type") == "record"}


def encode(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MAGIC)
    buf.write(_fingerprint(name))
    fastavro.schemaless_writer(buf, schema(name), record)
    return buf.getvalue()


def schema_name_of(data: bytes) -> str:
    if len(data) < 10 or data[:2] != MAGIC:
        raise DecodeError("not an Avro single-object encoded record (missing 0xC3 0x01 marker)")
    name = _by_fingerprint().get(data[2:10])
    if name is None:
        raise DecodeError(f"unknown Avro schema fingerprint {data[2:10].hex()}")
    return name


def decode(name: str, data: bytes) -> dict[str, Any]:
    """Union branches that are records come back as `(full name, dict)` tuples."""
    found = schema_name_of(data)
    if found != name:
        raise DecodeError(f"expected a {name} record, got {found}")
    try:
        datum = fastavro.schemaless_reader(
            io.BytesIO(data[10:]),
            schema(name),
            None,
            return_record_name=True,
            return_record_name_override=True,
        )
    except Exception as e:  # fastavro raises several types on truncated/garbage input
        raise DecodeError(f"undecodable {name} record: {e}") from e
    if not isinstance(datum, dict):
        raise DecodeError(f"undecodable {name} record: not a record")
    return datum
