-- The host's own tables, as the chatbot backend has them. Created only on the embedded database and by
-- the explicit first-time setup (`python batch_embedding_processor.py --setup`): on any other database a
-- table named in the settings that does not exist is an error naming the setting, never a new empty table.
-- Placeholders in double braces are validated, quoted identifiers (modules/stores/sql_templates.py).


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
    {{embedding}} {{vector}}({{dimensions}})
);
