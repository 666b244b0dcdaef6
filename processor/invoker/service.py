"""The invoker: runs attempts against deployments and appends their outcomes to `commands`.

Attempts run on an asyncio loop in a thread of their own, so HTTP to deployments never waits for
the processor's loop and vice versa. Each attempt ends with exactly one `AttemptEnded` effect,
appended by the invoker itself (see `processor.effects`); any exception inside an attempt
becomes a failed attempt carrying the message. Attempts belong to a partition: when the
partition is given up, its attempts are cancelled (the next owner re-runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future

import structlog
from confluent_kafka import KafkaError, KafkaException

from kafka_core.options import invocation_options
from kafka_core.request_identity import RequestSigner
from processor import metrics
from processor.effects import EffectProducer
from processor.invoker.attempt import AttemptRequest, AttemptResult, Invoker, negotiate_version
from processor.invoker.deployments import deployment_for
from processor.invoker.mailbox import Mailbox
from processor.state_machine import InvokeAttempt, NotifyAttempt
from processor.tracing import Tracing
from schemas.ids import InvocationId
from schemas.partitioner import routing_key
from schemas.records import (
    AttemptEnded,
    AttemptFailed,
    AttemptProgress,
    Command,
    Ended,
    ResolvedCallee,
    Suspended,
)
from schemas.registry import Registry
from schemas.service_protocol import Frame, MessageType, decode_message
from schemas.settings import Settings

log = structlog.get_logger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


_OUTCOMES: dict[type, str] = {Ended: "ended", Suspended: "suspended", AttemptFailed: "failed"}


class RecordTooLarge(Exception):
    """An attempt's effect that no broker will take: its new journal entries travel in one
    record, over `KINVOKE_MAX_RECORD_BYTES` (or the topic's max.message.bytes)."""

    def __init__(self, command: Command, limit: int, error: Exception) -> None:
        entries = getattr(command.body, "new_entries", [])
        super().__init__(
            f"the attempt's new journal entries ({len(entries)}, {sum(len(e) for e in entries)} bytes) "
            f"do not fit in one Kafka record (KINVOKE_MAX_RECORD_BYTES={limit} or the commands "
            f"topic's max.message.bytes): {error}"
        )


def _attempt_done(service: str, handler: str, outcome: str, started: float) -> None:
    metrics.ATTEMPTS_COMPLETED.labels(service, handler, outcome).inc()
    metrics.ATTEMPT_SECONDS.labels(service, outcome).observe(time.perf_counter() - started)


def resolve_callees(
    registry: Registry, entries: list[bytes], settings: Settings | None = None
) -> list[ResolvedCallee]:
    """Registry answers for the attempt's calls, recorded in the effect: the state machine then
    needs no registry, and replaying the log gives the same children."""
    out: list[ResolvedCallee] = []
    for raw in entries:
        frame = Frame.parse(raw)
        if frame.type not in (MessageType.CALL_COMMAND, MessageType.ONE_WAY_CALL_COMMAND):
            continue
        msg = decode_message(frame)
        svc = registry.service(msg.service_name)
        handler = registry.handler(msg.service_name, msg.handler_name)
        if svc is None:
            out.append(ResolvedCallee(error=f"service '{msg.service_name}' not found"))
        elif handler is None:
            out.append(
                ResolvedCallee(error=f"handler '{msg.handler_name}' of '{msg.service_name}' not found")
            )
        else:
            idempotent = bool(msg.idempotency_key) if msg.HasField("idempotency_key") else False
            options = (
                invocation_options(
                    registry, msg.service_name, msg.handler_name, settings, idempotent=idempotent
                )
                if settings is not None
                else None
            )
            out.append(
                ResolvedCallee(service_ty=svc.service_type, handler_ty=handler.handler_type, options=options)
            )
    return out


class InvokerService:
    def __init__(
        self,
        registry: Callable[[], Registry],
        effects: EffectProducer,
        concurrency_per_deployment: int = 64,
        settings: Settings | None = None,
        tracing: Tracing | None = None,
        signer: RequestSigner | None = None,
    ) -> None:
        self._registry = registry
        self._tracing = tracing
        self._settings = settings  # the server's defaults, for the options of invocations it calls
        self._signer = signer  # request identity: attempts are signed with it
        self._effects = effects
        # Attempts in flight per deployment: a burst must wait here, not fail at the deployment
        # (an HTTP/2 server allows ~100 concurrent streams per connection).
        self._concurrency = concurrency_per_deployment
        self._slots: dict[str, asyncio.Semaphore] = {}
        # Set while attempts wait for a slot: idle open streams then close their side early (the
        # SDK suspends) instead of holding a slot until their inactivity timeout.
        self._pressure: dict[str, asyncio.Event] = {}
        self._waiting: dict[str, int] = {}
        self._mailboxes: dict[tuple[str, int], Mailbox] = {}  # running attempts' notifications
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="invoker", daemon=True)
        self._invoker: Invoker | None = None
        # (invocation id, attempt) -> its future, per partition
        self._in_flight: dict[int, dict[tuple[str, int], Future[None]]] = {}
        self._lock = threading.Lock()

    def _run_loop(self) -> None:
        try:
            self._loop.run_forever()
        except BaseException:
            log.exception("invoker.loop_crashed")
            raise

    def start(self) -> InvokerService:
        self._thread.start()
        self._invoker = asyncio.run_coroutine_threadsafe(self._make_invoker(), self._loop).result(10)
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    async def _make_invoker(self) -> Invoker:
        return Invoker(signer=self._signer)

    def stop(self) -> None:
        with self._lock:
            partitions = list(self._in_flight)
        for p in partitions:
            self.cancel_partition(p)
        if self._invoker is not None and self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self._invoker.aclose(), self._loop).result(5)
            except Exception:  # noqa: BLE001 - shutting down anyway
                log.warning("invoker.close_failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def in_flight(self, partition: int | None = None) -> int:
        with self._lock:
            if partition is not None:
                return len(self._in_flight.get(partition, {}))
            return sum(len(v) for v in self._in_flight.values())

    def invoke(
        self, partition: int, action: InvokeAttempt, request: AttemptRequest, pinned: str | None, service: str
    ) -> None:
        key = (action.invocation_id, action.attempt)
        with self._lock:
            running = self._in_flight.setdefault(partition, {})
            if key in running:
                return
            # An older attempt of the same invocation is superseded: its outcome would be stale.
            older = [k for k in running if k[0] == action.invocation_id and k[1] < action.attempt]
            superseded = [running.pop(k) for k in older]
            mailbox = self._mailboxes[key] = Mailbox()  # before the attempt runs: nothing is missed
            fut = asyncio.run_coroutine_threadsafe(
                self._attempt(partition, action, pinned, service, request, mailbox), self._loop
            )
            running[key] = fut
        for old in superseded:  # outside the lock: cancelling runs its done callback, which takes it
            old.cancel()

        def done(_f: Future[None], p: int = partition, k: tuple[str, int] = key) -> None:
            with self._lock:
                if self._in_flight.get(p, {}).get(k) is _f:
                    del self._in_flight[p][k]
                    self._mailboxes.pop(k, None)

        fut.add_done_callback(done)

    def notify(self, partition: int, action: NotifyAttempt) -> None:
        """A notification for a running attempt: written on its stream if that is still open."""
        with self._lock:
            mailbox = self._mailboxes.get((action.invocation_id, action.attempt))
        if mailbox is not None:
            mailbox.put(action.index, action.frame)

    def abort(self, partition: int, invocation_id: str, attempt: int) -> None:
        """Stop a running attempt (its invocation was killed); its stream is reset."""
        with self._lock:
            fut = self._in_flight.get(partition, {}).pop((invocation_id, attempt), None)
            self._mailboxes.pop((invocation_id, attempt), None)
        if fut is not None:
            fut.cancel()

    @contextlib.asynccontextmanager
    async def _slot(self, uri: str, slots: asyncio.Semaphore, pressure: asyncio.Event) -> AsyncIterator[None]:
        if slots.locked():
            self._waiting[uri] = self._waiting.get(uri, 0) + 1
            pressure.set()
            try:
                await slots.acquire()
            finally:
                self._waiting[uri] -= 1
                if not self._waiting[uri]:
                    pressure.clear()
        else:
            await slots.acquire()
        try:
            yield
        finally:
            slots.release()

    def cancel_partition(self, partition: int) -> None:
        with self._lock:
            running = self._in_flight.pop(partition, {})
            for key in running:
                self._mailboxes.pop(key, None)
        for fut in running.values():
            fut.cancel()
        if running:
            log.info("invoker.cancelled", partition=partition, attempts=len(running))

    async def _attempt(
        self,
        partition: int,
        action: InvokeAttempt,
        pinned: str | None,
        service: str,
        request: AttemptRequest,
        mailbox: Mailbox | None = None,
    ) -> None:
        delay = (action.not_before_ms - now_ms()) / 1000
        if delay > 0:
            await asyncio.sleep(delay)
        deployment_id = pinned or ""
        metrics.ATTEMPTS_STARTED.labels(service, request.handler).inc()
        started = time.perf_counter()
        span: object = None
        if self._tracing is not None and self._tracing.enabled:
            span, trace_headers = self._tracing.start_attempt(
                request.invocation_id, request.traceparent, f"{service}/{request.handler}", action.attempt
            )
            request = dataclasses.replace(request, trace_headers=trace_headers)
        try:
            deployment = deployment_for(self._registry(), service, pinned)
            if deployment is None:
                result = AttemptResult(
                    [],
                    AttemptFailed(code=500, message=f"no deployment registered for service '{service}'"),
                    0,
                    None,
                )
            else:
                deployment_id, target = deployment
                assert self._invoker is not None
                slots = self._slots.setdefault(target.uri, asyncio.Semaphore(self._concurrency))

                async def progress(entries: list[bytes], deployment_id: str = deployment_id) -> None:
                    # Journaled through the log before anything that depends on it is sent back.
                    effect = AttemptProgress(
                        invocation_id=request.invocation_id,
                        attempt=action.attempt,
                        deployment_id=deployment_id,
                        protocol_version=negotiate_version(target) or 0,
                        new_entries=entries,
                        callees=resolve_callees(self._registry(), entries, self._settings),
                    )
                    await self._append(
                        partition, request.invocation_id, Command(timestamp_ms=now_ms(), body=effect)
                    )

                pressure = self._pressure.setdefault(target.uri, asyncio.Event())
                async with self._slot(target.uri, slots, pressure):
                    result = await self._invoker.run_attempt(
                        target,
                        request,
                        progress=progress,
                        mailbox=mailbox,
                        inactivity_timeout_s=request.inactivity_timeout_s,
                        pressure=pressure,
                    )
            callees = resolve_callees(self._registry(), result.new_entries, self._settings)
        except asyncio.CancelledError:
            _attempt_done(service, request.handler, "cancelled", started)
            Tracing.end_attempt(span, "cancelled")
            raise
        except Exception as e:  # noqa: BLE001 - an attempt that blows up is a failed attempt
            log.exception("attempt.crashed", invocation_id=request.invocation_id, attempt=action.attempt)
            result = AttemptResult(
                [], AttemptFailed(code=500, message=f"kinvoke failed running the attempt: {e!r}"), 0, None
            )
            callees = []
        outcome = result.outcome
        outcome_name = _OUTCOMES.get(type(outcome), "failed")
        _attempt_done(service, request.handler, outcome_name, started)
        Tracing.end_attempt(
            span, outcome_name, outcome.message if isinstance(outcome, AttemptFailed) else None
        )
        failure: dict[str, object] = {}
        if isinstance(outcome, AttemptFailed):
            # A failed attempt is a warning with what the SDK said: code, message, the command it
            # points at and its stack trace (`stack`: the console renderer prints it as lines).
            failure = {"code": outcome.code, "error": outcome.message}
            if outcome.related_command_index is not None:
                failure["related_command_index"] = outcome.related_command_index
            if outcome.related_command_name:
                failure["related_command_name"] = outcome.related_command_name
            if outcome.related_command_type is not None:
                failure["related_command_type"] = Frame(outcome.related_command_type, 0, b"").name
            if outcome.stacktrace:
                failure["stack"] = outcome.stacktrace
        (log.warning if failure else log.info)(
            "attempt.ended",
            invocation_id=request.invocation_id,
            target=f"{service}/{request.handler}",
            attempt=action.attempt,
            deployment=deployment_id,
            outcome=type(outcome).__name__,
            new_entries=len(result.new_entries),
            **failure,
        )
        effect = AttemptEnded(
            callees=callees,
            invocation_id=request.invocation_id,
            attempt=action.attempt,
            deployment_id=deployment_id,
            protocol_version=result.protocol_version,
            server=result.server,
            new_entries=list(result.new_entries),
            outcome=outcome,
        )
        try:
            await self._append(partition, request.invocation_id, Command(timestamp_ms=now_ms(), body=effect))
        except RecordTooLarge as e:
            # Journaling nothing of the attempt fails it (retried as any failure, the journal as
            # it was), where retrying the record forever would leave the invocation hanging.
            log.error("attempt.record_too_large", invocation_id=request.invocation_id, error=str(e))
            failed = effect.model_copy(
                update={"new_entries": [], "callees": [], "outcome": AttemptFailed(code=500, message=str(e))}
            )
            await self._append(partition, request.invocation_id, Command(timestamp_ms=now_ms(), body=failed))

    async def _append(self, partition: int, invocation_id: str, command: Command) -> None:
        """Append the effect, retrying until it is written (or the partition is given up, which
        cancels this task: the next owner re-runs the attempt)."""
        key = routing_key(InvocationId.parse(invocation_id).partition_key)
        delay = 0.1
        while True:
            try:
                await asyncio.wrap_future(self._effects.append(partition, key, command))
                return
            except asyncio.CancelledError:
                raise
            except KafkaException as e:
                if e.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:  # asking again would not help
                    limit = (self._settings or Settings()).max_record_bytes
                    raise RecordTooLarge(command, limit, e) from e
                log.warning("attempt.effect_retry", invocation_id=invocation_id, error=str(e), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as e:  # noqa: BLE001 - retried: an outcome must not be lost
                log.warning("attempt.effect_retry", invocation_id=invocation_id, error=str(e), in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
