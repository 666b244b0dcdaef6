"""`POST /services/{service}/state`: Restate's modify-service-state request.

The edit goes to the object's partition on `commands` as a PatchState; the processor applies it
(after the invocation holding the object's lock, with the version check). With a `scope` it is an
edit of Restate's scoped instance (its own state, on the scope's partition), as Restate 1.7.12
accepts it. Like Restate, the
answer is 202 once the command is in the log: a version that no longer matches is found out
by the processor, which then drops the edit.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from admin_api import json_body
from admin_api.registration import RegistryError
from kafka_core.commands import CommandClient
from kafka_core.supervision import Unavailable
from schemas.records import Command, PatchState
from schemas.registry import Registry

SCOPE_MAX_LEN = 36
_SCOPE = re.compile(r"[a-zA-Z0-9_.-]+")


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
            await self.client.send_keyed(patch.partition_key, command)
        except Unavailable as e:  # Restate: 500 "Failed sending state patching command to the cluster."
            raise RegistryError(500, f"Failed sending state patching command to the cluster: {e}") from None


@dataclass(frozen=True)
class ModifyStateRequest:
    object_key: str
    new_state: dict[str, bytes]
    version: str | None
    scope: str | None


def parse_request(body: Any) -> ModifyStateRequest:
    """serde's reading of `ModifyServiceStateRequest` (axum's 422 with serde's message when it does
    not fit): fields checked in the body's order, then the missing ones in declaration order. A
    value is a byte array, or a string (its UTF-8 bytes), as the `bytes` crate deserialises."""
    if not isinstance(body, dict):
        raise json_body.invalid_type(body, "struct ModifyServiceStateRequest", ())
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name in ("version", "scope"):
            if value is not None and not isinstance(value, str):
                raise json_body.invalid_type(value, "a string", (name,))
        elif name == "object_key":
            if not isinstance(value, str):
                raise json_body.invalid_type(value, "a string", (name,))
        elif name == "new_state":
            if not isinstance(value, dict):
                raise json_body.invalid_type(value, "a map", (name,))
            value = {key: _bytes(key, item) for key, item in value.items()}
        else:
            continue  # serde ignores fields it does not know
        fields[name] = value
    for name in ("object_key", "new_state"):
        if name not in fields:
            raise json_body.missing_field(name)
    return ModifyStateRequest(
        fields["object_key"], fields["new_state"], fields.get("version"), fields.get("scope")
    )


def _bytes(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, list):
        for i, item in enumerate(value):
            at = ("new_state", name, i)
            if isinstance(item, bool) or not isinstance(item, int):
                raise json_body.invalid_type(item, "u8", at)
            if not 0 <= item <= 255:
                raise json_body.invalid_value(item, "u8", at)
        return bytes(value)
    raise json_body.invalid_type(value, "byte array", ("new_state", name))


def check_scope(scope: str) -> None:
    """Restate's `Scope` (a `RestrictedValue`): 1 to 36 bytes of `[a-zA-Z0-9_.-]`. Restate answers a
    bad one with 500 "bad scope: …" (its `MetaApiError::BadScope` has no status of its own)."""
    if not scope:
        reason = "value cannot be empty"
    elif len(scope.encode()) > SCOPE_MAX_LEN:
        reason = f"value too long: {len(scope.encode())} bytes (max {SCOPE_MAX_LEN})"
    elif _SCOPE.fullmatch(scope) is None:
        reason = "value contains characters outside the allowed set [a-zA-Z0-9_.-]"
    else:
        return
    raise RegistryError(500, f"bad scope: {reason}")


def plan_edit(registry: Registry, service_name: str, request: ModifyStateRequest) -> PatchState:
    """Restate's checks: only keyed services have state; an unknown service may only be cleared
    (it may have been removed while its state stayed)."""
    service = registry.service(service_name)
    if service is not None and service.ty not in ("VirtualObject", "Workflow"):
        raise RegistryError(400, f"Cannot modify state for service type {service.ty}")
    if service is None and request.new_state:
        raise RegistryError(404, f"The requested service '{service_name}' does not exist")
    if request.scope is not None:
        check_scope(request.scope)
    return PatchState(
        service=service_name,
        key=request.object_key,
        version=request.version,
        new_state=request.new_state,
        scope=request.scope,
    )


def now_ms() -> int:
    return int(time.time() * 1000)
