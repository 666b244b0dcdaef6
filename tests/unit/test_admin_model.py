"""Registry model and admin JSON, compared with what Restate 1.7.12 answered for the same manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from admin_api.registration import Discovered, RegistrationError, plan_registration
from admin_api.rest_model import deployment_json, friendly_duration, rfc3339, service_json
from schemas.registry import Registry, apply_record

FIXTURES = Path(__file__).parent.parent / "fixtures"
MANIFEST = json.loads((FIXTURES / "restate-1.7.12-manifest.json").read_text())
DP = "dp_17hKFvn8egjwbSFbdGUIaOt"  # the id Restate gave this deployment
CREATED_MS = 1_795_422_728_325  # 2026-11-23T08:32:08.325Z, as in the transcript


def discovered(manifest: dict | None = None) -> Discovered:
    return Discovered(
        manifest=manifest or MANIFEST,
        http_version="HTTP/2.0",
        protocol_mode="BIDI_STREAM",
        min_protocol_version=5,
        max_protocol_version=7,
        sdk_version="restate-sdk-python/1.3.0",
    )


def register(
    registry: Registry,
    manifest: dict | None = None,
    *,
    uri: str = "http://127.0.0.1:9080",
    force: bool = True,
    new_id: str = DP,
):
    plan = plan_registration(
        registry,
        discovered(manifest),
        uri=uri,
        force=force,
        additional_headers={},
        metadata={},
        now_ms=CREATED_MS,
        new_deployment_id=new_id,
    )
    for key, value in plan.records():
        apply_record(registry, key, value)
    return plan


def by_name(items: list[dict]) -> dict[str, dict]:
    return {i["name"]: i for i in items}


def test_service_json_equals_restates() -> None:
    registry = Registry()
    register(registry)
    expected = json.loads((FIXTURES / "restate-1.7.12-service-counter.json").read_text())
    got = service_json(registry.services["Counter"])
    # Restate's handler order comes from a hash map; compare handlers by name, the rest exactly.
    assert by_name(got.pop("handlers")) == by_name(expected.pop("handlers"))
    assert got == expected
    assert list(got) == list(expected)  # same field order


def test_deployment_list_json_equals_restates() -> None:
    registry = Registry()
    register(registry)
    expected = json.loads((FIXTURES / "restate-1.7.12-deployments.json").read_text())["deployments"][0]
    got = deployment_json(registry.deployments[DP], registry, full_services=False)
    assert sorted(got.pop("services"), key=lambda s: s["name"]) == sorted(
        expected.pop("services"), key=lambda s: s["name"]
    )
    assert got == expected


def test_first_registration_creates_then_same_manifest_is_unchanged() -> None:
    registry = Registry()
    first = register(registry)
    assert first.created and first.changed
    assert {s.revision for s in first.services} == {1}
    again = register(registry, new_id="dp_1unused0000000000000000")
    assert not again.created and not again.changed and again.records() == []
    assert again.deployment.id == DP


def test_changed_manifest_at_same_uri_needs_force() -> None:
    registry = Registry()
    register(registry)
    changed = json.loads(json.dumps(MANIFEST))
    changed["services"][0]["handlers"].pop()
    with pytest.raises(RegistrationError) as e:
        register(registry, changed, force=False)
    assert e.value.status == 409
    plan = register(registry, changed, force=True)
    assert not plan.created and plan.changed
    assert registry.services[changed["services"][0]["name"]].revision == 2


def test_a_service_moving_to_a_new_deployment_gets_a_new_revision() -> None:
    registry = Registry()
    register(registry)
    plan = register(registry, uri="http://127.0.0.1:9081", new_id="dp_17hKFvn8egjwbSFbdGUIaOu")
    assert plan.created
    assert registry.services["Greeter"].revision == 2
    assert registry.services["Greeter"].deployment_id == "dp_17hKFvn8egjwbSFbdGUIaOu"


def test_service_type_change_is_refused_without_force() -> None:
    registry = Registry()
    register(registry)
    changed = json.loads(json.dumps(MANIFEST))
    greeter = next(s for s in changed["services"] if s["name"] == "Greeter")
    greeter["ty"] = "VIRTUAL_OBJECT"
    with pytest.raises(RegistrationError) as e:
        register(
            registry, changed, uri="http://127.0.0.1:9081", force=False, new_id="dp_17hKFvn8egjwbSFbdGUIaOu"
        )
    assert e.value.status == 409 and e.value.restate_code == "META0006"


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ({"services": [{"name": "9bad", "ty": "SERVICE", "handlers": []}]}, "invalid service name"),
        ({"services": [{"name": "S", "ty": "NOPE", "handlers": []}]}, "invalid type"),
        (
            {"services": [{"name": "S", "ty": "SERVICE", "handlers": [{"name": "h", "ty": "SHARED"}]}]},
            "cannot have",
        ),
        ({"protocolMode": "BIDI_STREAM"}, "missing 'services'"),
    ],
)
def test_bad_manifests_are_rejected_with_a_reason(manifest: dict, fragment: str) -> None:
    with pytest.raises(RegistrationError) as e:
        register(Registry(), manifest)
    assert fragment in e.value.message and e.value.status == 400


def test_durations_and_timestamps() -> None:
    assert friendly_duration(24 * 3600 * 1000) == "1d"
    assert friendly_duration(500) == "500ms"
    assert friendly_duration(60_000) == "1m"
    assert friendly_duration(7_200_000) == "2h"
    assert friendly_duration(((24 + 12) * 60 + 4) * 60_000 + 2000) == "1d 12h 4m 2s"
    assert rfc3339(CREATED_MS) == "2026-11-23T08:32:08.325000000Z"
