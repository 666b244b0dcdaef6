"""`PATCH /invocations/{id}/cancel|kill|purge` (and the deprecated `DELETE /invocations/{id}`);
pause, resume, purge-journal and restart-as-new are in `invocation_ops`.

The admin API asks the invocation's partition through `commands` and answers with what the
processor did, in Restate's shapes and codes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from aiohttp import web

from admin_api.registration import RegistryError
from kafka_core.commands import CommandClient
from kafka_core.supervision import Unavailable
from schemas.ids import InvalidId, InvocationId
from schemas.records import (
    Command,
    ManageAnswer,
    ManageInvocation,
    ManageOperation,
    ManageOutcome,
    OperateInvocation,
    OperationAnswer,
)

# How long cancel/kill/purge waits for the processor's ManageAnswer on `results`.
ANSWER_TIMEOUT_S = 30.0


class InvocationControl(Protocol):
    async def manage(self, invocation_id: InvocationId, operation: ManageOperation) -> ManageOutcome: ...

    async def operate(self, invocation_id: InvocationId, command: OperateInvocation) -> OperationAnswer: ...


class KafkaInvocationControl:
    """Sends ManageInvocation through a `CommandClient` and waits for the ManageAnswer."""

    def __init__(self, client: CommandClient, *, answer_timeout_s: float = ANSWER_TIMEOUT_S) -> None:
        self.client = client
        self.answer_timeout_s = answer_timeout_s

    def health(self) -> str | None:
        return self.client.health()

    async def manage(self, invocation_id: InvocationId, operation: ManageOperation) -> ManageOutcome:
        body = ManageInvocation(invocation_id=str(invocation_id), operation=operation)
        answer = await self._ask(invocation_id, body, ManageAnswer, operation.name.lower())
        assert isinstance(answer, ManageAnswer)
        return answer.outcome

    async def operate(self, invocation_id: InvocationId, command: OperateInvocation) -> OperationAnswer:
        what = command.operation.name.lower().replace("_", "-")
        answer = await self._ask(invocation_id, command, OperationAnswer, what)
        assert isinstance(answer, OperationAnswer)
        return answer

    async def _ask(
        self,
        invocation_id: InvocationId,
        body: ManageInvocation | OperateInvocation,
        kind: type[ManageAnswer | OperationAnswer],
        name: str,
    ) -> ManageAnswer | OperationAnswer:
        """Append `body` for the invocation's partition and wait for the processor's answer."""
        results = self.client.results
        if results is None:
            raise RegistryError(503, "invocation management is starting; retry")
        inv = str(invocation_id)
        what = f"the {name} request"
        waiter = results.register_ack(inv, kind)
        try:
            command = Command(timestamp_ms=int(time.time() * 1000), body=body)
            try:
                await self.client.send(invocation_id, command)
            except Unavailable as e:
                raise RegistryError(503, f"cannot append {what} to the log: {e}") from None
            answer = await asyncio.wait_for(waiter, self.answer_timeout_s)
        except TimeoutError:
            raise RegistryError(
                503,
                f"{what} for invocation '{inv}' is in the log, but no processor answered within "
                f"{self.answer_timeout_s:g}s",
            ) from None
        except Unavailable as e:
            raise RegistryError(503, f"cannot wait for the answer about invocation '{inv}': {e}") from None
        finally:
            results.unregister(inv, waiter)
        assert isinstance(answer, kind)
        return answer


_MODES = {"cancel": ManageOperation.CANCEL, "kill": ManageOperation.KILL, "purge": ManageOperation.PURGE}


def parse_invocation_id(text: str) -> InvocationId:
    try:
        return InvocationId.parse(text)
    except InvalidId as e:
        reason = str(e).rsplit(": ", 1)[-1]
        raise RegistryError(400, f"The request field 'invocation_id' is invalid. Reason: {reason}") from None


async def run_operation(control: InvocationControl, text_id: str, operation: ManageOperation) -> web.Response:
    invocation_id = parse_invocation_id(text_id)
    outcome = await control.manage(invocation_id, operation)
    inv = str(invocation_id)
    if outcome == ManageOutcome.NOT_FOUND:
        raise RegistryError(404, f"The requested invocation '{inv}' does not exist")
    if outcome == ManageOutcome.ALREADY_COMPLETED:
        raise RegistryError(409, f"The invocation '{inv}' was already completed.")
    if outcome == ManageOutcome.NOT_COMPLETED:
        raise RegistryError(409, f"The invocation '{inv}' is not yet completed.")
    return web.Response(status=202 if outcome == ManageOutcome.ACCEPTED else 200)


def mode_of(name: str) -> ManageOperation:
    op = _MODES.get(name.lower())
    if op is None:
        raise RegistryError(400, f"unknown invocation operation '{name}'")
    return op
