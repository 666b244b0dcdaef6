"""Admin API over an in-memory registry store (discovery replaced by the transcript's manifest)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin_api import app as admin_app
from admin_api.registration import Discovered, RegistrationError
from admin_api.store import MemoryRegistryStore
from schemas.settings import Settings

MANIFEST = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "restate-1.7.12-manifest.json").read_text()
)


def swap_manifest(variant: str) -> dict:
    """admin-behaviour.md's variants: a = SwapA{ping,echo} + SwapB; b = SwapA{ping,extra} + SwapC;
    c = SwapA as a VirtualObject + SwapC."""

    def service(name: str, handlers: list[str], ty: str = "SERVICE") -> dict:
        kind = {"ty": "EXCLUSIVE"} if ty == "VIRTUAL_OBJECT" else {}
        return {"name": name, "ty": ty, "handlers": [{"name": h, **kind} for h in handlers]}

    services = {
        "a": [service("SwapA", ["ping", "echo"]), service("SwapB", ["ping"])],
        "b": [service("SwapA", ["ping", "extra"]), service("SwapC", ["ping"])],
        "c": [service("SwapA", ["ping"], "VIRTUAL_OBJECT"), service("SwapC", ["ping"])],
    }[variant]
    return {
        "protocolMode": "BIDI_STREAM",
        "minProtocolVersion": 5,
        "maxProtocolVersion": 7,
        "services": services,
    }


class World:
    """The admin app with discovery replaced: `manifests[uri]` is what a URI serves (default: the
    transcript's manifest); `calls` lists the discoveries made."""

    def __init__(self, client: TestClient, store: MemoryRegistryStore) -> None:
        self.client = client
        self.store = store
        self.manifests: dict[str, dict] = {}
        self.calls: list[dict] = []

    async def services(self) -> dict[str, dict]:
        body = await (await self.client.get("/services")).json()
        return {s["name"]: s for s in body["services"]}


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    holder: list[World] = []

    async def fake_discover(uri: str, **kwargs: object) -> Discovered:
        w = holder[0]
        w.calls.append({"uri": uri, **kwargs})
        if "9099" in uri:
            raise RegistrationError(
                500,
                f"[META0003] [META0003] error when calling '{uri}/': h2 pool connection error: "
                "Connection refused (os error 111)",
                "META0003",
            )
        return Discovered(
            w.manifests.get(uri.rstrip("/"), MANIFEST),
            "HTTP/1.1" if kwargs.get("use_http_11") else "HTTP/2.0",
            "BIDI_STREAM",
            5,
            7,
            "restate-sdk-python/1.3.0",
        )

    monkeypatch.setattr(admin_app.discovery, "discover", fake_discover)
    store = MemoryRegistryStore()
    app = admin_app.create_admin_app(store, Settings(ingress_port=8080))
    async with TestClient(TestServer(app)) as c:
        holder.append(World(c, store))
        yield holder[0]


@pytest.fixture
def client(world: World) -> TestClient:
    return world.client


async def test_register_then_reregister(client: TestClient) -> None:
    r = await client.post("/deployments", json={"uri": "http://127.0.0.1:9080"})
    assert r.status == 201
    body = await r.json()
    assert body["id"].startswith("dp_1") and r.headers["location"] == f"deployments/{body['id']}"
    assert {s["name"] for s in body["services"]} == {"Greeter", "Counter", "Signup", "Caller", "Steps"}
    assert body["max_protocol_version"] == 7 and body["sdk_version"] == "restate-sdk-python/1.3.0"
    again = await client.post("/deployments", json={"uri": "http://127.0.0.1:9080", "force": False})
    assert again.status == 200 and (await again.json())["id"] == body["id"]


async def test_dry_run_of_a_new_uri_is_201_and_writes_nothing(world: World) -> None:
    """The CLI's `deployments register` sends a dry run first and reads 200 as "already exists"."""
    r = await world.client.post("/deployments", json={"uri": "http://127.0.0.1:9080", "dry_run": True})
    assert r.status == 201 and len((await r.json())["services"]) == 5
    r = await world.client.post(
        "/deployments", json={"uri": "http://127.0.0.1:9080", "use_http_11": True, "dry_run": True}
    )
    assert r.status == 201
    assert (await (await world.client.get("/deployments")).json()) == {"deployments": []}
    assert world.store.log == []


async def test_listing_and_lookups_under_every_prefix(client: TestClient) -> None:
    dep = await (await client.post("/deployments", json={"uri": "http://127.0.0.1:9080"})).json()
    for prefix in ("", "/v2", "/v3", "/v4"):
        deps = await (await client.get(f"{prefix}/deployments")).json()
        assert [d["id"] for d in deps["deployments"]] == [dep["id"]]
        assert deps["deployments"][0]["uri"] == "http://127.0.0.1:9080/"
        detail = await (await client.get(f"{prefix}/deployments/{dep['id']}")).json()
        assert {s["name"] for s in detail["services"]} == {"Greeter", "Counter", "Signup", "Caller", "Steps"}
        svc = await (await client.get(f"{prefix}/services/Counter")).json()
        assert svc["ty"] == "VirtualObject"
        handlers = await (await client.get(f"{prefix}/services/Counter/handlers")).json()
        assert {h["name"] for h in handlers["handlers"]} == {"add", "get"}
        add = await (await client.get(f"{prefix}/services/Counter/handlers/add")).json()
        assert add["ty"] == "Exclusive" and add["input_description"] == "JSON integer"
        assert len((await (await client.get(f"{prefix}/services")).json())["services"]) == 5


async def admin_error(response: Any, status: int) -> str:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"message", "restate_code"}
    return str(body["message"])


async def plain_error(response: Any, status: int) -> str:
    """A body refused as axum's `Json` extractor refuses it on Restate: text/plain, no JSON shape."""
    assert response.status == status, await response.text()
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    return str(await response.text())


async def test_errors_have_restates_shape(world: World) -> None:
    client = world.client
    r = await client.get("/services/NoSuch")
    assert r.status == 404
    assert await r.json() == {
        "message": "The requested service 'NoSuch' does not exist",
        "restate_code": None,
    }
    unknown = "dp_17hKFvn8egjwbSFbdGUIaOt"
    assert await admin_error(await client.get(f"/deployments/{unknown}"), 404) == (
        f"The requested deployment '{unknown}' does not exist"
    )
    assert await admin_error(await client.get("/deployments/dp_1nope"), 400) == "Invalid URL: bad length"
    assert await admin_error(await client.get("/deployments/bogus"), 400) == "Invalid URL: bad format"
    r = await client.post("/deployments", json={"nope": 1})
    assert await plain_error(r, 422) == (
        "Failed to deserialize the JSON body into the target type: "
        "data did not match any variant of untagged enum RegisterDeploymentRequest"
    )
    r = await client.post("/deployments", data=b"{not json", headers={"content-type": "application/json"})
    assert (await plain_error(r, 400)).startswith("Failed to parse the request body as JSON: ")
    r = await client.post("/deployments", data=b'{"uri": "http://127.0.0.1:9080"}')
    assert await plain_error(r, 415) == "Expected request with `Content-Type: application/json`"
    r = await client.post("/deployments", json={"uri": "http://127.0.0.1:9099"})
    assert r.status == 500 and (await r.json())["restate_code"] == "META0003"
    for method, path in [("GET", "/no/such/route"), ("POST", "/nope"), ("GET", "/v5/services")]:
        r = await client.request(method, path)  # as Restate: 404 without a body or a content type
        assert (r.status, await r.read(), r.headers.get("content-type")) == (404, b"", None), path
    r = await client.get("/v1/services")
    assert await plain_error(r, 400) == (
        "Unsupported Admin API version V1. This server supports versions between V2 and V4."
    )
    assert world.store.log == []


async def test_bad_uris_are_refused_before_any_discovery(world: World) -> None:
    for uri in ("not a uri", "", "http://", "localhost/x"):
        r = await world.client.post("/deployments", json={"uri": uri})
        assert (await plain_error(r, 422)).endswith("untagged enum RegisterDeploymentRequest")
    for uri in ("127.0.0.1:9080", "/just/a/path", "localhost"):
        r = await world.client.post("/deployments", json={"uri": uri})
        assert await admin_error(r, 400) == (
            f"The request field 'uri' is invalid. Reason: The provided uri {uri} is not absolute, "
            "only absolute URIs can be used."
        )
    r = await world.client.post("/deployments", json={"uri": "http://x:1", "force": "yes"})
    assert r.status == 422
    assert world.calls == []


async def test_unknown_methods_on_known_paths_are_405(client: TestClient) -> None:
    """As Restate 1.7.12 answers them (measured): no body, the route's methods in `allow`."""
    for method, path, allow in [
        ("DELETE", "/services", "GET,HEAD"),
        ("PUT", "/services/Greeter", "GET,HEAD,PATCH"),
        ("PATCH", "/deployments", "GET,HEAD,POST"),
        ("GET", "/query", "POST"),
        ("POST", "/v3/health", "GET,HEAD"),
        ("OPTIONS", "/services", "GET,HEAD"),
        ("GET", "/services/Greeter/state", "POST"),
        ("DELETE", "/v2/services/Greeter/openapi", "GET,HEAD"),
        ("POST", "/openapi", "GET,HEAD"),
        ("POST", "/cluster-health", "GET,HEAD"),
        ("GET", "/invocations/inv_1foAirY4KKzi6O9o5gyOPdYC7whWo6fguE/cancel", "PATCH"),
    ]:
        r = await client.request(method, path)
        assert (r.status, r.headers.get("allow"), await r.read()) == (405, allow, b""), (method, path)


async def test_health_and_version(client: TestClient) -> None:
    r = await client.get("/health")
    assert r.status == 200 and await r.read() == b""
    v = await (await client.get("/version")).json()
    assert v["version"] == "1.7.12"
    assert (v["min_admin_api_version"], v["max_admin_api_version"]) == (2, 4)
    assert v["ingress_endpoint"] == "http://127.0.0.1:8080/"
    assert v["features"] == {}


class FakeControl:
    """Answers as a processor would, from a table: the admin's job is the HTTP mapping."""

    def __init__(self, outcomes: dict[str, object]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, object]] = []

    async def manage(self, invocation_id, operation):  # type: ignore[no-untyped-def]
        self.calls.append((str(invocation_id), operation))
        return self.outcomes[str(invocation_id)]


async def test_invocation_operations_map_to_restates_answers() -> None:
    from schemas.ids import InvocationId
    from schemas.records import ManageOperation, ManageOutcome

    ids = [str(InvocationId.generate(n, 1_795_000_000_000, n)) for n in range(5)]
    outcomes = dict(
        zip(
            ids,
            [
                ManageOutcome.ACCEPTED,
                ManageOutcome.DONE,
                ManageOutcome.NOT_FOUND,
                ManageOutcome.ALREADY_COMPLETED,
                ManageOutcome.NOT_COMPLETED,
            ],
            strict=True,
        )
    )
    control = FakeControl(outcomes)
    app = admin_app.create_admin_app(MemoryRegistryStore(), Settings(), control)
    async with TestClient(TestServer(app)) as c:
        assert (await c.patch(f"/invocations/{ids[0]}/cancel")).status == 202
        assert (await c.patch(f"/v4/invocations/{ids[1]}/kill")).status == 200
        missing = await c.patch(f"/invocations/{ids[2]}/purge")
        assert missing.status == 404
        assert await missing.json() == {
            "message": f"The requested invocation '{ids[2]}' does not exist",
            "restate_code": None,
        }
        done = await c.patch(f"/invocations/{ids[3]}/cancel")
        assert done.status == 409
        assert (await done.json())["message"] == f"The invocation '{ids[3]}' was already completed."
        running = await c.patch(f"/invocations/{ids[4]}/purge")
        assert (await running.json())["message"] == f"The invocation '{ids[4]}' is not yet completed."
        assert (await c.delete(f"/invocations/{ids[1]}?mode=Kill")).status == 202
        bad = await c.patch("/invocations/bogus/cancel")
        assert bad.status == 400
        assert await bad.json() == {
            "message": "The request field 'invocation_id' is invalid. Reason: bad format",
            "restate_code": None,
        }
    assert control.calls[0] == (ids[0], ManageOperation.CANCEL)
    assert control.calls[-1] == (ids[1], ManageOperation.KILL)


async def test_reads_catch_up_with_the_changelog_first_and_answer_anyway_when_they_cannot() -> None:
    """Each query and invocation read brings the copy up to what is committed (read-your-writes);
    when Kafka does not let it (a timeout), the read answers from what the copy holds."""
    import threading

    from tests.unit.state_machine.conftest import INV, Harness, invoke

    sm = Harness()
    sm.apply(invoke(ts=1_795_000_000_000))
    waits: list[float] = []

    class View:
        store = sm.store
        lock = threading.Lock()
        reachable = True

        def catch_up(self, timeout_s: float) -> None:
            waits.append(timeout_s)
            if not self.reachable:
                raise TimeoutError("cannot read the end offsets of changelog")

    view = View()
    app = admin_app.create_admin_app(MemoryRegistryStore(), Settings(), changelog=view)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        sql = {"query": "SELECT id FROM sys_invocation"}
        r = await c.post("/query", json=sql, headers={"accept": "application/json"})
        assert (r.status, await r.json(), waits) == (200, {"rows": [{"id": INV}]}, [admin_app.READ_BARRIER_S])
        assert (await c.get(f"/invocations/{INV}")).status == 200 and len(waits) == 2
        assert (await c.get("/invocations")).status == 200 and len(waits) == 3
        view.reachable = False
        r = await c.post("/query", json=sql, headers={"accept": "application/json"})
        assert (r.status, await r.json(), len(waits)) == (200, {"rows": [{"id": INV}]}, 4)


async def test_query_and_invocations_from_the_changelog_view() -> None:
    import threading

    from schemas.records import Ended
    from tests.unit.state_machine.conftest import INV, Harness, attempt, invoke, output

    sm = Harness()
    sm.apply(invoke(ts=1_795_000_000_000), attempt(1_795_000_000_100, 1, [output(b'"hi"')], Ended()))

    class View:
        store = sm.store
        lock = threading.Lock()

    app = admin_app.create_admin_app(MemoryRegistryStore(), Settings(), changelog=View())  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        r = await c.post(
            "/v4/query",
            json={"query": "SELECT id, target, status, created_at FROM sys_invocation"},
            headers={"accept": "application/json"},
        )
        assert r.status == 200 and r.headers["content-type"] == "application/json"
        assert await r.json() == {
            "rows": [
                {
                    "id": INV,
                    "target": "Greeter/greet",
                    "status": "completed",
                    "created_at": "2026-11-18T11:06:40.000+00:00",
                }
            ]
        }
        arrow = await c.post("/query", json={"query": "SELECT COUNT(1) FROM sys_journal"})
        assert arrow.headers["content-type"] == "application/vnd.apache.arrow.stream"
        import pyarrow as pa

        assert pa.ipc.open_stream(await arrow.read()).read_all().column(0).to_pylist() == [2]
        bad = await c.post("/query", json={"query": "SELEC nonsense"}, headers={"accept": "application/json"})
        assert bad.status == 400 and (await bad.json())["message"].startswith("Datafusion error:")
        one = await (await c.get(f"/invocations/{INV}")).json()
        assert (
            one["status"] == "completed"
            and one["target_service_key"] is None
            and one["deployment_id"] == "dp_1"
        )
        assert [i["id"] for i in (await (await c.get("/invocations")).json())["invocations"]] == [INV]
        assert (await c.get("/invocations/bogus")).status == 400


async def test_patch_service_changes_visibility_and_retention(client: TestClient) -> None:
    await client.post("/deployments", json={"uri": "http://127.0.0.1:9080"})
    r = await client.patch("/services/Greeter", json={"idempotency_retention": "2h"})
    assert r.status == 200 and (await r.json())["idempotency_retention"] == "2h"
    r = await client.patch("/services/Greeter", json={"public": False, "bogus": 1})
    body = await r.json()
    assert body["public"] is False and all(h["public"] is False for h in body["handlers"])
    assert body["idempotency_retention"] == "2h" and body["revision"] == 1
    assert (await (await client.get("/services/Greeter")).json())["public"] is False
    bad = await client.patch("/services/Greeter", json={"abort_timeout": "soon"})
    assert (await plain_error(bad, 422)).startswith(
        "Failed to deserialize the JSON body into the target type: abort_timeout: "
    )
    # Restate 1.7.12's answers to the same bytes (measured).
    for raw, message in [
        ('{"public":1}', "public: invalid type: integer `1`, expected a boolean at line 1 column 11"),
        ('{"public":"x"}', 'public: invalid type: string "x", expected a boolean at line 1 column 13'),
        (
            '{"idempotency_retention":5}',
            "idempotency_retention: invalid type: integer `5`, expected a human-friendly duration string "
            "at line 1 column 26",
        ),
    ]:
        bad = await client.patch("/services/Greeter", data=raw, headers={"content-type": "application/json"})
        assert (
            await plain_error(bad, 422)
            == f"Failed to deserialize the JSON body into the target type: {message}"
        )
    bad = await client.patch(
        "/services/Greeter", data='{"journal_retention":"1x"}', headers={"content-type": "application/json"}
    )
    assert (await plain_error(bad, 422)).endswith(" at line 1 column 25")
    wf_only = await client.patch("/services/Greeter", json={"workflow_completion_retention": "1h"})
    assert wf_only.status == 400
    assert (await client.patch("/services/NoSuch", json={})).status == 404


# -- deployments: Restate 1.7.12's answers, measured (shared/reference/restate-1.7.12-admin-behaviour.md)

URI = "http://127.0.0.1:9180"


async def register(world: World, status: int, prefix: str = "", **body: object) -> dict:
    r = await world.client.post(f"{prefix}/deployments", json={"uri": URI, **body})
    assert r.status == status, await r.text()
    answer: dict = await r.json()
    return answer


def shown(answer: dict) -> dict[str, tuple[str, int, list[str]]]:
    return {
        s["name"]: (s["ty"], s["revision"], sorted(h["name"] for h in s["handlers"]))
        for s in answer["services"]
    }


A = {"SwapA": ("Service", 1, ["echo", "ping"]), "SwapB": ("Service", 1, ["ping"])}


async def test_same_uri_unchanged_answers_the_existing_deployment(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    dep = await register(world, 201)
    patched = await world.client.patch("/services/SwapA", json={"idempotency_retention": "2h"})
    assert patched.status == 200
    writes = len(world.store.log)
    for body in (
        {},
        {"force": False},
        {"dry_run": True},
        {"use_http_11": True},
        {"additional_headers": {"x": "1"}},
    ):
        again = await register(world, 200, **body)
        assert again["id"] == dep["id"] and shown(again) == A, body
    assert len(world.store.log) == writes and len(world.calls) == 1  # not even discovered again
    services = await world.services()
    assert services["SwapA"]["idempotency_retention"] == "2h" and services["SwapA"]["revision"] == 1


async def test_same_uri_unchanged_with_force_bumps_revisions(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    dep = await register(world, 201)
    await world.client.patch("/services/SwapA", json={"idempotency_retention": "2h"})
    again = await register(world, 200, force=True)
    assert again["id"] == dep["id"]
    assert {n: s[1] for n, s in shown(again).items()} == {"SwapA": 2, "SwapB": 2}
    services = await world.services()
    assert services["SwapA"]["revision"] == 2 and services["SwapA"]["idempotency_retention"] == "1d"


async def test_same_uri_changed_services_need_force(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    await register(world, 201)
    world.manifests[URI] = swap_manifest("b")
    for body in ({}, {"force": False}, {"dry_run": True}, {"breaking": True}):
        assert shown(await register(world, 200, **body)) == A, body
    assert set(await world.services()) == {"SwapA", "SwapB"}
    applied = await register(world, 200, force=True)
    assert shown(applied) == {"SwapA": ("Service", 2, ["extra", "ping"]), "SwapC": ("Service", 1, ["ping"])}
    assert set(await world.services()) == {"SwapA", "SwapC"}  # SwapB is no longer offered


async def test_a_breaking_change_needs_force(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    await register(world, 201)
    world.manifests[URI] = swap_manifest("c")
    assert shown(await register(world, 200, force=False)) == A
    assert shown(await register(world, 200, breaking=True)) == A
    applied = await register(world, 200, force=True)
    assert shown(applied)["SwapA"] == ("VirtualObject", 2, ["ping"])
    assert (await world.services())["SwapA"]["ty"] == "VirtualObject"


async def test_a_breaking_change_at_a_new_uri_needs_breaking(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    await register(world, 201)
    other = "http://127.0.0.1:9181"
    world.manifests[other] = swap_manifest("c")
    r = await world.client.post("/deployments", json={"uri": other})
    assert r.status == 409 and (await r.json())["restate_code"] == "META0006"
    r = await world.client.post("/deployments", json={"uri": other, "breaking": True})
    assert r.status == 201
    assert (await world.services())["SwapA"]["ty"] == "VirtualObject"


async def test_changed_additional_headers_with_force_are_applied(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    dep = await register(world, 201)
    again = await register(world, 200, force=True, additional_headers={"x-token": "t2"})
    assert again["id"] == dep["id"] and shown(again)["SwapA"][1] == 2
    detail = await (await world.client.get(f"/deployments/{dep['id']}")).json()
    assert detail["additional_headers"] == {"x-token": "t2"}
    assert world.calls[-1]["additional_headers"] == {"x-token": "t2"}


async def test_admin_api_v2_defaults_force_to_true(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    dep = await register(world, 201, prefix="/v2")
    again = await register(world, 201, prefix="/v2")  # v2: overwritten is 201
    assert again["id"] == dep["id"] and shown(again)["SwapA"][1] == 2
    r = await world.client.post("/v2/deployments", json={"uri": URI, "force": False})
    assert await admin_error(r, 409) == f"Conflict: deployment {dep['id']} already exists"
    assert (await register(world, 200, prefix="/v4"))["id"] == dep["id"]


async def test_put_deployment_is_405(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    dep = await register(world, 201)
    r = await world.client.put(f"/deployments/{dep['id']}", json={"uri": URI})
    assert await admin_error(r, 405) == "PUT deployment is deprecated, use PATCH instead"
    r = await world.client.put(f"/v4/deployments/{dep['id']}", json={"uri": URI})
    assert r.status == 405


async def test_patch_deployment(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    dep = await register(world, 201)
    path = f"/deployments/{dep['id']}"
    calls = len(world.calls)
    for body in ({}, {"overwrite": True}, {"dry_run": True}, {"uri": None}):
        r = await world.client.patch(path, json=body)
        assert r.status == 200, body
        answer = await r.json()
        assert answer["id"] == dep["id"] and shown(answer) == A
    assert len(world.calls) == calls  # nothing to change: no discovery
    # re-discovery without overwrite: address and HTTP version change, services stay
    world.manifests[URI] = swap_manifest("b")
    r = await world.client.patch(path, json={"uri": URI, "use_http_11": True})
    answer = await r.json()
    assert r.status == 200 and answer["http_version"] == "HTTP/1.1" and shown(answer) == A
    # a dry run of an overwrite shows the new services and writes nothing
    writes = len(world.store.log)
    r = await world.client.patch(path, json={"uri": URI, "overwrite": True, "dry_run": True})
    assert r.status == 200 and set(shown(await r.json())) == {"SwapA", "SwapC"}
    assert len(world.store.log) == writes and set(await world.services()) == {"SwapA", "SwapB"}
    # overwrite: the services are replaced, revisions kept
    r = await world.client.patch(path, json={"uri": URI, "overwrite": True})
    assert r.status == 200
    assert shown(await r.json()) == {
        "SwapA": ("Service", 1, ["extra", "ping"]),
        "SwapC": ("Service", 1, ["ping"]),
    }
    assert set(await world.services()) == {"SwapA", "SwapC"}
    # headers only (Restate reads a body without `uri` as its Lambda variant): same address
    r = await world.client.patch(path, json={"additional_headers": {"x-a": "1"}})
    assert r.status == 200 and (await r.json())["additional_headers"] == {"x-a": "1"}
    # (the overwrite gave a `uri` without `use_http_11`: back to HTTP/2, as Restate does)
    assert world.calls[-1]["uri"] == URI + "/" and world.calls[-1]["use_http_11"] is False
    r = await world.client.patch(path, json={"uri": "localhost:1"})
    assert (await admin_error(r, 400)).endswith("is not absolute, only absolute URIs can be used.")
    r = await world.client.patch(path, json={"uri": URI, "overwrite": "yes"})
    assert (await plain_error(r, 422)).endswith("untagged enum UpdateDeploymentRequest")
    unknown = "dp_17hKFvn8egjwbSFbdGUIaOt"
    r = await world.client.patch(f"/deployments/{unknown}", json={"uri": URI})
    assert await admin_error(r, 404) == f"The requested deployment '{unknown}' does not exist"


async def test_delete_deployment(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    dep = await register(world, 201)
    path = f"/deployments/{dep['id']}"
    for query in ("", "?force=false"):
        r = await world.client.delete(path + query)
        assert r.status == 501 and await r.read() == b""
    assert set(await world.services()) == {"SwapA", "SwapB"}
    r = await world.client.delete(path + "?force=yes")
    assert r.status == 400
    r = await world.client.delete(path + "?force=true")
    assert r.status == 202 and await r.read() == b""
    assert await world.services() == {}
    assert (await world.client.get(path)).status == 404
    assert (await (await world.client.get("/deployments")).json()) == {"deployments": []}
    r = await world.client.delete(path + "?force=true")
    assert await admin_error(r, 404) == f"not found in the schema registry: deployment with id '{dep['id']}'"
    assert (await admin_error(await world.client.delete("/deployments/nope?force=true"), 400)) == (
        "Invalid URL: bad format"
    )


async def test_delete_keeps_services_another_deployment_serves(world: World) -> None:
    world.manifests[URI] = swap_manifest("a")
    first = await register(world, 201)
    other = "http://127.0.0.1:9181"
    world.manifests[other] = swap_manifest("b")
    second = (await (await world.client.post("/deployments", json={"uri": other})).json())["id"]
    assert (await world.services())["SwapA"]["deployment_id"] == second
    assert (await world.client.delete(f"/deployments/{second}?force=true")).status == 202
    services = await world.services()
    assert set(services) == {"SwapA", "SwapB"}  # SwapC went with the deployment
    assert (services["SwapA"]["deployment_id"], services["SwapA"]["revision"]) == (first["id"], 1)


async def test_discovery_errors_are_restates() -> None:
    """An HTTP/1.1-only server that is no Restate endpoint: META0014 over h2c, META0013 over
    HTTP/1.1; a scheme that is not HTTP or nothing listening: META0003. All 500."""
    from aiohttp import web

    from admin_api.discovery import discover
    from tests.conftest import free_port

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="hello")

    plain = web.Application()
    plain.router.add_get("/{tail:.*}", hello)
    async with TestServer(plain) as server:
        uri = f"http://127.0.0.1:{server.port}"
        with pytest.raises(RegistrationError) as e:
            await discover(uri)
        assert (e.value.status, e.value.restate_code) == (500, "META0014")
        assert e.value.message == (
            f"[META0014] [META0014] error when calling '{uri}/': server possibly supports only HTTP1.1, "
            "consider discovery with --use-http1.1."
        )
        with pytest.raises(RegistrationError) as e:
            await discover(uri, use_http_11=True)
        assert (e.value.status, e.value.restate_code) == (500, "META0013")
        assert e.value.message.startswith(
            '[META0013] [META0013] received a bad response from the SDK: Bad content type header: "text/plain'
        )
    for uri in ("ftp://127.0.0.1:9080", f"http://127.0.0.1:{free_port()}"):
        with pytest.raises(RegistrationError) as e:
            await discover(uri, attempts=1)
        assert (e.value.status, e.value.restate_code) == (500, "META0003")
        assert e.value.message.startswith(f"[META0003] [META0003] error when calling '{uri}/': ")


async def test_kafka_cluster_and_subscription_bodies_that_do_not_fit_are_422(world: World) -> None:
    """Restate 1.7.12's answers to the same bytes (measured): axum's 422 in text/plain."""
    json_type = {"content-type": "application/json"}
    deserialize = "Failed to deserialize the JSON body into the target type: "
    for path, raw, message in [
        ("/kafka-clusters", "{}", "missing field `name` at line 1 column 2"),
        ("/subscriptions", "{}", "missing field `source` at line 1 column 2"),
        (
            "/kafka-clusters",
            '{"name":"c","properties":[]}',
            "properties: invalid type: sequence, expected a map",
        ),
        ("/subscriptions", '{"source":5}', "source: invalid type: integer `5`, expected a string"),
    ]:
        r = await world.client.post(path, data=raw, headers=json_type)
        assert (await plain_error(r, 422)).startswith(deserialize + message), raw
    assert world.store.log == []


async def test_a_kafka_cluster_name_must_be_a_uri_authority_as_restate(world: World) -> None:
    """Restate 1.7.12 (measured) deserializes the name as the `http` crate's URI authority."""
    props = ',"properties":{"bootstrap.servers":"127.0.0.1:9"}}'
    deserialize = "Failed to deserialize the JSON body into the target type: "
    for name, message in [
        ("bad name", "name: invalid uri character at line 1 column 18"),
        ("a/b", "name: invalid uri character at line 1 column 13"),
        ("ünï", "name: invalid uri character at line 1 column 15"),
        ("A%20B", "name: invalid authority at line 1 column 15"),
        ("a?b", "name: invalid uri character at line 1 column 13"),
        ("a#b", "name: invalid uri character at line 1 column 13"),
        ("", "name: empty string at line 1 column 10"),
    ]:
        raw = f'{{"name":"{name}"{props}'.encode()
        r = await world.client.post("/kafka-clusters", data=raw, headers={"content-type": "application/json"})
        assert await plain_error(r, 422) == deserialize + message, name
    assert world.store.log == []
    for name in ("good-name", "a:b", "a.b_c", "a@b", "x" * 300):
        raw = f'{{"name":"{name}"{props}'.encode()
        r = await world.client.post("/kafka-clusters", data=raw, headers={"content-type": "application/json"})
        assert r.status == 201, (name, await r.text())


async def test_update_and_delete_a_kafka_cluster_as_restate(world: World) -> None:
    """`PATCH` and `DELETE /kafka-clusters/{name}` with Restate 1.7.12's answers (measured)."""
    c = world.client
    props = {"bootstrap.servers": "127.0.0.1:1"}
    r = await c.patch("/kafka-clusters/nope", json={"properties": props})
    assert await admin_error(r, 404) == "not found in the schema registry: kafka cluster 'nope'"
    r = await c.delete("/kafka-clusters/nope")
    assert await admin_error(r, 404) == "not found in the schema registry: kafka cluster named 'nope'"
    assert (await c.post("/kafka-clusters", json={"name": "c2", "properties": props})).status == 201
    created = (await (await c.get("/kafka-clusters/c2")).json())["created_at"]

    r = await c.patch("/kafka-clusters/c2", json={"properties": {"x": "y"}})
    assert await admin_error(r, 400) == (
        "kafka cluster 'c2' properties must contain either 'bootstrap.servers' or 'metadata.broker.list'"
    )
    new_props = {"bootstrap.servers": "127.0.0.1:2", "x": "y"}
    r = await c.patch("/v4/kafka-clusters/c2", json={"properties": new_props})
    assert r.status == 200
    assert await r.json() == {"name": "c2", "properties": new_props, "created_at": created}
    assert (await (await c.get("/kafka-clusters/c2")).json())["properties"] == new_props
    r = await c.patch("/kafka-clusters/c2", data="{}", headers={"content-type": "application/json"})
    assert await plain_error(r, 422) == (
        "Failed to deserialize the JSON body into the target type: "
        "missing field `properties` at line 1 column 2"
    )

    assert (await c.post("/deployments", json={"uri": "http://127.0.0.1:9080"})).status == 201
    r = await c.post("/subscriptions", json={"source": "kafka://c2/t1", "sink": "service://Counter/add"})
    sub = (await r.json())["id"]
    for query in ("", "?force=false"):
        r = await c.delete(f"/kafka-clusters/c2{query}")
        assert await admin_error(r, 409) == (
            f"Removing the kafka cluster 'c2' leads to subscription '{sub}' being orphan. "
            "Remove the subscription first, or use the 'force' flag."
        )
    r = await c.delete("/kafka-clusters/c2?force=yes")
    assert await plain_error(r, 400) == (
        "Failed to deserialize query string: force: provided string was not `true` or `false`"
    )
    r = await c.delete("/kafka-clusters/c2?force=true")
    assert (r.status, await r.read()) == (202, b"")
    assert (await c.get("/kafka-clusters/c2")).status == 404
    # The orphaned subscription stays listed, as on Restate (its consumer is stopped).
    assert [s["id"] for s in (await (await c.get("/subscriptions")).json())["subscriptions"]] == [sub]
