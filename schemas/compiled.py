"""Avro binary writers and readers compiled per record schema, straight from/to the pydantic models.

fastavro interprets the schema at every record and works on dicts, which `AvroModel.to_avro`
builds first and `from_avro` validates back into models: about 50 µs to write an invocation status
and 40 µs to read one, several times per call on the processor's hot path. The functions here
are Python source generated once per record schema (a function per record, its fields unrolled):

- a writer appends the very bytes fastavro writes to a bytearray;
- a reader reads a record written with the *current* schema (other fingerprints stay on fastavro's
  schema resolution) into the models validation would build, without validating: only where each
  field's annotation takes exactly the Python type the Avro value decodes to, so that validation
  would have passed it through unchanged.

tests/unit/test_compiled_codec.py holds both to fastavro and pydantic on random records of every
schema. A schema with something they do not know (e.g. `fixed`, a model field the schema lacks)
gets no function and stays on fastavro.
"""

from __future__ import annotations

import enum
import struct
import types
from collections.abc import Callable
from typing import Any, Union, get_args, get_origin

Writer = Callable[[Any, bytearray], None]
Reader = Callable[[bytes, int], tuple[Any, int]]

_PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
_PYTHON = {"null": type(None), "boolean": bool, "int": int, "long": int, "float": float}
_PYTHON |= {"double": float, "bytes": bytes, "string": str}


class Unsupported(Exception):
    """A schema the compiler does not handle: the caller keeps fastavro for it."""


def write_long(out: bytearray, n: int) -> None:
    """Avro's zig-zag varint (int and long alike), as fastavro writes it."""
    n = (n << 1) ^ (n >> 63)
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def read_long(b: bytes, p: int) -> tuple[int, int]:
    """Avro's zig-zag varint at `p`: (value, position after it)."""
    c = b[p]
    p += 1
    n = c & 0x7F
    shift = 7
    while c & 0x80:
        c = b[p]
        p += 1
        n |= (c & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), p


def read_length(b: bytes, p: int) -> tuple[int, int]:
    n, p = read_long(b, p)
    if n < 0:
        raise ValueError("negative length")
    return n, p


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a field annotation admits, one level deep (`X | None` -> (X, NoneType))."""
    if isinstance(annotation, types.UnionType) or get_origin(annotation) is Union:
        return get_args(annotation)
    return (annotation,)


class _Compiler:
    """Generated source and the constants it refers to, for one top-level record."""

    def __init__(self, named: dict[str, Any], models: dict[str, type]) -> None:
        self.named = named
        self.models = models
        self.functions: dict[str, str] = {}  # record name -> function name
        self.sources: list[str] = []
        self.consts: dict[str, Any] = {
            "_long": write_long,
            "_pack_d": struct.Struct("<d").pack,
            "_pack_f": struct.Struct("<f").pack,
            "_rl": read_long,
            "_rlen": read_length,
            "_unpack_d": struct.Struct("<d").unpack_from,
            "_unpack_f": struct.Struct("<f").unpack_from,
            "_new": object.__new__,
            "_set": object.__setattr__,
        }
        self.branches: list[tuple[str, dict[str, tuple[int, str]]]] = []  # union tables to link

    def const(self, value: Any) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    def resolve(self, t: Any) -> Any:
        if isinstance(t, str) and t not in _PRIMITIVES:
            if t not in self.named:
                raise Unsupported(f"unknown type {t}")
            return self.named[t]
        return t

    def kind(self, t: Any) -> tuple[Any, str]:
        """(the resolved type, its kind: a primitive's name, record, enum, array, map or union)."""
        t = self.resolve(t)
        while isinstance(t, dict) and isinstance(t.get("type"), (dict, list)):
            t = t["type"]  # {"type": {...}}: a nested definition
        if isinstance(t, list):
            return t, "union"
        return t, t if isinstance(t, str) else t.get("type")

    def model_of(self, name: str, prefix: str) -> tuple[dict[str, Any], type, str] | str:
        """(schema, model, function name) of record `name`, or its function name if done."""
        if name in self.functions:
            return self.functions[name]
        schema = self.named.get(name)
        model = self.models.get(name)
        if not isinstance(schema, dict) or schema.get("type") != "record" or model is None:
            raise Unsupported(f"no record/model for {name}")
        fn = f"{prefix}{len(self.functions)}"
        self.functions[name] = fn
        return schema, model, fn

    def link(self, top: str) -> Any:
        namespace = dict(self.consts)
        exec("\n\n".join(self.sources), namespace)  # noqa: S102 - source generated from our schemas
        for table, pending in self.branches:
            namespace[table].update({n: (i, namespace[f]) for n, (i, f) in pending.items()})
        return namespace[top]

    # -- writers --------------------------------------------------------------------------------

    def writer(self, name: str) -> str:
        """The function writing record `name` (compiled once; recursion by name is fine)."""
        found = self.model_of(name, "_w")
        if isinstance(found, str):
            return found
        schema, model, fn = found
        fields = model.model_fields  # type: ignore[attr-defined]
        lines = [f"def {fn}(m, out):", "    d = m.__dict__"]
        for f in schema["fields"]:
            if f["name"] not in fields:
                raise Unsupported(f"{name}.{f['name']} is not a field of {model.__name__}")
            lines.append(f"    v = d[{f['name']!r}]")
            lines += self.write(f["type"], "v", "    ", 0)
        self.sources.append("\n".join(lines))
        return fn

    def write(self, t: Any, v: str, ind: str, depth: int) -> list[str]:
        """Statements appending local `v` as type `t`."""
        t, kind = self.kind(t)
        if kind == "union":
            return self.write_union(t, v, ind, depth)
        if kind == "null":
            return [f"{ind}pass"]
        if kind == "boolean":
            return [f"{ind}out.append(1 if {v} else 0)"]
        if kind in ("int", "long"):
            return [f"{ind}_long(out, {v})"]
        if kind in ("double", "float"):
            return [f"{ind}out += _pack_{kind[0]}({v})"]
        if kind == "bytes":
            return [f"{ind}_long(out, len({v}))", f"{ind}out += {v}"]
        if kind == "string":
            b = f"b{depth}"
            return [f"{ind}{b} = {v}.encode()", f"{ind}_long(out, len({b}))", f"{ind}out += {b}"]
        if kind == "enum":
            index = self.const({s: i for i, s in enumerate(t["symbols"])})
            return [f"{ind}_long(out, {index}[{v}])"]
        if kind == "record":
            return [f"{ind}{self.writer(t['name'])}({v}, out)"]
        if kind in ("array", "map"):
            # fastavro: one block of all items (none if empty), then the 0 that ends the list.
            k, x, b = f"k{depth}", f"x{depth}", f"kb{depth}"
            if kind == "array":
                head = [f"{ind}    for {x} in {v}:"]
                item = self.write(t["items"], x, ind + "        ", depth + 1)
            else:
                head = [
                    f"{ind}    for {k}, {x} in {v}.items():",
                    f"{ind}        {b} = {k}.encode()",
                    f"{ind}        _long(out, len({b}))",
                    f"{ind}        out += {b}",
                ]
                item = self.write(t["values"], x, ind + "        ", depth + 1)
            return [f"{ind}if {v}:", f"{ind}    _long(out, len({v}))", *head, *item, f"{ind}out.append(0)"]
        raise Unsupported(f"type {kind}")

    def write_union(self, branches: list[Any], v: str, ind: str, depth: int) -> list[str]:
        typed = [(i, *self.kind(b)) for i, b in enumerate(branches)]
        null = [i for i, _, kind in typed if kind == "null"]
        others = [(i, t, kind) for i, t, kind in typed if kind != "null"]
        lines: list[str] = []
        if null:
            lines += [f"{ind}if {v} is None:", f"{ind}    out.append({2 * null[0]})", f"{ind}else:"]
            ind += "    "
        if len(others) == 1:
            i, t, _ = others[0]
            return [*lines, f"{ind}out.append({2 * i})", *self.write(t, v, ind, depth + 1)]
        if not others or any(kind != "record" for _, _, kind in others):
            raise Unsupported("a union of several non-record types")
        # Several records: the branch is the model's Avro name (what fastavro's `-type` names).
        pending = {t["name"]: (i, self.writer(t["name"])) for i, t, _ in others}
        table = self.const({})
        self.branches.append((table, pending))
        index, fn = f"i{depth}", f"f{depth}"
        return [
            *lines,
            f"{ind}{index}, {fn} = {table}[type({v}).avro_name]",
            f"{ind}out.append(2 * {index})",
            f"{ind}{fn}({v}, out)",
        ]

    # -- readers --------------------------------------------------------------------------------

    def reader(self, name: str) -> str:
        found = self.model_of(name, "_r")
        if isinstance(found, str):
            return found
        schema, model, fn = found
        fields = model.model_fields  # type: ignore[attr-defined]
        names = [f["name"] for f in schema["fields"]]
        if set(names) != set(fields) or model.__private_attributes__ or model.__pydantic_post_init__:  # type: ignore[attr-defined]
            raise Unsupported(f"{name}: the model's fields are not the schema's")
        lines = [f"def {fn}(b, p):"]
        for i, f in enumerate(schema["fields"]):
            lines += self.read(f["type"], fields[f["name"]].annotation, f"v{i}", "    ", 0)
        local = {n: f"v{i}" for i, n in enumerate(names)}
        cls, fields_set = self.const(model), self.const(frozenset(fields))
        values = ", ".join(f"{n!r}: {local[n]}" for n in fields)  # in the model's field order
        # What pydantic's model_construct sets; every field was given, as from_avro gives them.
        lines += [
            f"    m = _new({cls})",
            f"    _set(m, '__dict__', {{{values}}})",
            f"    _set(m, '__pydantic_fields_set__', set({fields_set}))",
            "    _set(m, '__pydantic_extra__', None)",
            "    _set(m, '__pydantic_private__', None)",
            "    return m, p",
        ]
        self.sources.append("\n".join(lines))
        return fn

    def read(self, t: Any, annotation: Any, v: str, ind: str, depth: int) -> list[str]:
        """Statements reading type `t` at `p` into local `v`, for a field annotated `annotation`."""
        t, kind = self.kind(t)
        if kind == "union":
            i = f"i{depth}"
            lines = [f"{ind}{i}, p = _rl(b, p)"]
            for index, branch in enumerate(t):
                lines.append(f"{ind}{'if' if index == 0 else 'elif'} {i} == {index}:")
                lines += self.read(branch, annotation, v, ind + "    ", depth + 1)
            return [*lines, f"{ind}else:", f"{ind}    raise ValueError('union branch')"]
        allowed = _members(annotation)
        if kind in _PYTHON and _PYTHON[kind] not in allowed:
            raise Unsupported(f"{kind} into {annotation}")
        if kind == "null":
            return [f"{ind}{v} = None"]
        if kind == "boolean":
            return [
                f"{ind}{v} = b[p]; p += 1",
                f"{ind}if {v} > 1: raise ValueError('boolean')",
                f"{ind}{v} = {v} == 1",
            ]
        if kind in ("int", "long"):
            return [
                f"{ind}{v} = b[p]",
                f"{ind}if {v} < 128:",
                f"{ind}    {v} = ({v} >> 1) ^ -({v} & 1); p += 1",
                f"{ind}else:",
                f"{ind}    {v}, p = _rl(b, p)",
            ]
        if kind in ("double", "float"):
            return [f"{ind}{v}, = _unpack_{kind[0]}(b, p); p += {8 if kind == 'double' else 4}"]
        if kind in ("bytes", "string"):
            n = f"n{depth}"
            lines = [f"{ind}{n}, p = _rlen(b, p)", f"{ind}{v} = b[p : p + {n}]; p += {n}"]
            return [*lines, f"{ind}{v} = {v}.decode()"] if kind == "string" else lines
        if kind == "enum":
            enums = [a for a in allowed if isinstance(a, type) and issubclass(a, enum.Enum)]
            if len(enums) != 1 or [e.value for e in enums[0]] != list(t["symbols"]):
                raise Unsupported(f"enum {t['name']} into {annotation}")
            members = self.const(tuple(enums[0]))
            return [
                f"{ind}{v}, p = _rl(b, p)",
                f"{ind}if {v} < 0: raise ValueError('enum')",
                f"{ind}{v} = {members}[{v}]",
            ]
        if kind == "record":
            if self.models.get(t["name"]) not in allowed:
                raise Unsupported(f"record {t['name']} into {annotation}")
            return [f"{ind}{v}, p = {self.reader(t['name'])}(b, p)"]
        if kind in ("array", "map"):
            containers = [a for a in allowed if get_origin(a) is (list if kind == "array" else dict)]
            if len(containers) != 1 or (kind == "map" and get_args(containers[0])[0] is not str):
                raise Unsupported(f"{kind} into {annotation}")
            item_type = get_args(containers[0])[-1]
            n, x, k = f"n{depth}", f"x{depth}", f"k{depth}"
            inner = ind + "        "
            if kind == "array":
                key: list[str] = []
                item = self.read(t["items"], item_type, x, inner, depth + 1)
                store = f"{inner}{v}.append({x})"
            else:
                key = [f"{inner}{k}, p = _rlen(b, p)", f"{inner}{k}, p = b[p : p + {k}].decode(), p + {k}"]
                item = self.read(t["values"], item_type, x, inner, depth + 1)
                store = f"{inner}{v}[{k}] = {x}"
            # Blocks until a 0 count; a negative count is followed by the block's size in bytes.
            return [
                f"{ind}{v} = {'[]' if kind == 'array' else '{}'}",
                f"{ind}while True:",
                f"{ind}    {n}, p = _rl(b, p)",
                f"{ind}    if {n} == 0: break",
                f"{ind}    if {n} < 0:",
                f"{ind}        {n} = -{n}; _, p = _rl(b, p)",
                f"{ind}    for _ in range({n}):",
                *key,
                *item,
                store,
            ]
        raise Unsupported(f"type {kind}")


def compile_writer(name: str, named: dict[str, Any], models: dict[str, type]) -> Writer | None:
    """The compiled writer of record `name`: appends its Avro binary datum (no header) to a
    bytearray. None: not compilable, use fastavro."""
    try:
        compiler = _Compiler(named, models)
        writer: Writer = compiler.link(compiler.writer(name))
        return writer
    except Unsupported:
        return None


def compile_reader(name: str, named: dict[str, Any], models: dict[str, type]) -> Reader | None:
    """The compiled reader of record `name` as the current schema writes it: (model, position
    after the datum). None: not compilable, use fastavro and validation."""
    try:
        compiler = _Compiler(named, models)
        reader: Reader = compiler.link(compiler.reader(name))
        return reader
    except Unsupported:
        return None
