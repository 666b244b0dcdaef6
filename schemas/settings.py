"""Settings shared by every kinvoke process, read from `KINVOKE_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Defaults work for a local `kinvoke dev` on one machine."""

    model_config = SettingsConfigDict(env_prefix="KINVOKE_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "kinvoke"
    partitions: int = Field(default=8, ge=1, description="partitions of `commands` and the changelog")
    replication_factor: int = 1

    admin_host: str = "127.0.0.1"
    admin_port: int = 9070
    ingress_host: str = "127.0.0.1"
    ingress_port: int = 8080
    # What /version advertises as the ingress endpoint (the CLI shows it).
    ingress_advertised_url: str | None = None

    # The processors' consumer group; default `{topic_prefix}-processor`, so installations with
    # different prefixes on one cluster never share partitions.
    processor_group_id: str | None = None
    # Static group membership (KIP-345) only when an operator names the instance: a restarted
    # processor with the same id then takes its partitions back without a rebalance. Unset, a
    # processor is a dynamic member (two started with defaults never collide).
    processor_instance_id: str | None = None
    processor_session_timeout_ms: int = 10_000
    # A crashed processor's open transaction blocks read_committed readers of its partitions until
    # the coordinator aborts it; keep it short, as Kafka Streams does under exactly-once.
    processor_transaction_timeout_ms: int = 10_000
    # Local, checkpointed copies of the partitions' changelog (a cache: always rebuildable from
    # the changelog alone). Processors sharing a directory take separate slots in it.
    state_dir: str = ".kinvoke/state"
    # Attempts a processor runs at once against one deployment; more wait for a slot.
    invoker_concurrency_per_deployment: int = Field(default=64, ge=1)
    # The changelog's delete.retention.ms: how long compaction keeps tombstones. A local copy
    # older than this is discarded (it could miss a deletion).
    changelog_delete_retention_ms: int = 24 * 3600 * 1000

    # Which broker `kinvoke dev` / `kinvoke broker` run: Apache Kafka from the jars `setup.sh`
    # fetched ("kafka"), or the pip-only emulator ("local", for machines without Java).
    broker: str = Field(default="kafka", pattern="^(kafka|local)$")
    # Default: `.kinvoke/kafka` for Apache Kafka, `.kinvoke/broker` for the emulator.
    broker_data_dir: str | None = None
    # Set by `kinvoke dev --broker local`: the emulator's consumer position does not advance past
    # an aborted batch at a partition's end, so processors detect catch-up with a barrier record.
    recovery_barrier: bool = False
    broker_port: int = 9092

    log_format: str = Field(default="auto", description="auto | console | json")
    log_level: str = "info"

    @property
    def processor_group(self) -> str:
        return self.processor_group_id or f"{self.topic_prefix}-processor"

    def ingress_url(self) -> str:
        return self.ingress_advertised_url or f"http://{self.ingress_host}:{self.ingress_port}/"
