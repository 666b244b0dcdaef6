"""Checks a command must pass before the state machine sees it.

Anyone can produce to `commands`; a record that cannot belong to this partition would, once
committed, fail on every restart (or split an object's state across partitions). Such a command
is dead-lettered with the reason instead.
"""

from __future__ import annotations

from schemas.ids import InvalidId, InvocationId, partition_key_of
from schemas.partitioner import partition_of
from schemas.records import Barrier, Command, Invoke, OperateInvocation, PatchState, ServiceType


def rejection(command: Command, partition: int, num_partitions: int) -> str | None:
    """Why `command` cannot be applied on `partition`, or None when it can."""
    body = command.body
    if isinstance(body, Barrier):
        return None
    if isinstance(body, PatchState):
        owner = partition_of(body.partition_key, num_partitions)
        if owner != partition:
            whose = "its key's" if body.scope is None else f"its scope {body.scope!r}'s"
            return (
                f"the state edit of {body.service}/{body.key} belongs to partition {owner} ({whose} "
                f"partition key), not to partition {partition}: key the record with that partition key"
            )
        return None
    try:
        invocation_id = InvocationId.parse(body.invocation_id)
    except (InvalidId, ValueError) as e:
        return f"malformed invocation id {body.invocation_id!r}: {e}"
    owner = partition_of(invocation_id.partition_key, num_partitions)
    if owner != partition:
        return (
            f"invocation id {body.invocation_id} belongs to partition {owner} (its partition key), "
            f"not to partition {partition}: key the record with the id's 8-byte partition key"
        )
    if isinstance(body, OperateInvocation) and body.new_invocation_id is not None:
        new = body.new_invocation_id
        if _partition_key(new) != invocation_id.partition_key:
            return f"restart-as-new id {new} does not carry the partition key of {body.invocation_id}"
    if isinstance(body, Invoke) and body.target.service_ty != ServiceType.SERVICE:
        if body.target.key is None:
            return f"{body.target.service_ty.value} target {body.target} has no key"
        if partition_key_of(body.target.key) != invocation_id.partition_key:
            return (
                f"invocation id {body.invocation_id} does not carry the partition key of "
                f"{body.target.service}/{body.target.key}: keyed invocations must use the key's partition key"
            )
    return None


def _partition_key(invocation_id: str) -> int | None:
    try:
        return InvocationId.parse(invocation_id).partition_key
    except (InvalidId, ValueError):
        return None
