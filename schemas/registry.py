"""The registry's records (deployments, services, Kafka clusters, subscriptions).

Pure: no I/O. The admin API writes these records to the compacted `metadata` topic (keys
`deployment/{id}`, `service/{name}`, ...); every process rebuilds a `Registry` by applying
them in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import Field

from schemas.records import AvroModel, HandlerType, ServiceType

DEPLOYMENT_PREFIX = "deployment/"
SERVICE_PREFIX = "service/"
CLUSTER_PREFIX = "kafka-cluster/"
SUBSCRIPTION_PREFIX = "subscription/"

SERVICE_TYPES = {"SERVICE": "Service", "VIRTUAL_OBJECT": "VirtualObject", "WORKFLOW": "Workflow"}
HANDLER_TYPES = {"EXCLUSIVE": "Exclusive", "SHARED": "Shared", "WORKFLOW": "Workflow"}


class _Options(AvroModel):
    idempotency_retention_ms: int | None = None
    journal_retention_ms: int | None = None
    workflow_completion_retention_ms: int | None = None
    inactivity_timeout_ms: int | None = None
    abort_timeout_ms: int | None = None
    enable_lazy_state: bool | None = None
    retry_max_attempts: int | None = None
    retry_initial_interval_ms: int | None = None
    retry_max_interval_ms: int | None = None
    retry_exponentiation_factor: float | None = None
    retry_on_max_attempts: str | None = None


class HandlerRecord(_Options):
    avro_name: ClassVar[str] = "kinvoke.metadata.HandlerRecord"

    name: str
    ty: str | None = None
    public: bool = True
    input_required: bool = False
    input_content_type: str | None = None
    input_json_schema: str | None = None
    output_content_type: str | None = None
    output_set_content_type_if_empty: bool = False
    output_json_schema: str | None = None
    documentation: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @property
    def handler_type(self) -> HandlerType | None:
        return None if self.ty is None else HandlerType[self.ty.upper()]


class ServiceRecord(_Options):
    avro_name: ClassVar[str] = "kinvoke.metadata.ServiceRecord"
    name: str
    ty: str
    revision: int
    deployment_id: str
    public: bool = True
    handlers: list[HandlerRecord]
    documentation: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    def handler(self, name: str) -> HandlerRecord | None:
        return next((h for h in self.handlers if h.name == name), None)

    @property
    def service_type(self) -> ServiceType:
        return ServiceType[next(k for k, v in SERVICE_TYPES.items() if v == self.ty)]


class ServiceRevision(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.metadata.ServiceRevision"
    name: str
    revision: int


class DeploymentRecord(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.metadata.DeploymentRecord"
    id: str
    uri: str
    protocol_type: str
    http_version: str
    additional_headers: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at_ms: int
    min_protocol_version: int
    max_protocol_version: int
    sdk_version: str | None = None
    services: list[ServiceRevision]
    manifest_json: str


class KafkaClusterRecord(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.metadata.KafkaClusterRecord"
    name: str
    properties: dict[str, str]
    created_at_ms: int


class SubscriptionRecord(AvroModel):
    avro_name: ClassVar[str] = "kinvoke.metadata.SubscriptionRecord"
    id: str
    source: str  # kafka://{cluster}/{topic}
    sink: str  # service://{service}/{handler}
    options: dict[str, str]
    created_at_ms: int

    @property
    def cluster_and_topic(self) -> tuple[str, str]:
        cluster, _, topic = self.source.removeprefix("kafka://").partition("/")
        return cluster, topic

    @property
    def service_and_handler(self) -> tuple[str, str]:
        service, _, handler = self.sink.removeprefix("service://").partition("/")
        return service, handler


@dataclass
class Registry:
    deployments: dict[str, DeploymentRecord] = field(default_factory=dict)
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    clusters: dict[str, KafkaClusterRecord] = field(default_factory=dict)
    subscriptions: dict[str, SubscriptionRecord] = field(default_factory=dict)

    def service(self, name: str) -> ServiceRecord | None:
        return self.services.get(name)

    def handler(self, service: str, handler: str) -> HandlerRecord | None:
        svc = self.services.get(service)
        return svc.handler(handler) if svc else None

    def deployment(self, deployment_id: str) -> DeploymentRecord | None:
        return self.deployments.get(deployment_id)

    def deployment_for_uri(self, uri: str) -> DeploymentRecord | None:
        return next((d for d in self.deployments.values() if d.uri == uri), None)


def apply_record(registry: Registry, key: str, value: bytes | None) -> None:
    """Apply one `metadata` topic record (a tombstone removes the entry)."""
    if key.startswith(DEPLOYMENT_PREFIX):
        dep_id = key[len(DEPLOYMENT_PREFIX) :]
        if value is None:
            registry.deployments.pop(dep_id, None)
        else:
            registry.deployments[dep_id] = DeploymentRecord.decode(value)
    elif key.startswith(SERVICE_PREFIX):
        name = key[len(SERVICE_PREFIX) :]
        if value is None:
            registry.services.pop(name, None)
        else:
            registry.services[name] = ServiceRecord.decode(value)
    elif key.startswith(CLUSTER_PREFIX):
        name = key[len(CLUSTER_PREFIX) :]
        if value is None:
            registry.clusters.pop(name, None)
        else:
            registry.clusters[name] = KafkaClusterRecord.decode(value)
    elif key.startswith(SUBSCRIPTION_PREFIX):
        sub_id = key[len(SUBSCRIPTION_PREFIX) :]
        if value is None:
            registry.subscriptions.pop(sub_id, None)
        else:
            registry.subscriptions[sub_id] = SubscriptionRecord.decode(value)
    else:
        raise ValueError(f"unknown metadata key {key!r}")
