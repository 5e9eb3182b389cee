"""OTLP/HTTP traces as the Langfuse SDKs (Python v3+, JS v4) and other OpenTelemetry exporters send them.

`decode()` reads a protobuf or OTLP-JSON body into plain spans; `to_batch()` maps each span to a trace row and an
observation row following Langfuse's server (packages/shared/src/server/otel/OtelIngestionProcessor.ts): the
`langfuse.*` attributes first, the GenAI semantic conventions (`gen_ai.*`) as the fallback.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from studioops.observability.prices import PriceTable
from studioops.observability.rows import OBSERVATION_TYPES, Batch, ObservationRow, RawJSON, TraceRow, parse_level


class BadRequest(ValueError):
    """The body cannot be read as OTLP: the reason goes back to the client with a 400."""


@dataclass(slots=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int = 0
    status_message: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


# -- decoding --------------------------------------------------------------------------------------------------
def _pb_value(v) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_pb_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


def _decode_protobuf(body: bytes) -> list[Span]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        request = ExportTraceServiceRequest.FromString(body)
    except DecodeError as exc:
        raise BadRequest(f"the body is not an OTLP protobuf ExportTraceServiceRequest ({exc})") from None
    spans = []
    for rs in request.resource_spans:
        resource = {a.key: _pb_value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for s in ss.spans:
                attrs = {}
                for a in s.attributes:
                    v = a.value
                    # Most values are strings: read them without a call (this loop runs for every attribute).
                    attrs[a.key] = v.string_value if v.WhichOneof("value") == "string_value" else _pb_value(v)
                spans.append(Span(
                    s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None, s.name,
                    s.start_time_unix_nano, s.end_time_unix_nano, attrs, s.status.code, s.status.message,
                    resource, scope,
                ))
    return spans


def _json_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])  # int64 travels as a string in OTLP JSON
    if "arrayValue" in v:
        return [_json_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: _json_value(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values", [])}
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _json_attrs(items: Any) -> dict[str, Any]:
    return {a["key"]: _json_value(a.get("value")) for a in items or []}


def _hex_id(value: Any, size: int) -> str:
    """OTLP JSON carries ids as hex (the spec); some exporters send base64 (protobuf's JSON mapping)."""
    if not isinstance(value, str) or not value:
        return ""
    if len(value) == size * 2:
        return value.lower()
    import base64
    import binascii

    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    return raw.hex() if len(raw) == size else value


def _decode_json(body: bytes) -> list[Span]:
    try:
        doc = json.loads(body)
        spans = []
        for rs in doc.get("resourceSpans") or []:
            resource = _json_attrs((rs.get("resource") or {}).get("attributes"))
            for ss in rs.get("scopeSpans") or []:
                scope = (ss.get("scope") or {}).get("name", "")
                for s in ss.get("spans") or []:
                    status = s.get("status") or {}
                    code = status.get("code", 0)
                    spans.append(Span(
                        _hex_id(s.get("traceId"), 16), _hex_id(s.get("spanId"), 8),
                        _hex_id(s.get("parentSpanId"), 8) or None, s.get("name", ""),
                        int(s.get("startTimeUnixNano") or 0), int(s.get("endTimeUnixNano") or 0),
                        _json_attrs(s.get("attributes")),
                        {"STATUS_CODE_ERROR": 2, "STATUS_CODE_OK": 1}.get(code, code) if isinstance(code, str)
                        else int(code), status.get("message", ""), resource, scope,
                    ))
        return spans
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        raise BadRequest(f"the body is not OTLP JSON ({type(exc).__name__}: {exc})") from None


def decode(body: bytes, content_type: str) -> list[Span]:
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-protobuf":
        return _decode_protobuf(body)
    if kind == "application/json":
        return _decode_json(body)
    raise BadRequest(f"unsupported content type '{content_type}'")


# -- mapping ---------------------------------------------------------------------------------------------------
def _parsed(value: Any) -> Any:
    """The SDK sends JSON-serialised values as strings: parse them when they parse."""
    if isinstance(value, str) and value[:1] in '{["0123456789-tfn':
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


_STRICT_JSON = json.JSONDecoder(parse_constant=_reject_constant)  # built once (json.loads(..., kw) builds one per call)


def _payload(value: Any) -> Any:
    """An input or output: JSON object or array text is kept as text (checked to parse, stored as is); anything
    else is the value itself (a plain string stays a string)."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            _STRICT_JSON.decode(value)
        except (ValueError, RecursionError):
            return value
        return RawJSON(value)
    return value


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value not in (None, ""):
            return value
    return None


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _object(value: Any) -> dict[str, Any]:
    value = _parsed(value)
    return value if isinstance(value, dict) else {}


def _metadata(attrs: dict[str, Any], prefix: str) -> dict[str, Any]:
    """`prefix` as a JSON object, plus each `prefix.KEY` attribute (the SDK flattens metadata that way)."""
    out = _object(attrs.get(prefix))
    dotted = prefix + "."
    size = len(dotted)
    for key in attrs:
        if key.startswith(dotted):
            out[key[size:]] = _parsed(attrs[key])
    return out


def _tags(attrs: dict[str, Any]) -> list[str]:
    value = _first(attrs, "langfuse.trace.tags", "langfuse.tags")
    if value is None:
        return []
    if isinstance(value, str):
        parsed = _parsed(value) if value.strip().startswith("[") else value
        if isinstance(parsed, list):
            return [str(t) for t in parsed]
        return [t.strip() for t in value.split(",")] if "," in value else [value]
    return [str(t) for t in value] if isinstance(value, list) else [str(value)]


_GENAI_TYPES = {"chat": "generation", "completion": "generation", "text_completion": "generation",
                "generate_content": "generation", "generate": "generation", "embeddings": "embedding",
                "invoke_agent": "agent", "create_agent": "agent", "execute_tool": "tool"}


def _observation_type(attrs: dict[str, Any]) -> str:
    given = attrs.get("langfuse.observation.type")
    if isinstance(given, str) and given.lower() in OBSERVATION_TYPES:
        return given.lower()
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in _GENAI_TYPES:
        return _GENAI_TYPES[operation]
    if _first(attrs, "gen_ai.tool.name", "gen_ai.tool.call.id"):
        return "tool"
    if _first(attrs, "gen_ai.request.model", "gen_ai.response.model"):
        return "generation"
    return "span"


def _usage(attrs: dict[str, Any]) -> dict[str, Any]:
    given = _object(attrs.get("langfuse.observation.usage_details"))
    if given:
        return given
    usage = {}
    for key, names in (("input", ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")),
                       ("output", ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")),
                       ("total", ("gen_ai.usage.total_tokens", "llm.usage.total_tokens"))):
        value = _first(attrs, *names)
        if value is not None:
            with contextlib.suppress(TypeError, ValueError):
                usage[key] = int(value)
    return usage


def _cost(attrs: dict[str, Any]) -> dict[str, Any]:
    given = _object(attrs.get("langfuse.observation.cost_details"))
    if given:
        return given
    total = _first(attrs, "gen_ai.usage.cost", "llm.cost.total")
    try:
        return {"total": float(total)} if total is not None else {}
    except (TypeError, ValueError):
        return {}


def _model_parameters(attrs: dict[str, Any]) -> dict[str, Any] | None:
    given = _object(attrs.get("langfuse.observation.model.parameters"))
    if given:
        return given
    if "gen_ai.request.model" not in attrs and "gen_ai.operation.name" not in attrs:
        return None  # not a GenAI-convention span: no request parameters to look for
    params = {key[len("gen_ai.request."):]: value for key, value in attrs.items()
              if key.startswith("gen_ai.request.") and key != "gen_ai.request.model"}
    return params or None


def _time(ns: int) -> datetime | None:
    return datetime.fromtimestamp(ns / 1e9, UTC) if ns > 0 else None


def _iso(value: Any) -> datetime | None:
    value = _parsed(value) if isinstance(value, str) and value.startswith('"') else value
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


MAX_TIME_NS = 253402300799 * 10**9  # 9999-12-31T23:59:59Z, the last moment Python's datetime holds

_TRACE_UPDATE_KEYS = ("langfuse.trace.name", "user.id", "langfuse.user.id", "session.id", "langfuse.session.id",
                      "langfuse.trace.tags", "langfuse.trace.metadata", "langfuse.trace.input",
                      "langfuse.trace.output", "gen_ai.conversation.id")
_SDK_SCOPES = ("langfuse-sdk", "langfuse")
_TRACE_PREFIXES = ("langfuse.trace", "user.id", "session.id", "langfuse.user", "langfuse.session", "langfuse.release",
                   "langfuse.version", "langfuse.environment", "gen_ai.conversation")


def span_rows(span: Span, trace_known: bool = False) -> tuple[TraceRow, ObservationRow]:
    """One span: the trace it belongs to (full for a root span or one carrying trace attributes, else only its
    id and time) and its observation. `trace_known`: an earlier span of this request carried the same trace
    attributes, so this one adds nothing to the trace but its time."""
    attrs = span.attributes
    start = _time(span.start_ns)
    environment = _first(attrs, "langfuse.environment") or _first(
        span.resource, "langfuse.environment", "deployment.environment.name", "deployment.environment")
    environment = str(environment) if environment is not None else None
    version = _first(attrs, "langfuse.version") or span.resource.get("service.version")
    obs_type = _observation_type(attrs)
    metadata = _metadata(attrs, "langfuse.observation.metadata")
    if not span.scope.startswith(_SDK_SCOPES):
        # Other instrumentations: keep their attributes, as Langfuse does (minus what became columns).
        metadata["attributes"] = {k: v for k, v in attrs.items() if not k.startswith(("langfuse.", "gen_ai.usage"))}
    observation_id = metadata.get("studioops_observation_id")
    input_value = _payload(_first(attrs, "langfuse.observation.input", "gen_ai.input.messages", "gen_ai.prompt",
                                  "input.value"))
    output_value = _payload(_first(attrs, "langfuse.observation.output", "gen_ai.output.messages",
                                   "gen_ai.completion", "output.value"))
    observation = ObservationRow(
        id=observation_id if isinstance(observation_id, str) and observation_id else span.span_id,
        trace_id=span.trace_id,
        parent_observation_id=span.parent_span_id,
        type=obs_type,
        name=_as_text(_first(attrs, "gen_ai.tool.name") if obs_type == "tool" else None) or span.name,
        start_time=start or datetime.now(UTC),
        end_time=_time(span.end_ns),
        completion_start_time=_iso(attrs.get("langfuse.observation.completion_start_time")),
        model=_as_text(_first(attrs, "langfuse.observation.model.name", "gen_ai.response.model", "ai.model.id",
                              "gen_ai.request.model", "llm.response.model", "llm.model_name")),
        model_parameters=_model_parameters(attrs),
        input=input_value,
        output=output_value,
        usage_details=_usage(attrs),
        cost_details=_cost(attrs),
        level=parse_level(attrs.get("langfuse.observation.level")) or ("ERROR" if span.status_code == 2
                                                                       else "DEFAULT"),
        status_message=_as_text(_first(attrs, "langfuse.observation.status_message")) or span.status_message or None,
        metadata=metadata,
        prompt_name=_as_text(_first(attrs, "langfuse.observation.prompt.name", "langfuse.prompt.name"))
        if obs_type == "generation" else None,
        prompt_version=_int_or_none(_first(attrs, "langfuse.observation.prompt.version", "langfuse.prompt.version"))
        if obs_type == "generation" else None,
        environment=environment,
        version=_as_text(version),
    )
    is_root = not span.parent_span_id or str(attrs.get("langfuse.internal.as_root")).lower() == "true"
    trace = TraceRow(id=span.trace_id, timestamp=start, environment=environment)
    if is_root or (not trace_known and any(key in attrs for key in _TRACE_UPDATE_KEYS)):
        trace.name = _as_text(attrs.get("langfuse.trace.name")) or (span.name if is_root else None)
        trace.user_id = _as_text(_first(attrs, "langfuse.user.id", "user.id"))
        trace.session_id = _as_text(_first(attrs, "langfuse.session.id", "session.id", "gen_ai.conversation.id"))
        trace.tags = _tags(attrs)
        trace.metadata = _metadata(attrs, "langfuse.trace.metadata")
        trace.release = _as_text(_first(attrs, "langfuse.release") or span.resource.get("langfuse.release"))
        trace.version = _as_text(version)
        public = attrs.get("langfuse.trace.public")
        trace.public = (public is True or str(public).lower() == "true") if public is not None else None
        trace.input = _payload(attrs.get("langfuse.trace.input")) if "langfuse.trace.input" in attrs else (
            input_value if is_root else None)
        trace.output = _payload(attrs.get("langfuse.trace.output")) if "langfuse.trace.output" in attrs else (
            output_value if is_root else None)
        if is_root and span.resource:
            trace.metadata.setdefault("resourceAttributes", span.resource)
    return trace, observation


def check(span: Span) -> str | None:
    """Why a span cannot be stored, or None."""
    if len(span.trace_id) != 32 or span.trace_id == "0" * 32:
        return "invalid trace id"
    if len(span.span_id) != 16 or span.span_id == "0" * 16:
        return "invalid span id"
    if span.parent_span_id is not None and len(span.parent_span_id) != 16:
        return "invalid parent span id"
    if not 0 <= span.start_ns < MAX_TIME_NS or not 0 <= span.end_ns < MAX_TIME_NS:
        return "start or end time out of range"
    return None


def to_batch(spans: list[Span], prices: PriceTable | None = None) -> tuple[Batch, list[str]]:
    """The rows of the valid spans, and why each invalid one was rejected."""
    batch, rejected = Batch(), []
    seen: dict[str, list] = {}  # trace id -> the trace attributes already taken from this request
    for span in spans:
        reason = check(span)
        if reason:
            rejected.append(f"span {span.span_id or '?'}: {reason}")
            continue
        # The SDK repeats the trace's attributes on every span (propagate_attributes): build the trace once.
        signature = [(k, v) for k, v in span.attributes.items() if k.startswith(_TRACE_PREFIXES)]
        known = seen.get(span.trace_id) == signature
        seen[span.trace_id] = signature
        trace, observation = span_rows(span, known)
        batch.traces.append(trace)
        batch.observations.append(observation)
    return batch, rejected
