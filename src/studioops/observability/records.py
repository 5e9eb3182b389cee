"""One traced LLM call, as the caller hands it over (cheap to build: the caller's thread only enqueues it)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(slots=True)
class TraceRecord:
    trace_id: str
    name: str
    model: str | None
    input: Any
    output: Any
    started_at: float  # seconds since the epoch
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    status: str = "ok"
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    usage_source: str = "provider"  # or "estimate", filled in by the worker
    # The observation's id in the trace store. It travels to Langfuse as metadata, so that the embedded console
    # (which writes to the same store) keeps one row when the call reaches it through both sinks.
    record_id: str = field(default_factory=lambda: secrets.token_hex(8))


def langfuse_trace_id(trace_id: str) -> str:
    """Langfuse wants 32 lower-case hex characters. An id already in that form is kept; any other is mapped
    deterministically (the first 16 bytes of its sha256, as the SDK's create_trace_id(seed=...) does)."""
    if _HEX32.match(trace_id):
        return trace_id
    return hashlib.sha256(trace_id.encode("utf-8")).digest()[:16].hex()


def as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return repr(value)
