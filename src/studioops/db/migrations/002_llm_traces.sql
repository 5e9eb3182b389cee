-- 002_llm_traces.sql: the local trace store. Every traced LLM call lands here (always on in the embedded stack),
-- so traces exist with no Langfuse at all; health and metrics read trace counts and error rates from it.
CREATE TABLE llm_traces (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    trace_id          varchar(255) NOT NULL,          -- the caller's id, kept as given
    langfuse_trace_id char(32) NOT NULL,              -- the same id mapped to Langfuse's 32-hex format
    name              varchar(255) NOT NULL DEFAULT 'llm_generation',
    model             varchar(255),
    input             text,
    output            text,
    input_tokens      integer CHECK (input_tokens >= 0),
    output_tokens     integer CHECK (output_tokens >= 0),
    usage_source      varchar(16) NOT NULL DEFAULT 'provider' CHECK (usage_source IN ('provider', 'estimate')),
    latency_ms        double precision CHECK (latency_ms >= 0),
    status            varchar(16) NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'error')),
    error             text,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_llm_traces_started_at ON llm_traces (started_at DESC);
CREATE INDEX idx_llm_traces_trace_id ON llm_traces (trace_id);
CREATE INDEX idx_llm_traces_errors ON llm_traces (started_at DESC) WHERE status = 'error';
