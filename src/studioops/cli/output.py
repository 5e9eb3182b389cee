"""Rendering for the CLI: JSON to stdout alone, tables for people, errors as one line on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `studioops: <message>` on stderr and exit with `code`."""
    message = message.rstrip()
    if message and message[-1] not in ".!?":
        message += "."
    print(f"studioops: {message}", file=sys.stderr)
    raise SystemExit(code)


def say(text: str, stderr: bool = False) -> None:
    """One plain line for people. (Rich is imported only for tables and progress bars: it costs ~20 ms.)"""
    print(text, file=sys.stderr if stderr else sys.stdout)


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def console(stderr: bool = False):
    from rich.console import Console

    # Piped output is read by people in logs and CI too: do not squeeze tables into 80 columns.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, width=width)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for column in columns:
        t.add_column(column)
    for row in rows:
        t.add_row(*["" if v is None else str(v) for v in row])
    console().print(t)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KB': sizes for people (JSON output keeps exact bytes)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def plural(count: int, word: str, plural_form: str | None = None) -> str:
    """'1 object', '2 objects'."""
    return f"{count} {word if count == 1 else (plural_form or word + 's')}"


# The longest duration any option takes: beyond it, waits overflow the clocks of threads and sockets.
MAX_DURATION = 7 * 86400


def duration(text: str, option: str, maximum: float = MAX_DURATION) -> float:
    """Seconds in a duration option (`--timeout 30s`); a malformed or out-of-range one is bad usage (exit 2)."""
    from studioops.config import parse_duration
    from studioops.errors import BadUsageError, ConfigError

    try:
        seconds = parse_duration(text)
    except ConfigError as exc:
        raise BadUsageError(f"{option}: {exc}") from None
    if not 0 < seconds <= maximum:
        raise BadUsageError(f"{option} {text} is out of range. Give more than 0s and at most {_shown(maximum)}")
    return seconds


def _shown(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def settings():
    """The cached Settings (raises ConfigError with one clear line when the environment is wrong)."""
    from studioops.config import get_settings

    return get_settings()
