"""Notifications for one running attempt, handed over from the processor's thread."""

from __future__ import annotations

import asyncio
import threading
from collections import deque


class Mailbox:
    """(journal index, frame) pairs in journal order. `put` from any thread; `get` in the
    invoker's event loop. Registered before the attempt's coroutine runs, so nothing posted
    meanwhile is lost."""

    def __init__(self) -> None:
        self._items: deque[tuple[int, bytes]] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def put(self, index: int, frame: bytes) -> None:
        with self._lock:
            self._items.append((index, frame))
            loop, event = self._loop, self._event
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    async def get(self) -> tuple[int, bytes]:
        if self._event is None:
            with self._lock:
                self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
            assert self._event is not None
            await self._event.wait()
            self._event.clear()
