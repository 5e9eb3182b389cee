"""LLM observability: every LLM call traced with model, tokens, latency and errors.

`from studioops.observability import ObservabilityService` is the design document's entry point; traces go to the
local store (`llm_traces`) and to Langfuse when LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY are set.
"""

from studioops.observability.records import TraceRecord, langfuse_trace_id
from studioops.observability.service import ObservabilityService, TraceStats

__all__ = ["ObservabilityService", "TraceRecord", "TraceStats", "langfuse_trace_id"]
