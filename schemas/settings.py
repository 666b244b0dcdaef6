"""Settings shared by every kinvoke process, read from `KINVOKE_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    processor_session_timeout_ms: int = Field(
        default=10_000, description="how long a processor that died keeps its partitions (session.timeout.ms)"
    )
    processor_transaction_timeout_ms: int = Field(
        default=10_000,
        description="transaction.timeout.ms: a crashed processor's open transaction blocks readers of "
        "its partitions until the coordinator aborts it, so keep it short (as Kafka Streams does)",
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

    @property
    def processor_group(self) -> str:
        return self.processor_group_id or f"{self.topic_prefix}-processor"

    def ingress_url(self) -> str:
        return self.ingress_advertised_url or f"http://{self.ingress_host}:{self.ingress_port}/"
