"""Retention: keep the newest N archives of each kind; never delete the newest verified one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # daily | weekly | pre-restore
    created: datetime


def to_delete(entries: Iterable[Entry], keep: dict[str, int], protected: str | None = None) -> list[Entry]:
    """The entries past the newest `keep[kind]` of their kind, except `protected` (kinds not in `keep` stay)."""
    entries = list(entries)
    doomed = []
    for kind, count in keep.items():
        ordered = sorted((e for e in entries if e.kind == kind), key=lambda e: e.created, reverse=True)
        doomed += [e for e in ordered[count:] if e.name != protected]
    return sorted(doomed, key=lambda e: e.created)
