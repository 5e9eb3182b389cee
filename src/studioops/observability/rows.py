"""The trace store's rows as the ingesters build them: Langfuse's trace, observation and score.

`None` means "not given" (an update leaves the stored value alone); `finish()` derives the token columns and
computes the cost from the price table when the observation carries none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from studioops.observability.prices import PriceTable, provided_total

OBSERVATION_TYPES = frozenset({"span", "generation", "event", "agent", "tool", "chain", "retriever", "evaluator",
                               "embedding", "guardrail"})
LEVELS = ("DEBUG", "DEFAULT", "WARNING", "ERROR")
LEVEL_ALIASES = {"DEBUG": "DEBUG", "TRACE": "DEBUG", "DEFAULT": "DEFAULT", "INFO": "DEFAULT",
                 "WARNING": "WARNING", "WARN": "WARNING", "ERROR": "ERROR", "FATAL": "ERROR", "CRITICAL": "ERROR"}


class RawJSON(str):
    """JSON text that arrived as such (an SDK attribute) and was checked to parse: stored without re-encoding."""

    __slots__ = ()


def parse_level(value: Any) -> str | None:
    return LEVEL_ALIASES.get(value.strip().upper()) if isinstance(value, str) else None


@dataclass(slots=True)
class TraceRow:
    id: str
    timestamp: datetime | None = None
    name: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    input: Any = None
    output: Any = None
    environment: str | None = None
    release: str | None = None
    version: str | None = None
    public: bool | None = None

    def merge(self, later: TraceRow) -> None:
        """Fold a later row for the same trace into this one (given values win; tags and metadata add up)."""
        for name in ("name", "user_id", "session_id", "input", "output", "environment", "release", "version",
                     "public"):
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)
        if later.timestamp is not None and (self.timestamp is None or later.timestamp < self.timestamp):
            self.timestamp = later.timestamp
        self.tags = list(dict.fromkeys([*self.tags, *later.tags]))
        self.metadata = {**self.metadata, **later.metadata}


@dataclass(slots=True)
class ObservationRow:
    id: str
    trace_id: str
    type: str | None = None
    start_time: datetime | None = None
    parent_observation_id: str | None = None
    name: str | None = None
    end_time: datetime | None = None
    completion_start_time: datetime | None = None
    model: str | None = None
    model_parameters: dict[str, Any] | None = None
    input: Any = None
    output: Any = None
    usage_details: dict[str, Any] = field(default_factory=dict)
    cost_details: dict[str, Any] = field(default_factory=dict)
    level: str | None = None
    status_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    prompt_name: str | None = None
    prompt_version: int | None = None
    environment: str | None = None
    version: str | None = None
    # derived by finish()
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    total_cost: float | None = None
    cost_source: str | None = None

    def merge(self, later: ObservationRow) -> None:
        for name in self.__slots__:
            if name in {"id", "usage_details", "cost_details", "metadata"}:
                continue
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)
        self.usage_details = later.usage_details or self.usage_details
        self.cost_details = later.cost_details or self.cost_details
        self.metadata = {**self.metadata, **later.metadata}

    def finish(self, prices: PriceTable) -> None:
        usage = {k: v for k, v in self.usage_details.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)}
        self.usage_details = usage
        self.input_tokens = _int(usage.get("input"))
        self.output_tokens = _int(usage.get("output"))
        total = _int(usage.get("total"))
        if total is None and usage:
            total = _int(sum(usage.values()))
        self.total_tokens = total
        cost = {k: v for k, v in self.cost_details.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if cost:
            self.cost_details = cost
            self.total_cost = provided_total(cost)
            if self.total_cost is not None and "total" not in cost:
                cost["total"] = self.total_cost
            self.cost_source = "provided"
        elif self.model and usage:
            computed = prices.cost(self.model, usage)
            if computed is not None:
                self.cost_details = computed
                self.total_cost = computed["total"]
                self.cost_source = "computed"


@dataclass(slots=True)
class ScoreRow:
    id: str
    name: str
    trace_id: str | None = None
    observation_id: str | None = None
    session_id: str | None = None
    value: float | None = None
    string_value: str | None = None
    data_type: str = "NUMERIC"
    comment: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    environment: str | None = None
    timestamp: datetime | None = None

    def merge(self, later: ScoreRow) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(later, name))


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


@dataclass
class Batch:
    """What one request stores, in one transaction."""

    traces: list[TraceRow] = field(default_factory=list)
    observations: list[ObservationRow] = field(default_factory=list)
    scores: list[ScoreRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.traces) + len(self.observations) + len(self.scores)
