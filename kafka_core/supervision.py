"""Supervised background work: nothing in a kinvoke process fails silently.

Every background thread runs under a `SupervisedThread`: an exception is logged with the
component's name and the thread's body is started again after a backoff; a component that keeps
failing (or that declares itself unrecoverable) makes the whole process stop with a non-zero exit
code through `fatal()`, so a supervisor (`kinvoke dev`, systemd, Kubernetes) can restart it.
This is Faust's `mode.Service` / Restate's TaskCenter in small.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)

FATAL_EXIT_CODE = 70  # EX_SOFTWARE
_fatal = threading.Event()
_fatal_reason: list[str] = []


class Unrecoverable(Exception):
    """Raised by a component that must not be restarted in this process (e.g. fenced for good)."""


def fatal(component: str, reason: str, *, grace_s: float = 30.0) -> None:
    """Stop the process: ask it to shut down cleanly (SIGTERM to itself), then force the exit if
    the shutdown does not finish within `grace_s`."""
    if _fatal.is_set():
        return
    _fatal_reason.append(f"{component}: {reason}")
    _fatal.set()
    log.critical("process.fatal", component=component, reason=reason)

    def force() -> None:
        time.sleep(grace_s)
        log.critical("process.forced_exit", component=component, after_s=grace_s)
        os._exit(FATAL_EXIT_CODE)

    threading.Thread(target=force, name="fatal-watchdog", daemon=True).start()
    os.kill(os.getpid(), signal.SIGTERM)


def is_fatal() -> bool:
    return _fatal.is_set()


def fatal_reason() -> str | None:
    return _fatal_reason[0] if _fatal_reason else None


def exit_code() -> int:
    """What an entry point returns after its shutdown: non-zero when a component gave up."""
    return FATAL_EXIT_CODE if _fatal.is_set() else 0


class SupervisedThread:
    """Runs `body(stop)` in a daemon thread until `stop` is set, restarting it when it fails.

    `body` is expected to loop until `stop.is_set()`; returning early counts as a failure too
    (a component that silently ends is as bad as one that raises). After `max_failures` failures
    within `window_s` seconds the process is stopped through `fatal()`.
    """

    def __init__(
        self,
        name: str,
        body: Callable[[threading.Event], None],
        *,
        max_failures: int = 10,
        window_s: float = 60.0,
        backoff_s: tuple[float, float] = (0.1, 5.0),
        on_fatal: Callable[[str, str], None] = fatal,
    ) -> None:
        self.name = name
        self._body = body
        self._max_failures = max_failures
        self._window_s = window_s
        self._backoff = backoff_s
        self._on_fatal = on_fatal
        self.stop_event = threading.Event()
        self.failures: list[float] = []
        self.restarts = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> SupervisedThread:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.stop_event.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("component.stop_timeout", component=self.name, timeout_s=timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self.stop_event.is_set():
            try:
                self._body(self.stop_event)
                if self.stop_event.is_set():
                    return
                reason = "returned while it should still be running"
                log.error("component.exited", component=self.name, restarts=self.restarts)
            except Unrecoverable as e:
                self._on_fatal(self.name, str(e))
                return
            except Exception as e:  # noqa: BLE001 - every failure is logged and supervised
                if self.stop_event.is_set():
                    log.warning("component.failed_while_stopping", component=self.name, exc_info=True)
                    return
                reason = f"{type(e).__name__}: {e}"
                log.exception("component.crashed", component=self.name, restarts=self.restarts)
            now = time.monotonic()
            self.failures = [t for t in self.failures if now - t < self._window_s] + [now]
            if len(self.failures) >= self._max_failures:
                self._on_fatal(
                    self.name, f"failed {len(self.failures)} times in {self._window_s:.0f}s; last: {reason}"
                )
                return
            if self.stop_event.wait(delay):
                return
            delay = min(delay * 2, self._backoff[1])
            self.restarts += 1
            log.info("component.restarting", component=self.name, restarts=self.restarts)
