"""The ingress's HTTP surface on the transcript's services, without Kafka: what Restate 1.7.12
answers before an invocation exists (methods, empty and large bodies, long heads, keys), in its
error shape `{"code", "message", "source": "ingress"}` with `x-restate-error-source: ingress`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin_api.registration import services_from_manifest
from ingress_gateway.limits import MAX_HEAD_BYTES, MAX_URI_BYTES, REQUEST_SIZE_LIMIT
from ingress_gateway.server import Ingress
from kafka_core.results import ResultsListener
from schemas.ids import InvocationId
from schemas.records import Command, Failure, GetOutput, InvocationResult, Invoke, OutputNotReady, Success
from schemas.registry import Registry
from schemas.settings import Settings

SETTINGS = Settings(topic_prefix="unit")
MANIFEST = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "restate-1.7.12-manifest.json").read_text()
)
JSON = {"content-type": "application/json"}


class Metadata:
    def __init__(self) -> None:
        self._registry = Registry()
        for svc in services_from_manifest(MANIFEST, "dp_1", self._registry):
            self._registry.services[svc.name] = svc

    def registry(self) -> Registry:
        return self._registry

    def health(self) -> str | None:
        return None


class Commands:
    """Records what the ingress appends; sends are acknowledged by the 202 alone."""

    def __init__(self) -> None:
        self.results: ResultsListener | None = None
        self.sent: list[Invoke] = []

    async def start(self) -> None:
        self.results = ResultsListener(SETTINGS, asyncio.get_running_loop())

    async def stop(self) -> None:
        pass

    def health(self) -> str | None:
        return None

    async def send(self, invocation_id: InvocationId, command: Command) -> None:
        assert isinstance(command.body, Invoke)
        self.sent.append(command.body)


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def ingress(commands: Commands) -> AsyncIterator[TestClient]:
    server = Ingress(SETTINGS, Metadata(), commands=commands)  # type: ignore[arg-type]
    async with TestClient(TestServer(server.app())) as client:
        yield client


async def ingress_error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.headers["x-restate-error-source"] == "ingress"
    assert response.headers["content-type"] == "application/json"
    body = await response.json()
    assert set(body) == {"code", "message", "source"}
    assert body["code"] == status and body["source"] == "ingress"
    return str(body["message"])


async def accepted(response: Any) -> dict[str, Any]:
    assert response.status == 202, await response.text()
    body: dict[str, Any] = await response.json()
    return body


# -- empty bodies and input rules --------------------------------------------------------------


async def test_an_empty_body_to_a_json_handler_is_400(ingress: TestClient, commands: Commands) -> None:
    for path in ("/Counter/k1/add", "/Counter/k1/add/send", "/Greeter/greet"):
        r = await ingress.post(path, data=b"", headers=JSON)
        assert await ingress_error(r, 400) == "input validation error: Empty body not allowed"
    assert commands.sent == []


async def test_no_body_and_no_content_type_runs_the_handler_with_no_input(
    ingress: TestClient, commands: Commands
) -> None:
    """As the transcript's `GET /Greeter/greet` ("Hello None"): the input is not `required`."""
    await accepted(await ingress.get("/Greeter/greet/send"))
    await accepted(await ingress.post("/Counter/k1/add/send", skip_auto_headers={"content-type"}))
    assert [(i.target.handler, i.argument) for i in commands.sent] == [("greet", b""), ("add", b"")]


async def test_a_body_needs_the_handlers_content_type(ingress: TestClient, commands: Commands) -> None:
    r = await ingress.post("/Greeter/greet", data=b"Alice", headers={"content-type": "text/plain"})
    assert await ingress_error(r, 400) == (
        "input validation error: Content-type 'text/plain' does not match 'application/json'"
    )
    r = await ingress.post(
        "/Greeter/greet", data=b"Alice", headers={"content-type": "text/plain; charset=utf-8"}
    )
    assert await ingress_error(r, 400) == (
        "input validation error: Content-type 'text/plain; charset=utf-8' does not match 'application/json'"
    )
    r = await ingress.post("/Greeter/greet", data=b'"Alice"', skip_auto_headers={"content-type"})
    assert await ingress_error(r, 400) == "input validation error: Empty content-type"
    r = await ingress.post(
        "/Greeter/greet/send", data=b'"Alice"', headers={"content-type": "application/json; charset=utf-8"}
    )
    await accepted(r)
    assert len(commands.sent) == 1


async def test_a_handler_without_input_takes_no_body(ingress: TestClient, commands: Commands) -> None:
    r = await ingress.post("/Counter/k1/get", data=b"1", headers=JSON)
    assert await ingress_error(r, 400) == (
        "input validation error: Expected body and content-type to be empty, "
        "but wasn't with content-type 'Some(\"application/json\")'"
    )
    r = await ingress.post("/Counter/k1/get", data=b"1", skip_auto_headers={"content-type"})
    assert await ingress_error(r, 400) == (
        "input validation error: Expected body and content-type to be empty, "
        "but wasn't with content-type 'None'"
    )
    await accepted(await ingress.post("/Counter/k1/get/send"))
    assert len(commands.sent) == 1


# -- methods -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_methods_other_than_get_and_post_are_405(
    ingress: TestClient, commands: Commands, method: str
) -> None:
    for path in ("/Greeter/greet", "/Counter/k1/add/send", "/restate/call/Greeter/greet"):
        r = await ingress.request(method, path, data=b'"x"', headers=JSON)
        assert await ingress_error(r, 405) == "method not allowed"
    assert commands.sent == []


async def test_head_is_405_without_a_body(ingress: TestClient, commands: Commands) -> None:
    r = await ingress.head("/Greeter/greet")
    assert r.status == 405 and r.headers["x-restate-error-source"] == "ingress"
    assert commands.sent == []


async def test_method_checks_of_the_restate_paths(ingress: TestClient) -> None:
    """Transcript: `POST /restate/workflow/Signup/{key}/attach` is 405."""
    r = await ingress.post("/restate/workflow/Signup/wf-1/attach")
    assert await ingress_error(r, 405) == "method not allowed"
    inv = InvocationId.generate(1, 1, 1)
    assert await ingress_error(await ingress.post(f"/restate/invocation/{inv}/output"), 405)
    assert await ingress_error(await ingress.get("/restate/awakeables/sign_1x/resolve"), 405)
    assert await ingress_error(await ingress.post("/restate/health"), 405)


async def test_an_unknown_service_is_404_before_the_method_check(ingress: TestClient) -> None:
    r = await ingress.put("/NoSuchService/greet")
    assert await ingress_error(r, 404) == (
        "service 'NoSuchService' not found, make sure to register the service before calling it."
    )


# -- body size -----------------------------------------------------------------------------------


async def test_a_2_mib_body_is_taken(ingress: TestClient, commands: Commands) -> None:
    body = json.dumps("x" * (2 * 1024 * 1024)).encode()
    await accepted(await ingress.post("/Greeter/greet/send", data=body, headers=JSON))
    assert commands.sent[0].argument == body


async def test_a_body_at_the_limit_is_taken_one_byte_more_is_413(
    ingress: TestClient, commands: Commands
) -> None:
    at_limit = b'"' + b"x" * (REQUEST_SIZE_LIMIT - 2) + b'"'
    await accepted(await ingress.post("/Greeter/greet/send", data=at_limit, headers=JSON))
    assert len(commands.sent[0].argument) == REQUEST_SIZE_LIMIT
    r = await ingress.post("/Greeter/greet/send", data=at_limit + b" ", headers=JSON)
    # tower-http's RequestBodyLimit: before the handler, plain text, no CORS headers
    assert r.status == 413 and await r.text() == "length limit exceeded"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "x-restate-error-source" not in r.headers and "vary" not in r.headers
    assert len(commands.sent) == 1


async def test_a_chunked_body_over_the_limit_is_413_while_read(
    ingress: TestClient, commands: Commands
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(33):
            yield b"x" * (1024 * 1024)

    r = await ingress.post("/Greeter/greet/send", data=chunks(), headers=JSON)
    assert await ingress_error(r, 413) == "cannot read body: LengthLimitError"
    assert commands.sent == []


# -- heads, keys and paths -----------------------------------------------------------------------


async def test_long_headers_are_forwarded(ingress: TestClient, commands: Commands) -> None:
    value = "v" * 100_000
    r = await ingress.post("/Greeter/greet/send", data=b'"x"', headers={**JSON, "x-long": value})
    await accepted(r)
    headers = {h.name: h.value for h in commands.sent[0].headers}
    assert headers["x-long"] == value


async def test_a_head_over_hypers_buffer_or_100_headers_is_431(
    ingress: TestClient, commands: Commands
) -> None:
    r = await ingress.post(
        "/Greeter/greet/send", data=b'"x"', headers={**JSON, "x-long": "v" * MAX_HEAD_BYTES}
    )
    assert r.status == 431 and await r.read() == b""
    many = {f"x-h{i}": "v" for i in range(100)}
    r = await ingress.post("/Greeter/greet/send", data=b'"x"', headers={**JSON, **many})
    assert r.status == 431 and await r.read() == b""
    assert commands.sent == []


async def test_a_header_that_is_not_visible_ascii_is_400(ingress: TestClient) -> None:
    r = await ingress.post("/Greeter/greet", data=b'"x"', headers={**JSON, "x-name": "Zoë"})
    assert await ingress_error(r, 400) == "bad header x-name: ToStrError { _priv: () }"


async def test_long_empty_and_encoded_keys(ingress: TestClient, commands: Commands) -> None:
    long_key = "k" * 60_000
    for path in (f"/Counter/{long_key}/add/send", "/Counter//add/send", "/Counter/%C3%A9t%C3%A9/add/send"):
        await accepted(await ingress.post(path, data=b"1", headers=JSON))
    assert [i.target.key for i in commands.sent] == [long_key, "", "été"]


async def test_a_target_over_the_uri_limit_is_400(ingress: TestClient, commands: Commands) -> None:
    path = "/Counter/" + "k" * MAX_URI_BYTES + "/add/send"
    r = await ingress.post(path, data=b"1", headers=JSON)
    assert r.status == 400 and await r.read() == b""
    assert commands.sent == []


async def test_a_key_that_is_not_utf8_is_400(ingress: TestClient) -> None:
    r = await ingress.post("/Counter/%FF/add", data=b"1", headers=JSON)
    assert await ingress_error(r, 400) == (
        "bad path, cannot decode key: FromUtf8Error { bytes: [255], "
        "error: Utf8Error { valid_up_to: 0, error_len: Some(1) } }"
    )


async def test_paths(ingress: TestClient, commands: Commands) -> None:
    assert await ingress_error(await ingress.get("/"), 400) == "bad path: /"
    assert await ingress_error(await ingress.post("/Greeter"), 400) == "bad path: /Greeter"
    assert await ingress_error(await ingress.post("/restate/nope/Greeter/greet"), 404) == "not found"
    assert await ingress_error(await ingress.post("/Counter/add", data=b"1", headers=JSON), 400) == (
        "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler"
    )
    # trailing slashes are trimmed first (tower-http's NormalizePath)
    await accepted(await ingress.post("/Greeter/greet/send/?delay=1s", data=b'"x"', headers=JSON))
    headers = {h.name: h.value for h in commands.sent[0].headers}
    assert headers["x-restate-ingress-path"] == "/Greeter/greet/send?delay=1s"


async def test_delay_and_idempotency_key_rules(ingress: TestClient) -> None:
    r = await ingress.post("/Greeter/greet?delay=1s", data=b'"x"', headers=JSON)
    assert await ingress_error(r, 400) == (
        "cannot use the delay query parameter with calls. The delay is supported only with sends"
    )
    r = await ingress.post("/Greeter/greet/send?delay=soon", data=b'"x"', headers=JSON)
    assert (await ingress_error(r, 400)).startswith("bad delay query parameter, must be a ISO8601 duration")
    r = await ingress.post("/Signup/wf-1/run/send", data=b'"a@b"', headers={**JSON, "idempotency-key": "i"})
    assert await ingress_error(r, 400) == (
        "cannot use the idempotency key with workflow handlers. The handler invocation will already "
        "be idempotent by the workflow key itself."
    )


# -- attach and output ---------------------------------------------------------------------------


class Lookups(Commands):
    """Records the ingress's GetOutput commands; the test answers them on `results`."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: asyncio.Queue[GetOutput] = asyncio.Queue()

    async def send(self, invocation_id: InvocationId, command: Command) -> None:
        assert isinstance(command.body, GetOutput)
        self.lookups.put_nowait(command.body)


async def test_a_pending_attach_is_not_answered_by_another_requests_not_ready() -> None:
    """Restate: an `/output` meanwhile is 470, the `/attach` keeps waiting for the result."""
    commands = Lookups()
    server = Ingress(SETTINGS, Metadata(), commands=commands)  # type: ignore[arg-type]
    inv = str(InvocationId.generate(1, 1_700_000_000_000, 7))
    async with TestClient(TestServer(server.app())) as client:
        attach = asyncio.ensure_future(client.get(f"/restate/attach/{inv}"))
        assert (await asyncio.wait_for(commands.lookups.get(), 5)).wait
        output = asyncio.ensure_future(client.get(f"/restate/output/{inv}"))
        assert not (await asyncio.wait_for(commands.lookups.get(), 5)).wait
        assert commands.results is not None
        commands.results._deliver(OutputNotReady(invocation_id=inv))
        assert await ingress_error(await asyncio.wait_for(output, 5), 470)
        await asyncio.sleep(0.05)
        assert not attach.done()
        commands.results._deliver(
            InvocationResult(invocation_id=inv, result=Success(value=b'"done"'), completed_at_ms=1)
        )
        answer = await asyncio.wait_for(attach, 5)
        assert answer.status == 200 and await answer.json() == "done"


async def test_an_unknown_idempotency_key_is_the_invocations_404_to_attach_the_ingress_to_output() -> None:
    """As Restate 1.7.12 answers (measured): `/attach` carries the derived id, `/output` does not."""
    commands = Lookups()
    server = Ingress(SETTINGS, Metadata(), commands=commands)  # type: ignore[arg-type]
    async with TestClient(TestServer(server.app())) as client:
        for action, source, message in (
            ("attach", "invocation", "not found"),
            ("output", "ingress", "invocation not found"),
        ):
            request = asyncio.ensure_future(client.get(f"/restate/invocation/Counter/k/add/nope/{action}"))
            lookup = await asyncio.wait_for(commands.lookups.get(), 5)
            assert commands.results is not None
            commands.results._deliver(
                InvocationResult(
                    invocation_id=lookup.invocation_id,
                    result=Failure(code=404, message="not found"),
                    completed_at_ms=1,
                )
            )
            r = await asyncio.wait_for(request, 5)
            assert r.status == 404
            assert await r.json() == {"code": 404, "message": message, "source": source}
            assert ("x-restate-id" in r.headers) == (action == "attach")


async def test_attach_output_and_lookup_by_a_target_in_the_body() -> None:
    """Restate 1.7.12's `POST /restate/attach|output|lookup` (measured): the body names a
    workflow, an idempotent invocation or an invocation id; other methods are 405."""
    commands = Lookups()
    server = Ingress(SETTINGS, Metadata(), commands=commands)  # type: ignore[arg-type]
    target = {"target": "idempotentInvocation", "service": "Counter", "key": "k", "handler": "add"}
    by_key = {**target, "idempotencyKey": "i"}
    inv = str(InvocationId.for_idempotent_request("Counter", "k", "add", "i"))
    async with TestClient(TestServer(server.app())) as client:
        found = await client.post("/restate/lookup", json=by_key)
        assert found.status == 200 and await found.json() == {"invocationId": inv}
        wf = await client.post(
            "/restate/lookup", json={"target": "workflow", "workflowName": "W", "workflowKey": "x"}
        )
        assert await wf.json() == {"invocationId": str(InvocationId.for_workflow("W", "x"))}
        bad_id = await client.post("/restate/lookup", json={"target": "invocation", "invocationId": "nope"})
        assert await ingress_error(bad_id, 400) == "bad invocation id 'nope': bad format"
        missing = await client.post("/restate/lookup", json={"service": "Counter"})
        assert (
            await ingress_error(missing, 500)
            == "cannot read body: invalid lookup body: missing field `target`"
        )
        unknown = await client.post("/restate/attach", json={"target": "nope"})
        assert "invalid request body: unknown variant `nope`" in await ingress_error(unknown, 500)
        for path in ("/restate/lookup", "/restate/attach", "/restate/output"):
            assert await ingress_error(await client.get(path), 405) == "method not allowed"
        for action, wait in (("attach", True), ("output", False)):
            request = asyncio.ensure_future(client.post(f"/restate/{action}", json=by_key))
            lookup = await asyncio.wait_for(commands.lookups.get(), 5)
            assert lookup == GetOutput(invocation_id=inv, wait=wait)
            assert commands.results is not None
            commands.results._deliver(
                InvocationResult(invocation_id=inv, result=Success(value=b"7"), completed_at_ms=1)
            )
            r = await asyncio.wait_for(request, 5)
            assert r.status == 200 and await r.json() == 7 and r.headers["x-restate-id"] == inv


# -- tracing -----------------------------------------------------------------------------------


async def test_the_ingress_span_is_the_callers_child_and_the_invocations_parent(commands: Commands) -> None:
    """As Restate's ingress: a server span per request that creates an invocation, in the caller's
    trace; the Invoke carries its context (span_context), the handler's headers stay the caller's."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ingress_gateway.tracing import IngressTracing
    from kafka_core.tracing import parse_traceparent

    exporter = InMemorySpanExporter()
    tracing = IngressTracing(SETTINGS, exporter=exporter)
    server = Ingress(SETTINGS, Metadata(), commands=commands, tracing=tracing)  # type: ignore[arg-type]
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with TestClient(TestServer(server.app())) as client:
        sent = await accepted(
            await client.post("/Greeter/greet/send", data=b'"A"', headers={**JSON, "traceparent": caller})
        )
        await accepted(await client.post("/Greeter/greet/send", data=b'"B"', headers=JSON))  # no caller
        r = await client.post("/Greeter/greet/send", data=b"", headers=JSON)  # refused: no invocation
        assert r.status == 400
    tracing.shutdown()
    first, second = exporter.get_finished_spans()
    assert first.name == "ingress Greeter/greet" and first.kind.name == "SERVER"
    assert first.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert first.parent is not None and first.parent.span_id == 0x00F067AA0BA902B7
    assert first.attributes["restate.invocation.id"] == sent["invocationId"]
    assert first.attributes["http.response.status_code"] == 202
    assert second.parent is None and second.context.trace_id != first.context.trace_id
    invoke_a, invoke_b = commands.sent
    carried = parse_traceparent(invoke_a.span_context)
    assert carried is not None
    assert (carried.trace_id, carried.span_id) == (first.context.trace_id, first.context.span_id)
    assert ("traceparent", caller) in [(h.name, h.value) for h in invoke_a.headers]
    carried_b = parse_traceparent(invoke_b.span_context)
    assert carried_b is not None and carried_b.span_id == second.context.span_id


async def test_without_tracing_the_invoke_carries_no_span_context(
    ingress: TestClient, commands: Commands
) -> None:
    await accepted(await ingress.post("/Greeter/greet/send", data=b'"A"', headers=JSON))
    assert commands.sent[0].span_context is None
