"""Commands of either framing, decoded before the state machine sees them.

kinvoke's own records (single-object encoding, `C3 01` …) carry their schema's fingerprint and
decode offline. Records in the Confluent Schema Registry wire format (`00` + schema id) need the
writer schema from the registry: `prefetch` fetches what a batch needs *before* its transaction
opens, so applying the batch (`decode`) does no I/O and an unreachable registry holds records
back instead of failing or dropping them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kafka_core.schema_registry import RegistryUnavailable, UnknownSchema, WriterSchemas, client_from_settings
from schemas import codec
from schemas.records import Command
from schemas.settings import Settings


class _Record(Protocol):
    def value(self) -> bytes | None: ...


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def value(self) -> bytes | None:
        return self.data


class CommandDecoder:
    def __init__(self, schemas: WriterSchemas | None) -> None:
        self.schemas = schemas
        self._unknown: dict[int, str] = {}  # ids the registry refused since `new_batch`

    def new_batch(self) -> None:
        """Ask the registry again about ids it refused (an id may be registered since)."""
        self._unknown.clear()

    def prefetch(self, records: Sequence[_Record]) -> int | None:
        """Fetch the writer schemas `records` need, in order. Returns the index of the first record
        whose schema the registry could not give now (it and those after it must wait), or None."""
        if self.schemas is None:
            return None
        for i, record in enumerate(records):
            data = record.value() or b""
            if codec.framing_of(data) != "confluent":
                continue
            schema_id = codec.confluent_schema_id(data)
            if self.schemas.cached(schema_id) is not None or schema_id in self._unknown:
                continue
            try:
                self.schemas.get(schema_id)
            except UnknownSchema as e:
                self._unknown[schema_id] = str(e)
            except RegistryUnavailable:
                return i
        return None

    def decode(self, data: bytes) -> Command:
        """A Command of either framing; codec.DecodeError (the reason to dead-letter it) otherwise.
        Confluent-framed records need their schema prefetched (no I/O here)."""
        if codec.framing_of(data) != "confluent":
            return Command.decode(data)
        schema_id = codec.confluent_schema_id(data)
        if self.schemas is None:
            raise codec.DecodeError(
                f"Confluent Schema Registry framing (schema id {schema_id}) but no schema registry is "
                "configured (KINVOKE_SCHEMA_REGISTRY_URL)"
            )
        if schema_id in self._unknown:
            raise codec.DecodeError(self._unknown[schema_id])
        writer = self.schemas.cached(schema_id)
        if writer is None:  # a bug: prefetch holds back what it could not fetch
            raise RuntimeError(f"schema id {schema_id} was not prefetched")
        return Command.from_avro(
            codec.decode_resolved(Command.avro_name, writer, data[codec.CONFLUENT_HEADER :])
        )

    def decode_fetching(self, data: bytes) -> Command:
        """For tools reading the log (replay): fetch the schema when needed, then decode. A
        registry that cannot answer raises RegistryUnavailable: a replay that skipped the record
        would not be the processor's."""
        if self.prefetch([_Raw(data)]) is not None:
            raise RegistryUnavailable(
                f"schema id {codec.confluent_schema_id(data)}: the schema registry cannot be reached"
            )
        return self.decode(data)


def decoder_for(settings: Settings) -> CommandDecoder:
    """The decoder of `settings`: with the schema registry it names, if any."""
    client = client_from_settings(settings)
    return CommandDecoder(WriterSchemas(client) if client is not None else None)
