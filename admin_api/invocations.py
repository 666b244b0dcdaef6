"""`PATCH /invocations/{id}/cancel|kill|purge` (and the deprecated `DELETE /invocations/{id}`).

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
from schemas.ids import InvalidId, InvocationId
from schemas.records import Command, ManageAnswer, ManageInvocation, ManageOperation, ManageOutcome

ANSWER_TIMEOUT_S = 30.0


class InvocationControl(Protocol):
    async def manage(self, invocation_id: InvocationId, operation: ManageOperation) -> ManageOutcome: ...


class KafkaInvocationControl:
    """Sends ManageInvocation through a `CommandClient` and waits for the ManageAnswer."""

    def __init__(self, client: CommandClient) -> None:
        self.client = client

    async def manage(self, invocation_id: InvocationId, operation: ManageOperation) -> ManageOutcome:
        results = self.client.results
        assert results is not None, "the command client is not started"
        inv = str(invocation_id)
        waiter = results.register_ack(inv)
        try:
            command = Command(
                timestamp_ms=int(time.time() * 1000),
                body=ManageInvocation(invocation_id=inv, operation=operation),
            )
            await self.client.send(invocation_id, command)
            answer = await asyncio.wait_for(waiter, ANSWER_TIMEOUT_S)
        except TimeoutError:
            raise RegistryError(503, f"no processor answered for invocation '{inv}' in time") from None
        finally:
            results.unregister(inv, waiter)
        assert isinstance(answer, ManageAnswer)
        return answer.outcome


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
