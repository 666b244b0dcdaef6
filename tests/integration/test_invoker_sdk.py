"""The invoker against a real Python SDK deployment, over h2c and HTTP/1.1 (no broker involved)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from processor.invoker import AttemptRequest, DeploymentTarget, Ended, Failed, Invoker, Suspended
from schemas.ids import InvocationId
from schemas.service_protocol import (
    Frame,
    MessageType,
    decode_message,
    input_command,
    run_completion_notification,
)
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

INV = InvocationId.generate(1, 1_795_000_000_000, 99)


@pytest.fixture(scope="module")
def sdk_uri() -> Iterator[str]:
    with run_sdk_deployment() as uri:
        yield uri


@pytest.fixture
async def invoker() -> AsyncIterator[Invoker]:
    inv = Invoker(connect_timeout_s=2)
    yield inv
    await inv.aclose()


@pytest.fixture(params=[False, True], ids=["h2c", "http1.1"])
def deployment(request: pytest.FixtureRequest, sdk_uri: str) -> DeploymentTarget:
    return DeploymentTarget(uri=sdk_uri, use_http_11=request.param)


def request_for(
    handler: str, argument: object, journal: list[bytes] | None = None, service: str = "Greeter"
) -> AttemptRequest:
    return AttemptRequest(
        invocation_id=str(INV),
        invocation_id_raw=INV.to_bytes(),
        service=service,
        handler=handler,
        key=None,
        journal=journal or [input_command(json.dumps(argument).encode(), [])],
        state=None,
    )


async def test_greet_ends_with_output(invoker: Invoker, deployment: DeploymentTarget) -> None:
    result = await invoker.run_attempt(deployment, request_for("greet", "Alice"))
    assert result.outcome == Ended()
    assert result.protocol_version == 6
    assert result.server and result.server.startswith("restate-sdk-python/")
    [out] = [Frame.parse(e) for e in result.new_entries]
    assert out.type == MessageType.OUTPUT_COMMAND
    assert json.loads(decode_message(out).value.content) == "Hello Alice"


async def test_ctx_run_steps_suspend_and_resume_until_done(
    invoker: Invoker, deployment: DeploymentTarget
) -> None:
    journal = [input_command(b"5", [])]
    for attempt in range(1, 10):
        result = await invoker.run_attempt(deployment, request_for("steps", 5, journal))
        types = [Frame.parse(e).type for e in result.new_entries]
        if isinstance(result.outcome, Ended):
            break
        # Each attempt runs one step: Run + its proposal, then suspends waiting for it.
        assert types == [MessageType.RUN_COMMAND, MessageType.PROPOSE_RUN_COMPLETION]
        assert result.outcome == Suspended(waiting_completions=[attempt], waiting_signals=[1])
        for raw in result.new_entries:
            frame = Frame.parse(raw)
            is_proposal = frame.type == MessageType.PROPOSE_RUN_COMPLETION
            journal.append(run_completion_notification(decode_message(frame)) if is_proposal else raw)
    else:
        pytest.fail("never ended")
    assert attempt == 4
    assert types == [MessageType.OUTPUT_COMMAND]
    assert json.loads(decode_message(Frame.parse(result.new_entries[0])).value.content) == 5 + 1 + 2 + 3


async def test_terminal_error_is_an_output_failure(invoker: Invoker, deployment: DeploymentTarget) -> None:
    result = await invoker.run_attempt(deployment, request_for("terminal", "nope", service="Failing"))
    assert result.outcome == Ended()
    out = decode_message(Frame.parse(result.new_entries[0]))
    assert (out.failure.code, out.failure.message) == (418, "nope")


async def test_retryable_exception_is_a_failed_attempt(
    invoker: Invoker, deployment: DeploymentTarget
) -> None:
    result = await invoker.run_attempt(deployment, request_for("flaky", "x", service="Failing"))
    assert isinstance(result.outcome, Failed)
    assert result.outcome.code == 500
    assert "flaky: x" in result.outcome.message


async def test_unknown_handler_is_a_failed_attempt_naming_the_404(
    invoker: Invoker, deployment: DeploymentTarget
) -> None:
    result = await invoker.run_attempt(deployment, request_for("nope", "x"))
    assert isinstance(result.outcome, Failed) and "404" in result.outcome.message


async def test_nothing_listening_is_a_failed_attempt(invoker: Invoker) -> None:
    from tests.conftest import free_port

    target = DeploymentTarget(uri=f"http://127.0.0.1:{free_port()}")
    result = await invoker.run_attempt(target, request_for("greet", "x"))
    assert isinstance(result.outcome, Failed)
    assert "error when calling" in result.outcome.message and "cannot connect" in result.outcome.message


async def test_a_bidirectional_stream_runs_all_steps_in_one_attempt(invoker: Invoker, sdk_uri: str) -> None:
    """Full duplex, as Restate does with BIDI_STREAM deployments: each proposal is reported as
    progress and its RunCompletion written back on the open stream; the handler ends without
    suspending. This test plays the processor's part (journal the proposal, send the completion)."""
    from processor.invoker.mailbox import Mailbox

    mailbox = Mailbox()
    reported: list[list[bytes]] = []
    journal = [input_command(b"5", [])]

    async def progress(entries: list[bytes]) -> None:
        reported.append(entries)
        for raw in entries:
            frame = Frame.parse(raw)
            journal.append(raw)
            if frame.type == MessageType.PROPOSE_RUN_COMPLETION:
                proposal = decode_message(frame)
                note = run_completion_notification(proposal)
                journal.append(note)
                mailbox.put(len(journal) - 1, note)

    target = DeploymentTarget(uri=sdk_uri, bidi=True)
    request = request_for("steps", 5)
    result = await invoker.run_attempt(
        target, request, progress=progress, mailbox=mailbox, inactivity_timeout_s=10
    )
    assert result.outcome == Ended()
    kinds = [Frame.parse(e).type for batch in reported for e in batch]
    assert kinds.count(MessageType.RUN_COMMAND) == 3 and kinds.count(MessageType.PROPOSE_RUN_COMPLETION) == 3
    [out] = [Frame.parse(e) for e in result.new_entries]
    assert json.loads(decode_message(out).value.content) == 5 + 1 + 2 + 3


async def test_an_idle_bidirectional_stream_closes_and_the_sdk_suspends(
    invoker: Invoker, sdk_uri: str
) -> None:
    from processor.invoker.mailbox import Mailbox

    target = DeploymentTarget(uri=sdk_uri, bidi=True)
    reported: list[list[bytes]] = []

    async def progress(entries: list[bytes]) -> None:
        reported.append(entries)

    result = await invoker.run_attempt(
        target, request_for("nap", 60_000), progress=progress, mailbox=Mailbox(), inactivity_timeout_s=0.3
    )
    assert isinstance(result.outcome, Suspended)
    assert [Frame.parse(e).type for batch in reported for e in batch] == [MessageType.SLEEP_COMMAND]
