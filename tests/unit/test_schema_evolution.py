"""Records written by an earlier kinvoke stay readable: the schemas of every release are kept
(`schemas/avro/released/`) and a record is read with the schema it was written with, resolved
into the current one (Avro schema resolution)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.schema import parse_schema

from schemas import codec
from schemas.records import (
    Command,
    InvocationResult,
    InvocationStatus,
    Invoke,
    JournalEntry,
    ObjectStatus,
    StateEntry,
    Timer,
    TimerFired,
)
from schemas.registry import DeploymentRecord

FIXTURES = Path(__file__).parent.parent / "fixtures" / "records-0.1.0"
KINDS = {
    "command-invoke": Command,
    "command-attempt-ended": Command,
    "command-timer-fired": Command,
    "invocation-status": InvocationStatus,
    "journal-entry": JournalEntry,
    "timer": Timer,
    "invocation-result": InvocationResult,
    "object-status": ObjectStatus,
    "state-entry": StateEntry,
    "deployment": DeploymentRecord,
}


@pytest.mark.parametrize("fixture", sorted(KINDS))
def test_records_of_release_0_1_0_are_read_by_this_one(fixture: str) -> None:
    record = KINDS[fixture].decode((FIXTURES / f"{fixture}.bin").read_bytes())
    assert type(record) is KINDS[fixture]
    again = type(record).decode(record.encode())  # and written back with today's schema
    assert again == record


def test_the_fixtures_carry_their_content() -> None:
    invoke = Command.decode((FIXTURES / "command-invoke.bin").read_bytes())
    assert isinstance(invoke.body, Invoke) and invoke.body.argument == b'"Alice"'
    fired = Command.decode((FIXTURES / "command-timer-fired.bin").read_bytes())
    assert isinstance(fired.body, TimerFired) and fired.body.wake_up_at_ms == 5000


def _with_added_field(definition: Any) -> Any:
    if isinstance(definition, dict) and definition.get("type") == "record":
        fields = [*definition["fields"], {"name": "added_later", "type": ["null", "string"], "default": None}]
        return {**definition, "fields": fields}
    return definition


def test_an_optional_field_added_to_any_record_keeps_old_records_readable() -> None:
    """What a later release may do to any record: old data resolves into the grown schema."""
    named = codec._named_schemas()  # noqa: SLF001 - the current definitions
    grown = {name: _with_added_field(definition) for name, definition in named.items()}
    for name, definition in named.items():
        if definition.get("type") != "record":
            continue
        reader = parse_schema(grown[name], named_schemas=dict(grown))
        for fixture, kind in KINDS.items():
            if kind.avro_name != name:
                continue
            data = (FIXTURES / f"{fixture}.bin").read_bytes()
            _, writer = codec._writer_of(data)  # noqa: SLF001 - the schema release 0.1.0 wrote it with
            datum = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer, reader)
            assert datum["added_later"] is None


def test_released_schemas_are_shipped_and_unknown_fingerprints_refused() -> None:
    released = Path(codec.__file__).parent / "avro" / "released" / "0.1.0"
    assert sorted(p.name for p in released.glob("*.avsc")) == [
        "changelog.avsc",
        "command.avsc",
        "common.avsc",
        "metadata.avsc",
    ]
    assert all(json.loads(p.read_text()) for p in released.glob("*.avsc"))
    with pytest.raises(codec.DecodeError, match="unknown Avro schema fingerprint"):
        Command.decode(codec.MAGIC + b"\x00" * 8 + b"\x00")
