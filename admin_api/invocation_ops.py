"""`PATCH /invocations/{id}/pause|resume|purge-journal|restart-as-new`, as Restate 1.7.12.

Thin: the query is parsed and the `deployment` resolved with the registry here (the state
machine has no registry), the processor decides, and its OperationAnswer becomes Restate's
status code and message (crates/admin/src/rest_api/{invocations,error}.rs).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable

from aiohttp import web

from admin_api.invocations import InvocationControl, parse_invocation_id
from admin_api.registration import RegistryError
from schemas.ids import DeploymentId, InvalidId, InvocationId
from schemas.records import InvocationOperation, OperateInvocation, OperationAnswer, OperationOutcome
from schemas.registry import Registry

_BASE62 = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

# The invocation's service, when the admin's copy of the changelog knows it (for "latest").
ServiceOf = Callable[[str], str | None]

_PAUSE = {
    OperationOutcome.NOT_FOUND: (404, "The requested invocation '{id}' does not exist"),
    OperationOutcome.NOT_RUNNING: (409, "The invocation '{id}' is not running, cannot be paused."),
}
_PURGE_JOURNAL = {
    OperationOutcome.NOT_FOUND: (404, "The requested invocation '{id}' does not exist"),
    OperationOutcome.NOT_COMPLETED: (409, "The invocation '{id}' is not yet completed."),
}
_DEPLOYMENT = {
    OperationOutcome.CANNOT_CHANGE_DEPLOYMENT: (
        409,
        "The invocation '{id}' is still running or the deployment id is not pinned yet, deployment id "
        "cannot be changed.",
    ),
    OperationOutcome.INCOMPATIBLE_DEPLOYMENT: (
        400,
        "The invocation '{id}' is running on protocol version '{pinned}', while the chosen deployment "
        "'{deployment}' supports the range {low}..={high}.",
    ),
}
_RESUME = {
    OperationOutcome.NOT_FOUND: (404, "The requested invocation '{id}' does not exist"),
    OperationOutcome.NOT_STARTED: (
        425,
        "The invocation '{id}' is either inboxed or scheduled, cannot be resumed.",
    ),
    OperationOutcome.COMPLETED: (409, "The invocation '{id}' is completed, cannot be resumed."),
    OperationOutcome.DEPLOYMENT_NOT_FOUND: (
        400,
        "The given deployment was not found when trying to resume the invocation '{id}'.",
    ),
    **_DEPLOYMENT,
}
_RESTART = {
    OperationOutcome.NOT_FOUND: (404, "The requested invocation '{id}' does not exist"),
    OperationOutcome.STILL_RUNNING: (409, "The invocation '{id}' is still running."),
    OperationOutcome.NOT_STARTED: (
        425,
        "The invocation '{id}' cannot be restarted because it's not running yet.",
    ),
    OperationOutcome.UNSUPPORTED: (
        422,
        "Restarting the invocation '{id}' is not supported. Restarting workflows is not supported, and "
        "restarting invocations created using the old service protocol.",
    ),
    OperationOutcome.MISSING_INPUT: (
        410,
        "The invocation '{id}' cannot be restarted because the input is not available. This indicates "
        "that the journal was already purged, or not retained at all.",
    ),
    OperationOutcome.JOURNAL_INDEX_OUT_OF_RANGE: (
        400,
        "The given index is out of range of currently stored journal for invocation '{id}'.",
    ),
    OperationOutcome.JOURNAL_COPY_RANGE_INVALID: (
        400,
        "The prefix of the journal '{id}' up to 'from' (included) contains some Commands without "
        "respective Completions.",
    ),
    OperationOutcome.DEPLOYMENT_NOT_FOUND: (
        400,
        "The given deployment was not found when trying to restart as new the invocation '{id}'.",
    ),
    **_DEPLOYMENT,
}


async def pause(control: InvocationControl, text_id: str) -> web.Response:
    inv = parse_invocation_id(text_id)
    answer = await control.operate(inv, _command(inv, InvocationOperation.PAUSE))
    _raise_for(answer, _PAUSE, None)
    return web.Response(status=200 if answer.outcome == OperationOutcome.ALREADY_PAUSED else 202)


async def purge_journal(control: InvocationControl, text_id: str) -> web.Response:
    inv = parse_invocation_id(text_id)
    answer = await control.operate(inv, _command(inv, InvocationOperation.PURGE_JOURNAL))
    _raise_for(answer, _PURGE_JOURNAL, None)
    return web.Response(status=200)


async def resume(
    control: InvocationControl, text_id: str, query: dict[str, str], registry: Registry, service_of: ServiceOf
) -> web.Response:
    inv = parse_invocation_id(text_id)
    command = _command(inv, InvocationOperation.RESUME)
    _patch_deployment(command, query.get("deployment"), "keep", registry, service_of)
    answer = await control.operate(inv, command)
    _raise_for(answer, _RESUME, command)
    return web.Response(status=200)


async def restart_as_new(
    control: InvocationControl, text_id: str, query: dict[str, str], registry: Registry, service_of: ServiceOf
) -> web.Response:
    inv = parse_invocation_id(text_id)
    command = _command(inv, InvocationOperation.RESTART_AS_NEW)
    try:
        command.from_entry = _from(query.get("from"))
    except BadQuery as e:
        return e.response()
    # As Restate: without `deployment` the new invocation goes to the latest deployment.
    _patch_deployment(command, query.get("deployment"), "latest", registry, service_of)
    # Same partition key: the new invocation is created by the partition that has the journal.
    command.new_invocation_id = str(InvocationId.generate(inv.partition_key, _now_ms(), secrets.randbits(80)))
    answer = await control.operate(inv, command)
    _raise_for(answer, _RESTART, command)
    body = json.dumps({"new_invocation_id": answer.new_invocation_id}, separators=(",", ":"))
    return web.Response(status=200, body=body, content_type="application/json")


def _command(inv: InvocationId, operation: InvocationOperation) -> OperateInvocation:
    return OperateInvocation(invocation_id=str(inv), operation=operation)


class BadQuery(Exception):
    """A query string axum's `Query` extractor rejects: Restate answers 400 in plain text."""

    def response(self) -> web.Response:
        return web.Response(status=400, text=f"Failed to deserialize query string: {self}")


def _from(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit():
        raise BadQuery("from: invalid digit found in string")
    value = int(text)
    if value >= 2**32:
        raise BadQuery("from: number too large to fit in target type")
    return value


def _deployment_id_problem(text: str) -> str:
    """Why `text` is no deployment id, in Restate's words (`IdDecodeError`)."""
    prefix, sep, rest = text.partition("_")
    if not sep:
        return "bad format"
    if prefix != "dp":
        known = prefix in ("inv", "sub", "sign")
        return "id doesn't match the expected type" if known else f"unrecognized resource type: {prefix}"
    if not rest.startswith("1"):
        return "unrecognized codec version"
    if any(c not in _BASE62 for c in rest[1:]):
        return "base62 decode error"
    return "bad length"


def _patch_deployment(
    command: OperateInvocation,
    text: str | None,
    default: str,
    registry: Registry,
    service_of: ServiceOf,
) -> None:
    """Fill in the deployment asked for: `keep`/`Keep`, `latest`/`Latest`, or a deployment id."""
    choice = text if text is not None else default
    if choice in ("keep", "Keep"):
        return
    if choice in ("latest", "Latest"):
        command.latest_deployment = True
        service = service_of(command.invocation_id)
        record = registry.service(service) if service is not None else None
        deployment_id = record.deployment_id if record is not None else None
    else:
        try:
            deployment_id = str(DeploymentId.parse(choice))
        except InvalidId:
            reason = _deployment_id_problem(choice)
            message = f"The query parameter 'deployment' is invalid. Reason: {reason}"
            raise RegistryError(400, message) from None
    command.deployment_id = deployment_id
    deployment = registry.deployment(deployment_id) if deployment_id is not None else None
    if deployment is not None:
        command.deployment_min_protocol = deployment.min_protocol_version
        command.deployment_max_protocol = deployment.max_protocol_version


def _raise_for(
    answer: OperationAnswer,
    messages: dict[OperationOutcome, tuple[int, str]],
    command: OperateInvocation | None,
) -> None:
    found = messages.get(answer.outcome)
    if found is None:
        return
    status, template = found
    raise RegistryError(
        status,
        template.format(
            id=answer.invocation_id,
            pinned=answer.pinned_protocol_version,
            deployment=command.deployment_id if command else None,
            low=command.deployment_min_protocol if command else None,
            high=command.deployment_max_protocol if command else None,
        ),
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
