-- 001_initial_schema.sql: the StudioOps AI schema (projects, cost plans, documents, retrieval, chat).
-- Built-ins only (gen_random_uuid() is core since PostgreSQL 13): no uuid-ossp or pgcrypto, so the same file runs
-- on the embedded server and on any managed PostgreSQL. The migration enables pgvector itself, so `db migrate`
-- works on a fresh database; on a managed server the extension may need to be allow-listed first.
CREATE EXTENSION IF NOT EXISTS vector;

-- updated_at is kept by the database, not by every caller.
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- Projects: one production for one client.
CREATE TABLE projects (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        varchar(255) NOT NULL CHECK (btrim(name) <> ''),
    client_name varchar(255),
    status      varchar(32) NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'active', 'on_hold', 'completed', 'cancelled')),
    description text,
    budget      numeric(14, 2) CHECK (budget >= 0),
    currency    char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Cost plans (and the quotes made from them). A plan has no meaning without its project: CASCADE.
CREATE TABLE plans (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        varchar(255) NOT NULL CHECK (btrim(name) <> ''),
    version     integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    status      varchar(32) NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'submitted', 'approved', 'rejected', 'archived')),
    currency    char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    margin_pct  numeric(5, 2) NOT NULL DEFAULT 0 CHECK (margin_pct >= 0 AND margin_pct <= 100),
    notes       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (project_id, name, version)
);

-- Priced line items. Money is numeric, never float; the line total is derived, so it cannot disagree.
CREATE TABLE plan_items (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_id     uuid NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    position    integer NOT NULL DEFAULT 0 CHECK (position >= 0),
    category    varchar(64) NOT NULL DEFAULT 'other'
                CHECK (category IN ('crew', 'equipment', 'location', 'post_production', 'talent',
                                    'travel', 'materials', 'other')),
    description text NOT NULL CHECK (btrim(description) <> ''),
    quantity    numeric(12, 3) NOT NULL DEFAULT 1 CHECK (quantity > 0),
    unit        varchar(32) NOT NULL DEFAULT 'unit',
    unit_price  numeric(14, 2) NOT NULL CHECK (unit_price >= 0),
    total       numeric(16, 2) GENERATED ALWAYS AS (round(quantity * unit_price, 2)) STORED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Documents live in object storage; this row is their catalogue entry. A document outlives its project's
-- deletion (SET NULL): contracts and invoices are records the studio must keep.
CREATE TABLE documents (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id     uuid REFERENCES projects (id) ON DELETE SET NULL,
    title          varchar(500) NOT NULL CHECK (btrim(title) <> ''),
    kind           varchar(32) NOT NULL DEFAULT 'other'
                   CHECK (kind IN ('brief', 'script', 'quote', 'invoice', 'contract', 'report', 'other')),
    status         varchar(32) NOT NULL DEFAULT 'uploaded'
                   CHECK (status IN ('uploaded', 'processing', 'ready', 'failed')),
    storage_bucket varchar(63),
    storage_key    varchar(1024),
    mime_type      varchar(255),
    size_bytes     bigint CHECK (size_bytes >= 0),
    sha256         char(64),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (storage_bucket, storage_key)
);

-- Chunks are derived from their document: CASCADE.
CREATE TABLE doc_chunks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index integer NOT NULL CHECK (chunk_index >= 0),
    text        text NOT NULL,
    token_count integer CHECK (token_count >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (document_id, chunk_index)
);

-- Retrieval entries: content plus its embedding (1536 dimensions, as OpenAI's text-embedding-3-small).
-- Derived from a document or chunk when they exist: CASCADE; free-standing entries have neither.
CREATE TABLE rag_documents (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id uuid REFERENCES documents (id) ON DELETE CASCADE,
    chunk_id    uuid REFERENCES doc_chunks (id) ON DELETE CASCADE,
    content     text NOT NULL,
    metadata    jsonb NOT NULL DEFAULT '{}'::jsonb,
    embedding   vector(1536),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A chat outlives its project's deletion (SET NULL); its messages do not outlive the chat (CASCADE).
CREATE TABLE chat_sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid REFERENCES projects (id) ON DELETE SET NULL,
    title       varchar(255) NOT NULL DEFAULT 'New chat',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE chat_messages (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id    uuid NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE,
    role          varchar(16) NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content       text NOT NULL,
    model         varchar(128),
    input_tokens  integer CHECK (input_tokens >= 0),
    output_tokens integer CHECK (output_tokens >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- updated_at triggers, one per table.
CREATE TRIGGER projects_updated_at BEFORE UPDATE ON projects FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER plans_updated_at BEFORE UPDATE ON plans FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER plan_items_updated_at BEFORE UPDATE ON plan_items FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER documents_updated_at BEFORE UPDATE ON documents FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER doc_chunks_updated_at BEFORE UPDATE ON doc_chunks FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER rag_documents_updated_at BEFORE UPDATE ON rag_documents
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER chat_sessions_updated_at BEFORE UPDATE ON chat_sessions
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER chat_messages_updated_at BEFORE UPDATE ON chat_messages
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- The design document's btree indexes (plus the foreign keys it left out).
CREATE INDEX idx_projects_created_at ON projects (created_at);
CREATE INDEX idx_plans_project_id ON plans (project_id);
CREATE INDEX idx_plan_items_plan_id ON plan_items (plan_id);
CREATE INDEX idx_documents_project_id ON documents (project_id);
CREATE INDEX idx_doc_chunks_document_id ON doc_chunks (document_id);
CREATE INDEX idx_rag_documents_document_id ON rag_documents (document_id);
CREATE INDEX idx_rag_documents_chunk_id ON rag_documents (chunk_id);
CREATE INDEX idx_chat_sessions_project_id ON chat_sessions (project_id);
CREATE INDEX idx_chat_messages_session_id ON chat_messages (session_id, created_at);

-- Full-text search.
CREATE INDEX idx_doc_chunks_text_fts ON doc_chunks USING gin (to_tsvector('english', text));
CREATE INDEX idx_rag_documents_content_fts ON rag_documents USING gin (to_tsvector('english', content));

-- Vector search: HNSW, not the design document's ivfflat. An ivfflat index computes its list centroids from the
-- rows present when it is built; built here, on an empty table, its centroids are meaningless and recall stays
-- poor until someone remembers to REINDEX. HNSW needs no training data and keeps its quality as rows arrive.
CREATE INDEX idx_rag_documents_embedding ON rag_documents USING hnsw (embedding vector_cosine_ops);
