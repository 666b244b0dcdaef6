"""Admin API over an in-memory registry store (discovery replaced by the transcript's manifest)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin_api import app as admin_app
from admin_api.registration import Discovered, RegistrationError
from admin_api.store import MemoryRegistryStore
from schemas.settings import Settings

MANIFEST = json.loads(
    (Path(__file__).parent.parent / "fixtures" / "restate-1.7.12-manifest.json").read_text()
)


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    calls: list[dict] = []

    async def fake_discover(uri: str, **kwargs: object) -> Discovered:
        calls.append({"uri": uri, **kwargs})
        if "9099" in uri:
            raise RegistrationError(
                500, f"[META0003] error when calling '{uri}/': connection refused", "META0003"
            )
        return Discovered(
            MANIFEST,
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
        yield c


async def test_register_then_reregister(client: TestClient) -> None:
    r = await client.post("/deployments", json={"uri": "http://127.0.0.1:9080"})
    assert r.status == 201
    body = await r.json()
    assert body["id"].startswith("dp_1") and r.headers["location"] == f"deployments/{body['id']}"
    assert {s["name"] for s in body["services"]} == {"Greeter", "Counter", "Signup", "Caller", "Steps"}
    assert body["max_protocol_version"] == 7 and body["sdk_version"] == "restate-sdk-python/1.3.0"
    again = await client.post("/deployments", json={"uri": "http://127.0.0.1:9080", "force": False})
    assert again.status == 200 and (await again.json())["id"] == body["id"]


async def test_dry_run_writes_nothing(client: TestClient) -> None:
    r = await client.post("/deployments", json={"uri": "http://127.0.0.1:9080", "dry_run": True})
    assert r.status == 200
    assert (await (await client.get("/deployments")).json()) == {"deployments": []}


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


async def test_errors_have_restates_shape(client: TestClient) -> None:
    r = await client.get("/services/NoSuch")
    assert r.status == 404
    assert await r.json() == {
        "message": "The requested service 'NoSuch' does not exist",
        "restate_code": None,
    }
    r = await client.get("/deployments/dp_1nope")
    assert r.status == 404 and (await r.json())["restate_code"] is None
    r = await client.post("/deployments", json={"nope": 1})
    assert r.status == 400 and "message" in await r.json()
    r = await client.post("/deployments", data=b"{not json", headers={"content-type": "application/json"})
    assert r.status == 400
    r = await client.post("/deployments", json={"uri": "http://127.0.0.1:9099"})
    assert r.status == 500 and (await r.json())["restate_code"] == "META0003"
    r = await client.get("/no/such/route")
    assert r.status == 404 and set(await r.json()) == {"message", "restate_code"}


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
    assert bad.status == 400
    wf_only = await client.patch("/services/Greeter", json={"workflow_completion_retention": "1h"})
    assert wf_only.status == 400
    assert (await client.patch("/services/NoSuch", json={})).status == 404
