"""The compiled Avro writers (schemas/compiled.py) write exactly fastavro's bytes, and the trusted
decode builds exactly the models validation builds: on random records of every schema."""

from __future__ import annotations

import random
from typing import Any

import pytest

import schemas.registry  # noqa: F401 - registers the metadata models
from schemas import codec, compiled, records

NAMES = sorted(records._MODELS)
STRINGS = ["", "a", "Greeter", "inv_1abc", "ünïcødé ✓", "x" * 200]
LONGS = [0, 1, -1, 63, 64, -64, -65, 127, 128, 300, 2**31 - 1, -(2**31), 2**40, 2**63 - 1, -(2**63)]
INTS = [0, 1, -1, 63, 64, 200, 2**31 - 1, -(2**31)]


def datum(t: Any, named: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A random value of Avro type `t`, as fastavro takes it (union records: (name, dict))."""
    if isinstance(t, str) and t in named:
        t = named[t]
    if isinstance(t, list):
        options = [b for b in t if not (depth > 3 and b != "null" and "null" in t)]
        branch = rng.choice(options)
        value = datum(branch, named, rng, depth + 1)
        resolved = named.get(branch, branch) if isinstance(branch, str) else branch
        if isinstance(resolved, dict) and resolved.get("type") == "record":
            return (resolved["name"], value)
        return value
    kind = t if isinstance(t, str) else t["type"]
    if isinstance(kind, (dict, list)):
        return datum(kind, named, rng, depth)
    match kind:
        case "null":
            return None
        case "boolean":
            return rng.random() < 0.5
        case "int":
            return rng.choice(INTS)
        case "long":
            return rng.choice(LONGS)
        case "double" | "float":
            return rng.choice([0.0, 1.5, -2.25, 1e300 if kind == "double" else 3.0])
        case "string":
            return rng.choice(STRINGS)
        case "bytes":
            return rng.randbytes(rng.choice([0, 1, 5, 130]))
        case "enum":
            return rng.choice(t["symbols"])
        case "array":
            return [datum(t["items"], named, rng, depth + 1) for _ in range(rng.choice([0, 1, 3]))]
        case "map":
            return {f"k{i}": datum(t["values"], named, rng, depth + 1) for i in range(rng.choice([0, 1, 3]))}
        case "record":
            return {f["name"]: datum(f["type"], named, rng, depth + 1) for f in t["fields"]}
    raise AssertionError(f"no generator for {kind}")


@pytest.mark.parametrize("name", NAMES)
def test_compiled_writer_writes_fastavros_bytes(name: str) -> None:
    named = codec.named_schemas()
    cls = records._MODELS[name]
    assert compiled.compile_writer(name, named, dict(records._MODELS)) is not None
    rng = random.Random(name)
    for _ in range(200):
        expected = codec.encode(name, datum(named[name], named, rng))
        model = cls.decode(expected)  # validated: the models the processor holds
        assert model.encode() == expected
        assert codec.encode(name, model.to_avro()) == expected


def test_a_value_the_writer_cannot_take_falls_back_to_fastavros_error() -> None:
    status = records.Timer(invocation_id="inv_1", completion_id=1, wake_up_at_ms=5)
    status.completion_id = "one"  # type: ignore[assignment] - not validated on assignment
    with pytest.raises((TypeError, ValueError)):
        status.encode()


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (an enum member is not its string)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, records.AvroModel):
        return (
            a.__pydantic_fields_set__ == b.__pydantic_fields_set__
            and a.__pydantic_extra__ == b.__pydantic_extra__
            and a.__pydantic_private__ == b.__pydantic_private__
            and list(a.__dict__) == list(b.__dict__)
            and all(same(a.__dict__[k], b.__dict__[k]) for k in a.__dict__)
        )
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@pytest.mark.parametrize("name", NAMES)
def test_compiled_reader_builds_the_validated_model(name: str) -> None:
    named = codec.named_schemas()
    cls = records._MODELS[name]
    reader = compiled.compile_reader(name, named, dict(records._MODELS))
    assert reader is not None
    rng = random.Random(name + "/read")
    for _ in range(200):
        data = codec.encode(name, datum(named[name], named, rng))
        validated = cls.from_avro(codec.decode(name, data))
        model, end = reader(data, 10)
        assert end == len(data)
        assert same(model, validated), (model, validated)
        assert same(cls.decode(data), validated)
        model.model_fields_set.add("x")  # its own set, not one shared by every decoded record
        assert "x" not in cls.decode(data).model_fields_set


@pytest.mark.parametrize("cut", [11, 20, -1])
def test_a_truncated_record_still_fails_as_fastavro_says(cut: int) -> None:
    status = records.InvocationStatus.decode(
        records.InvocationStatus(
            invocation_id="inv_1",
            phase=records.InvocationPhase.INVOKED,
            target=records.InvocationTarget(
                service="Greeter", handler="greet", service_ty=records.ServiceType.SERVICE
            ),
            invoked_by=records.InvokedBy(kind=records.InvokedByKind.INGRESS),
            created_at_ms=1,
            modified_at_ms=2,
            result=records.Success(value=b"x" * 50),
        ).encode()
    )
    with pytest.raises(codec.DecodeError):
        records.InvocationStatus.decode(status.encode()[:cut])


def test_a_record_of_an_older_schema_is_resolved_by_fastavro() -> None:
    """Only the current writer schema is compiled: a record an older release wrote (another
    fingerprint) takes fastavro's path, resolved into the current schema."""
    import io

    import fastavro

    name = "kinvoke.StateEntry"
    older = [(fp, w) for fp, (n, w) in codec._writers().items() if n == name and fp != codec.header(name)[2:]]
    assert older
    fp, writer = older[0]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, {"service": "S", "key": "k", "state_key": b"a", "value": b"v"})
    data = codec.MAGIC + fp + buf.getvalue()
    entry = records.StateEntry.decode(data)
    assert same(entry, records.StateEntry.from_avro(codec.decode(name, data)))
    assert (entry.service, entry.key, entry.state_key, entry.value, entry.scope) == (
        "S",
        "k",
        b"a",
        b"v",
        None,
    )
