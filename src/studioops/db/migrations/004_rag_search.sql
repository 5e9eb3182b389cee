-- 004_rag_search.sql: retrieval functions over rag_documents, and the indexes that serve them.
-- Conventions follow Supabase's `match_documents` and `hybrid_search` guides (what LangChain and LlamaIndex users
-- know): cosine similarity, a jsonb `metadata @> filter`, reciprocal rank fusion for hybrid search.

-- The HNSW index indexes the embedding as halfvec: half the memory and half the build I/O of the vector(1536)
-- index of 001 (100k rows: 391 MB against 781 MB), about the same build time (5.4 against 5.8 min, untuned server)
-- and the same recall@10 (0.978 against 0.976 at ef_search 200), as in pgvector's published figures. The column
-- stays vector(1536): full precision is kept, and the functions re-rank the candidates with it.
-- m = 16, ef_construction = 128, measured on 100k rows: pgvector's defaults (16, 64) plateau at recall@10 0.975
-- (ef_search 300-400); m = 24 reaches 0.983 at ef_search 200; ef_construction = 128 reaches 1.000 at ef_search
-- 100-300, for a build 1.4x as long (128 s against 90 s) and the same size.
DROP INDEX IF EXISTS idx_rag_documents_embedding;
CREATE INDEX idx_rag_documents_embedding_hnsw ON rag_documents
    USING hnsw ((embedding::halfvec(1536)) halfvec_cosine_ops) WITH (m = 16, ef_construction = 128);

-- Filters: jsonb_path_ops serves `metadata @> filter` with an index a third the size of the default opclass.
CREATE INDEX idx_rag_documents_metadata ON rag_documents USING gin (metadata jsonb_path_ops);

-- The query of match_rag_documents, shared with explain_match_rag_documents so that EXPLAIN shows the very plan
-- the function runs. $1 = query_embedding, $2 = match_count, $3 = filter. An empty filter adds no WHERE clause:
-- `metadata @> '{}'` is true for every row, and the planner could not know that.
-- relaxed_order returns rows in almost-sorted order, so the outer query re-orders them by the exact (vector, not
-- halfvec) distance, as pgvector's documentation prescribes; `+ 0` keeps PostgreSQL from dropping that sort.
CREATE FUNCTION rag_match_query(filter jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 'WITH candidates AS MATERIALIZED (
                SELECT r.id, r.document_id, r.content, r.metadata, r.embedding
                FROM rag_documents r'
           || CASE WHEN filter = '{}'::jsonb THEN '' ELSE '
                WHERE r.metadata @> $3' END || '
                ORDER BY r.embedding::halfvec(1536) <=> $1::halfvec(1536)
                LIMIT $2)
            SELECT c.id, c.document_id, c.content, c.metadata,
                   (1 - (c.embedding <=> $1))::double precision AS similarity
            FROM candidates c
            ORDER BY (c.embedding <=> $1) + 0
            LIMIT $2'
$$;

-- Index scan settings, set on the functions (restored when they return):
--   hnsw.iterative_scan = relaxed_order: keep scanning the graph until match_count rows pass the filter (without it
--     a 1%-selective filter leaves almost nothing of the ef_search candidates);
--   hnsw.ef_search = 200: twice the list that reached recall@10 1.000 on 100k rows (100), as a margin for filtered
--     iterative scans (raised to match_count when more rows are asked for);
--   hnsw.max_scan_tuples = 50000: how far an iterative scan may go before giving up (pgvector's default, 20000,
--     can leave a 0.1%-selective filter short of rows on 100k rows);
--   enable_seqscan = off: the planner prices a distance at one operator call and misses the detoasting of each
--     6 kB vector, so below ~10k rows it picks a sequential scan that is 10-50x slower than the index (seen: 100 ms
--     against 2 ms on 3,000 rows). The index and a filter's GIN bitmap scan stay free choices; with no index at
--     all, a sequential scan still runs.
-- The index scan settings, set in the function body rather than as SET clauses: a function's SET clause on
-- pgvector's hnsw.* parameters is refused to a role that is not a superuser ("permission denied to set
-- parameter") when the library is not loaded yet, as on a managed server (CNPG, RDS) and in pg_restore there.
-- rag_scan_settings sets them for the rest of the statement and returns the previous values;
-- rag_restore_scan_settings puts those back.
CREATE FUNCTION rag_scan_settings(match_count int) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    previous text[] := ARRAY[coalesce(current_setting('hnsw.iterative_scan', true), 'off'),
                             coalesce(current_setting('hnsw.ef_search', true), '40'),
                             coalesce(current_setting('hnsw.max_scan_tuples', true), '20000')];
BEGIN
    PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true),
            set_config('hnsw.ef_search', greatest(200, least(match_count, 1000))::text, true),
            set_config('hnsw.max_scan_tuples', '50000', true);
    RETURN previous;
END;
$$;

CREATE FUNCTION rag_restore_scan_settings(previous text[]) RETURNS void
LANGUAGE sql VOLATILE AS $$
    SELECT set_config('hnsw.iterative_scan', previous[1], true), set_config('hnsw.ef_search', previous[2], true),
           set_config('hnsw.max_scan_tuples', previous[3], true);
$$;

CREATE FUNCTION match_rag_documents(
    query_embedding vector(1536),
    match_count int DEFAULT 10,
    filter jsonb DEFAULT '{}'
) RETURNS TABLE (id uuid, document_id uuid, content text, metadata jsonb, similarity double precision)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
AS $$
DECLARE
    previous text[] := rag_scan_settings(match_count);
BEGIN
    RETURN QUERY EXECUTE rag_match_query(coalesce(filter, '{}')) USING query_embedding, match_count,
        coalesce(filter, '{}');
    PERFORM rag_restore_scan_settings(previous);
END;
$$;

-- The plan match_rag_documents runs for these arguments (EXPLAIN, or EXPLAIN ANALYZE with with_analyze => true).
CREATE FUNCTION explain_match_rag_documents(
    query_embedding vector(1536),
    match_count int DEFAULT 10,
    filter jsonb DEFAULT '{}',
    with_analyze boolean DEFAULT false
) RETURNS SETOF text
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    previous text[] := rag_scan_settings(match_count);
BEGIN
    RETURN QUERY EXECUTE (CASE WHEN with_analyze THEN 'EXPLAIN (ANALYZE, BUFFERS) ' ELSE 'EXPLAIN ' END)
        || rag_match_query(coalesce(filter, '{}')) USING query_embedding, match_count, coalesce(filter, '{}');
    PERFORM rag_restore_scan_settings(previous);
END;
$$;

-- Hybrid search: reciprocal rank fusion of a full-text ranking (websearch_to_tsquery over the 'english' GIN index
-- of 001) and the vector ranking of match_rag_documents (which sets the index scan settings), match_count * 2
-- candidates from each, both under the same filter.
CREATE FUNCTION hybrid_search_rag_documents(
    query_text text,
    query_embedding vector(1536),
    match_count int DEFAULT 10,
    filter jsonb DEFAULT '{}',
    full_text_weight double precision DEFAULT 1,
    semantic_weight double precision DEFAULT 1,
    rrf_k int DEFAULT 60
) RETURNS TABLE (id uuid, document_id uuid, content text, metadata jsonb, score double precision)
LANGUAGE sql STABLE AS $$
    WITH full_text AS (
        SELECT r.id, row_number() OVER (
                   ORDER BY ts_rank_cd(to_tsvector('english', r.content), q.query) DESC, r.id) AS rank_ix
        FROM rag_documents r, websearch_to_tsquery('english', query_text) AS q(query)
        WHERE to_tsvector('english', r.content) @@ q.query
          AND (coalesce(filter, '{}') = '{}' OR r.metadata @> filter)
        ORDER BY rank_ix
        LIMIT match_count * 2
    ),
    semantic AS (
        SELECT m.id, row_number() OVER (ORDER BY m.similarity DESC, m.id) AS rank_ix
        FROM match_rag_documents(query_embedding, match_count * 2, filter) m
    )
    SELECT r.id, r.document_id, r.content, r.metadata,
           (coalesce(1.0 / (rrf_k + f.rank_ix), 0.0) * full_text_weight
            + coalesce(1.0 / (rrf_k + s.rank_ix), 0.0) * semantic_weight)::double precision AS score
    FROM full_text f
    FULL OUTER JOIN semantic s ON f.id = s.id
    JOIN rag_documents r ON r.id = coalesce(f.id, s.id)
    ORDER BY score DESC, r.id
    LIMIT match_count
$$;
