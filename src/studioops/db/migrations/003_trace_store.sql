-- 003_trace_store.sql: one trace store with Langfuse's data model (traces, observations, scores).
-- The embedded console's Langfuse-compatible ingestion API and ObservabilityService both write here; the rows of
-- llm_traces move in (one trace per Langfuse trace id, one generation per call), and llm_traces stays as a
-- read-only view over the new tables for readers of the old name.
CREATE TABLE traces (
    id          text PRIMARY KEY CHECK (id <> ''),
    timestamp   timestamptz NOT NULL,
    name        text,
    user_id     text,
    session_id  text,
    tags        text[] NOT NULL DEFAULT '{}',
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    input       jsonb,
    output      jsonb,
    environment text NOT NULL DEFAULT 'default',
    release     text,
    version     text,
    public      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The list query walks this index newest first (keyset pagination on timestamp, id); filters have their own.
CREATE INDEX idx_traces_timestamp ON traces (timestamp DESC, id DESC);
CREATE INDEX idx_traces_user ON traces (user_id, timestamp DESC) WHERE user_id IS NOT NULL;
CREATE INDEX idx_traces_session ON traces (session_id, timestamp DESC) WHERE session_id IS NOT NULL;
CREATE INDEX idx_traces_name ON traces (name, timestamp DESC);
CREATE INDEX idx_traces_tags ON traces USING gin (tags);

CREATE TABLE observations (
    id                    text PRIMARY KEY CHECK (id <> ''),
    trace_id              text NOT NULL REFERENCES traces (id) ON DELETE CASCADE,
    parent_observation_id text,
    type                  text NOT NULL DEFAULT 'span'
                          CHECK (type IN ('span', 'generation', 'event', 'agent', 'tool', 'chain', 'retriever',
                                          'evaluator', 'embedding', 'guardrail')),
    name                  text,
    start_time            timestamptz NOT NULL,
    end_time              timestamptz,
    completion_start_time timestamptz,
    model                 text,
    model_parameters      jsonb,
    input                 jsonb,
    output                jsonb,
    usage_details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    cost_details          jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Kept beside the JSON so that lists and metrics add them up without parsing it.
    input_tokens          bigint,
    output_tokens         bigint,
    total_tokens          bigint,
    total_cost            numeric,
    cost_source           text CHECK (cost_source IN ('provided', 'computed')),
    level                 text NOT NULL DEFAULT 'DEFAULT' CHECK (level IN ('DEBUG', 'DEFAULT', 'WARNING', 'ERROR')),
    status_message        text,
    metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
    prompt_name           text,
    prompt_version        integer,
    environment           text NOT NULL DEFAULT 'default',
    version               text,
    created_at            timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_observations_trace ON observations (trace_id, start_time);
-- (model, trace_id): the list's --model filter probes it per trace with both keys.
CREATE INDEX idx_observations_model ON observations (model, trace_id) WHERE model IS NOT NULL;
CREATE INDEX idx_observations_errors ON observations (trace_id) WHERE level = 'ERROR';

CREATE TABLE scores (
    id             text PRIMARY KEY CHECK (id <> ''),
    trace_id       text REFERENCES traces (id) ON DELETE CASCADE,
    observation_id text,
    session_id     text,
    name           text NOT NULL,
    value          double precision,
    string_value   text,
    data_type      text NOT NULL DEFAULT 'NUMERIC' CHECK (data_type IN ('NUMERIC', 'CATEGORICAL', 'BOOLEAN')),
    comment        text,
    source         text NOT NULL DEFAULT 'API',
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    environment    text NOT NULL DEFAULT 'default',
    timestamp      timestamptz NOT NULL DEFAULT now(),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_scores_trace ON scores (trace_id);

-- The old rows: a trace per Langfuse trace id (the earliest call names it), a generation per call.
INSERT INTO traces (id, timestamp, name, metadata)
SELECT DISTINCT ON (langfuse_trace_id)
       langfuse_trace_id, started_at, name,
       metadata || jsonb_build_object('studioops_trace_id', trace_id)
FROM llm_traces
ORDER BY langfuse_trace_id, started_at, created_at;

UPDATE traces t SET timestamp = first.started_at
FROM (SELECT langfuse_trace_id, min(started_at) AS started_at FROM llm_traces GROUP BY 1) first
WHERE t.id = first.langfuse_trace_id;

INSERT INTO observations (id, trace_id, type, name, start_time, end_time, model, input, output, usage_details,
                          input_tokens, output_tokens, total_tokens, level, status_message, metadata)
SELECT replace(id::text, '-', ''), langfuse_trace_id, 'generation', name, started_at,
       started_at + make_interval(secs => coalesce(latency_ms, 0) / 1000.0),
       model, to_jsonb(input), to_jsonb(output),
       jsonb_strip_nulls(jsonb_build_object('input', input_tokens, 'output', output_tokens,
                                            'total', input_tokens + output_tokens)),
       input_tokens, output_tokens, input_tokens + output_tokens,
       CASE WHEN status = 'error' THEN 'ERROR' ELSE 'DEFAULT' END, error,
       metadata || jsonb_build_object('studioops_trace_id', trace_id, 'usage_source', usage_source,
                                      'latency_ms', latency_ms)
FROM llm_traces;

DROP TABLE llm_traces;

-- The old name, read-only: one row per stored call, in the old columns.
CREATE VIEW llm_traces AS
SELECT o.id, coalesce(o.metadata ->> 'studioops_trace_id', t.metadata ->> 'studioops_trace_id', o.trace_id)
           AS trace_id,
       o.trace_id AS langfuse_trace_id, o.name, o.model, o.input #>> '{}' AS input, o.output #>> '{}' AS output,
       o.input_tokens, o.output_tokens, o.metadata ->> 'usage_source' AS usage_source,
       extract(epoch FROM o.end_time - o.start_time) * 1000 AS latency_ms,
       CASE WHEN o.level = 'ERROR' THEN 'error' ELSE 'ok' END AS status, o.status_message AS error,
       o.metadata, o.start_time AS started_at, o.created_at
FROM observations o JOIN traces t ON t.id = o.trace_id
WHERE o.type = 'generation';
