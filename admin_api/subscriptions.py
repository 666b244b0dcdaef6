"""Kafka clusters and subscriptions (`/kafka-clusters`, `/subscriptions`), stored in `metadata`.

A subscription makes every record of a topic an invocation of a handler; the processors run the
consumers (`processor/subscriptions.py`).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from aiohttp import web

from admin_api import json_body
from admin_api.registration import RegistryError
from schemas.durations import rfc3339_nanos
from schemas.ids import InvalidId, SubscriptionId
from schemas.registry import (
    CLUSTER_PREFIX,
    SUBSCRIPTION_PREFIX,
    KafkaClusterRecord,
    Registry,
    SubscriptionRecord,
)


def cluster_json(c: KafkaClusterRecord, registry: Registry | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "properties": c.properties,
        "created_at": rfc3339_nanos(c.created_at_ms),
    }
    if registry is not None:
        out["subscriptions"] = [
            subscription_json(s) for s in registry.subscriptions.values() if s.cluster_and_topic[0] == c.name
        ]
    return out


def subscription_json(s: SubscriptionRecord) -> dict[str, Any]:
    return {"id": s.id, "source": s.source, "sink": s.sink, "options": s.options}


def _fields(body: Any, struct: str, required: dict[str, str], optional: dict[str, str]) -> dict[str, Any]:
    """serde's reading of a flat request struct of strings and string maps (axum's 422 otherwise):
    fields in the body's order, then the missing ones in declaration order."""
    if not isinstance(body, dict):
        raise json_body.invalid_type(body, f"struct {struct}", ())
    expected = {**required, **optional}
    for name, value in body.items():
        if name not in expected or (value is None and name in optional):
            continue
        if expected[name] == "a string" and not isinstance(value, str):
            raise json_body.invalid_type(value, "a string", (name,))
        if expected[name] == "a map":
            if not isinstance(value, dict):
                raise json_body.invalid_type(value, "a map", (name,))
            for key, item in value.items():
                if not isinstance(item, str):
                    raise json_body.invalid_type(item, "a string", (name, key))
    for name in required:
        if name not in body:
            raise json_body.missing_field(name)
    return body


# The bytes the `http` crate takes in a URI authority (its URI_CHARS table), besides '%'.
_AUTHORITY_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$&'()*+,;=-._~:@[]/?#"
)


def authority_error(name: str) -> str | None:
    """Why Restate refuses `name` as a cluster name: it is deserialized as a URI authority (the
    `http` crate's `Authority`, the cluster being the host of `kafka://{cluster}/{topic}`)."""
    raw = name.encode()
    if not raw:
        return "empty string"
    colons, opened, closed, percent, at_sign, end = 0, False, False, False, None, len(raw)
    for i, b in enumerate(raw):
        if b in b"/?#":
            end = i
            break
        if b == ord(":"):
            if colons >= 8:
                return "invalid authority"
            colons += 1
        elif b == ord("["):
            if percent or opened:
                return "invalid authority"
            opened = True
        elif b == ord("]"):
            if not opened or closed:
                return "invalid authority"
            closed, colons, percent = True, 0, False
        elif b == ord("@"):
            at_sign, colons, percent = i, 0, False
        elif b == ord("%"):
            percent = True
        elif b not in _AUTHORITY_CHARS:
            return "invalid uri character"
    if opened != closed or colons > 1 or (end > 0 and at_sign == end - 1) or percent:
        return "invalid authority"
    return "invalid uri character" if end != len(raw) else None


def new_cluster(registry: Registry, body: Any) -> KafkaClusterRecord:
    body = _fields(body, "CreateKafkaClusterRequest", {"name": "a string", "properties": "a map"}, {})
    if (why := authority_error(body["name"])) is not None:
        raise json_body.mismatch(f"name: {why}", ("name",))
    props = _cluster_properties(body["name"], body["properties"])
    if body["name"] in registry.clusters:
        raise RegistryError(409, f"the Kafka cluster '{body['name']}' already exists")
    return KafkaClusterRecord(name=body["name"], properties=props, created_at_ms=int(time.time() * 1000))


def _cluster_properties(name: str, properties: dict[str, str]) -> dict[str, str]:
    """Restate's `validate_kafka_cluster_properties`: the brokers must be named."""
    if "bootstrap.servers" not in properties and "metadata.broker.list" not in properties:
        raise RegistryError(
            400,
            f"kafka cluster '{name}' properties must contain either 'bootstrap.servers' or "
            "'metadata.broker.list'",
        )
    return dict(properties)


def updated_cluster(registry: Registry, name: str, body: Any) -> KafkaClusterRecord:
    """`PATCH /kafka-clusters/{name}`: the properties replaced (checked before the name is looked up,
    as Restate does)."""
    body = _fields(body, "UpdateKafkaClusterRequest", {"properties": "a map"}, {})
    props = _cluster_properties(name, body["properties"])
    cluster = registry.clusters.get(name)
    if cluster is None:
        raise RegistryError(404, f"not found in the schema registry: kafka cluster '{name}'")
    return cluster.model_copy(update={"properties": props})


def cluster_removal(registry: Registry, name: str, force: bool) -> KafkaClusterRecord:
    """`DELETE /kafka-clusters/{name}`: refused while a subscription reads from it, unless `force`
    (the subscription is then interrupted, and stays listed, as on Restate)."""
    cluster = registry.clusters.get(name)
    if cluster is None:
        raise RegistryError(404, f"not found in the schema registry: kafka cluster named '{name}'")
    if not force:
        for sub in registry.subscriptions.values():
            if sub.cluster_and_topic[0] == name:
                raise RegistryError(
                    409,
                    f"Removing the kafka cluster '{name}' leads to subscription '{sub.id}' being orphan. "
                    "Remove the subscription first, or use the 'force' flag.",
                )
    return cluster


def new_subscription(registry: Registry, body: Any) -> SubscriptionRecord:
    body = _fields(
        body, "CreateSubscriptionRequest", {"source": "a string", "sink": "a string"}, {"options": "a map"}
    )
    source, sink = body["source"], body["sink"]
    if not source.startswith("kafka://") or "/" not in source.removeprefix("kafka://"):
        raise RegistryError(400, f"bad source '{source}': expected kafka://<cluster>/<topic>")
    if not sink.startswith("service://") or "/" not in sink.removeprefix("service://"):
        raise RegistryError(400, f"bad sink '{sink}': expected service://<service>/<handler>")
    now = int(time.time() * 1000)
    sub = SubscriptionRecord(
        id=str(SubscriptionId.generate(now, secrets.randbits(80))),
        source=source,
        sink=sink,
        options={str(k): str(v) for k, v in (body.get("options") or {}).items()},
        created_at_ms=now,
    )
    cluster, topic = sub.cluster_and_topic
    if cluster not in registry.clusters:
        raise RegistryError(
            400, f"the Kafka cluster '{cluster}' does not exist: create it first (/kafka-clusters)"
        )
    if not topic:
        raise RegistryError(400, f"bad source '{source}': the topic is missing")
    service, handler = sub.service_and_handler
    if registry.handler(service, handler) is None:
        raise RegistryError(400, f"the sink handler '{service}/{handler}' is not registered")
    sub.options.setdefault("group.id", sub.id)
    sub.options.setdefault("client.id", "kinvoke")
    return sub


async def create_cluster(request: web.Request, store: Any) -> web.Response:
    cluster = new_cluster(store.snapshot(), await request.json())
    await store.write([(f"{CLUSTER_PREFIX}{cluster.name}", cluster.encode())])
    return _json(cluster_json(cluster, store.snapshot()), 201)


async def create_subscription(request: web.Request, store: Any) -> web.Response:
    sub = new_subscription(store.snapshot(), await request.json())
    await store.write([(f"{SUBSCRIPTION_PREFIX}{sub.id}", sub.encode())])
    return _json(subscription_json(sub), 201)


def parse_subscription_id(text: str) -> str:
    try:
        return str(SubscriptionId.parse(text))
    except InvalidId as e:
        raise RegistryError(400, str(e)) from None


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(body, separators=(",", ":")).encode(), content_type="application/json"
    )
