"""Retention: keep the newest N daily and M weekly archives; never delete the newest verified one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # daily | weekly
    created: datetime


def to_delete(entries: Iterable[Entry], keep_daily: int, keep_weekly: int,
              protected: str | None = None) -> list[Entry]:
    """The entries past the newest `keep_daily` daily and `keep_weekly` weekly ones, except `protected`."""
    doomed = []
    for kind, keep in (("daily", keep_daily), ("weekly", keep_weekly)):
        ordered = sorted((e for e in entries if e.kind == kind), key=lambda e: e.created, reverse=True)
        doomed += [e for e in ordered[keep:] if e.name != protected]
    return sorted(doomed, key=lambda e: e.created)
