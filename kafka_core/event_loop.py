"""The asyncio event loop of kinvoke's servers (ingress, admin, the processor's invoker).

uvloop (libuv) by default: the ingress and the invoker spend a good part of their CPU in the
event loop itself (selector, transports, wake-ups from the Kafka threads), which uvloop does in C.
`KINVOKE_UVLOOP=0` runs the standard library's loop instead (to rule the loop out when debugging).
"""

from __future__ import annotations

import asyncio

import uvloop


def new_event_loop(use_uvloop: bool = True) -> asyncio.AbstractEventLoop:
    """A new event loop, uvloop's unless `use_uvloop` is off; not made the thread's current loop."""
    return uvloop.new_event_loop() if use_uvloop else asyncio.new_event_loop()
