"""Registry model and admin JSON, compared with what Restate 1.7.12 answered for the same manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from admin_api.registration import (
    Discovered,
    Outcome,
    RegistrationError,
    UriKind,
    deployment_services,
    find_deployment,
    plan_registration,
    plan_removal,
    plan_update,
    uri_kind,
)
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
    breaking: bool = False,
    new_id: str = DP,
):
    plan = plan_registration(
        registry,
        discovered(manifest),
        uri=uri,
        overwrite=force,
        allow_breaking=force or breaking,
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
    got = deployment_json(registry.deployments[DP])
    assert sorted(got.pop("services"), key=lambda s: s["name"]) == sorted(
        expected.pop("services"), key=lambda s: s["name"]
    )
    assert got == expected


def variant(*names: str, ty: str | None = None) -> dict:
    """The fixture manifest with only the named services (and `ty` for the first one)."""
    changed = json.loads(json.dumps(MANIFEST))
    changed["services"] = [s for s in changed["services"] if s["name"] in names]
    if ty is not None:
        changed["services"][0]["ty"] = ty
        for h in changed["services"][0]["handlers"]:
            h["ty"] = "EXCLUSIVE" if ty == "VIRTUAL_OBJECT" else None
            if h["ty"] is None:
                del h["ty"]
    return changed


def test_first_registration_creates_then_the_same_uri_is_unchanged_without_force() -> None:
    registry = Registry()
    first = register(registry)
    assert first.outcome == Outcome.CREATED and first.created
    assert {s.revision for s in first.services} == {1}
    again = register(registry, force=False, new_id="dp_1unused0000000000000000")
    assert again.outcome == Outcome.UNCHANGED and again.records() == []
    assert again.deployment.id == DP and {s.revision for s in again.services} == {1}


def test_changed_services_at_the_same_uri_are_ignored_without_force() -> None:
    """Restate 1.7.12 (admin-behaviour.md): same URI, changed services, no force → 200, no change."""
    registry = Registry()
    register(registry)
    plan = register(registry, variant("Greeter"), force=False, breaking=True)
    assert plan.outcome == Outcome.UNCHANGED and plan.records() == []
    assert len(plan.services) == 5


def test_force_overwrites_bumps_revisions_and_removes_services_no_longer_offered() -> None:
    registry = Registry()
    register(registry)
    plan = register(registry, variant("Greeter", "Counter"), force=True)
    assert plan.outcome == Outcome.OVERWRITTEN and plan.deployment.id == DP
    assert set(registry.services) == {"Greeter", "Counter"}
    assert {s.name: s.revision for s in registry.services.values()} == {"Greeter": 2, "Counter": 2}
    assert [(r.name, r.revision) for r in registry.deployments[DP].services] == [
        ("Greeter", 2),
        ("Counter", 2),
    ]


def test_forcing_the_same_manifest_bumps_revisions_and_resets_patched_options() -> None:
    registry = Registry()
    register(registry)
    patched = registry.services["Greeter"].model_copy(update={"idempotency_retention_ms": 7_200_000})
    apply_record(registry, "service/Greeter", patched.encode())
    assert register(registry, force=False).records() == []  # kept as patched
    assert registry.services["Greeter"].idempotency_retention_ms == 7_200_000
    register(registry, force=True)
    assert registry.services["Greeter"].revision == 2
    assert registry.services["Greeter"].idempotency_retention_ms is None


def test_a_service_moving_to_a_new_deployment_gets_a_new_revision() -> None:
    registry = Registry()
    register(registry)
    plan = register(registry, uri="http://127.0.0.1:9081", new_id="dp_17hKFvn8egjwbSFbdGUIaOu")
    assert plan.created
    assert registry.services["Greeter"].revision == 2
    assert registry.services["Greeter"].deployment_id == "dp_17hKFvn8egjwbSFbdGUIaOu"
    # the old deployment still shows its own revision of it
    old = {s.name: s for s in deployment_services(registry, registry.deployments[DP])}
    assert old["Greeter"].revision == 1 and old["Greeter"].deployment_id == DP


def test_service_type_change_needs_breaking_or_force() -> None:
    registry = Registry()
    register(registry)
    changed = variant("Greeter", ty="VIRTUAL_OBJECT")
    other = "http://127.0.0.1:9081"
    with pytest.raises(RegistrationError) as e:
        register(registry, changed, uri=other, force=False, new_id="dp_17hKFvn8egjwbSFbdGUIaOu")
    assert e.value.status == 409 and e.value.restate_code == "META0006"
    assert e.value.message == (
        "[META0006] detected a new service revision for 'Greeter' changing the service type from previous "
        "revision. Service type cannot be changed across revisions."
    )
    plan = register(
        registry, changed, uri=other, force=False, breaking=True, new_id="dp_17hKFvn8egjwbSFbdGUIaOu"
    )
    assert plan.created and registry.services["Greeter"].ty == "VirtualObject"


def test_removing_a_deployment_falls_back_to_the_previous_one() -> None:
    registry = Registry()
    register(registry)
    second = "dp_17hKFvn8egjwbSFbdGUIaOu"
    register(registry, variant("Greeter"), uri="http://127.0.0.1:9081", new_id=second)
    assert registry.services["Greeter"].deployment_id == second
    for key, value in plan_removal(registry, registry.deployments[second]):
        apply_record(registry, key, value)
    assert second not in registry.deployments
    assert (registry.services["Greeter"].deployment_id, registry.services["Greeter"].revision) == (DP, 1)
    for key, value in plan_removal(registry, registry.deployments[DP]):
        apply_record(registry, key, value)
    assert registry.services == {} and registry.deployments == {}


def test_update_without_overwrite_keeps_services_and_with_overwrite_replaces_them() -> None:
    registry = Registry()
    register(registry)
    dep = registry.deployments[DP]
    h11 = Discovered(MANIFEST, "HTTP/1.1", "REQUEST_RESPONSE", 5, 7, "restate-sdk-python/1.3.1")
    plan = plan_update(
        registry, dep, h11, uri="http://127.0.0.1:9090", additional_headers={"x-a": "1"}, overwrite=False
    )
    assert plan.records() == [(f"deployment/{DP}", plan.deployment.encode())]
    assert (plan.deployment.uri, plan.deployment.http_version, plan.deployment.protocol_type) == (
        "http://127.0.0.1:9090/",
        "HTTP/1.1",
        "RequestResponse",
    )
    assert plan.deployment.services == dep.services and len(plan.services) == 5
    plan = plan_update(
        registry, dep, discovered(variant("Greeter")), uri=dep.uri, additional_headers={}, overwrite=True
    )
    for key, value in plan.records():
        apply_record(registry, key, value)
    assert set(registry.services) == {"Greeter"} and registry.services["Greeter"].revision == 1
    with pytest.raises(RegistrationError) as e:
        plan_update(
            registry,
            registry.deployments[DP],
            Discovered(MANIFEST, "HTTP/2.0", "BIDI_STREAM", 5, 6, None),
            uri=dep.uri,
            additional_headers={},
            overwrite=True,
        )
    assert e.value.status == 400 and e.value.restate_code == "META0016"
    assert "from 5..=7 to 5..=6" in e.value.message


def test_same_deployment_address() -> None:
    registry = Registry()
    register(registry)
    for uri in ("http://127.0.0.1:9080", "http://127.0.0.1:9080/", "https://127.0.0.1:9080"):
        assert find_deployment(registry, uri) is not None
    assert find_deployment(registry, "http://127.0.0.1:9080/other") is None


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("http://127.0.0.1:9080", UriKind.ABSOLUTE),
        ("https://svc.example.com/restate/", UriKind.ABSOLUTE),
        ("ftp://127.0.0.1:9080", UriKind.ABSOLUTE),  # valid: refused by discovery (META0003)
        ("127.0.0.1:9080", UriKind.RELATIVE),
        ("localhost", UriKind.RELATIVE),
        ("/just/a/path", UriKind.RELATIVE),
        ("not a uri", UriKind.INVALID),
        ("", UriKind.INVALID),
        ("http://", UriKind.INVALID),
        ("http:/x", UriKind.INVALID),
        ("localhost/x", UriKind.INVALID),
        ("http://a b/", UriKind.INVALID),
    ],
)
def test_uri_kinds(uri: str, kind: UriKind) -> None:
    assert uri_kind(uri) == kind


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
