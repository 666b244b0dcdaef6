"""Invocation operations on kinvoke with the real Restate CLI 1.7.12 and the real Python SDK:
`restate invocations pause/resume/restart-as-new`, and `PATCH /invocations/{id}/purge-journal`
(the CLI 1.7.12 has no command for it), with the codes and bodies Restate 1.7.12 answered for the
same requests (measured side by side with the same SDK services).

Uses the stack of test_sql_cli.py (skipped the same way when the CLI is not installed).
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from schemas.ids import InvocationId, awakeable_id
from tests.integration.test_sql_cli import Kinvoke
from tests.integration.test_sql_cli import kinvoke as kinvoke  # noqa: F401 - the fixture
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration


def status_of(k: Kinvoke, inv: str) -> dict:
    rows = k.query(f"SELECT status, retry_count FROM sys_invocation WHERE id = '{inv}'")
    return rows[0] if rows else {}


def until_status(k: Kinvoke, inv: str, wanted: set[str], timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while (row := status_of(k, inv)).get("status") not in wanted:
        assert time.monotonic() < deadline, f"{inv} never became {wanted}: {row}"
        time.sleep(0.2)
    return row


def send(k: Kinvoke, path: str, body: object) -> str:
    r = k.client.post(
        f"{k.ingress}/{path}/send", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert r.status_code == 202, r.text
    inv: str = r.json()["invocationId"]
    return inv


def patch(k: Kinvoke, inv: str, op: str) -> tuple[int, object]:
    r = k.client.patch(f"{k.admin}/invocations/{inv}/{op}")
    return r.status_code, (r.json() if r.content else None)


def error(message: str) -> dict:
    return {"message": message, "restate_code": None}


def test_pause_and_resume_with_the_restate_cli(kinvoke: Kinvoke) -> None:  # noqa: F811
    k = kinvoke
    # An invocation waiting for its awakeable (its attempt's stream still open, so "running",
    # as on Restate) is paused by the CLI: the attempt is stopped.
    waiting = send(k, "Greeter/approval", "Ann")
    until_status(k, waiting, {"running", "suspended"})
    time.sleep(1)  # the handler awaits its awakeable (a signal: nothing is journaled for it)
    paused = k.restate("invocations", "pause", "--yes", waiting)
    assert "Paused 1 invocations" in paused and "Greeter/approval" in paused, paused
    # Its attempt ended with the pause, and so did the invoker's report in Restate: no retry count.
    assert "retry_count" not in until_status(k, waiting, {"paused"})
    described = k.restate("invocations", "describe", waiting)
    # As Restate 1.7.12 renders it: the status, and the journal's progress ending "paused".
    assert re.search(r"Status:\s+paused", described) and "└────>> paused" in described, described
    assert re.search(
        rf"{waiting}\s+Target:\s+Greeter/approval\s+Status:\s+paused", k.restate("invocations", "list")
    )
    assert patch(k, waiting, "pause") == (200, None)  # already paused

    # Paused, it runs nothing: the awakeable's completion is kept for later.
    awakeable = awakeable_id(InvocationId.parse(waiting).to_bytes(), 17)
    resolved = k.client.post(f"{k.ingress}/restate/awakeables/{awakeable}/resolve", content=b'"approved"')
    assert resolved.status_code == 202
    time.sleep(2)
    assert status_of(k, waiting)["status"] == "paused"

    resumed = k.restate("invocations", "resume", "--yes", waiting)
    assert "Resumed 1 invocations" in resumed, resumed
    output = k.client.get(f"{k.ingress}/restate/invocation/{waiting}/attach", timeout=30)
    assert (output.status_code, output.json()) == (200, "Ann: approved")
    assert patch(k, waiting, "pause") == (
        409,
        error(f"The invocation '{waiting}' is not running, cannot be paused."),
    )
    assert patch(k, waiting, "resume") == (
        409,
        error(f"The invocation '{waiting}' is completed, cannot be resumed."),
    )

    # An invocation backing off: paused, no more attempts; resumed, it retries again. As on
    # Restate 1.7.12 (whose invoker keeps its status report through such a pause), the paused one
    # still shows its retry count, cancelled retry time and last failure, and the resumed one
    # counts on from there.
    flaky = send(k, "Failing/flaky", "boom")
    retries = (
        f"SELECT status, retry_count, next_retry_at, last_failure FROM sys_invocation WHERE id = '{flaky}'"
    )

    def backing_off_for_a_while(rows: list[dict]) -> bool:
        """Failed twice or more, and its next retry more than 1.5 s away (the delays double):
        the pause surely reaches it while it backs off. (The view may lag; the clock does not.)"""
        if not rows or rows[0]["status"] != "backing-off" or (rows[0].get("retry_count") or 0) < 2:
            return False
        return datetime.fromisoformat(rows[0]["next_retry_at"]).timestamp() - time.time() > 1.5

    [before] = k.until(retries, backing_off_for_a_while, "the flaky invocation backing off", timeout_s=60)
    assert patch(k, flaky, "pause") == (202, None)
    [paused] = k.until(retries, lambda rows: rows and rows[0]["status"] == "paused", "the flaky one paused")
    assert paused["retry_count"] == before["retry_count"], (before, paused)
    assert paused["next_retry_at"] == before["next_retry_at"], (before, paused)
    assert paused["last_failure"].startswith("[500 Internal] RuntimeError('flaky: boom')"), paused
    due = datetime.fromisoformat(paused["next_retry_at"]).timestamp()
    time.sleep(max(due - time.time(), 0) + 1)  # past the cancelled retry's time: nothing ran
    assert k.query(retries) == [paused]
    assert patch(k, flaky, "resume?deployment=latest") == (200, None)  # a pinned deployment: latest is fine
    counted = paused["retry_count"]
    k.until(
        retries,
        lambda rows: rows and rows[0]["status"] != "paused" and rows[0]["retry_count"] > counted,
        "the resumed invocation retrying, counting on",
    )
    running = error(
        f"The invocation '{flaky}' is still running or the deployment id is not pinned yet, deployment id "
        "cannot be changed."
    )
    assert patch(k, flaky, "resume?deployment=latest") == (409, running)
    assert patch(k, flaky, "resume") == (200, None)
    assert k.client.patch(f"{k.admin}/invocations/{flaky}/kill").status_code == 200

    unknown = "inv_1fmWATVvbD6L5yGSQJrHrqQxuoeJ8mRyD3"
    for op in ("pause", "resume", "purge-journal", "restart-as-new"):
        assert patch(k, unknown, op) == (404, error(f"The requested invocation '{unknown}' does not exist"))


def test_purge_journal_and_restart_as_new(kinvoke: Kinvoke) -> None:  # noqa: F811
    k = kinvoke
    greet = k.call("Greeter/greet", "Bo")
    assert greet.status_code == 200
    done = greet.headers["x-restate-id"]

    # restart-as-new with the CLI (which looks the invocation up in sys_invocation first): a new
    # invocation of the same input, on the same partition.
    until_status(k, done, {"completed"})
    restarted = k.restate("invocations", "restart-as-new", "--yes", done)
    assert "Restarted 1 invocations" in restarted, restarted
    found = re.search(rf"{done}\s+(inv_\w+)", restarted)
    assert found, restarted
    new = found.group(1)
    assert InvocationId.parse(new).partition_key == InvocationId.parse(done).partition_key and new != done
    output = k.client.get(f"{k.ingress}/restate/invocation/{new}/attach", timeout=30)
    assert (output.status_code, output.json()) == (200, "Hello Bo")
    row = k.until(
        f"SELECT invoked_by, restarted_from, status FROM sys_invocation WHERE id = '{new}'",
        lambda rows: rows and rows[0]["status"] == "completed",
        "the restarted invocation",
    )[0]
    assert (row["invoked_by"], row["restarted_from"]) == ("restart_as_new", done)

    # From a journal prefix: the new journal starts with the copied run and its completion.
    steps = k.call("Greeter/steps", 3)
    steps_id = steps.headers["x-restate-id"]
    r = k.client.patch(f"{k.admin}/invocations/{steps_id}/restart-as-new?from=2")
    assert r.status_code == 200 and list(r.json()) == ["new_invocation_id"], r.text
    again = r.json()["new_invocation_id"]
    output = k.client.get(f"{k.ingress}/restate/invocation/{again}/attach", timeout=30)
    assert (output.status_code, output.json()) == (200, steps.json())
    journal = k.until(
        f"SELECT index, entry_type FROM sys_journal WHERE id = '{again}' ORDER BY index",
        lambda rows: len(rows) >= 8,
        "the restarted journal",
    )
    assert [e["entry_type"] for e in journal[:3]] == ["Command: Input", "Command: Run", "Notification: Run"]
    bad = k.client.patch(f"{k.admin}/invocations/{steps_id}/restart-as-new?from=x")
    assert (bad.status_code, bad.text) == (
        400,
        "Failed to deserialize query string: from: invalid digit found in string",
    )

    # purge-journal: the journal goes, the status and the output stay.
    assert patch(k, done, "purge-journal") == (200, None)
    k.until(
        f"SELECT index FROM sys_journal WHERE id = '{done}'", lambda rows: rows == [], "the purged journal"
    )
    k.until(
        f"SELECT status, journal_size, completion_result FROM sys_invocation WHERE id = '{done}'",
        lambda rows: rows == [{"status": "completed", "journal_size": 0, "completion_result": "success"}],
        "the purged journal's status",
    )
    output = k.client.get(f"{k.ingress}/restate/invocation/{done}/output", timeout=30)
    assert (output.status_code, output.json()) == (200, "Hello Bo")
    assert patch(k, done, "purge-journal") == (200, None)
    assert patch(k, done, "restart-as-new") == (
        410,
        error(
            f"The invocation '{done}' cannot be restarted because the input is not available. This indicates "
            "that the journal was already purged, or not retained at all."
        ),
    )

    # Not completed yet: 409 for both.
    flaky = send(k, "Failing/flaky", "x")
    until_status(k, flaky, {"running", "backing-off"})
    assert patch(k, flaky, "purge-journal") == (409, error(f"The invocation '{flaky}' is not yet completed."))
    assert patch(k, flaky, "restart-as-new") == (409, error(f"The invocation '{flaky}' is still running."))
    assert k.client.patch(f"{k.admin}/invocations/{flaky}/kill").status_code == 200


def test_kill_takes_the_call_tree_down_and_frees_its_locks(kinvoke: Kinvoke, tmp_path: Path) -> None:  # noqa: F811
    k = kinvoke
    with run_sdk_deployment("examples.python.call_tree:app", log=tmp_path / "tree.log") as uri:
        assert k.client.post(f"{k.admin}/deployments", json={"uri": uri}).status_code == 201
        deadline = time.monotonic() + 30
        while "Tree" not in k.client.get(f"{k.ingress}/restate/health").json()["services"]:
            assert time.monotonic() < deadline, "the ingress did not learn the call tree services"
            time.sleep(0.1)
        root = send(k, "Tree/root", "h1")
        # root -> Holder/h1/hold (holds h1's lock) -> Leaf/wait; root also sends Leaf/wait.
        rows = k.until(
            "SELECT id, target, invoked_by_id FROM sys_invocation WHERE target LIKE 'Leaf/%'",
            lambda rows: len(rows) == 2,
            "the call tree starting",
        )
        hold = k.query("SELECT id FROM sys_invocation WHERE target = 'Holder/h1/hold'")[0]["id"]
        [awaited] = [r["id"] for r in rows if r["invoked_by_id"] == hold]
        [sent] = [r["id"] for r in rows if r["invoked_by_id"] == root]
        queued = k.client.post(f"{k.ingress}/Holder/h1/peek/send")  # no input
        assert queued.status_code == 202, queued.text
        peek = queued.json()["invocationId"]
        until_status(k, peek, {"pending"})  # waiting for the lock (Restate: pending)

        assert patch(k, root, "kill") == (200, None)
        for killed in (root, hold, awaited):
            row = k.until(
                f"SELECT status, completion_failure FROM sys_invocation WHERE id = '{killed}'",
                lambda rows: rows and rows[0]["status"] == "completed",
                f"{killed} killed",
            )[0]
            assert "killed" in row["completion_failure"], row
        # The lock Holder/h1/hold held passed on: peek ran and saw hold's state.
        output = k.client.get(f"{k.ingress}/restate/invocation/{peek}/attach", timeout=30)
        assert (output.status_code, output.json()) == (200, "root")
        assert status_of(k, sent)["status"] != "completed"  # a one-way send is not part of the tree
        assert patch(k, sent, "kill") == (200, None)
