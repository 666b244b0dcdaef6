"""Semantics as Restate 1.7.12 has them, end to end with the real Python SDK
(tests/support/semantics_services.py): a terminal error's metadata reaches the caller and the
ingress; a pending attach is not answered by another request's "not ready"; attach by idempotency
key to a send of a virtual object's handler; an idempotent invocation on a virtual object is
forgotten after its idempotency retention, after which the same key runs again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.cluster import StackClient, module_stack
from tests.support.semantics_services import METADATA

pytestmark = pytest.mark.integration

APP = "tests.support.semantics_services:app"


Env = StackClient


@pytest.fixture(scope="module")
def env(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("semantics")
    with module_stack(kafka_bootstrap, base, APP) as stack, httpx.Client(timeout=60) as client:
        yield Env(stack, client)


def test_a_terminal_errors_metadata_reaches_the_caller_and_the_ingress(env: Env) -> None:
    r = env.post("/restate/call/MetaFailing/fail", "boom")
    assert r.status_code == 422, r.text
    assert r.headers["x-restate-error-source"] == "invocation"
    assert r.json() == {"code": 422, "message": "boom", "metadata": METADATA, "source": "invocation"}

    seen = env.post("/restate/call/MetaCaller/observe", "boom")
    assert seen.status_code == 200, seen.text
    assert seen.json() == {"code": 422, "message": "boom", "metadata": METADATA}

    relayed = env.post("/restate/call/MetaCaller/propagate", "boom")
    assert relayed.status_code == 422, relayed.text
    assert relayed.json()["metadata"] == METADATA


def test_a_pending_attach_keeps_waiting_when_output_is_asked_meanwhile(env: Env) -> None:
    key = uuid.uuid4().hex
    sent = env.post(f"/restate/send/Tally/{key}/hold", 3.0)
    assert sent.status_code == 202, sent.text
    inv = sent.json()["invocationId"]
    attached: list[httpx.Response] = []
    attach = threading.Thread(target=lambda: attached.append(env.get(f"/restate/attach/{inv}")))
    attach.start()
    time.sleep(0.5)  # the attach is waiting at the processor
    output = env.get(f"/restate/output/{inv}")
    assert output.status_code == 470, output.text
    attach.join(30)
    assert attached, "the attach did not end"
    assert attached[0].status_code == 200, attached[0].text
    assert attached[0].json() == "held 3.0s"


def test_attach_by_idempotency_key_to_a_send_of_an_object_handler(env: Env) -> None:
    key, idem = uuid.uuid4().hex, uuid.uuid4().hex
    sent = env.post(f"/restate/send/Tally/{key}/bump", 1000, **{"idempotency-key": idem})
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] == "Accepted"
    attached = env.get(f"/restate/invocation/Tally/{key}/bump/{idem}/attach")
    assert attached.status_code == 200, attached.text
    assert attached.json() == 1
    assert attached.headers["x-restate-id"] == sent.json()["invocationId"]
    output = env.get(f"/restate/invocation/Tally/{key}/bump/{idem}/output")
    assert output.status_code == 200, output.text
    assert output.json() == 1
    again = env.post(f"/restate/send/Tally/{key}/bump", 0, **{"idempotency-key": idem})
    assert again.status_code == 202, again.text
    assert again.json()["status"] == "PreviouslyAccepted"
    called = env.post(f"/restate/call/Tally/{key}/bump", 0, **{"idempotency-key": idem})
    assert called.status_code == 200, called.text
    assert called.json() == 1 and "idempotency-expires" in called.headers
    body = {"target": "idempotentInvocation", "service": "Tally", "key": key, "handler": "bump"}
    found = env.client.post(f"{env.ingress}/restate/lookup", json={**body, "idempotencyKey": idem})
    assert found.status_code == 200 and found.json() == {"invocationId": sent.json()["invocationId"]}
    by_body = env.client.post(f"{env.ingress}/restate/attach", json={**body, "idempotencyKey": idem})
    assert by_body.status_code == 200 and by_body.json() == 1, by_body.text
    unknown = env.get(f"/restate/invocation/Tally/{key}/bump/nope/attach")
    assert unknown.status_code == 404, unknown.text
    assert unknown.json() == {"code": 404, "message": "not found", "source": "invocation"}
    assert unknown.headers["x-restate-id"].startswith("inv_")
    not_there = env.get(f"/restate/invocation/Tally/{key}/bump/nope/output")
    assert not_there.status_code == 404, not_there.text
    assert not_there.json() == {"code": 404, "message": "invocation not found", "source": "ingress"}


def test_attach_by_idempotency_key_to_a_send_queued_behind_the_objects_lock(env: Env) -> None:
    key = uuid.uuid4().hex
    assert env.post(f"/restate/send/Tally/{key}/hold", 2.0).status_code == 202
    sent = env.post(f"/restate/send/Tally/{key}/bump", 0, **{"idempotency-key": "queued"})
    assert sent.status_code == 202, sent.text
    output = env.get(f"/restate/invocation/Tally/{key}/bump/queued/output")
    assert output.status_code == 470, output.text
    attached = env.get(f"/restate/invocation/Tally/{key}/bump/queued/attach")
    assert attached.status_code == 200, attached.text
    assert attached.json() == 1
    assert attached.headers["x-restate-id"] == sent.json()["invocationId"]


def test_an_idempotent_object_invocation_is_forgotten_after_its_retention(env: Env) -> None:
    """`idempotency_retention` (PATCH /services) caps how long the key answers from the stored
    result; the journal retention (a day by default) does not keep it longer, as in Restate."""
    patched = env.client.patch(f"{env.admin}/services/Tally", json={"idempotency_retention": "2s"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["idempotency_retention"] == "2s"
    key = uuid.uuid4().hex

    def bump() -> httpx.Response:
        r = env.post(f"/restate/call/Tally/{key}/bump", 0, **{"idempotency-key": "once"})
        assert r.status_code == 200, r.text
        return r

    def patched_retention_applies() -> bool:  # the ingress resolves options from its registry view
        probe = uuid.uuid4().hex
        for _ in range(2):
            r = env.post(f"/restate/call/Tally/{probe}/bump", 0, **{"idempotency-key": "probe"})
        expires = datetime.fromisoformat(r.headers["idempotency-expires"])
        return expires - datetime.now(UTC) < timedelta(seconds=30)

    env.until(patched_retention_applies, "the patched idempotency retention to apply")
    first = bump()
    assert first.json() == 1
    repeat = bump()
    assert repeat.json() == 1 and repeat.headers["x-restate-id"] == first.headers["x-restate-id"]
    expires = repeat.headers["idempotency-expires"]
    assert expires.endswith("+00:00")
    env.until(lambda: bump().json() == 2, "the key to run again after its retention", timeout_s=30)
    assert env.get(f"/restate/invocation/Tally/{key}/bump/once/output").json() == 2
