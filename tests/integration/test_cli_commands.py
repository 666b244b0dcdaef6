"""The Restate CLI 1.7.12 commands that change things, run against kinvoke: `deployments
register/remove`, `services config view/patch`, `invocations cancel/purge` (pause, resume,
restart-as-new, kill and kv are in test_invocation_ops_cli.py, test_sql_cli.py and
test_kv_cli.py). Each command's effect is checked through the admin API, SQL or the ingress."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.integration.test_sql_cli import Kinvoke, kinvoke  # noqa: F401 - the fixture
from tests.support.sdk import run_sdk_deployment


def _status(k: Kinvoke, inv: str) -> str | None:
    rows = k.query(f"SELECT status FROM sys_invocation WHERE id = '{inv}'")
    return str(rows[0]["status"]) if rows else None


def _until(check: object, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_deployments_register_and_remove(kinvoke: Kinvoke, tmp_path: Path) -> None:  # noqa: F811
    k = kinvoke
    with run_sdk_deployment("examples.python.call_tree:app", log=tmp_path / "tree.log") as uri:
        registered = k.restate("deployments", "register", "--yes", uri)
        assert "Tree" in registered and "Leaf" in registered, registered
        deployments = k.client.get(f"{k.admin}/deployments").json()["deployments"]
        [tree] = [d for d in deployments if d["uri"].rstrip("/") == uri.rstrip("/")]
        assert {s["name"] for s in tree["services"]} == {"Tree", "Holder", "Leaf"}
        _until(lambda: "Leaf" in k.client.get(f"{k.ingress}/restate/health").json()["services"], "no Leaf")

        # It hosts the latest revision of its services: the CLI, reading kinvoke's answers as it
        # reads Restate's, refuses a removal without --force.
        refused = k.restate_result("deployments", "remove", "--yes", tree["id"])
        assert refused.returncode != 0 and "Deployment is still Active" in refused.stderr, refused.stderr
        removed = k.restate("deployments", "remove", "--yes", "--force", tree["id"])
        assert tree["id"] in removed or "removed" in removed.lower(), removed
        ids = {d["id"] for d in k.client.get(f"{k.admin}/deployments").json()["deployments"]}
        assert tree["id"] not in ids


def test_services_config_view_and_patch(kinvoke: Kinvoke) -> None:  # noqa: F811
    k = kinvoke
    view = k.restate("services", "config", "view", "Counter")
    assert re.search(r"Idempotent requests retention:\s+1d", view), view
    k.restate("services", "config", "patch", "--yes", "Counter", "--idempotency-retention", "2h")
    k.restate("services", "config", "patch", "--yes", "Counter", "--journal-retention", "30m")
    service = k.client.get(f"{k.admin}/services/Counter").json()
    assert service["idempotency_retention"] == "2h" and service["journal_retention"] == "30m", service
    view = k.restate("services", "config", "view", "Counter")
    assert re.search(r"Idempotent requests retention:\s+2h", view), view
    assert re.search(r"Journal retention:\s+30m", view), view


def test_invocations_cancel_and_purge(kinvoke: Kinvoke) -> None:  # noqa: F811
    k = kinvoke
    napping = k.call("Greeter/nap/send", 600_000).json()["invocationId"]
    # Sleeping: the attempt keeps its stream open until the inactivity timeout, then suspends;
    # a cancel reaches it either way.
    _until(lambda: _status(k, napping) in ("running", "suspended"), "the nap never started")
    cancelled = k.restate("invocations", "cancel", "--yes", napping)
    assert napping in cancelled, cancelled
    _until(lambda: _status(k, napping) == "completed", "the cancel never completed the invocation")
    attach = k.client.get(f"{k.ingress}/restate/invocation/{napping}/attach", timeout=30)
    assert attach.status_code == 409, attach.text  # Restate: a cancelled invocation's failure

    purged = k.restate("invocations", "purge", "--yes", napping)
    assert napping in purged, purged
    _until(lambda: _status(k, napping) is None, "the purge never removed the invocation")
    gone = k.client.get(f"{k.ingress}/restate/invocation/{napping}/output", timeout=30)
    assert gone.status_code == 404, gone.text
