"""The real `restate` CLI 1.7.12 edits a virtual object's state on kinvoke (`kv edit`, `kv patch`,
`kv clear`, through `POST /services/{s}/state`), and the real Python SDK handler reads the result;
plus the rest of issue 7's item 2 over HTTP (service OpenAPI, admin OpenAPI, cluster health, 405).

Uses the stack of test_sql_cli.py (skipped the same way when the CLI is not installed).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from processor.state_machine.lifecycle.patch_state import state_version
from tests.integration.test_sql_cli import Kinvoke
from tests.integration.test_sql_cli import kinvoke as kinvoke  # noqa: F401 - the fixture
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

STATE_SQL = (
    "select key, value_utf8 from state where service_name = 'Counter' and service_key = 'k1' order by key"
)

EDITOR = """\
import json, sys
path = sys.argv[1]
state = json.load(open(path))
assert state == {"count": 3}, state  # what `kv edit` read back from kinvoke
state["count"] = 42
state["note"] = "edited"
json.dump(state, open(path, "w"))
"""


def editor_script(tmp_path: Path) -> str:
    """A non-interactive $EDITOR: the CLI runs it on the file holding the current state."""
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    launcher = tmp_path / "editor.sh"
    launcher.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$1"\n')
    launcher.chmod(0o755)
    return str(launcher)


def state_of(k: Kinvoke) -> dict[str, str]:
    return {row["key"]: row["value_utf8"] for row in k.query(STATE_SQL)}


def until_state(k: Kinvoke, expected: dict[str, str], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (current := state_of(k)) != expected:
        assert time.monotonic() < deadline, f"{what}: {current}"
        time.sleep(0.2)


def counter_get(k: Kinvoke) -> object:
    r = k.client.post(f"{k.ingress}/Counter/k1/get")  # no body: the handler takes no input
    assert r.status_code == 200, r.text
    return r.json()


def test_kv_edit_patch_and_clear_with_the_restate_cli(kinvoke: Kinvoke, tmp_path: Path) -> None:  # noqa: F811
    k = kinvoke
    assert k.call("Counter/k1/add", 3).json() == 3
    # The CLI reads state through SQL: the admin's changelog view follows the call shortly after.
    until_state(k, {"count": "3"}, "the call's state never reached the admin")
    assert re.search(r"count\s+3", k.restate("kv", "get", "Counter", "k1"))

    # kv edit: the CLI reads the state, runs $EDITOR on it and posts it with the state's version.
    edited = k.restate("kv", "edit", "--yes", "Counter", "k1", env={"EDITOR": editor_script(tmp_path)})
    assert "Successfully submitted state update." in edited
    until_state(k, {"count": "42", "note": '"edited"'}, "kv edit never took effect")
    shown = k.restate("kv", "get", "Counter", "k1")
    assert re.search(r"count\s+42", shown) and re.search(r'note\s+"edited"', shown), shown
    assert counter_get(k) == 42
    assert k.call("Counter/k1/add", 1).json() == 43  # the handler reads and writes the edited state
    # The patch is versioned with the state the CLI reads through SQL: wait until it shows 43.
    until_state(k, {"count": "43", "note": '"edited"'}, "the call's state never reached the admin")

    # kv patch: a JSON patch of the current state.
    patch = json.dumps([{"op": "replace", "path": "/count", "value": 7}])
    assert "Successfully submitted" in k.restate("kv", "patch", "--yes", "Counter", "k1", "--patch", patch)
    until_state(k, {"count": "7", "note": '"edited"'}, "kv patch never took effect")
    assert counter_get(k) == 7

    # An edit whose version no longer matches is accepted (202, as Restate) and then dropped;
    # the edit after it, with the right version, shows that the stale one was processed.
    stale = {
        "object_key": "k1",
        "new_state": {"count": list(b"999")},
        "version": state_version({b"count": b"3"}),
    }
    r = k.client.post(f"{k.admin}/v4/services/Counter/state", json=stale)
    assert (r.status_code, r.content) == (202, b"")
    current = state_version({b"count": b"7", b"note": b'"edited"'})
    fresh = {
        "object_key": "k1",
        "new_state": {"count": list(b"8"), "note": list(b'"edited"')},
        "version": current,
    }
    assert k.client.post(f"{k.admin}/services/Counter/state", json=fresh).status_code == 202
    until_state(k, {"count": "8", "note": '"edited"'}, "the versioned edit never took effect")

    # kv clear: every state entry of the key goes.
    cleared = k.restate("kv", "clear", "--yes", "Counter/k1")
    assert "Enqueued successfully for processing" in cleared
    until_state(k, {}, "kv clear never took effect")
    assert "count" not in k.restate("kv", "get", "Counter", "k1")
    assert counter_get(k) == 0


def test_services_openapi_cluster_health_and_405(kinvoke: Kinvoke) -> None:  # noqa: F811
    k = kinvoke
    r = k.client.post(f"{k.admin}/services/Greeter/state", json={"object_key": "x", "new_state": {}})
    assert r.status_code == 400
    assert r.json() == {"message": "Cannot modify state for service type Service", "restate_code": None}

    doc = k.client.get(f"{k.admin}/services/Counter/openapi").json()
    assert doc["info"] == {"title": "Counter", "version": "1"}
    assert doc["servers"] == [{"description": "Restate Ingress URL", "url": f"{k.ingress}/"}]
    add = doc["paths"]["/restate/call/Counter/{key}/add"]["post"]
    assert add["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/addRequest"
    }
    assert doc["components"]["schemas"]["addRequest"] == {"type": "integer"}
    assert k.client.get(f"{k.admin}/services/NoSuch/openapi").status_code == 404

    spec = k.client.get(f"{k.admin}/openapi").json()
    assert spec["info"]["title"] == "Admin API" and "/services/{service}/state" in spec["paths"]

    health = k.client.get(f"{k.admin}/cluster-health")
    assert health.status_code == 200 and health.json()["metadata_cluster_health"] is None

    r = k.client.delete(f"{k.admin}/services")
    assert (r.status_code, r.headers["allow"], r.content) == (405, "GET,HEAD", b"")


def test_a_state_edit_waits_for_the_invocation_holding_the_lock(kinvoke: Kinvoke, tmp_path: Path) -> None:  # noqa: F811
    """As on Restate, an edit of a locked object is applied after the invocation holding the lock:
    the Ledger handler (state read at its start, written at its end) does not overwrite it. It
    waits in line with the inbox: after the invocations queued before it, before those queued
    after it; `sys_inbox` lists only the invocations, the edit leaving a gap in their sequence
    numbers (as Restate 1.7.12 answered: 0 and 2)."""
    k = kinvoke
    with run_sdk_deployment("examples.python.ledger:app", log=tmp_path / "ledger.log") as uri:
        assert k.client.post(f"{k.admin}/deployments", json={"uri": uri}).status_code == 201
        deadline = time.monotonic() + 30
        while "Ledger" not in k.client.get(f"{k.ingress}/restate/health").json()["services"]:
            assert time.monotonic() < deadline, "the ingress did not learn the Ledger"
            time.sleep(0.1)
        op = {"id": "a", "amount": 5, "sleep_ms": 5000}
        assert k.call("Ledger/L1/apply/send", op).status_code == 202
        k.until(
            "select status from sys_invocation where target_service_key = 'L1'",
            lambda rows: [r["status"] for r in rows] == ["running"],
            "the ledger operation never ran",
        )
        before = k.call("Ledger/L1/apply/send", {"id": "b", "amount": 1}).json()["invocationId"]
        edit = {"object_key": "L1", "new_state": {"balance": list(b"100"), "ops": list(b"[]")}}
        assert k.client.post(f"{k.admin}/services/Ledger/state", json=edit).status_code == 202
        after = k.call("Ledger/L1/apply/send", {"id": "c", "amount": 2}).json()["invocationId"]
        [first, second] = k.until(
            "select id, sequence_number from sys_inbox where service_key = 'L1' order by sequence_number",
            lambda rows: len(rows) == 2,
            "the two operations never waited in the inbox",
        )
        assert (first["id"], second["id"]) == (before, after)
        assert second["sequence_number"] - first["sequence_number"] == 2  # the edit took one
        k.until(
            "select status from sys_invocation where target_service_key = 'L1'",
            lambda rows: [r["status"] for r in rows] == ["completed"] * 3,
            "the ledger operations never completed",
        )
        assert k.query("select count(*) as n from sys_inbox where service_key = 'L1'") == [{"n": 0}]
        rows = k.query("select key, value_utf8 from state where service_key = 'L1' order by key")
        assert rows == [{"key": "balance", "value_utf8": "102"}, {"key": "ops", "value_utf8": '["c"]'}]
        assert k.client.post(f"{k.ingress}/Ledger/L1/read").json() == {"balance": 102, "ops": ["c"]}


def test_a_scoped_state_edit_and_the_admin_error_shapes(kinvoke: Kinvoke) -> None:  # noqa: F811
    """As Restate 1.7.12 answers them (measured side by side): an edit with a `scope` is 202 and
    makes the scoped instance's own state (the unscoped object keeps its own); a bad scope is 500;
    refused bodies are text/plain; an unknown path is 404 without a body; every operation of the
    served `/openapi` is routed."""
    k = kinvoke
    assert k.call("Counter/scoped-k/add", 3).json() == 3
    edit = {"object_key": "scoped-k", "new_state": {"count": list(b"7")}, "scope": "tenant-1"}
    r = k.client.post(f"{k.admin}/services/Counter/state", json=edit)
    assert (r.status_code, r.content) == (202, b"")
    sql = "select scope, value_utf8 from state where service_name = 'Counter' and service_key = 'scoped-k'"
    deadline = time.monotonic() + 30
    while sorted((row.get("scope") or "", row["value_utf8"]) for row in k.query(sql)) != [
        ("", "3"),
        ("tenant-1", "7"),
    ]:
        assert time.monotonic() < deadline, k.query(sql)
        time.sleep(0.2)
    r = k.client.post(f"{k.admin}/services/Counter/state", json={**edit, "scope": "bad scope"})
    assert r.status_code == 500
    assert r.json() == {
        "message": "bad scope: value contains characters outside the allowed set [a-zA-Z0-9_.-]",
        "restate_code": None,
    }
    assert k.client.post(f"{k.ingress}/Counter/scoped-k/get").json() == 3  # the unscoped object

    r = k.client.post(
        f"{k.admin}/services/Counter/state",
        content=b'{"object_key":"k1"}',
        headers={"content-type": "application/json"},
    )
    assert (r.status_code, r.headers["content-type"]) == (422, "text/plain; charset=utf-8")
    assert r.text == (
        "Failed to deserialize the JSON body into the target type: "
        "missing field `new_state` at line 1 column 19"
    )
    r = k.client.post(
        f"{k.admin}/services/Counter/state", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert (r.status_code, r.headers["content-type"]) == (415, "text/plain; charset=utf-8")
    assert r.text == "Expected request with `Content-Type: application/json`"
    r = k.client.get(f"{k.admin}/no/such/path")
    assert (r.status_code, r.content, r.headers.get("content-type")) == (404, b"", None)

    spec = k.client.get(f"{k.admin}/openapi").json()
    assert "/vqueues/{vqueue_id}/pause" not in spec["paths"] and "/limits/rules" not in spec["paths"]
    for path, operations in spec["paths"].items():
        concrete = re.sub(r"\{([^}]+)\}", r"\1-1", path)
        for method in operations:
            if method == "get":  # safe to call: routed means anything but a bare 404 or a 405
                r = k.client.get(f"{k.admin}{concrete}")
                assert r.status_code != 405 and (r.status_code, r.content) != (404, b""), (path, r.text)
