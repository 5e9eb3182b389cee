-- 005_console_indexes.sql: what the console's trace pages need to stay fast with millions of observations.
--
-- 1. Each trace carries its observations' totals (count, tokens, cost, first start, last end, latency), kept by
--    statement-level triggers on observations, so the list can sort by latency, tokens or cost and page by
--    keyset along an index instead of adding up every trace's observations first. Deltas, not recounts:
--    concurrent batches for one trace add up correctly (the row lock orders them). pg_restore creates
--    triggers after the data, so a restore does not count twice.
-- 2. Free text over a trace's input and output: a tsvector over their JSON string values (pg_trgm is not in
--    the bundled PostgreSQL), matched by words.
-- 3. Usage per model per day comes from a small rollup table kept by triggers as well.
ALTER TABLE traces
    ADD COLUMN obs_count       bigint NOT NULL DEFAULT 0,
    ADD COLUMN obs_tokens      bigint NOT NULL DEFAULT 0,
    ADD COLUMN obs_cost        numeric NOT NULL DEFAULT 0,
    ADD COLUMN obs_first_start timestamptz,
    ADD COLUMN obs_last_end    timestamptz,
    ADD COLUMN obs_latency_ms  double precision NOT NULL DEFAULT 0;

UPDATE traces t
SET obs_count = a.n, obs_tokens = a.tokens, obs_cost = a.cost, obs_first_start = a.first_start,
    obs_last_end = a.last_end,
    obs_latency_ms = extract(epoch FROM a.last_end - least(a.first_start, t.timestamp)) * 1000
FROM (
    SELECT trace_id, count(*) AS n,
           coalesce(sum(coalesce(total_tokens, coalesce(input_tokens, 0) + coalesce(output_tokens, 0))), 0)
               AS tokens,
           coalesce(sum(total_cost), 0) AS cost, min(start_time) AS first_start,
           max(coalesce(end_time, start_time)) AS last_end
    FROM observations GROUP BY trace_id
) a
WHERE t.id = a.trace_id;

CREATE FUNCTION studioops_trace_totals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- This statement's transition tables: an INSERT has new rows only, a DELETE old rows only.
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT 1 AS sign, * FROM new_rows'
        WHEN 'DELETE' THEN 'SELECT -1 AS sign, * FROM old_rows'
        ELSE 'SELECT 1 AS sign, * FROM new_rows UNION ALL SELECT -1 AS sign, * FROM old_rows' END;
BEGIN
    EXECUTE format($q$
        UPDATE traces t
        SET obs_count = t.obs_count + d.n, obs_tokens = t.obs_tokens + d.tokens, obs_cost = t.obs_cost + d.cost,
            obs_first_start = least(t.obs_first_start, d.first_start),
            obs_last_end = greatest(t.obs_last_end, d.last_end),
            obs_latency_ms = coalesce(extract(epoch FROM greatest(t.obs_last_end, d.last_end)
                                              - least(t.obs_first_start, d.first_start, t.timestamp)) * 1000, 0)
        FROM (
            SELECT trace_id, sum(sign) AS n,
                   coalesce(sum(sign * coalesce(total_tokens, coalesce(input_tokens, 0)
                                                              + coalesce(output_tokens, 0))), 0) AS tokens,
                   coalesce(sum(sign * coalesce(total_cost, 0)), 0) AS cost,
                   min(start_time) FILTER (WHERE sign > 0) AS first_start,
                   max(coalesce(end_time, start_time)) FILTER (WHERE sign > 0) AS last_end
            FROM (%s) changed GROUP BY trace_id
        ) d
        WHERE t.id = d.trace_id$q$, changed);
    RETURN NULL;
END $$;

-- Transition tables allow one event per trigger.
CREATE TRIGGER observations_totals_insert AFTER INSERT ON observations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION studioops_trace_totals();
CREATE TRIGGER observations_totals_update AFTER UPDATE ON observations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION studioops_trace_totals();
CREATE TRIGGER observations_totals_delete AFTER DELETE ON observations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION studioops_trace_totals();

-- Keyset pagination per sort order (value, id), either direction.
CREATE INDEX idx_traces_latency ON traces (obs_latency_ms, id);
CREATE INDEX idx_traces_tokens ON traces (obs_tokens, id);
CREATE INDEX idx_traces_cost ON traces (obs_cost, id);

-- Free text: words of the string values in a trace's input and output.
CREATE INDEX idx_traces_text ON traces USING gin (
    (jsonb_to_tsvector('simple', coalesce(input, '{}'::jsonb), '["string"]')
     || jsonb_to_tsvector('simple', coalesce(output, '{}'::jsonb), '["string"]')));

-- Usage per model per day: a rollup per (UTC day, model, latency bucket) kept by the same triggers, so the Usage
-- page adds up a few hundred rows instead of every generation in the range. Latency buckets grow by 20%:
-- p50/p95 read from them are within 10% (the page labels them as estimates).
CREATE TABLE usage_rollup (
    day     date NOT NULL,
    model   text NOT NULL,
    bucket  integer NOT NULL,  -- floor(ln(1 + latency_ms) / ln(1.2)); -1: no end time, no latency
    calls   bigint NOT NULL DEFAULT 0,
    errors  bigint NOT NULL DEFAULT 0,
    tokens  bigint NOT NULL DEFAULT 0,
    cost    numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (day, model, bucket)
);

CREATE FUNCTION studioops_usage_rows(sign integer, o observations) RETURNS TABLE (
    day date, model text, bucket integer, calls integer, errors integer, tokens bigint, cost numeric)
LANGUAGE sql IMMUTABLE AS $$
    SELECT (o.start_time AT TIME ZONE 'UTC')::date, o.model,
           CASE WHEN o.end_time IS NULL THEN -1
                ELSE floor(ln(1 + greatest(extract(epoch FROM o.end_time - o.start_time) * 1000, 0)) / ln(1.2))::int
           END,
           sign, CASE WHEN o.level = 'ERROR' THEN sign ELSE 0 END,
           sign * coalesce(o.total_tokens, coalesce(o.input_tokens, 0) + coalesce(o.output_tokens, 0)),
           sign * coalesce(o.total_cost, 0)
    WHERE o.model IS NOT NULL
$$;

INSERT INTO usage_rollup (day, model, bucket, calls, errors, tokens, cost)
SELECT u.day, u.model, u.bucket, sum(u.calls), sum(u.errors), sum(u.tokens), sum(u.cost)
FROM observations o, studioops_usage_rows(1, o) u
GROUP BY 1, 2, 3;

CREATE FUNCTION studioops_usage_totals() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT u.* FROM new_rows o, studioops_usage_rows(1, o::observations) u'
        WHEN 'DELETE' THEN 'SELECT u.* FROM old_rows o, studioops_usage_rows(-1, o::observations) u'
        ELSE 'SELECT u.* FROM new_rows o, studioops_usage_rows(1, o::observations) u UNION ALL '
             'SELECT u.* FROM old_rows o, studioops_usage_rows(-1, o::observations) u' END;
BEGIN
    -- In key order: concurrent batches lock the shared rows in the same order, so they never deadlock.
    EXECUTE format($q$
        INSERT INTO usage_rollup AS r (day, model, bucket, calls, errors, tokens, cost)
        SELECT day, model, bucket, sum(calls), sum(errors), sum(tokens), sum(cost)
        FROM (%s) changed GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (day, model, bucket) DO UPDATE
        SET calls = r.calls + excluded.calls, errors = r.errors + excluded.errors,
            tokens = r.tokens + excluded.tokens, cost = r.cost + excluded.cost$q$, changed);
    RETURN NULL;
END $$;

CREATE TRIGGER observations_usage_insert AFTER INSERT ON observations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION studioops_usage_totals();
CREATE TRIGGER observations_usage_update AFTER UPDATE ON observations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION studioops_usage_totals();
CREATE TRIGGER observations_usage_delete AFTER DELETE ON observations
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION studioops_usage_totals();
