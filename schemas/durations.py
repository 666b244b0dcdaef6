"""Durations and times in the forms Restate's APIs use: jiff "friendly" (`1d 12h 4m 2s`, `500ms`)
and ISO 8601 (`PT2S`) durations, RFC 3339 times with nanoseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNITS_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_FRIENDLY = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)")
_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration_ms(text: str) -> int:
    """`2s`, `1m 30s`, `500ms`, `PT2S`, `P1DT2H` → milliseconds; ValueError when it is none of them."""
    text = text.strip()
    iso = _ISO.match(text.upper())
    if iso and text.upper() not in ("P", "PT"):
        d, h, m, s = iso.groups()
        return int(
            int(d or 0) * _UNITS_MS["d"]
            + int(h or 0) * _UNITS_MS["h"]
            + int(m or 0) * _UNITS_MS["m"]
            + float(s or 0) * 1000
        )
    parts = _FRIENDLY.findall(text)
    if not parts or _FRIENDLY.sub("", text).strip():
        raise ValueError(f"'{text}' is not a duration (e.g. 10s, 1m 30s, 500ms or PT10S)")
    return int(sum(float(n) * _UNITS_MS[u] for n, u in parts))


def friendly_duration(ms: int) -> str:
    """jiff's friendly format: `1d`, `500ms`, `1m`, `1d 12h 4m 2s`."""
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS_MS.items():
        n, ms = divmod(ms, size)
        if n:
            parts.append(f"{n}{unit}")
    return " ".join(parts)


def rfc3339_nanos(ms: int) -> str:
    """`2026-11-23T08:32:08.325000000Z`, as Restate prints times in its JSON."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(ms % 1000) * 1_000_000:09d}Z"
