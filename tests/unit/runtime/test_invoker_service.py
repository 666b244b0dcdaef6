"""The invoker's bookkeeping of attempts in flight (no deployment: attempts are stubbed)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from processor.invoker.service import InvokerService
from processor.state_machine import InvokeAttempt
from schemas.registry import Registry
from tests.unit.runtime.fakes import FakeEffects


@pytest.fixture
def invoker(monkeypatch: pytest.MonkeyPatch) -> InvokerService:
    async def long_attempt(*_: object) -> None:
        await asyncio.sleep(30)

    service = InvokerService(Registry, FakeEffects())  # type: ignore[arg-type]
    monkeypatch.setattr(service, "_attempt", long_attempt)
    service.start()
    yield service
    service.stop()


def test_a_newer_attempt_cancels_the_older_one_without_deadlock(invoker: InvokerService) -> None:
    finished = threading.Event()

    def start_both() -> None:
        invoker.invoke(0, InvokeAttempt("inv_a", 1), None, None, "Greeter")  # type: ignore[arg-type]
        # Cancelling attempt 1 runs its done callback, which takes the invoker's lock.
        invoker.invoke(0, InvokeAttempt("inv_a", 2), None, None, "Greeter")  # type: ignore[arg-type]
        finished.set()

    threading.Thread(target=start_both, daemon=True).start()
    assert finished.wait(5), "invoke() deadlocked cancelling the superseded attempt"
    assert invoker.in_flight(0) == 1
    invoker.cancel_partition(0)
    assert invoker.in_flight(0) == 0


def test_the_same_attempt_runs_once(invoker: InvokerService) -> None:
    for _ in range(3):
        invoker.invoke(1, InvokeAttempt("inv_b", 1), None, None, "Greeter")  # type: ignore[arg-type]
    assert invoker.in_flight(1) == 1


def test_a_delivery_for_a_cancelled_waiter_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt cancelled while its outcome was being appended: the delivery report must not
    blow up the producer's poller (it did, and the process stopped)."""
    from processor import effects as effects_module
    from schemas.records import Barrier, Command
    from schemas.settings import Settings

    callbacks = []

    class Recording:
        def __init__(self, _conf: object) -> None:
            pass

        def produce(self, *_a: object, on_delivery, **_k: object) -> None:  # type: ignore[no-untyped-def]
            callbacks.append(on_delivery)

    monkeypatch.setattr(effects_module, "Producer", Recording)
    producer = effects_module.EffectProducer(Settings())
    waiter = producer.append(0, b"k", Command(timestamp_ms=1, body=Barrier(owner="o", nonce="n")))
    waiter.cancel()
    callbacks[0](None, object())  # no InvalidStateError
    assert waiter.cancelled()
