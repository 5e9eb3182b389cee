"""Benchmark tracing overhead on the caller's thread: 100,000 traced calls against the same calls untraced.

Run: `.venv/bin/python bench/tracing.py` (BENCH_CALLS=100000). Starts its own embedded stack so the local store
sink really writes to PostgreSQL, and a local OTLP receiver so the Langfuse SDK really exports. Target: <= 20 us
of overhead per call. Reports the drops (bounded queue) and what the sinks wrote.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from tests.support.otlp_receiver import OtlpReceiver

from studioops import stack
from studioops.config import Settings
from studioops.observability import ObservabilityService
from studioops.stack.process import free_port

CALLS = int(os.environ.get("BENCH_CALLS", "100000"))


def fake_llm(prompt: str) -> str:
    """The untraced work: a stand-in for the call being traced (the overhead is what tracing adds to it)."""
    return prompt[::-1]


def run(label: str, service: ObservabilityService | None, usage: bool) -> float:
    prompts = [f"prompt number {i} about the summer campaign budget" for i in range(CALLS)]
    start = time.perf_counter()
    if service is None:
        for i, p in enumerate(prompts):
            fake_llm(p)
            _ = i
    elif usage:
        for i, p in enumerate(prompts):
            out = fake_llm(p)
            service.trace_llm_call(f"bench-{i}", p, out, "gpt-4o-mini", input_tokens=9, output_tokens=9)
    else:
        for i, p in enumerate(prompts):
            out = fake_llm(p)
            service.trace_llm_call(f"bench-{i}", p, out, "gpt-4o-mini")
    elapsed = time.perf_counter() - start
    return elapsed / CALLS * 1e6


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="studioops-bench-tracing-") as tmp:
        settings = Settings(
            _env_file=None, studioops_home=Path(tmp) / "home",
            database_url=f"postgresql://studioops:bench-password-1@localhost:{free_port()}/studioops",
            minio_endpoint=f"localhost:{free_port()}",
        )
        stack.up(settings)
        receiver = OtlpReceiver()
        try:
            base = run("untraced", None, False)
            print(f"tracing benchmark: {CALLS:,} calls, caller's thread only, {os.cpu_count()} cores")
            print(f"untraced call (baseline)                 {base:7.2f} us/call")
            for label, with_langfuse, usage in (
                ("local store, provider usage", False, True),
                ("local store + Langfuse SDK, provider usage", True, True),
                ("local store + Langfuse SDK, estimated usage", True, False),
            ):
                overrides = {"langfuse_public_key": f"pk-lf-bench-{label[:5]}{usage}", "langfuse_secret_key": "sk",
                             "langfuse_host": receiver.url} if with_langfuse else {}
                service = ObservabilityService(Settings(_env_file=None, **{**settings.model_dump(), **overrides}))
                per_call = run(label, service, usage)
                began = time.perf_counter()
                service.flush(120)
                drain = time.perf_counter() - began
                stats = service.stats()
                service.shutdown()
                overhead = per_call - base
                verdict = "ok" if overhead <= 20 else "OVER TARGET"
                print(f"{label:<42} {per_call:7.2f} us/call   overhead {overhead:6.2f} us (target <= 20 us) "
                      f"{verdict}   ratio {per_call / base:6.1f}x   dropped {stats.dropped:,}   "
                      f"written {stats.written}   drain after the loop {drain:.1f} s")
        finally:
            receiver.close()
            stack.down(settings)


if __name__ == "__main__":
    main()
