"""Settings shared by every kinvoke process, read from `KINVOKE_*` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from schemas.topics import Topics

ENV_PREFIX = "KINVOKE_"
# `KINVOKE_KAFKA_SASL_USERNAME=alice` is librdkafka's `sasl.username=alice` for every client.
KAFKA_ENV_PREFIX = f"{ENV_PREFIX}KAFKA_"
# Shown instead of a secret wherever a configuration is printed or logged.
REDACTED = "***"
_SECRET = re.compile(r"password|secret|jaas|oauthbearer\.config|\.pem$|credential", re.IGNORECASE)
# What `topic_configs` may name: topic names without the prefix, or "*" for all of them.
TOPIC_KINDS = tuple(spec.name.removeprefix("_.") for spec in Topics("_").specs(1))
# kinvoke depends on these: compaction of the changelog and the registry, retention of the log;
# the changelog's delete.retention.ms has its own setting (local copies are checked against it).
_FIXED_TOPIC_CONFIG = {
    "cleanup.policy": "*",
    "delete.retention.ms": "changelog",
    "max.message.bytes": "*",
}
# Restate takes request bodies up to 32 MiB; the Invoke record holding one also carries its
# headers (up to 408 KiB) and the target, so the default leaves 1 MiB over the body.
DEFAULT_MAX_RECORD_BYTES = 33 * 1024 * 1024
# Kafka checks a topic's max.message.bytes against a whole record batch: the record plus the
# batch's and the record's framing (tens of bytes), with room to spare.
RECORD_BATCH_OVERHEAD = 64 * 1024
# Client properties that KINVOKE_MAX_RECORD_BYTES sets (one setting, not two that can disagree).
_SIZE_PROPERTIES = ("message.max.bytes",)


def topic_max_message_bytes(max_record_bytes: int) -> int:
    """The topic (and broker) limit that lets a record of `max_record_bytes` through."""
    return max_record_bytes + RECORD_BATCH_OVERHEAD


def is_secret(name: str) -> bool:
    """Whether a client property holds a secret (passwords, JAAS, PEM keys, OAuth secrets)."""
    return bool(_SECRET.search(name))


def redacted(props: Mapping[str, Any]) -> dict[str, Any]:
    """`props` with every secret value replaced by `***`, for logs and error messages."""
    return {k: REDACTED if is_secret(k) else v for k, v in props.items()}


def parse_properties(text: str) -> dict[str, str]:
    """A Java `.properties` file (what Kafka's own tools read with `--command-config`): `key=value`,
    `key: value` or `key value`, `#`/`!` comments, lines continued by a trailing backslash,
    backslash escapes (`\\n`, `\\t`, `\\uXXXX`, an escaped `=`/`:`/space)."""
    props: dict[str, str] = {}
    for logical in _logical_lines(text.splitlines()):
        key, value = _split_property(logical)
        props[_unescape(key)] = _unescape(value)
    return props


def _logical_lines(lines: Iterable[str]) -> Iterator[str]:
    current: str | None = None
    for raw in lines:
        line = raw.lstrip()
        if current is None and (not line or line[0] in "#!"):
            continue
        line = line if current is None else current + line
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd number of backslashes: the line goes on
            current = line[:-1]
            continue
        current = None
        yield line
    if current is not None:
        yield current


def _split_property(line: str) -> tuple[str, str]:
    i, escaped = 0, False
    while i < len(line):
        c = line[i]
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c in "=: \t\f":
            break
        i += 1
    key, rest = line[:i], line[i:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


def _unescape(s: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[i + 2 : i + 6]):
                out.append(chr(int(s[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(n, n))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _from_jaas(jaas: str) -> dict[str, str]:
    """`sasl.username`/`sasl.password` from a Java client's `sasl.jaas.config` (PLAIN or SCRAM
    login module): librdkafka has no JAAS, so a company's Java client file works as it is."""
    found = dict(re.findall(r'(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"', jaas))
    return {f"sasl.{k}": re.sub(r"\\(.)", r"\1", v) for k, v in found.items()}


class _KafkaEnvProperties(PydanticBaseSettingsSource):
    """`KINVOKE_KAFKA_<PROPERTY>` variables as librdkafka properties: the name after the prefix in
    lower case, `_` read as `.` (`KINVOKE_KAFKA_SSL_CA_LOCATION` → `ssl.ca.location`); kinvoke's
    own `KINVOKE_KAFKA_*` settings are not properties."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        own = {f"{ENV_PREFIX}{name.upper()}" for name in self.settings_cls.model_fields}
        props = {
            name.upper().removeprefix(KAFKA_ENV_PREFIX).lower().replace("_", "."): value
            for name, value in os.environ.items()
            if name.upper().startswith(KAFKA_ENV_PREFIX) and name.upper() not in own
        }
        return {"kafka_properties": props} if props else {}


class Settings(BaseSettings):
    """Defaults work for a local `kinvoke dev` on one machine."""

    model_config = SettingsConfigDict(env_prefix="KINVOKE_", extra="ignore")

    # Every field has a description: `kinvoke <command> --help` lists the KINVOKE_* variables a
    # command reads from them (kinvoke/settings_help.py).
    bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Kafka bootstrap servers (host:port, comma-separated)"
    )
    topic_prefix: str = Field(
        default="kinvoke", description="prefix of kinvoke's topics ({prefix}.commands, {prefix}.changelog, …)"
    )
    partitions: int = Field(
        default=8,
        ge=1,
        description="partitions of `commands` and the changelog (fixed when the topics are created)",
    )
    replication_factor: int = Field(default=1, description="replication factor of the topics kinvoke creates")
    topic_configs: dict[str, dict[str, str]] = Field(
        default={},
        description="topic configs for the topics kinvoke creates, over its own, as JSON by topic name "
        'without prefix or "*" for all: {"*": {"min.insync.replicas": "2"}, "commands": '
        '{"retention.ms": "604800000"}}; cleanup.policy is kinvoke\'s',
    )
    max_record_bytes: int = Field(
        default=DEFAULT_MAX_RECORD_BYTES,
        ge=1024 * 1024,
        description="the largest Kafka record kinvoke writes (librdkafka message.max.bytes of every "
        "client); the topics kinvoke creates get max.message.bytes a little above it, and existing "
        "ones with less are raised at `kinvoke topics create`/`kinvoke dev` start-up; the default takes "
        "Restate's 32 MiB request bodies; a broker caps other topics at its message.max.bytes",
    )
    kafka_config_file: str | None = Field(
        default=None,
        description="a .properties file of librdkafka client properties for every Kafka client "
        "(security.protocol, sasl.*, ssl.*; a Java client's sasl.jaas.config is read for its username "
        "and password); KINVOKE_KAFKA_PROPERTIES and KINVOKE_KAFKA_<PROPERTY> variables win over it",
    )
    kafka_properties: dict[str, str] = Field(
        default={},
        description="librdkafka client properties for every Kafka client, as JSON; a "
        "KINVOKE_KAFKA_<PROPERTY> variable adds one (KINVOKE_KAFKA_SASL_PASSWORD is sasl.password) and "
        "wins; secrets are shown as ***",
    )

    schema_registry_url: str | None = Field(
        default=None,
        description="a Confluent-compatible Schema Registry (comma-separated URLs): commands produced "
        "directly in its wire format (0x00, 4-byte schema id, Avro) are read with the writer schema "
        "it gives for the id; unset, such records are dead-lettered",
    )
    schema_registry_username: str | None = Field(
        default=None, description="HTTP basic auth user for the schema registry"
    )
    schema_registry_password: SecretStr | None = Field(
        default=None, description="HTTP basic auth password for the schema registry (shown as ***)"
    )
    schema_registry_ssl_ca_location: str | None = Field(
        default=None,
        description="CA certificate file (PEM) for an https schema registry; unset: the system's",
    )
    schema_registry_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="bound on one schema registry request; a registry that does not answer holds the "
        "records that need it (retried with backoff), it never drops them",
    )

    admin_host: str = Field(default="127.0.0.1", description="address the admin API listens on")
    admin_port: int = Field(default=9070, description="port of the admin API")
    ingress_host: str = Field(default="127.0.0.1", description="address the HTTP ingress listens on")
    ingress_port: int = Field(default=8080, description="port of the HTTP ingress")
    ingress_advertised_url: str | None = Field(
        default=None,
        description="the ingress URL /version advertises (the restate CLI shows it); "
        "default http://{ingress_host}:{ingress_port}/",
    )

    processor_group_id: str | None = Field(
        default=None,
        description="the processors' consumer group; default {topic_prefix}-processor, so installations "
        "with different prefixes on one cluster never share partitions",
    )
    processor_instance_id: str | None = Field(
        default=None,
        description="static group membership (KIP-345), one id per processor: a restarted processor "
        "takes its partitions back without a rebalance; unset, a dynamic member",
    )
    processor_http_host: str = Field(
        default="127.0.0.1",
        description="address of the processor's HTTP server (/metrics, /tasks, /health)",
    )
    processor_http_port: int = Field(
        default=0,
        description="port of the processor's HTTP server; 0: one the OS chooses (logged as "
        "processor.http_listening), so several processors can share a machine",
    )
    request_identity_private_key_pem_file: str | None = Field(
        default=None,
        description="a PEM file holding one PKCS#8 Ed25519 private key: every request to a deployment "
        "(discovery, invocations) is then signed as Restate signs it (x-restate-jwt-v1), for "
        "deployments that accept only a known server; the public key (publickeyv1_…) is logged at "
        "start-up; unset, requests are unsigned",
    )
    tracing_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces): the ingress "
        "then exports a span per request that creates an invocation, the processors a span per "
        "invocation and per attempt; unset, no tracing",
    )
    tracing_service_name: str = Field(default="kinvoke", description="service.name of the exported spans")
    processor_session_timeout_ms: int = Field(
        default=10_000, description="how long a processor that died keeps its partitions (session.timeout.ms)"
    )
    processor_transaction_timeout_ms: int = Field(
        default=10_000,
        description="transaction.timeout.ms: a crashed processor's open transaction blocks readers of "
        "its partitions until the coordinator aborts it, so keep it short (as Kafka Streams does)",
    )
    processor_commit_hold_ms: int = Field(
        default=50,
        ge=0,
        description="how long the processor may keep its transaction open while attempts it started "
        "run and nothing it wrote is awaited (no answer, no command for another invocation, no "
        "timer): the attempt's outcome then commits with the invocation in one transaction "
        "instead of two; 0 commits every loop",
    )
    processor_commit_linger_ms: int = Field(
        default=10,
        ge=0,
        description="how long the processor's transaction may stay open with an answer (or a command "
        "for another invocation) in it while attempts it started still run, so their outcomes share "
        "the commit (a busy object's next invocations, calls under load); at most the hold; 0 "
        "commits what is awaited at once",
    )
    state_dir: str = Field(
        default=".kinvoke/state",
        description="local, checkpointed copies of the changelog (a cache, rebuilt from the changelog "
        "when missing); processors sharing it take separate slots",
    )
    invoker_concurrency_per_deployment: int = Field(
        default=64, ge=1, description="attempts a processor runs at once against one deployment; more wait"
    )
    # Server-wide defaults of what services and handlers may set (Restate's invoker defaults);
    # resolved into each invocation's options when it is created.
    default_retry_initial_interval_ms: int = Field(
        default=500, ge=0, description="first delay of the default retry policy"
    )
    default_retry_exponentiation_factor: float = Field(
        default=2.0, ge=1.0, description="factor between delays of the default retry policy"
    )
    default_retry_max_interval_ms: int = Field(
        default=60_000, ge=0, description="longest delay between attempts of the default retry policy"
    )
    default_retry_max_attempts: int | None = Field(
        default=70, ge=1, description="attempts before the default retry policy gives up (unset: never)"
    )
    default_retry_on_max_attempts: str = Field(
        default="Pause",
        pattern="^(Pause|Kill)$",
        description="what the default retry policy does once the attempts are used up: Pause or Kill",
    )
    default_inactivity_timeout_ms: int = Field(
        default=60_000,
        gt=0,
        description="an attempt on a bidirectional stream with no traffic for this long closes its side "
        "and the SDK suspends (Restate's inactivity timeout)",
    )
    default_abort_timeout_ms: int = Field(
        default=600_000, gt=0, description="an attempt that has not ended after this long is aborted"
    )
    default_journal_retention_ms: int = Field(
        default=24 * 3600 * 1000, ge=0, description="how long a completed invocation's journal is kept"
    )
    default_idempotency_retention_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=0,
        description="how long a completed invocation with an idempotency key (and its result) is kept",
    )
    default_workflow_completion_retention_ms: int = Field(
        default=24 * 3600 * 1000,
        ge=0,
        description="how long a completed workflow (its result, state and promises) is kept",
    )
    changelog_delete_retention_ms: int = Field(
        default=24 * 3600 * 1000,
        description="the changelog's delete.retention.ms (how long compaction keeps tombstones); a local "
        "copy older than this is discarded",
    )

    broker: str = Field(
        default="kafka",
        pattern="^(kafka|local)$",
        description="the broker `kinvoke dev` / `kinvoke broker` run: kafka (Apache Kafka from the jars "
        "./scripts/setup.sh fetched) or local (the pip-only emulator, for machines without Java)",
    )
    broker_data_dir: str | None = Field(
        default=None,
        description="the broker's data directory; default .kinvoke/kafka (Apache Kafka) or "
        ".kinvoke/broker (the emulator); `kinvoke dev` locks dev.lock next to it",
    )
    recovery_barrier: bool = Field(
        default=False,
        description="set by `kinvoke dev --broker local`: the emulator's consumer position does not "
        "advance past an aborted batch at a partition's end, so processors detect catch-up with a "
        "barrier record",
    )
    broker_port: int = Field(
        default=9092, description="port of the broker `kinvoke dev` / `kinvoke broker` start"
    )

    log_format: str = Field(
        default="auto", description="auto | console | json (auto: console on a terminal, else json)"
    )
    log_level: str = Field(default="info", description="debug | info | warning | error")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`KINVOKE_KAFKA_<PROPERTY>` variables come before `KINVOKE_KAFKA_PROPERTIES` (the more
        specific wins; dicts of the sources are merged)."""
        kafka_env = _KafkaEnvProperties(settings_cls)
        return init_settings, kafka_env, env_settings, dotenv_settings, file_secret_settings

    @field_validator("kafka_properties", mode="before")
    @classmethod
    def _property_values_as_text(cls, value: Any) -> Any:
        """JSON numbers and booleans are what librdkafka reads as text (`5`, `true`)."""
        if not isinstance(value, Mapping):
            return value
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}

    @field_validator("schema_registry_url")
    @classmethod
    def _registry_urls(cls, value: str | None) -> str | None:
        """One line at start-up instead of a failure on the first record that needs the registry."""
        if value is None or not value.strip():
            return None
        for url in value.split(","):
            if not url.strip().startswith(("http://", "https://")):
                raise ValueError(f"schema registry URL {url.strip()!r} is not http:// or https://")
        return value

    @field_validator("topic_configs")
    @classmethod
    def _known_topics(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for topic, config in value.items():
            if topic != "*" and topic not in TOPIC_KINDS:
                raise ValueError(f"unknown topic {topic!r}: expected one of {', '.join(TOPIC_KINDS)} or *")
            for name in config:
                fixed = _FIXED_TOPIC_CONFIG.get(name)
                if fixed is not None and (fixed == "*" or topic in (fixed, "*")):
                    why = (
                        "KINVOKE_MAX_RECORD_BYTES sets it"
                        if name == "max.message.bytes"
                        else "kinvoke depends on it"
                    )
                    raise ValueError(f"{name} of {topic} is not configurable ({why})")
        return value

    @model_validator(mode="after")
    def _merge_kafka_config_file(self) -> Settings:
        """The file's properties go under the others; `bootstrap.servers` from the file or the
        properties is the bootstrap unless KINVOKE_BOOTSTRAP_SERVERS is set (one place to read it)."""
        props = dict(self.kafka_properties)
        if self.kafka_config_file:
            path = Path(self.kafka_config_file)
            try:
                text = path.read_text()
            except OSError as e:
                raise ValueError(f"cannot read KINVOKE_KAFKA_CONFIG_FILE {path}: {e.strerror}") from None
            props = {**parse_properties(text), **props}
        for name in _SIZE_PROPERTIES:
            if name in props:
                raise ValueError(f"{name} is set by KINVOKE_MAX_RECORD_BYTES, not as a Kafka property")
        jaas = props.pop("sasl.jaas.config", None)
        if jaas is not None:
            props = {**_from_jaas(jaas), **props}
        legacy = props.pop("metadata.broker.list", None)
        bootstrap = props.pop("bootstrap.servers", None) or legacy
        if bootstrap and "bootstrap_servers" not in self.model_fields_set:
            self.bootstrap_servers = bootstrap
        self.kafka_properties = props
        return self

    def __repr_args__(self) -> Any:
        """Secrets of the Kafka properties are shown as `***`."""
        for name, value in super().__repr_args__():
            yield name, redacted(value) if name == "kafka_properties" else value

    @property
    def processor_group(self) -> str:
        return self.processor_group_id or f"{self.topic_prefix}-processor"

    def ingress_url(self) -> str:
        return self.ingress_advertised_url or f"http://{self.ingress_host}:{self.ingress_port}/"
