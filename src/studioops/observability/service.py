"""`ObservabilityService`: trace LLM calls without slowing or breaking the caller.

The caller's thread only builds a record and puts it on a bounded queue (a full queue drops the record and counts
it). One worker thread estimates missing token counts and writes batches to the sinks: the local Postgres store
(always on in the embedded stack) and Langfuse (when its keys are set). A sink that fails is counted and logged
once; the caller never sees it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from studioops.config import Settings, get_settings
from studioops.observability.records import TraceRecord, as_text

log = logging.getLogger("studioops.observability")
_STOP = object()


@dataclass
class TraceStats:
    enqueued: int = 0
    dropped: int = 0
    written: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class CallHandle:
    """What a `with service.trace_call(...)` block fills in."""

    trace_id: str
    output: Any = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        self.input_tokens, self.output_tokens = input_tokens, output_tokens


def _usage_from(result: Any) -> tuple[int | None, int | None]:
    """Token usage as providers report it: OpenAI-style `.usage.prompt_tokens/completion_tokens`, Anthropic-style
    `input_tokens/output_tokens`, as attributes or dict keys."""
    usage = getattr(result, "usage", None)
    if usage is None and isinstance(result, dict):
        usage = result.get("usage")
    if usage is None:
        return None, None

    def pick(*names: str) -> int | None:
        for name in names:
            value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
            if isinstance(value, int):
                return value
        return None

    return pick("input_tokens", "prompt_tokens"), pick("output_tokens", "completion_tokens")


class ObservabilityService:
    """Trace LLM calls to the local store and Langfuse. Build one per process; `shutdown()` flushes it."""

    def __init__(self, settings: Settings | None = None, sinks: list | None = None, queue_size: int | None = None,
                 batch_size: int = 200) -> None:
        self.settings = settings or get_settings()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size or self.settings.observability_queue_size)
        self.batch_size = batch_size
        self.sinks = sinks if sinks is not None else self._default_sinks()
        self._stats_lock = threading.Lock()
        self.enqueued = 0
        self.dropped = 0
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="studioops-traces", daemon=True)
        self._worker.start()
        atexit.register(self.shutdown)

    def _default_sinks(self) -> list:
        from studioops.observability.sinks import LangfuseSink, LocalStoreSink

        sinks: list = []
        if self.settings.observability_local_store:
            sinks.append(LocalStoreSink(self.settings.db, self.settings.observability_prices_file))
        if self.settings.langfuse_enabled:
            sinks.append(LangfuseSink(self.settings))
        return sinks

    @property
    def enabled(self) -> bool:
        """The design document's flag: True when Langfuse is one of the sinks."""
        return any(s.name == "langfuse" for s in self.sinks)

    # -- the caller's side: enqueue only -----------------------------------------------------------------
    def record(self, rec: TraceRecord) -> None:
        try:
            if self._closed:
                raise queue.Full
            self._queue.put_nowait(rec)
        except queue.Full:
            with self._stats_lock:
                self.dropped += 1
            return
        with self._stats_lock:
            self.enqueued += 1

    def trace_llm_call(self, trace_id: str, input_text: Any, output_text: Any, model: str | None, *,
                       input_tokens: int | None = None, output_tokens: int | None = None,
                       latency_ms: float | None = None, status: str = "ok", error: str | None = None,
                       metadata: dict | None = None, name: str = "llm_generation",
                       started_at: float | None = None) -> None:
        """Record one finished call (the design document's signature, plus what it left out)."""
        self.record(TraceRecord(
            trace_id=str(trace_id), name=name, model=model, input=input_text, output=output_text,
            started_at=started_at if started_at is not None else time.time(), latency_ms=latency_ms,
            input_tokens=input_tokens, output_tokens=output_tokens, status=status, error=error,
            metadata=metadata or {},
        ))

    @contextmanager
    def trace_call(self, *, model: str | None = None, input_text: Any = None, trace_id: str | None = None,
                   name: str = "llm_generation", metadata: dict | None = None) -> Iterator[CallHandle]:
        """Time the block and record its outcome; an exception is recorded as an error and re-raised."""
        handle = CallHandle(trace_id or uuid.uuid4().hex, metadata=dict(metadata or {}))
        started_wall, started = time.time(), time.perf_counter()
        status, error = "ok", None
        try:
            yield handle
        except BaseException as exc:
            status, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.trace_llm_call(handle.trace_id, input_text, handle.output, model,
                                input_tokens=handle.input_tokens, output_tokens=handle.output_tokens,
                                latency_ms=(time.perf_counter() - started) * 1000, status=status, error=error,
                                metadata=handle.metadata, name=name, started_at=started_wall)

    def observe(self, *, model: str | None = None, name: str | None = None) -> Callable:
        """Decorator: trace each call of the function (input: its first argument; output: its return value;
        usage: the result's `.usage` when the provider reports one)."""

        def decorate(fn: Callable) -> Callable:
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                first = args[0] if args else next(iter(kwargs.values()), None)
                with self.trace_call(model=model, input_text=first, name=name or fn.__name__) as call:
                    result = fn(*args, **kwargs)
                    call.output = result
                    call.input_tokens, call.output_tokens = _usage_from(result)
                    return result

            return wrapper

        return decorate

    # -- the worker's side ------------------------------------------------------------------------------
    def _prepare(self, rec: TraceRecord) -> TraceRecord:
        if rec.input_tokens is None and rec.output_tokens is None:
            from studioops.observability.tokens import count_tokens

            try:
                rec.input_tokens = count_tokens(as_text(rec.input))
                rec.output_tokens = count_tokens(as_text(rec.output))
                rec.usage_source = "estimate"
            except Exception as exc:  # no tokenizer: keep the trace, without usage
                log.debug("token estimate failed: %s", exc)
        return rec

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            batch, stop, flushes = [], False, []
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    flushes.append(item)
                else:
                    batch.append(self._prepare(item))
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                for sink in self.sinks:
                    try:
                        sink.write(batch)
                    except Exception as exc:  # a sink must never kill the worker
                        log.warning("trace sink %s raised %s", sink.name, exc)
            if flushes:
                for sink in self.sinks:
                    try:
                        sink.flush(5.0)
                    except Exception as exc:
                        log.warning("trace sink %s flush raised %s", sink.name, exc)
                for event in flushes:
                    event.set()
            if stop:
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything enqueued so far is written (bounded); True when it was."""
        if not self._worker.is_alive():
            return False
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Flush, stop the worker, close the sinks. Safe to call twice (it also runs at interpreter exit)."""
        if self._closed:
            return
        self._closed = True
        if self._worker.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_STOP, timeout=timeout)
            self._worker.join(timeout)
        for sink in self.sinks:
            try:
                sink.close(timeout)
            except Exception as exc:
                log.warning("trace sink %s close raised %s", sink.name, exc)
        atexit.unregister(self.shutdown)

    def stats(self) -> TraceStats:
        return TraceStats(
            enqueued=self.enqueued,
            dropped=self.dropped,
            written={s.name: getattr(s, "written", 0) for s in self.sinks},
            failures={s.name: s.failures for s in self.sinks},
        )
