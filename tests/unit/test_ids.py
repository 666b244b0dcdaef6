"""Id formats, checked against ids the real Restate 1.7.12 produced (shared/reference transcripts)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.ids import (
    DeploymentId,
    InvalidId,
    InvocationId,
    SubscriptionId,
    awakeable_id,
    parse_awakeable_id,
    partition_key_of,
)


def day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


@pytest.mark.parametrize(
    "s",
    [
        "inv_17wAacjsoPkD1LQJFru3IQisYAr5PtwWrm",
        "inv_13B6yKtUYpbH3cxWhUWK4PkpGkmOlbgLiU",
        "inv_11NnjMq1NF8J2746Cpowx6yJC2KBLBQhX6",
        "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz",
    ],
)
def test_restate_invocation_ids_round_trip(s: str) -> None:
    inv = InvocationId.parse(s)
    assert str(inv) == s
    assert InvocationId.from_bytes(inv.to_bytes()) == inv
    assert len(inv.to_bytes()) == 24


def test_byte_swap_gives_the_documented_ulid_time() -> None:
    # Restate's docs example id carries a ULID of 2024-03-18: true only with the byte swap.
    assert day(InvocationId.parse("inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz").timestamp_ms) == "2024-03-18"


def test_deployment_id_from_the_transcript() -> None:
    dp = DeploymentId.parse("dp_17hKFvn8egjwbSFbdGUIaOt")
    assert str(dp) == "dp_17hKFvn8egjwbSFbdGUIaOt"
    assert day(dp.timestamp_ms) == "2026-11-23"  # the day the transcript was recorded


def test_generated_ids_round_trip_and_carry_their_time() -> None:
    now = 1_795_000_000_000
    inv = InvocationId.generate(partition_key_of("k1"), now, 12345)
    assert InvocationId.parse(str(inv)) == inv and inv.timestamp_ms == now
    assert inv.partition_key == partition_key_of("k1")
    sub = SubscriptionId.generate(now, 99)
    assert str(sub).startswith("sub_1") and SubscriptionId.parse(str(sub)) == sub
    dp = DeploymentId.generate(now, 7)
    assert len(str(dp)) == len("dp_17hKFvn8egjwbSFbdGUIaOt")


def test_awakeable_id_matches_the_sdk() -> None:
    raw = bytes(range(24))
    s = awakeable_id(raw, 17)
    assert s == "sign_1AAECAwQFBgcICQoLDA0ODxAREhMUFRYXAAAAEQ"
    inv, idx = parse_awakeable_id(s)
    assert inv.to_bytes() == raw and idx == 17
    legacy = "prom_1" + s[len("sign_1") :]
    assert parse_awakeable_id(legacy) == (inv, 17)


def test_deterministic_ids() -> None:
    assert InvocationId.for_workflow("Signup", "u1") == InvocationId.for_workflow("Signup", "u1")
    assert InvocationId.for_workflow("Signup", "u1") != InvocationId.for_workflow("Signup", "u2")
    a = InvocationId.for_idempotent_request("Greeter", None, "greet", "k")
    assert a == InvocationId.for_idempotent_request("Greeter", None, "greet", "k")
    assert a != InvocationId.for_idempotent_request("Greeter", None, "greet", "k2")
    keyed = InvocationId.for_idempotent_request("Counter", "c1", "add", "k")
    assert keyed.partition_key == partition_key_of("c1")
    parent = InvocationId.generate(1, 1_700_000_000_000, 5)
    assert InvocationId.child(parent, 3, 9) == InvocationId.child(parent, 3, 9)
    assert InvocationId.child(parent, 3, 9) != InvocationId.child(parent, 4, 9)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not-an-id",
        "inv_",
        "inv_2gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz",
        "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hb",
        "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hb!",
        "dp_1x",
    ],
)
def test_invalid_invocation_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidId) as e:
        InvocationId.parse(bad)
    assert "bad invocation id" in str(e.value)


def test_invalid_other_ids() -> None:
    with pytest.raises(InvalidId, match="bad deployment id"):
        DeploymentId.parse("dp_1short")
    with pytest.raises(InvalidId, match="bad awakeable id"):
        parse_awakeable_id("sign_1AAAA")
