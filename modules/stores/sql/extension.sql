-- pgvector, installed where it belongs before anything uses it: applied first by the PostgreSQL store,
-- which then reads the schema it lives in (every function names pgvector's objects with that schema).

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
