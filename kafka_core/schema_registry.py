"""Writer schemas of commands in the Confluent Schema Registry wire format, fetched by id.

confluent-kafka's `SchemaRegistryClient` speaks the registry's REST API (URLs, basic auth, TLS);
this keeps what the processor needs on top: schemas parsed once per id, and the registry's
answers sorted into the two that matter for a record — the id is unknown for good (404, or not
an Avro schema: dead-letter it) or the registry cannot answer now (unreachable, timed out, 5xx,
refused our credentials: keep the record and ask again later, with backoff, so an outage costs
no record and no hot loop against a registry that is down).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from schemas import codec
from schemas.settings import Settings

log = structlog.get_logger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


class UnknownSchema(Exception):
    """The registry answered: this id names no Avro schema. Records carrying it never decode."""


class RegistryUnavailable(Exception):
    """The registry gave no answer to go by now; the record must wait, not be dropped."""


class _Client(Protocol):
    """What of `SchemaRegistryClient` is used (a fake in unit tests)."""

    def get_schema(self, schema_id: int) -> Any: ...

    def get_version(self, subject_name: str, version: int) -> Any: ...


def client_from_settings(settings: Settings) -> _Client | None:
    """confluent-kafka's client for `settings.schema_registry_url`, or None when it is unset."""
    if not settings.schema_registry_url:
        return None
    with warnings.catch_warnings():  # authlib warns at import about httpx vs httpx2
        warnings.simplefilter("ignore")
        from confluent_kafka.schema_registry import SchemaRegistryClient
    conf: dict[str, Any] = {
        "url": settings.schema_registry_url,
        "timeout": settings.schema_registry_timeout_s,
        # The processor retries with its own backoff (the loop must not sleep in the client).
        "max.retries": 0,
    }
    if settings.schema_registry_ssl_ca_location:
        conf["ssl.ca.location"] = settings.schema_registry_ssl_ca_location
    if settings.schema_registry_username is not None:
        password = settings.schema_registry_password
        secret = password.get_secret_value() if password is not None else ""
        conf["basic.auth.user.info"] = f"{settings.schema_registry_username}:{secret}"
    return SchemaRegistryClient(conf)


class WriterSchemas:
    """Parsed writer schemas by id (an id's schema never changes in a registry, so they are kept)."""

    def __init__(self, client: _Client, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._parsed: dict[int, Any] = {}
        self._down_until = 0.0
        self._backoff_s = BACKOFF_FIRST_S

    def cached(self, schema_id: int) -> Any | None:
        return self._parsed.get(schema_id)

    def get(self, schema_id: int) -> Any:
        """The parsed writer schema; UnknownSchema or RegistryUnavailable (at once while backing off)."""
        found = self._parsed.get(schema_id)
        if found is not None:
            return found
        now = self._clock()
        if now < self._down_until:
            raise RegistryUnavailable(
                f"schema registry unavailable, next try in {self._down_until - now:.1f}s"
            )
        try:
            parsed = self._fetch(schema_id)
        except RegistryUnavailable as e:
            self._down_until = now + self._backoff_s
            log.warning(
                "schema_registry.unavailable", schema_id=schema_id, error=str(e), retry_s=self._backoff_s
            )
            self._backoff_s = min(self._backoff_s * 2, BACKOFF_MAX_S)
            raise
        self._backoff_s = BACKOFF_FIRST_S
        self._parsed[schema_id] = parsed
        log.info("schema_registry.schema_fetched", schema_id=schema_id)
        return parsed

    def _fetch(self, schema_id: int) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            found = self._client.get_schema(schema_id)
            references = {
                ref.name: self._client.get_version(ref.subject, ref.version).schema.schema_str
                for ref in found.references or []
            }
        except SchemaRegistryError as e:
            if e.http_status_code == 404:
                raise UnknownSchema(
                    f"schema id {schema_id} is not in the schema registry ({e.error_message})"
                ) from e
            raise RegistryUnavailable(
                f"schema registry answered {e.http_status_code}: {e.error_message}"
            ) from e
        except Exception as e:  # refused, timed out, TLS: the client raises its HTTP library's errors
            raise RegistryUnavailable(f"schema registry unreachable: {e!r}") from e
        if (found.schema_type or "AVRO") != "AVRO":
            raise UnknownSchema(f"schema id {schema_id} is a {found.schema_type} schema, not Avro")
        try:
            return codec.parse_writer_schema(found.schema_str, references)
        except codec.DecodeError as e:
            raise UnknownSchema(f"schema id {schema_id}: {e}") from e
