"""The example Greeter behind request identity: the SDK accepts only requests signed with the
key KINVOKE_TEST_IDENTITY_KEY names (publickeyv1_…). Each request that reaches the app (the SDK
answered 401 to the others) is appended to KINVOKE_TEST_IDENTITY_LOG, so a test sees which
signed requests the deployment served."""

from __future__ import annotations

import os
from typing import Any

import restate

from examples.python.services import greeter

_sdk = restate.app(services=[greeter], identity_keys=[os.environ["KINVOKE_TEST_IDENTITY_KEY"]])
_LOG = os.environ.get("KINVOKE_TEST_IDENTITY_LOG")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    status: list[int] = []

    async def recording_send(message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            status.append(int(message["status"]))
        await send(message)

    await _sdk(scope, receive, recording_send)
    if _LOG and scope.get("type") == "http":
        with open(_LOG, "a") as f:
            f.write(f"{scope['path']} {status[0] if status else 0}\n")
