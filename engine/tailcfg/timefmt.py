"""Go time.Time JSON text (RFC 3339, nanoseconds, zero value 0001-01-01T00:00:00Z) to and from datetime."""

from __future__ import annotations

import re
from datetime import datetime, timezone

ZERO_TIME = "0001-01-01T00:00:00Z"
_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str | None) -> datetime | None:
    """RFC 3339 to an aware datetime; None for absent, empty or Go's zero time; ValueError if malformed."""
    if not text or text.startswith("0001-01-01T00:00:00"):
        return None
    m = _RE.match(text)
    if not m:
        raise ValueError(f"bad RFC 3339 time {text!r}")
    base, frac, tz = m.groups()
    frac = ((frac or "") + "000000")[:6]
    tz = "+00:00" if tz == "Z" else tz
    return datetime.fromisoformat(f"{base}.{frac}{tz}")


def format_time(t: datetime | None) -> str:
    """An aware datetime as RFC 3339 UTC with a Z suffix; None -> Go's zero time."""
    if t is None:
        return ZERO_TIME
    t = t.astimezone(timezone.utc)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def unix_time(text: str | None) -> float | None:
    t = parse_time(text)
    return None if t is None else t.timestamp()
