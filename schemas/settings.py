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

    processor_group_id: str = "kinvoke-processor"
    # Static group membership (KIP-345): a restarted processor with the same id takes its
    # partitions back at once instead of waiting for the dead member's session to expire.
    processor_instance_id: str = "processor-0"
    processor_session_timeout_ms: int = 10_000
    processor_poll_interval_s: float = 0.005

    broker_data_dir: str = ".kinvoke/broker"
    broker_port: int = 9092

    log_format: str = Field(default="auto", description="auto | console | json")
    log_level: str = "info"

    def ingress_url(self) -> str:
        return self.ingress_advertised_url or f"http://{self.ingress_host}:{self.ingress_port}/"
