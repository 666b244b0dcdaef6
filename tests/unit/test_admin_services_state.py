"""Admin API: `POST /services/{s}/state`, `GET /services/{s}/openapi`, `GET /openapi`,
`GET /cluster-health`, checked against what Restate 1.7.12 answered for the same deployment."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from admin_api import app as admin_app
from admin_api.openapi import admin_openapi, service_openapi
from admin_api.registration import Discovered, RegistryError
from admin_api.state import KafkaStateEditor
from admin_api.store import MemoryRegistryStore
from kafka_core.supervision import Unavailable
from schemas.ids import partition_key_of
from schemas.records import Command, PatchState
from schemas.registry import HandlerRecord, ServiceRecord
from schemas.settings import Settings

FIXTURES = Path(__file__).parent.parent / "fixtures" / "restate-1.7.12-openapi"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
RESTATE_INGRESS = "http://127.0.0.1:54265/"  # where the Restate server that wrote the fixtures listened


class RecordingEditor:
    def __init__(self) -> None:
        self.edits: list[tuple[PatchState, int]] = []

    async def edit(self, patch: PatchState, timestamp_ms: int) -> None:
        self.edits.append((patch, timestamp_ms))


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[TestClient, RecordingEditor]]:
    async def fake_discover(uri: str, **kwargs: object) -> Discovered:
        return Discovered(MANIFEST, "HTTP/2.0", "BIDI_STREAM", 5, 7, "restate-sdk-python/1.3.0")

    monkeypatch.setattr(admin_app.discovery, "discover", fake_discover)
    editor = RecordingEditor()
    settings = Settings(ingress_port=8080, topic_prefix="kinvoke-test")
    app = admin_app.create_admin_app(MemoryRegistryStore(), settings, state_editor=editor)
    async with TestClient(TestServer(app)) as c:
        r = await c.post("/deployments", json={"uri": "http://127.0.0.1:9080"})
        assert r.status == 201
        yield c, editor


@pytest.mark.parametrize("service", ["Greeter", "Counter", "Signup", "Caller", "Failing"])
async def test_service_openapi_is_restates(client: tuple[TestClient, RecordingEditor], service: str) -> None:
    c, _ = client
    expected = json.loads((FIXTURES / f"{service}.json").read_text())
    expected["servers"][0]["url"] = "http://127.0.0.1:8080/"
    for prefix in ("", "/v4"):
        r = await c.get(f"{prefix}/services/{service}/openapi")
        assert r.status == 200 and r.content_type == "application/json"
        assert await r.json() == expected
        raw = await r.read()  # keys sorted, as Restate's serde_json::Value writes them
        assert raw == json.dumps(await r.json(), sort_keys=True, separators=(",", ":")).encode()


async def test_service_openapi_of_an_unknown_service_is_404(
    client: tuple[TestClient, RecordingEditor],
) -> None:
    r = await client[0].get("/services/NoSuch/openapi")
    assert r.status == 404
    assert await r.json() == {
        "message": "The requested service 'NoSuch' does not exist",
        "restate_code": None,
    }


def test_service_openapi_leaves_private_handlers_out_and_carries_docs_and_metadata() -> None:
    """Restate's `ServiceOpenAPI::infer` branches that the SDK fixture does not exercise."""
    handlers = [
        HandlerRecord(name="hidden", public=False, input_content_type="*/*"),
        HandlerRecord(
            name="bin",
            input_content_type="application/octet-stream",
            input_required=True,
            output_content_type=None,
            metadata={"team": "a"},
            documentation="Raw bytes.",
        ),
        HandlerRecord(
            name="tree",
            input_content_type="application/json",
            input_json_schema=json.dumps({"$ref": "#/$defs/T", "$defs": {"T": {"type": "object"}}}),
            output_content_type="application/json",
            output_json_schema="true",
        ),
    ]
    svc = ServiceRecord(
        name="Svc",
        ty="Service",
        revision=3,
        deployment_id="dp_1",
        handlers=handlers,
        documentation="A service.",
        metadata={"owner": "me"},
    )
    doc = service_openapi(svc, "http://ingress:8080")
    assert doc["info"] == {
        "title": "Svc",
        "version": "3",
        "description": "A service.",
        "x-restate-extensions": {"owner": "me"},
    }
    assert doc["servers"] == [{"description": "Restate Ingress URL", "url": "http://ingress:8080/"}]
    assert not any("hidden" in path for path in doc["paths"])
    call = doc["paths"]["/restate/call/Svc/bin"]["post"]
    assert call["description"] == "Raw bytes." and call["x-restate-extensions"] == {"team": "a"}
    assert call["requestBody"] == {"content": {"application/octet-stream": {}}, "required": True}
    assert call["responses"]["200"] == {"description": "Empty"}
    assert doc["components"]["schemas"]["treeRequest"]["$ref"] == "#/components/schemas/treeRequest/$defs/T"
    assert doc["components"]["schemas"]["treeResponse"] is True


async def test_admin_openapi_is_restates_spec(client: tuple[TestClient, RecordingEditor]) -> None:
    for prefix in ("", "/v2"):
        r = await client[0].get(f"{prefix}/openapi")
        assert r.status == 200 and r.content_type == "application/json"
        spec = await r.json()
        assert spec["openapi"] == "3.1.0" and spec["info"]["title"] == "Admin API"
        assert spec["info"]["version"] == "1.7.12"
        assert spec["paths"]["/services/{service}/state"]["post"]["operationId"] == "modify_service_state"
    reference = json.loads(REFERENCE_SPEC.read_text())
    served = json.loads(admin_openapi())
    # Restate's spec but for what kinvoke does not serve (no vqueues, no limiter rules).
    assert operations(reference) - operations(served) == {
        ("PUT", "/limits/rules"),
        ("POST", "/limits/rules/bulk-delete"),
        ("POST", "/vqueues/{vqueue_id}/pause"),
        ("POST", "/vqueues/{vqueue_id}/resume"),
    }
    # ... and with kinvoke's own GET /invocations[/{id}] (Restate 1.7.12 answers them 404 / 405).
    assert operations(served) - operations(reference) == {
        ("GET", "/invocations"),
        ("GET", "/invocations/{invocation_id}"),
    }
    for path, ops in served["paths"].items():
        restates = {m: op for m, op in ops.items() if (m.upper(), path) in operations(reference)}
        assert restates == {m: op for m, op in reference["paths"].get(path, {}).items() if m in restates}
    assert "vqueue" not in {t["name"] for t in served["tags"]}
    assert "UpsertRuleRequest" not in served["components"]["schemas"]
    assert json_refs(served) <= {
        f"#/components/{kind}/{name}" for kind in served["components"] for name in served["components"][kind]
    }


REFERENCE_SPEC = Path("/work/shared/reference/restate-1.7.12-admin-openapi.json")
SPEC_METHODS = ("get", "put", "post", "delete", "patch")
# Admin routes the served spec leaves out: kinvoke's own operational endpoints, the spec itself
# and the deprecated `PUT /deployments/{id}` (405 from v3 on), none of which Restate lists either.
UNLISTED = {
    ("GET", "/health/details"),
    ("GET", "/metrics"),
    ("GET", "/openapi"),
    ("PUT", "/deployments/{deployment}"),
}


def operations(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops if m in SPEC_METHODS}


def json_refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        own = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        return own.union(*(json_refs(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(json_refs(v) for v in value))
    return set()


def sample(path: str) -> str:
    """A concrete path for a templated one (`{name}` → `name-1`)."""
    return re.sub(r"\{([^}]+)\}", r"\1-1", path)


async def test_the_served_spec_and_the_admin_router_agree() -> None:
    """Every operation of `GET /openapi` reaches a handler of the admin app (not a 404/405), and
    every admin route (but UNLISTED) is reached by an operation of the spec."""
    app = admin_app.create_admin_app(MemoryRegistryStore(), Settings(topic_prefix="kinvoke-test"))
    served = json.loads(admin_openapi())
    reached: dict[tuple[str, str], Any] = {}
    for method, path in sorted(operations(served)):
        for prefix in ("/v2", "/v3", "/v4", ""):
            match = await app.router.resolve(make_mocked_request(method, prefix + sample(path), app=app))
            assert match.http_exception is None, (method, prefix + path, match.http_exception)
        reached[(method, path)] = match.route  # the unprefixed one
    routes = {
        (route.method, route.resource.canonical): route
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not re.match(r"^/v\d/", route.resource.canonical)
    }
    unreached = {op for op, route in routes.items() if route not in reached.values()}
    assert unreached == UNLISTED


async def test_cluster_health(client: tuple[TestClient, RecordingEditor]) -> None:
    r = await client[0].get("/v3/cluster-health")
    assert r.status == 200
    assert await r.json() == {"cluster_name": "kinvoke-test", "metadata_cluster_health": None}


async def test_state_edit_is_202_and_appends_a_patch(client: tuple[TestClient, RecordingEditor]) -> None:
    c, editor = client
    body = {"object_key": "k1", "new_state": {"count": [55, 55, 55], "name": '"x"'}, "version": "v1"}
    r = await c.post("/services/Counter/state", json=body)
    assert (r.status, await r.read()) == (202, b"")
    [(patch, ts)] = editor.edits
    assert patch == PatchState(
        service="Counter", key="k1", version="v1", new_state={"count": b"777", "name": b'"x"'}
    )
    assert ts > 1_700_000_000_000
    r = await c.post("/v4/services/Signup/state", json={"object_key": "w1", "new_state": {}})
    assert r.status == 202 and editor.edits[-1][0].service == "Signup"


async def error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"message", "restate_code"}
    return str(body["message"])


async def test_state_edit_refusals(client: tuple[TestClient, RecordingEditor]) -> None:
    c, editor = client
    r = await c.post("/services/Greeter/state", json={"object_key": "x", "new_state": {}})
    assert await error(r, 400) == "Cannot modify state for service type Service"
    r = await c.post("/services/NoSuch/state", json={"object_key": "k", "new_state": {"a": [1]}})
    assert await error(r, 404) == "The requested service 'NoSuch' does not exist"
    assert editor.edits == []
    # A removed service's state may still be cleared.
    r = await c.post("/services/NoSuch/state", json={"object_key": "k", "new_state": {}})
    assert r.status == 202 and editor.edits[-1][0].service == "NoSuch"


async def test_a_scoped_edit_is_of_the_scoped_instance(client: tuple[TestClient, RecordingEditor]) -> None:
    """Restate 1.7.12 accepts `scope` (measured: 202, and the state table then holds the edit under
    that scope, the unscoped object unchanged): the edit carries it to the processor."""
    c, editor = client
    body = {"object_key": "k1", "new_state": {"count": [55]}, "scope": "tenant-1.a_b"}
    r = await c.post("/services/Counter/state", json=body)
    assert (r.status, await r.read()) == (202, b"")
    [(patch, _)] = editor.edits
    assert patch == PatchState(service="Counter", key="k1", new_state={"count": b"7"}, scope="tenant-1.a_b")
    r = await c.post("/services/Counter/state", json={**body, "scope": None})  # null: unscoped
    assert r.status == 202 and editor.edits[-1][0].scope is None


@pytest.mark.parametrize(
    ("scope", "message"),
    [  # Restate 1.7.12's answers (measured): its BadScope error has no status of its own, so 500
        ("bad scope", "bad scope: value contains characters outside the allowed set [a-zA-Z0-9_.-]"),
        ("", "bad scope: value cannot be empty"),
        ("a" * 45, "bad scope: value too long: 45 bytes (max 36)"),
        ("ü", "bad scope: value contains characters outside the allowed set [a-zA-Z0-9_.-]"),
    ],
)
async def test_a_bad_scope_is_refused_as_restate_refuses_it(
    client: tuple[TestClient, RecordingEditor], scope: str, message: str
) -> None:
    body = {"object_key": "k1", "new_state": {"count": [55]}, "scope": scope}
    r = await client[0].post("/services/Counter/state", json=body)
    assert await error(r, 500) == message
    assert client[1].edits == []


async def plain(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    return str(await response.text())


# Bodies sent byte for byte as to Restate 1.7.12, and its answers (measured): axum's 422 in
# text/plain, serde's message with the path and the position where it stopped.
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"object_key":"k1"}', "missing field `new_state` at line 1 column 19"),
        ('{"new_state":{}}', "missing field `object_key` at line 1 column 16"),
        (
            '{"object_key":"k","new_state":{"a":[256]}}',
            "new_state.a[0]: invalid value: integer `256`, expected u8 at line 1 column 39",
        ),
        (
            '{"object_key":"k",\n "new_state":{"a":[-1]}}',
            "new_state.a[0]: invalid value: integer `-1`, expected u8 at line 2 column 21",
        ),
        (
            '{"object_key":"k","new_state":{"a":[true]}}',
            "new_state.a[0]: invalid type: boolean `true`, expected u8 at line 1 column 40",
        ),
        (
            '{"object_key":"ü","new_state":{"a":[1.0]}}',
            "new_state.a[0]: invalid type: floating point `1.0`, expected u8 at line 1 column 40",
        ),
        (
            '{"object_key":"k","new_state":{"a":5}}',
            "new_state.a: invalid type: integer `5`, expected byte array at line 1 column 36",
        ),
        (
            '{"object_key":"k","new_state":{"a":{}}}',
            "new_state.a: invalid type: map, expected byte array at line 1 column 35",
        ),
        (
            '{"object_key":"k","new_state":[]}',
            "new_state: invalid type: sequence, expected a map at line 1 column 30",
        ),
        (
            '{"object_key":"k","new_state":null}',
            "new_state: invalid type: null, expected a map at line 1 column 34",
        ),
        (
            '{"object_key":5,"new_state":{}}',
            "object_key: invalid type: integer `5`, expected a string at line 1 column 15",
        ),
        (
            '{"object_key":null,"new_state":{}}',
            "object_key: invalid type: null, expected a string at line 1 column 18",
        ),
        (
            '{"object_key":"k","new_state":{},"version":{}}',
            "version: invalid type: map, expected a string at line 1 column 43",
        ),
        (
            '{"object_key":"k1","new_state":{"count":[55]},"scope":5}',
            "scope: invalid type: integer `5`, expected a string at line 1 column 55",
        ),
        ("5", "invalid type: integer `5`, expected struct ModifyServiceStateRequest at line 1 column 1"),
        ('"x"', 'invalid type: string "x", expected struct ModifyServiceStateRequest at line 1 column 3'),
        ("null", "invalid type: null, expected struct ModifyServiceStateRequest at line 1 column 4"),
    ],
)
async def test_state_edit_bodies_that_do_not_fit_are_422(
    client: tuple[TestClient, RecordingEditor], body: str, message: str
) -> None:
    r = await client[0].post(
        "/services/Counter/state", data=body.encode(), headers={"content-type": "application/json"}
    )
    assert await plain(r, 422) == f"Failed to deserialize the JSON body into the target type: {message}"
    assert client[1].edits == []


async def test_state_edit_needs_json(client: tuple[TestClient, RecordingEditor]) -> None:
    """Restate 1.7.12 (measured): 415 for a missing or non-JSON content type, 400 for bad JSON,
    both in text/plain."""
    c = client[0]
    for headers in ({}, {"content-type": "text/plain"}):
        r = await c.post(
            "/services/Counter/state", data=b'{"object_key":"k1","new_state":{}}', headers=headers
        )
        assert await plain(r, 415) == "Expected request with `Content-Type: application/json`"
    r = await c.post(
        "/services/Counter/state", data=b'{"object_key":"k1"', headers={"content-type": "application/json"}
    )
    assert (await plain(r, 400)).startswith("Failed to parse the request body as JSON: ")
    assert client[1].edits == []


class FakeCommands:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[int, Command]] = []
        self.fail = fail

    async def send_keyed(self, partition_key: int, command: Command) -> None:
        if self.fail:
            raise Unavailable("the broker is down")
        self.sent.append((partition_key, Command.decode(command.encode())))


async def test_the_kafka_editor_keys_the_edit_by_the_objects_partition_key() -> None:
    commands = FakeCommands()
    patch = PatchState(service="Counter", key="k1", new_state={"count": b"1"})
    await KafkaStateEditor(commands).edit(patch, 1234)  # type: ignore[arg-type]
    assert commands.sent == [(partition_key_of("k1"), Command(timestamp_ms=1234, body=patch))]
    scoped = PatchState(service="Counter", key="k1", new_state={}, scope="s1")
    await KafkaStateEditor(commands).edit(scoped, 1234)  # type: ignore[arg-type]
    assert commands.sent[-1] == (partition_key_of("s1"), Command(timestamp_ms=1234, body=scoped))
    with pytest.raises(RegistryError) as refused:
        await KafkaStateEditor(FakeCommands(fail=True)).edit(patch, 1234)  # type: ignore[arg-type]
    assert refused.value.status == 500 and "Failed sending state patching command" in refused.value.message
