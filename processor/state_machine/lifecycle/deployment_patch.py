"""The `deployment` of resume and restart-as-new: keep the pinned one, the latest, or an id.

The admin API resolves it with its registry and sends what it found; the checks that depend
on the invocation are made here, in Restate's order (`resolve_pinned_deployment`): nothing
pinned yet (only "latest" is then allowed, and changes nothing), the deployment exists, and it
supports the invocation's pinned protocol version.
"""

from __future__ import annotations

from schemas.records import InvocationStatus, OperateInvocation, OperationOutcome

KEEP = None


def requested(cmd: OperateInvocation) -> bool:
    return cmd.latest_deployment or cmd.deployment_id is not None


def resolve(status: InvocationStatus, cmd: OperateInvocation) -> str | OperationOutcome | None:
    """The deployment to pin, KEEP (None) for the pinned one, or why not."""
    if not requested(cmd):
        return KEEP
    if status.deployment_id is None:
        return KEEP if cmd.latest_deployment else OperationOutcome.CANNOT_CHANGE_DEPLOYMENT
    return compatible(status, cmd)


def compatible(status: InvocationStatus, cmd: OperateInvocation) -> str | OperationOutcome:
    """The asked-for deployment if it exists and speaks the invocation's protocol version."""
    low, high = cmd.deployment_min_protocol, cmd.deployment_max_protocol
    if cmd.deployment_id is None or low is None or high is None:
        return OperationOutcome.DEPLOYMENT_NOT_FOUND
    pinned = status.protocol_version
    if pinned is not None and not low <= pinned <= high:
        return OperationOutcome.INCOMPATIBLE_DEPLOYMENT
    return cmd.deployment_id
