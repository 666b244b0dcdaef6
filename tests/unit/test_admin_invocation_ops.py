"""PATCH /invocations/{id}/pause|resume|purge-journal|restart-as-new over HTTP, answered by the
real state machine (a control that applies the command to a partition store): status codes and
bodies as Restate 1.7.12 answers them (crates/admin/src/rest_api/{invocations,error}.rs)."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin_api import app as admin_app
from admin_api.store import MemoryRegistryStore
from processor.state_machine import SendAccepted
from schemas.ids import DeploymentId, InvocationId
from schemas.records import (
    AttemptFailed,
    Command,
    Ended,
    InvocationPhase,
    OperateInvocation,
    OperationAnswer,
    Suspended,
)
from schemas.registry import DeploymentRecord, HandlerRecord, Registry, ServiceRecord
from schemas.settings import Settings
from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output

DP_V6 = str(DeploymentId.generate(1_795_000_000_000, 1))
DP_OLD = str(DeploymentId.generate(1_795_000_000_000, 2))


class StateMachineControl:
    """The processor's answer, from the state machine applied to `sm`'s store."""

    def __init__(self, sm: Harness) -> None:
        self.sm = sm
        self.sent: list[OperateInvocation] = []

    async def manage(self, invocation_id, operation):  # type: ignore[no-untyped-def]
        raise AssertionError("not used here")

    async def operate(self, invocation_id: InvocationId, command: OperateInvocation) -> OperationAnswer:
        self.sent.append(command)
        actions = self.sm.apply(Command(timestamp_ms=10_000 + len(self.sent), body=command))
        [answer] = [a.accepted for a in actions if isinstance(a, SendAccepted)]
        assert isinstance(answer, OperationAnswer)
        return answer


def registry() -> Registry:
    reg = Registry()
    for dep_id, low, high in ((DP_V6, 5, 6), (DP_OLD, 1, 4)):
        reg.deployments[dep_id] = DeploymentRecord(
            id=dep_id,
            uri=f"http://{dep_id}/",
            protocol_type="BidiStream",
            http_version="HTTP/2.0",
            created_at_ms=0,
            min_protocol_version=low,
            max_protocol_version=high,
            services=[],
            manifest_json="{}",
        )
    reg.services["Greeter"] = ServiceRecord(
        name="Greeter", ty="SERVICE", revision=1, deployment_id=DP_V6, handlers=[HandlerRecord(name="greet")]
    )
    return reg


class Stack:
    def __init__(self, client: TestClient, sm: Harness, control: StateMachineControl) -> None:
        self.client, self.sm, self.control = client, sm, control

    async def patch(self, path: str) -> tuple[int, object]:
        r = await self.client.patch(path)
        body = await r.read()
        return r.status, (await r.json() if body else None)


@pytest.fixture
async def stack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    sm = Harness()
    control = StateMachineControl(sm)
    store = MemoryRegistryStore()
    monkeypatch.setattr(store, "snapshot", registry)

    class View:  # the admin's copy of the changelog: here, the same store
        lock = threading.Lock()

    View.store = sm.store  # type: ignore[attr-defined]
    app = admin_app.create_admin_app(store, Settings(), control, changelog=View())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        yield Stack(client, sm, control)


def error(message: str) -> dict[str, object]:
    return {"message": message, "restate_code": None}


UNKNOWN = str(InvocationId.generate(3, 1_795_000_000_000, 3))


async def test_pause_and_resume(stack: Stack) -> None:
    stack.sm.apply(invoke())
    assert await stack.patch(f"/invocations/{INV}/pause") == (202, None)
    assert stack.sm.store.status(INV).phase == InvocationPhase.PAUSED  # type: ignore[union-attr]
    assert await stack.patch(f"/v4/invocations/{INV}/pause") == (200, None)  # already paused
    assert await stack.patch(f"/invocations/{INV}/resume") == (200, None)
    assert stack.sm.store.status(INV).phase == InvocationPhase.INVOKED  # type: ignore[union-attr]
    stack.sm.apply(attempt(20_000, 3, [output(b'"hi"')], Ended()))
    assert await stack.patch(f"/invocations/{INV}/pause") == (
        409,
        error(f"The invocation '{INV}' is not running, cannot be paused."),
    )
    assert await stack.patch(f"/invocations/{INV}/resume") == (
        409,
        error(f"The invocation '{INV}' is completed, cannot be resumed."),
    )
    missing = error(f"The requested invocation '{UNKNOWN}' does not exist")
    assert await stack.patch(f"/invocations/{UNKNOWN}/pause") == (404, missing)
    assert await stack.patch(f"/invocations/{UNKNOWN}/resume") == (404, missing)
    assert await stack.patch("/invocations/bogus/pause") == (
        400,
        error("The request field 'invocation_id' is invalid. Reason: bad format"),
    )


async def test_resume_on_another_deployment(stack: Stack) -> None:
    stack.sm.apply(invoke(), attempt(2000, 1, [], Suspended(waiting_completions=[1])))  # V6 on dp_1
    assert await stack.patch(f"/invocations/{INV}/resume?deployment={DP_OLD}") == (
        400,
        error(
            f"The invocation '{INV}' is running on protocol version '6', while the chosen deployment "
            f"'{DP_OLD}' supports the range 1..=4."
        ),
    )
    gone = str(DeploymentId.generate(1_795_000_000_000, 9))
    assert await stack.patch(f"/invocations/{INV}/resume?deployment={gone}") == (
        400,
        error(f"The given deployment was not found when trying to resume the invocation '{INV}'."),
    )
    assert await stack.patch(f"/invocations/{INV}/resume?deployment=dp_bogus") == (
        400,
        error("The query parameter 'deployment' is invalid. Reason: unrecognized codec version"),
    )
    assert await stack.patch(f"/invocations/{INV}/resume?deployment=latest") == (200, None)
    assert stack.sm.store.status(INV).deployment_id == DP_V6  # type: ignore[union-attr]
    # Running now: its deployment cannot change.
    assert await stack.patch(f"/invocations/{INV}/resume?deployment=latest") == (
        409,
        error(
            f"The invocation '{INV}' is still running or the deployment id is not pinned yet, "
            "deployment id cannot be changed."
        ),
    )
    assert await stack.patch(f"/invocations/{INV}/resume?deployment=keep") == (200, None)


async def test_purge_journal(stack: Stack) -> None:
    stack.sm.apply(invoke())
    assert await stack.patch(f"/invocations/{INV}/purge-journal") == (
        409,
        error(f"The invocation '{INV}' is not yet completed."),
    )
    stack.sm.apply(attempt(2000, 1, [output(b'"hi"')], Ended()))
    assert await stack.patch(f"/invocations/{INV}/purge-journal") == (200, None)
    assert stack.sm.store.journal(INV) == []
    assert stack.sm.store.status(INV) is not None


async def test_restart_as_new(stack: Stack) -> None:
    stack.sm.apply(invoke())
    assert await stack.patch(f"/invocations/{INV}/restart-as-new") == (
        409,
        error(f"The invocation '{INV}' is still running."),
    )
    stack.sm.apply(attempt(2000, 1, [], AttemptFailed(code=500, message="boom")))
    stack.sm.apply(attempt(3000, 2, [output(b'"hi"')], Ended()))
    status, body = await stack.patch(f"/invocations/{INV}/restart-as-new")
    assert status == 200 and isinstance(body, dict) and list(body) == ["new_invocation_id"]
    new = InvocationId.parse(body["new_invocation_id"])
    assert new.partition_key == InvocationId.parse(INV).partition_key and str(new) != INV
    assert stack.sm.store.status(str(new)).phase == InvocationPhase.INVOKED  # type: ignore[union-attr]
    sent = stack.control.sent[-1]
    assert sent.latest_deployment and sent.deployment_id == DP_V6  # Restate's default: latest
    # As measured on Restate 1.7.12: a prefix past the journal's end is a copy range error.
    assert await stack.patch(f"/invocations/{INV}/restart-as-new?from=5") == (
        400,
        error(
            f"The prefix of the journal '{INV}' up to 'from' (included) contains some Commands without "
            "respective Completions."
        ),
    )
    bad = await stack.client.patch(f"/invocations/{INV}/restart-as-new?from=x")
    assert (bad.status, bad.content_type) == (400, "text/plain")
    assert await bad.text() == "Failed to deserialize query string: from: invalid digit found in string"
    assert await stack.patch(f"/invocations/{INV}/purge-journal") == (200, None)
    assert await stack.patch(f"/invocations/{INV}/restart-as-new") == (
        410,
        error(
            f"The invocation '{INV}' cannot be restarted because the input is not available. This "
            "indicates that the journal was already purged, or not retained at all."
        ),
    )
