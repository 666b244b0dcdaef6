"""Restate 1.7.12's answers, end to end: a real broker, admin/ingress/processor as processes and a
real Python SDK deployment (examples/python/compat_services.py) whose code changes under one URI.

Ingress: an empty body to a JSON handler is refused without taking the object's lock, methods
other than GET/POST never run a handler, a 2 MiB body reaches the handler, long and empty keys
work. Admin: registering a URI again (unchanged, changed, forced), PATCH and DELETE of a deployment
(shared/reference/restate-1.7.12-admin-behaviour.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.cluster import StackClient, module_stack

pytestmark = pytest.mark.integration

PARTITIONS = 2
V1 = "examples.python.compat_services:app"
V2 = "examples.python.compat_services:app_v2"
JSON = {"content-type": "application/json"}


class Compat(StackClient):
    def ingress_knows(self, *services: str, absent: tuple[str, ...] = ()) -> None:
        def known() -> bool:
            names = set(self.client.get(f"{self.ingress}/restate/health").json()["services"])
            return set(services) <= names and not (set(absent) & names)

        self.until(known, f"the ingress to know {services} and not {absent}")

    def call(self, path: str, body: object, **kw: object) -> httpx.Response:
        return self.client.post(f"{self.ingress}{path}", content=json.dumps(body), headers=JSON, **kw)  # type: ignore[arg-type]

    def register(self, status: int, **body: object) -> dict:
        r = self.client.post(f"{self.admin}/deployments", json={"uri": self.deployment.uri, **body})
        assert r.status_code == status, r.text
        answer: dict = r.json()
        return answer

    def services(self) -> dict[str, dict]:
        return {s["name"]: s for s in self.client.get(f"{self.admin}/services").json()["services"]}

    def serve(self, app: str) -> None:
        """The deployment's code changes, its URI does not."""
        self.deployment.stop()
        self.deployment.app = app
        self.deployment.start()

    def count_invocations(self, target: str) -> int:
        sql = f"SELECT id FROM sys_invocation WHERE target = '{target}'"
        r = self.client.post(
            f"{self.admin}/query", json={"query": sql}, headers={"accept": "application/json"}
        )
        assert r.status_code == 200, r.text
        return len(r.json()["rows"])


def revisions(answer: dict) -> dict[str, tuple[int, list[str]]]:
    return {s["name"]: (s["revision"], sorted(h["name"] for h in s["handlers"])) for s in answer["services"]}


@pytest.fixture(scope="module")
def compat(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    """The deployment is not registered: the tests register it (and its changed code) themselves."""
    base = tmp_path_factory.mktemp("compat")
    with (
        module_stack(kafka_bootstrap, base, V1, partitions=PARTITIONS, register=False) as stack,
        httpx.Client(timeout=60) as client,
    ):
        yield Compat(stack, client)


def test_ingress_requests_are_answered_as_restate(compat: Compat) -> None:
    c = compat
    c.register(201)
    c.ingress_knows("Tally", "Echo")

    # An empty body with a JSON content-type: 400 before any invocation exists, so the object's
    # lock is not taken and the next call to the same key runs at once.
    for path in ("/Tally/k1/add", "/Tally/k1/add/send"):
        empty = c.client.post(f"{c.ingress}{path}", content=b"", headers=JSON)
        assert empty.status_code == 400, empty.text
        assert empty.json() == {
            "code": 400,
            "message": "input validation error: Empty body not allowed",
            "source": "ingress",
        }
        assert empty.headers["x-restate-error-source"] == "ingress"
    added = c.call("/Tally/k1/add", 1, timeout=30)
    assert added.status_code == 200 and added.json() == 1, added.text
    assert c.client.get(f"{c.ingress}/Tally/k1/get").json() == 1
    assert c.count_invocations("Tally/k1/add") == 1

    # Methods other than GET and POST: 405, and the handler never runs.
    for method in ("PUT", "DELETE", "PATCH"):
        r = c.client.request(method, f"{c.ingress}/Tally/k2/add", content=b"5", headers=JSON)
        assert r.status_code == 405, r.text
        assert r.json() == {"code": 405, "message": "method not allowed", "source": "ingress"}
    assert c.client.head(f"{c.ingress}/Tally/k2/add").status_code == 405
    assert c.client.get(f"{c.ingress}/Tally/k2/get").json() == 0
    assert c.count_invocations("Tally/k2/add") == 0

    # Long and empty keys are keys like any other.
    long_key = "k" * 20_000
    assert c.call(f"/Tally/{long_key}/add", 3).json() == 3
    assert c.call("/Tally//add", 4).json() == 4
    assert c.client.get(f"{c.ingress}/Tally//get").json() == 4


def test_a_2_mib_body_reaches_the_handler(compat: Compat) -> None:
    """Restate takes bodies up to 32 MiB."""
    c = compat
    if not c.client.get(f"{c.admin}/deployments").json()["deployments"]:
        c.register(201)
    c.ingress_knows("Echo")
    text = "x" * (2 * 1024 * 1024)
    big = c.call("/Echo/length", text, timeout=120)
    assert big.status_code == 200, big.text[:500]
    assert big.json() == len(text)


def test_deployments_are_registered_updated_and_removed_as_restate(compat: Compat) -> None:
    c = compat
    registered = c.client.get(f"{c.admin}/deployments").json()["deployments"]
    dep_id = c.register(200 if registered else 201)["id"]
    v1 = {"Tally": (1, ["add", "get"]), "Echo": (1, ["length"]), "Gone": (1, ["ping"])}

    # The same URI again, unchanged: 200 with the existing deployment, whatever the flags.
    for body in ({}, {"force": False}, {"dry_run": True}, {"use_http_11": True, "dry_run": True}):
        again = c.register(200, **body)
        assert again["id"] == dep_id and revisions(again) == v1, body

    # The code changes under the URI: without force nothing changes (the old services answer).
    c.serve(V2)
    for body in ({}, {"force": False}, {"breaking": True}, {"dry_run": True}):
        assert revisions(c.register(200, **body)) == v1, body
    assert set(c.services()) == {"Tally", "Echo", "Gone"}
    # With force the new services replace the old ones (next revisions; Gone is removed).
    forced = c.register(200, force=True)
    assert forced["id"] == dep_id
    assert revisions(forced) == {
        "Tally": (2, ["add", "get"]),
        "Echo": (2, ["length", "upper"]),
        "Fresh": (1, ["ping"]),
    }
    assert set(c.services()) == {"Tally", "Echo", "Fresh"}
    c.ingress_knows("Fresh", absent=("Gone",))
    assert c.call("/Echo/upper", "abc").json() == "ABC"
    gone = c.client.post(f"{c.ingress}/Gone/ping")
    assert gone.status_code == 404 and gone.json()["source"] == "ingress"

    # PATCH: nothing to change is 200 as it is; overwrite re-discovers (the code went back to v1).
    path = f"{c.admin}/deployments/{dep_id}"
    same = c.client.patch(path, json={})
    assert same.status_code == 200 and set(revisions(same.json())) == {"Tally", "Echo", "Fresh"}
    c.serve(V1)
    dry = c.client.patch(path, json={"uri": c.deployment.uri, "overwrite": True, "dry_run": True})
    assert dry.status_code == 200 and set(revisions(dry.json())) == {"Tally", "Echo", "Gone"}
    assert set(c.services()) == {"Tally", "Echo", "Fresh"}
    patched = c.client.patch(path, json={"uri": c.deployment.uri, "overwrite": True})
    assert patched.status_code == 200, patched.text
    assert revisions(patched.json()) == {
        "Tally": (2, ["add", "get"]),
        "Echo": (2, ["length"]),
        "Gone": (1, ["ping"]),
    }
    c.ingress_knows("Gone", absent=("Fresh",))
    assert c.client.post(f"{c.ingress}/Gone/ping").json() == "pong from v1"
    assert c.client.put(path, json={"uri": c.deployment.uri}).status_code == 405

    # DELETE: only with force (202), and its services go with it.
    assert c.client.delete(path).status_code == 501
    assert c.client.delete(f"{path}?force=false").status_code == 501
    assert set(c.services()) == {"Tally", "Echo", "Gone"}
    removed = c.client.delete(f"{path}?force=true")
    assert removed.status_code == 202 and removed.content == b""
    assert c.client.get(path).status_code == 404
    assert c.services() == {}
    assert c.client.get(f"{c.admin}/deployments").json() == {"deployments": []}
    c.ingress_knows(absent=("Tally", "Echo", "Gone"))
    missing = c.call("/Echo/length", "x")
    assert missing.status_code == 404 and missing.json()["message"].startswith("service 'Echo' not found")
