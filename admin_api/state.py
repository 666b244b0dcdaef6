"""`POST /services/{service}/state`: Restate's modify-service-state request.

The edit goes to the object's partition on `commands` as a PatchState; the processor applies it
(after the invocation holding the object's lock, with the version check). Like Restate, the
answer is 202 once the command is in the log: a version that no longer matches is found out
by the processor, which then drops the edit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from admin_api.registration import RegistryError
from kafka_core.commands import CommandClient
from kafka_core.supervision import Unavailable
from schemas.ids import partition_key_of
from schemas.records import Command, PatchState
from schemas.registry import Registry

_DESERIALIZE = "Failed to deserialize the JSON body into the target type: "


class StateEditor(Protocol):
    async def edit(self, patch: PatchState, timestamp_ms: int) -> None:
        """Append the edit to the log; returns once it is written."""
        ...


class KafkaStateEditor:
    """Produces the edit with the admin's command producer (whose health `/health` reports
    through the invocation control that shares it)."""

    def __init__(self, client: CommandClient) -> None:
        self.client = client

    async def edit(self, patch: PatchState, timestamp_ms: int) -> None:
        command = Command(timestamp_ms=timestamp_ms, body=patch)
        try:
            await self.client.send_keyed(partition_key_of(patch.key), command)
        except Unavailable as e:  # Restate: 500 "Failed sending state patching command to the cluster."
            raise RegistryError(500, f"Failed sending state patching command to the cluster: {e}") from None


@dataclass(frozen=True)
class ModifyStateRequest:
    object_key: str
    new_state: dict[str, bytes]
    version: str | None
    scope: str | None


def parse_request(body: Any) -> ModifyStateRequest:
    """serde's reading of `ModifyServiceStateRequest` (422 with its message when it does not fit).
    A value is a byte array, or a string (its UTF-8 bytes), as the `bytes` crate deserialises."""
    if not isinstance(body, dict):
        raise RegistryError(422, f"{_DESERIALIZE}expected struct ModifyServiceStateRequest")
    for name in ("object_key", "new_state"):
        if name not in body:
            raise RegistryError(422, f"{_DESERIALIZE}missing field `{name}`")
    key = body["object_key"]
    if not isinstance(key, str):
        raise RegistryError(422, f"{_DESERIALIZE}object_key: invalid type, expected a string")
    raw = body["new_state"]
    if not isinstance(raw, dict):
        raise RegistryError(422, f"{_DESERIALIZE}new_state: invalid type, expected a map")
    new_state = {name: _bytes(name, value) for name, value in raw.items()}
    optional = {}
    for name in ("version", "scope"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            raise RegistryError(422, f"{_DESERIALIZE}{name}: invalid type, expected a string")
        optional[name] = value
    return ModifyStateRequest(key, new_state, optional["version"], optional["scope"])


def _bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, int):
                raise RegistryError(422, f"{_DESERIALIZE}new_state.{name}[{i}]: invalid type, expected u8")
            if not 0 <= item <= 255:
                raise RegistryError(
                    422, f"{_DESERIALIZE}new_state.{name}[{i}]: invalid value: integer `{item}`, expected u8"
                )
        return bytes(value)
    raise RegistryError(422, f"{_DESERIALIZE}new_state.{name}: invalid type, expected byte array")


def plan_edit(registry: Registry, service_name: str, request: ModifyStateRequest) -> PatchState:
    """Restate's checks: only keyed services have state; an unknown service may only be cleared
    (it may have been removed while its state stayed)."""
    service = registry.service(service_name)
    if service is not None and service.ty not in ("VirtualObject", "Workflow"):
        raise RegistryError(400, f"Cannot modify state for service type {service.ty}")
    if service is None and request.new_state:
        raise RegistryError(404, f"The requested service '{service_name}' does not exist")
    if request.scope is not None:
        raise RegistryError(400, "scoped state requires vqueues, which kinvoke does not have")
    return PatchState(
        service=service_name, key=request.object_key, version=request.version, new_state=request.new_state
    )


def now_ms() -> int:
    return int(time.time() * 1000)
