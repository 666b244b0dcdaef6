"""The HTTP ingress (aiohttp): validates a request against the registry, produces an Invoke to
`commands`, and for calls waits for the outcome on `results`."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import structlog
from aiohttp import web

from ingress_gateway.limits import REQUEST_SIZE_LIMIT, SERVER_ARGS, restate_http_limits
from ingress_gateway.metrics import request_metrics, set_kind
from ingress_gateway.paths import (
    SCOPES_UNSUPPORTED,
    AwakeablePath,
    HealthPath,
    IngressError,
    InvocationPath,
    OutputPath,
    TargetPath,
    normalize_path,
    parse_request_path,
    target_from_body,
)
from ingress_gateway.targets import ResolvedTarget, UnknownTarget, known_service_type, resolve_target
from ingress_gateway.tracing import IngressTracing
from kafka_core import observability, supervision
from kafka_core.commands import CommandClient
from kafka_core.kafka import check_record_limits_in_background
from kafka_core.metadata import MetadataView
from kafka_core.observability import health_report
from kafka_core.options import invocation_options
from kafka_core.results import ResultsListener
from kafka_core.supervision import Unavailable, join_problems
from schemas.durations import parse_duration_ms, rfc3339_nanos
from schemas.ids import InvalidId, InvocationId, parse_awakeable_id, partition_key_of
from schemas.records import (
    Command,
    Failure,
    GetOutput,
    HandlerType,
    Header,
    InvocationAccepted,
    InvocationResult,
    InvocationTarget,
    Invoke,
    InvokedBy,
    InvokedByKind,
    OutputNotReady,
    ServiceType,
    Signal,
    Success,
)
from schemas.registry import Registry
from schemas.settings import Settings
from schemas.topics import Topics

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

CORS_HEADERS = {
    "vary": "origin, access-control-request-method, access-control-request-headers",
    "access-control-allow-credentials": "true",
}
# Hop-by-hop and ingress-only headers are not passed to the handler.
_DROPPED_HEADERS = {"connection", "host", "transfer-encoding", "keep-alive", "upgrade"}

# How long the ingress waits for a processor's answer that comes at once when a processor owns
# the partition (InvocationAccepted for idempotent/workflow sends, the answer of `/output`).
ANSWER_TIMEOUT_S = 30.0
# How long a call (or `/attach`) waits for its invocation to end. None: as Restate, until it
# ends, however long it runs (the wait still ends with 503 if the results tail is given up).
CALL_TIMEOUT_S: float | None = None


def error_response(
    status: int,
    message: str,
    source: str = "ingress",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"code": status, "message": message, **extra, "source": source}
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        content_type="application/json",
        headers={"x-restate-error-source": source, **CORS_HEADERS, **(headers or {})},
    )


class _NoAnswer(Exception):
    """A bounded wait for a processor's answer passed its bound."""


class Ingress:
    def __init__(
        self,
        settings: Settings,
        metadata: MetadataView,
        *,
        commands: CommandClient | None = None,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        call_timeout_s: float | None = CALL_TIMEOUT_S,
        tracing: IngressTracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing or IngressTracing(settings)
        self.metadata = metadata
        self.commands = commands or CommandClient(settings)
        self.answer_timeout_s = answer_timeout_s
        self.call_timeout_s = call_timeout_s

    @property
    def results(self) -> ResultsListener | None:
        return self.commands.results

    async def start(self) -> None:
        await self.commands.start()

    async def stop(self) -> None:
        await self.commands.stop()

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[request_metrics, restate_http_limits, cors_middleware],
            client_max_size=REQUEST_SIZE_LIMIT,
            handler_args=SERVER_ARGS,
        )
        app.router.add_get("/metrics", self.metrics)
        app.router.add_route("OPTIONS", "/{tail:.*}", self.preflight)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        app.on_startup.append(lambda _app: self.start())
        app.on_shutdown.append(lambda _app: self._release_waiters())
        app.on_cleanup.append(lambda _app: self.stop())
        app.on_cleanup.append(lambda _app: asyncio.to_thread(self.tracing.shutdown))
        return app

    async def _release_waiters(self) -> None:
        """On shutdown, waiting calls answer 503 at once instead of holding the shutdown up (their
        invocations go on; the client can attach to them again)."""
        if self.results is not None:
            self.results.fail_all("the ingress is shutting down; attach to the invocation again")

    def problem(self) -> str | None:
        """None while the ingress can serve, else why not (what `/restate/health` answers)."""
        return join_problems(self.metadata.health(), self.commands.health())

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Every path goes through Restate's path grammar first (`paths.parse_request_path`),
        so unknown services, bad paths and methods are answered as Restate answers them."""
        path = normalize_path(request.raw_path.split("?", 1)[0])
        try:
            parsed = await self._look_up(lambda reg: parse_request_path(path, known_service_type(reg)))
        except IngressError as e:
            return error_response(e.status, e.message)
        if isinstance(parsed, HealthPath):
            set_kind(request, "health")
            return await self.health(request) if request.method == "GET" else method_not_allowed()
        if isinstance(parsed, AwakeablePath):
            set_kind(request, "awakeable")
            return await self.complete_awakeable(request, parsed)
        if isinstance(parsed, OutputPath):
            set_kind(request, "attach" if parsed.attach else "output")
            return await self.get_output(request, parsed)
        if isinstance(parsed, TargetPath):
            set_kind(request, parsed.action)
            return await self.by_target(request, parsed)
        set_kind(request, "send" if parsed.send else "call")
        return await self.invoke(request, parsed, path)

    async def _look_up(self, lookup: Callable[[Registry], _T]) -> _T:
        """`lookup` on the registry; when it finds a service or handler missing, once more after
        this process' registry view has read the metadata topic to its end (bounded): a
        deployment that the admin (another process) acknowledged a moment ago is then known, and
        only then is the answer 404 (read-your-writes across processes)."""
        try:
            return lookup(self.metadata.registry())
        except UnknownTarget:
            catch_up = getattr(self.metadata, "catch_up", None)
            if catch_up is None:  # a registry with no Kafka view behind it (unit tests' stand-ins)
                raise
        try:
            await asyncio.to_thread(catch_up)
        except TimeoutError as e:
            raise IngressError(503, f"cannot tell whether the target is registered: {e}") from None
        return lookup(self.metadata.registry())

    async def health(self, request: web.Request) -> web.Response:
        """Restate's `{"services": [...]}`, and kinvoke's `kafka` and `registry` beside it: whether
        Kafka is reachable and whether this ingress' registry view is current (it is caught up
        with the metadata topic's end, asked of the broker now). 503 as before when a Kafka client
        is down; a view that is merely behind answers 200 with `"current": false`."""
        problem = self.problem()
        if problem is not None:
            report = await health_report(problem, None)
            report["registry"]["problem"] = "not checked: Kafka is unreachable"
            return error_response(503, f"the ingress is not healthy: {problem}", **_details(report))
        report = await health_report(None, getattr(self.metadata, "catch_up", None))
        names = sorted(self.metadata.registry().services)
        return web.json_response(
            {"services": names, **_details(report)}, dumps=lambda o: json.dumps(o, separators=(",", ":"))
        )

    async def metrics(self, request: web.Request) -> web.Response:
        set_kind(request, "metrics")
        return await observability.metrics(request)

    async def complete_awakeable(self, request: web.Request, path: AwakeablePath) -> web.Response:
        """`POST /restate/awakeables/{id}/resolve` (body = the value) or `/reject` (body = reason)."""
        if request.method != "POST":
            return method_not_allowed()
        try:
            body = await _read_body(request)
            target, signal_id = parse_awakeable_id(path.awakeable_id)
        except IngressError as e:
            return error_response(e.status, e.message)
        except InvalidId as e:
            return error_response(400, str(e))
        result: Success | Failure = (
            Success(value=body) if path.resolve else Failure(code=500, message=body.decode(errors="replace"))
        )
        signal = Signal(invocation_id=str(target), signal_id=signal_id, result=result)
        failed = await self._append(
            target, Command(timestamp_ms=int(time.time() * 1000), body=signal), "the completion"
        )
        return failed or web.Response(status=202)

    def _invocation_of(self, path: OutputPath) -> tuple[InvocationId, str | None]:
        """The invocation a path (or a target body) names, and its output's content type.
        Raises InvalidId for a bad invocation id."""
        if path.invocation_id is not None:
            return InvocationId.parse(path.invocation_id), "application/json"
        if path.workflow is not None:
            name, key = path.workflow
            return InvocationId.for_workflow(name, key), self._output_content_type(name, None)
        assert path.idempotent is not None
        service, key_or_none, handler, idempotency_key = path.idempotent
        invocation_id = InvocationId.for_idempotent_request(service, key_or_none, handler, idempotency_key)
        return invocation_id, self._output_content_type(service, handler)

    async def by_target(self, request: web.Request, path: TargetPath) -> web.Response:
        """`POST /restate/attach|output|lookup` with the target in the body, as Restate 1.7.12
        has them (the non-deprecated way to attach by idempotency key or workflow key)."""
        if request.method != "POST":
            return method_not_allowed()
        try:
            target = target_from_body(await _read_body(request), path.action)
            invocation_id, _ = self._invocation_of(target)
        except IngressError as e:
            return error_response(e.status, e.message)
        except InvalidId as e:
            return error_response(400, str(e))
        if path.action != "lookup":
            return await self.get_output(request, target, method="POST")
        return web.json_response({"invocationId": str(invocation_id)})

    async def get_output(self, request: web.Request, path: OutputPath, method: str = "GET") -> web.Response:
        """`/restate/invocation/{id}/attach|output`, `/restate/invocation/{svc}/[{key}/]{handler}/
        {idempotency key}/attach|output`, `/restate/workflow/{name}/{key}/attach|output`,
        `/restate/attach|output/{id}`; `method` is POST for a target in the body."""
        wait = path.attach
        by_id = path.invocation_id is not None
        try:
            invocation_id, content_type = self._invocation_of(path)
        except InvalidId as e:
            return error_response(400, str(e))
        if request.method != method:
            return method_not_allowed()
        inv = str(invocation_id)
        assert self.results is not None
        result_waiter = self.results.register(inv)
        # Only `/output` waits for "not ready": an `/attach` never takes another request's
        # OutputNotReady for its own answer, it waits for the result.
        waiters = {result_waiter}
        if not wait:
            waiters.add(self.results.register_ack(inv, OutputNotReady))
        try:
            lookup = Command(
                timestamp_ms=int(time.time() * 1000), body=GetOutput(invocation_id=inv, wait=wait)
            )
            failed = await self._append(invocation_id, lookup, "the request")
            if failed is not None:
                return failed
            # `/attach` waits for the invocation to end, `/output` only for the processor's word.
            bound = self.call_timeout_s if wait else self.answer_timeout_s
            done, _ = await asyncio.wait(waiters, timeout=bound, return_when=asyncio.FIRST_COMPLETED)
            if not done:
                what = "the invocation did not end" if wait else "no processor answered"
                return error_response(504, f"{what} within {bound:g}s (invocation {inv})")
            answer = done.pop().result()
        except Unavailable as e:
            return error_response(503, f"cannot wait for the answer about {inv}: {e}")
        finally:
            for waiter in waiters:
                self.results.unregister(inv, waiter)
        if isinstance(answer, OutputNotReady):
            return error_response(470, "the invocation exists but has not completed yet")
        outcome = answer.result
        # Restate 1.7.12 (measured): an unknown idempotency key is the ingress's 404 to `/output`
        # but the invocation's own 404 "not found" (with its x-restate-id) to `/attach`.
        if (
            not by_id
            and not (wait and path.idempotent is not None)
            and isinstance(outcome, Failure)
            and (outcome.code, outcome.message) == (404, "not found")
        ):
            return error_response(404, "invocation not found")
        return self._result_response(answer, content_type)

    def _output_content_type(self, service: str, handler: str | None) -> str | None:
        svc = self.metadata.registry().service(service)
        if svc is None:
            return "application/json"
        h = svc.handler(handler) if handler else next((x for x in svc.handlers if x.ty == "Workflow"), None)
        return h.output_content_type if h is not None else "application/json"

    async def preflight(self, request: web.Request) -> web.Response:
        set_kind(request, "preflight")
        headers = {
            "access-control-allow-methods": request.headers.get("access-control-request-method", "POST"),
            "access-control-allow-origin": request.headers.get("origin", "*"),
        }
        if "access-control-request-headers" in request.headers:
            headers["access-control-allow-headers"] = request.headers["access-control-request-headers"]
        return web.Response(status=200, headers=headers)

    async def invoke(self, request: web.Request, path: InvocationPath, normalized: str) -> web.StreamResponse:
        """A call or a send, checked in Restate's order: target, idempotency key, method, body
        size, input rules, delay, headers."""
        started_ns = time.time_ns()
        query = request.raw_path.partition("?")[2]
        try:
            target = await self._look_up(lambda registry: resolve_target(registry, path))
            idempotency_key = _ascii_header(request, "idempotency-key") or None
            if idempotency_key is not None and target.handler_ty == HandlerType.WORKFLOW:
                raise IngressError(400, _WORKFLOW_IDEMPOTENCY_KEY)
            if path.scoped:
                raise IngressError(400, SCOPES_UNSUPPORTED)
            if request.method not in ("GET", "POST"):
                raise IngressError(405, "method not allowed")
            body = await _read_body(request)
            target.validate_input(_ascii_header(request, "content-type"), body)
            delay_ms = _delay_ms(query)
            ingress_path = normalized + (f"?{query}" if query else "")
            headers = [Header(name="x-restate-ingress-path", value=ingress_path)] + [
                Header(name=k.lower(), value=_visible_ascii(k, v))
                for k, v in request.headers.items()
                if k.lower() not in _DROPPED_HEADERS and not k.lower().startswith("idempotency-")
            ]
            if delay_ms is not None and not path.send:
                raise IngressError(
                    400,
                    "cannot use the delay query parameter with calls. The delay is supported only with sends",
                )
        except IngressError as e:
            return error_response(e.status, e.message)
        now = int(time.time() * 1000)
        execute_at_ms = now + delay_ms if delay_ms else None
        invocation_id = self._new_invocation_id(target, idempotency_key)
        inv = str(invocation_id)
        # Started no later than the invocation (its span starts at the Invoke's timestamp).
        span, span_context = self.tracing.start_request(
            request.headers,
            request.method,
            f"{target.service}/{target.handler}",
            inv,
            min(started_ns, now * 1_000_000),
        )
        cmd = Invoke(
            invocation_id=inv,
            target=InvocationTarget(
                service=target.service,
                handler=target.handler,
                key=target.key,
                service_ty=target.service_ty,
                handler_ty=target.handler_ty,
            ),
            argument=body,
            headers=headers,
            idempotency_key=idempotency_key,
            invoked_by=InvokedBy(kind=InvokedByKind.INGRESS),
            reply_to_results=not path.send,
            # Only the processor knows whether an idempotent (or workflow) send is new: wait for its word.
            execute_at_ms=execute_at_ms,
            ack_to_results=path.send
            and (idempotency_key is not None or target.handler_ty == HandlerType.WORKFLOW),
            options=invocation_options(
                self.metadata.registry(),
                target.service,
                target.handler,
                self.settings,
                idempotent=idempotency_key is not None,
            ),
            span_context=span_context,
        )
        response: web.StreamResponse | None = None
        try:
            response = await self._submit(cmd, invocation_id, target, execute_at_ms, now)
            return response
        finally:
            self.tracing.end_request(span, None if response is None else response.status)

    async def _submit(
        self,
        cmd: Invoke,
        invocation_id: InvocationId,
        target: ResolvedTarget,
        execute_at_ms: int | None,
        now: int,
    ) -> web.StreamResponse:
        """Append the Invoke and answer: the result of a call, the acceptance of a send."""
        inv = cmd.invocation_id
        assert self.results is not None
        waiter: asyncio.Future[Any] | None = None
        if cmd.reply_to_results:
            waiter = self.results.register(inv)
        elif cmd.ack_to_results:
            waiter = self.results.register_ack(inv, InvocationAccepted)
        try:
            failed = await self._append(invocation_id, Command(timestamp_ms=now, body=cmd), "the invocation")
            if failed is not None:
                return failed
            answer = await self._await_answer(waiter, inv, result=cmd.reply_to_results)
        except _NoAnswer as e:
            return error_response(504, str(e), headers={"x-restate-id": inv})
        except Unavailable as e:
            return error_response(
                503, f"cannot wait for the answer of {inv}: {e}", headers={"x-restate-id": inv}
            )
        finally:
            if waiter is not None:
                self.results.unregister(inv, waiter)
        if isinstance(answer, InvocationResult):
            return self._result_response(answer, target.output_content_type, target.set_content_type_if_empty)
        previously = isinstance(answer, InvocationAccepted) and answer.previously_accepted
        accepted: dict[str, str] = {"invocationId": inv}
        if execute_at_ms is not None:
            accepted["executionTime"] = rfc3339_nanos(execute_at_ms)
        accepted["status"] = "PreviouslyAccepted" if previously else "Accepted"
        return web.Response(
            status=202,
            body=json.dumps(accepted, separators=(",", ":")).encode(),
            content_type="application/json",
            headers={"x-restate-id": inv},
        )

    def _new_invocation_id(self, target: ResolvedTarget, idempotency_key: str | None) -> InvocationId:
        """Idempotent requests get the id their key determines, so a repeat finds the original."""
        if target.handler_ty == HandlerType.WORKFLOW and target.key is not None:
            return InvocationId.for_workflow(target.service, target.key)  # runs once per key
        if idempotency_key is not None:
            return InvocationId.for_idempotent_request(
                target.service, target.key, target.handler, idempotency_key
            )
        pk = partition_key_of(target.key) if target.key is not None else secrets.randbits(64)
        return InvocationId.generate(pk, int(time.time() * 1000), secrets.randbits(80))

    async def _produce(self, invocation_id: InvocationId, command: Command) -> None:
        await self.commands.send(invocation_id, command)

    async def _append(self, invocation_id: InvocationId, command: Command, what: str) -> web.Response | None:
        """Produce `command`; None once Kafka has it, else the error answer: 503 with the reason,
        or 413 when the record is over Kafka's size limit (asking again would not help; Restate
        itself takes bodies up to 32 MiB)."""
        try:
            await self._produce(invocation_id, command)
        except Unavailable as e:
            log.warning("ingress.append_failed", invocation_id=str(invocation_id), what=what, reason=str(e))
            status = 413 if "MSG_SIZE_TOO_LARGE" in str(e) else 503
            return error_response(status, f"cannot append {what} to the log: {e}")
        except Exception as e:
            log.exception("ingress.append_failed", invocation_id=str(invocation_id), what=what)
            return error_response(500, f"cannot append {what} to the log: {type(e).__name__}: {e}")
        return None

    async def _await_answer(self, waiter: asyncio.Future[Any] | None, inv: str, *, result: bool) -> Any:
        """The processor's answer: a call's result (bounded by `call_timeout_s`, by default not at
        all) or an acknowledgement (bounded by `answer_timeout_s`)."""
        if waiter is None:
            return None
        bound = self.call_timeout_s if result else self.answer_timeout_s
        try:
            return await asyncio.wait_for(waiter, bound)
        except TimeoutError:
            what = (
                "the invocation did not end"
                if result
                else "the invocation is in the log but no processor acknowledged it"
            )
            raise _NoAnswer(f"{what} within {bound:g}s (invocation {inv})") from None

    def _result_response(
        self, result: InvocationResult, content_type: str | None, set_content_type_if_empty: bool = False
    ) -> web.Response:
        headers = {"x-restate-id": result.invocation_id}
        if result.idempotency_expires_at_ms is not None:
            headers["idempotency-expires"] = _rfc3339_ms(result.idempotency_expires_at_ms)
        outcome = result.result
        if isinstance(outcome, Failure):
            status = outcome.code if 400 <= outcome.code <= 599 else 500
            extra: dict[str, Any] = {"metadata": outcome.metadata} if outcome.metadata else {}
            resp = error_response(status, outcome.message, source="invocation", **extra)
            resp.headers.update(headers)
            return resp
        if (outcome.value or set_content_type_if_empty) and content_type:
            headers["content-type"] = content_type
        return web.Response(status=200, body=outcome.value, headers=headers)


_WORKFLOW_IDEMPOTENCY_KEY = (
    "cannot use the idempotency key with workflow handlers. The handler invocation will already be "
    "idempotent by the workflow key itself."
)


def method_not_allowed() -> web.Response:
    return error_response(405, "method not allowed")


async def _read_body(request: web.Request) -> bytes:
    """The whole body; one that grows past the limit without a `content-length` saying so
    (that case `limits.restate_http_limits` answers) fails here, as Restate's body reader."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise IngressError(413, "cannot read body: LengthLimitError") from None


def _visible_ascii(name: str, value: str) -> str:
    """Restate refuses header values that are not visible ASCII (`HeaderValue::to_str`)."""
    if not all(c == "\t" or " " <= c <= "~" for c in value):
        raise IngressError(400, f"bad header {name.lower()}: ToStrError {{ _priv: () }}")
    return value


def _ascii_header(request: web.Request, name: str) -> str | None:
    value = request.headers.get(name)
    return None if value is None else _visible_ascii(name, value)


def _delay_ms(query: str) -> int | None:
    """The first `delay` query parameter (name case-insensitive), None if there is none."""
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.lower() == "delay":
            try:
                return parse_duration_ms(value)
            except ValueError as e:
                raise IngressError(
                    400, f"bad delay query parameter, must be a ISO8601 duration: {e}"
                ) from None
    return None


def _details(report: dict[str, Any]) -> dict[str, Any]:
    return {"kafka": report["kafka"], "registry": report["registry"]}


def _rfc3339_ms(ms: int) -> str:
    """`2026-11-24T08:32:11.954+00:00`, as Restate writes `idempotency-expires`."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


@web.middleware
async def cors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    for k, v in CORS_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


def run_ingress(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; the exit code is non-zero when a component gave up (which
    is also what stopped the server)."""
    metadata = MetadataView(settings).start()
    ingress = Ingress(settings, metadata)
    # Its Invoke records carry request bodies: a `commands` topic made elsewhere may refuse them.
    check_record_limits_in_background(settings, [Topics(settings.topic_prefix).commands])
    log.info("ingress.listening", host=settings.ingress_host, port=settings.ingress_port)
    try:
        web.run_app(ingress.app(), host=settings.ingress_host, port=settings.ingress_port, print=None)
    finally:
        metadata.stop()
    code = supervision.exit_code()
    log.info("ingress.stopped", exit_code=code, reason=supervision.fatal_reason())
    return code


__all__ = ["Ingress", "ServiceType", "run_ingress"]
