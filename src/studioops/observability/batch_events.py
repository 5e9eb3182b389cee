"""Langfuse's batch ingestion API (`POST /api/public/ingestion`), as the Python SDK v2 sends it.

Each event is checked on its own (packages/shared/src/server/ingestion/types.ts gives the shapes): good events
become rows, bad ones are named in the 207 answer with the reason, as Langfuse does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from studioops.observability.otlp import BadRequest
from studioops.observability.rows import (
    OBSERVATION_TYPES,
    Batch,
    ObservationRow,
    ScoreRow,
    TraceRow,
    parse_level,
)

OBSERVATION_EVENTS = {f"{t}-{action}": t for t in OBSERVATION_TYPES for action in ("create", "update")}
OBSERVATION_EVENTS.pop("event-update")
OBSERVATION_EVENTS["observation-create"] = OBSERVATION_EVENTS["observation-update"] = None  # type from the body
IGNORED_EVENTS = {"sdk-log"}


class EventError(ValueError):
    """One event of a batch is malformed; the others are stored."""


def parse_body(body: bytes) -> list[dict[str, Any]]:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("batch"), list):
        raise BadRequest('the body must be a JSON object with a "batch" list of events')
    return doc["batch"]


def _time(value: Any, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventError(f"{what} must be an ISO 8601 date-time string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventError(f"{what} '{value[:40]}' is not an ISO 8601 date-time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise EventError(f"{key} must be a string")
    return str(value)


def _dict(body: dict, key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        # Langfuse keeps non-object metadata under a key of its own.
        return {"metadata": value} if key == "metadata" else _raise(f"{key} must be an object")
    return value


def _raise(message: str):
    raise EventError(message)


def _usage(body: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """usageDetails/costDetails, else the older `usage` object (input/output/total or OpenAI's names)."""
    usage_details, cost_details = _dict(body, "usageDetails"), _dict(body, "costDetails")
    usage = _dict(body, "usage")
    if not usage_details and usage:
        for key, names in (("input", ("input", "promptTokens", "prompt_tokens")),
                           ("output", ("output", "completionTokens", "completion_tokens")),
                           ("total", ("total", "totalTokens", "total_tokens"))):
            for name in names:
                if isinstance(usage.get(name), int | float) and not isinstance(usage.get(name), bool):
                    usage_details[key] = usage[name]
                    break
    if not cost_details and usage:
        for key, name in (("input", "inputCost"), ("output", "outputCost"), ("total", "totalCost")):
            if isinstance(usage.get(name), int | float) and not isinstance(usage.get(name), bool):
                cost_details[key] = usage[name]
    return usage_details, cost_details


def _observation(kind: str | None, body: dict, is_update: bool) -> ObservationRow:
    oid = _str(body, "id")
    if not oid:
        raise EventError("body.id is required")
    obs_type = kind or (str(body.get("type", "span")).lower())
    if obs_type not in OBSERVATION_TYPES:
        raise EventError(f"unknown observation type '{obs_type}'")
    level = body.get("level")
    if level is not None and parse_level(level) is None:
        raise EventError(f"level must be one of DEBUG, DEFAULT, WARNING, ERROR, got {str(level)[:20]!r}")
    usage_details, cost_details = _usage(body)
    start = _time(body.get("startTime"), "startTime")
    version = body.get("promptVersion")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise EventError("promptVersion must be an integer")
    params = body.get("modelParameters")
    return ObservationRow(
        id=oid,
        trace_id=_str(body, "traceId") or (None if is_update else oid),  # type: ignore[arg-type]
        type=None if is_update and kind is None else obs_type,
        start_time=start if (start or is_update) else datetime.now(UTC),
        parent_observation_id=_str(body, "parentObservationId"),
        name=_str(body, "name"),
        end_time=_time(body.get("endTime"), "endTime") or (start if obs_type == "event" else None),
        completion_start_time=_time(body.get("completionStartTime"), "completionStartTime"),
        model=_str(body, "model"),
        model_parameters=params if isinstance(params, dict) else None,
        input=body.get("input"),
        output=body.get("output"),
        usage_details=usage_details,
        cost_details=cost_details,
        level=parse_level(level),
        status_message=_str(body, "statusMessage"),
        metadata=_dict(body, "metadata"),
        prompt_name=_str(body, "promptName"),
        prompt_version=version,
        environment=_str(body, "environment"),
        version=_str(body, "version"),
    )


def _trace(body: dict, event_time: datetime | None) -> TraceRow:
    tags = body.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise EventError("tags must be a list of strings")
    public = body.get("public")
    return TraceRow(
        id=_str(body, "id") or _raise("body.id is required"),
        timestamp=_time(body.get("timestamp"), "timestamp") or event_time,
        name=_str(body, "name"), user_id=_str(body, "userId"), session_id=_str(body, "sessionId"),
        tags=tags or [], metadata=_dict(body, "metadata"), input=body.get("input"), output=body.get("output"),
        environment=_str(body, "environment"), release=_str(body, "release"), version=_str(body, "version"),
        public=public if isinstance(public, bool) else None,
    )


def _score(body: dict, event_id: str, event_time: datetime | None) -> ScoreRow:
    name = _str(body, "name")
    if not name:
        raise EventError("score name is required")
    value = body.get("value")
    data_type = str(body.get("dataType") or ("CATEGORICAL" if isinstance(value, str) else "NUMERIC")).upper()
    if data_type not in {"NUMERIC", "CATEGORICAL", "BOOLEAN"}:
        raise EventError("dataType must be NUMERIC, CATEGORICAL or BOOLEAN")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise EventError("score value must be a number or a string")
    if data_type != "CATEGORICAL" and isinstance(value, str):
        raise EventError(f"a {data_type} score needs a numeric value")
    if not (_str(body, "traceId") or _str(body, "sessionId")):
        raise EventError("a score needs traceId or sessionId")
    return ScoreRow(
        id=_str(body, "id") or event_id, name=name, trace_id=_str(body, "traceId"),
        observation_id=_str(body, "observationId"), session_id=_str(body, "sessionId"),
        value=float(value) if not isinstance(value, str) else None,
        string_value=value if isinstance(value, str) else None, data_type=data_type,
        comment=_str(body, "comment"), metadata=_dict(body, "metadata"), environment=_str(body, "environment"),
        timestamp=_time(body.get("timestamp"), "timestamp") or event_time,
    )


def event_rows(event: Any) -> Batch:
    """The rows of one event (raises EventError with the reason when it is malformed)."""
    if not isinstance(event, dict):
        raise EventError("an event must be a JSON object")
    kind, body = event.get("type"), event.get("body")
    if not isinstance(kind, str):
        raise EventError("event type is required")
    if not isinstance(body, dict):
        raise EventError("event body must be an object")
    event_time = _time(event.get("timestamp"), "timestamp")
    batch = Batch()
    if kind in IGNORED_EVENTS:
        return batch
    if kind == "trace-create":
        batch.traces.append(_trace(body, event_time))
    elif kind in OBSERVATION_EVENTS:
        obs = _observation(OBSERVATION_EVENTS[kind], body, kind.endswith("-update"))
        if obs.trace_id:
            # An observation names its trace; Langfuse creates the trace when nothing else does.
            batch.traces.append(TraceRow(id=obs.trace_id, timestamp=obs.start_time or event_time,
                                         environment=obs.environment))
        batch.observations.append(obs)
    elif kind == "score-create":
        score = _score(body, str(event.get("id") or ""), event_time)
        if score.trace_id:
            batch.traces.append(TraceRow(id=score.trace_id, timestamp=score.timestamp))
        batch.scores.append(score)
    else:
        raise EventError(f"unsupported event type '{kind[:40]}'")
    return batch


def event_id(event: Any, index: int) -> str:
    if isinstance(event, dict) and isinstance(event.get("id"), str | int):
        return str(event["id"])
    return f"#{index}"
