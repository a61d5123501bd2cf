-- The host's own tables, as the chatbot backend has them. Created only on the embedded database and by
-- the explicit first-time setup (`python batch_embedding_processor.py --setup`): on any other database a
-- table named in the settings that does not exist is an error naming the setting, never a new empty table.
-- Placeholders in double braces are validated, quoted identifiers (modules/stores/sql_templates.py).

-- pgvector goes into the `extensions` schema where there is one (Supabase's convention), else the default.
DO $vector$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector') THEN
        IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'extensions') THEN
            CREATE EXTENSION vector WITH SCHEMA extensions;
        ELSE
            CREATE EXTENSION vector;
        END IF;
    END IF;
END
$vector$;

CREATE TABLE IF NOT EXISTS {{documents}} (
    id          text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    name        text,
    type        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {{chunks}} (
    id           text PRIMARY KEY DEFAULT gen_random_uuid()::text,
    doc_id       text NOT NULL REFERENCES {{documents}} (id) ON DELETE CASCADE,
    chunk_index  integer NOT NULL,
    {{content}}  text NOT NULL,
    {{embedding}} vector({{dimensions}})
);
