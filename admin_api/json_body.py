"""Requests refused as axum's extractors refuse them on Restate's admin API.

A missing or non-JSON content type (415), bad JSON (400), JSON that does not fit the request type
(422) and a query string that does not fit (400) are answered in text/plain, not in the
`{"message", "restate_code"}` shape: axum's rejection renders itself before Restate's handler
runs. A 422 names the field (serde's path) and, as serde_json does, where in the body it stopped:
after the offending value, before the bracket of a map or sequence it could not take, or after
the object a field is missing from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from admin_api.registration import RegistryError

DESERIALIZE = "Failed to deserialize the JSON body into the target type: "
JsonPath = tuple[str | int, ...]

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# The standard library's JSON string scanner (not in its type stubs): (text, index after the
# opening quote) -> (string, index after the closing quote).
_scanstring: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


class Rejection(RegistryError):
    """A request axum's extractors refuse (a body: 415, 400, 422; a query string: 400), answered
    as text/plain. `at`: the JSON path of the value
    where serde stopped (its position is appended to the message), None for no position; `whole`:
    after the whole value even if it is a map or a sequence (a field missing from it)."""

    def __init__(self, status: int, message: str, at: JsonPath | None = None, whole: bool = False) -> None:
        super().__init__(status, message)
        self.at = at
        self.whole = whole

    def render(self, raw: bytes) -> str:
        if self.at is None:
            return self.message
        located = position(raw, self.at, self.whole)
        return self.message if located is None else f"{self.message} at line {located[0]} column {located[1]}"


def bool_query(query: Any, name: str) -> bool | None:
    """An optional boolean query parameter as serde_urlencoded reads it (400 otherwise)."""
    value = query.get(name)
    if value not in (None, "true", "false"):
        raise Rejection(
            400, f"Failed to deserialize query string: {name}: provided string was not `true` or `false`"
        )
    return None if value is None else value == "true"


def mismatch(detail: str, at: JsonPath | None) -> Rejection:
    """422: the JSON does not fit the request type (`detail` as serde words it, with its path)."""
    return Rejection(422, f"{DESERIALIZE}{detail}", at)


def missing_field(name: str, at: JsonPath = ()) -> Rejection:
    """serde's missing field, located at the end of the object it is missing from."""
    prefix = _path_text(at)
    detail = f"missing field `{name}`"
    return Rejection(
        422, f"{DESERIALIZE}{prefix}: {detail}" if prefix else f"{DESERIALIZE}{detail}", at, True
    )


def invalid_type(value: Any, expected: str, at: JsonPath) -> Rejection:
    prefix = _path_text(at)
    detail = f"invalid type: {unexpected(value)}, expected {expected}"
    return mismatch(f"{prefix}: {detail}" if prefix else detail, at)


def invalid_value(value: Any, expected: str, at: JsonPath) -> Rejection:
    prefix = _path_text(at)
    detail = f"invalid value: {unexpected(value)}, expected {expected}"
    return mismatch(f"{prefix}: {detail}" if prefix else detail, at)


def unexpected(value: Any) -> str:
    """serde's `Unexpected` for a JSON value, as serde_json words it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value!r}`"
    if isinstance(value, str):
        return f"string {json.dumps(value, ensure_ascii=False)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


def _path_text(at: JsonPath) -> str:
    """serde_path_to_error's rendering: `a.b[0]`."""
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def position(raw: bytes, at: JsonPath, whole: bool = False) -> tuple[int, int] | None:
    """serde_json's (line, column) where it refused the value at `at`: after a scalar, before the
    bracket of a map or sequence (it peeks at it) unless `whole`. The column counts bytes."""
    try:
        text = raw.decode()
        end = _end_of(text, 0, at, whole)
    except (ValueError, IndexError, LookupError):
        return None
    line_start = text.rfind("\n", 0, end) + 1
    return text.count("\n", 0, end) + 1, len(text[line_start:end].encode())


def _skip(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


def _end_of(text: str, i: int, at: JsonPath, whole: bool) -> int:
    i = _skip(text, i)
    if not at:
        return i if text[i] in "{[" and not whole else int(_DECODER.raw_decode(text, i)[1])
    head, rest = at[0], at[1:]
    if isinstance(head, str) and text[i] == "{":
        i = _skip(text, i + 1)
        while text[i] == '"':
            key, i = _scanstring(text, i + 1)
            i = _skip(text, i)
            if text[i] != ":":
                break
            if key == head:
                return _end_of(text, i + 1, rest, whole)
            i = _skip(text, _DECODER.raw_decode(text, _skip(text, i + 1))[1])
            if text[i] == ",":
                i = _skip(text, i + 1)
    if isinstance(head, int) and text[i] == "[":
        i = _skip(text, i + 1)
        for _ in range(head):
            i = _skip(text, _DECODER.raw_decode(text, i)[1])
            if text[i] != ",":
                raise LookupError(head)
            i = _skip(text, i + 1)
        return _end_of(text, i, rest, whole)
    raise LookupError(head)
