-- supabase: 20261130000002
-- Version 2: a version table, so that every later change to the queue's schema is applied once, in order,
-- on PostgreSQL (by the program, at start) and on Supabase (by `supabase db push`, from the file generated
-- from this one). A database without the table but with the queue's functions has version 1 (released
-- 2026-11-24).
--
-- Rules for every migration: it is idempotent (applying it twice changes nothing: Supabase users may apply a
-- version the program already applied); it never changes an existing function's arguments, result columns or
-- meaning, so that workers of the previous version keep running during a rolling upgrade: it adds the next
-- version beside it (embq_x_v2), and drops an old one only once no supported release calls it; and it ends by
-- recording itself.

CREATE TABLE IF NOT EXISTS {{migrations_table}} (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- The version a database has, for clients that cannot read the table (the Supabase REST path).
CREATE OR REPLACE FUNCTION {{schema}}.embq_schema_version()
RETURNS integer
LANGUAGE sql STABLE
SET search_path = {{search_path_v1}}
AS $$
    SELECT coalesce(max(m.version), 1) FROM {{migrations_table}} m;
$$;

DO $grants$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{migrations_table}}', role_name);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION {{schema}}.embq_schema_version() FROM %I', role_name);
        END IF;
    END LOOP;
    REVOKE EXECUTE ON FUNCTION {{schema}}.embq_schema_version() FROM PUBLIC;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION {{schema}}.embq_schema_version() TO service_role;
        GRANT SELECT ON {{migrations_table}} TO service_role;
    END IF;
END
$grants$;

INSERT INTO {{migrations_table}} (version, name) VALUES (1, 'released'), (2, 'schema_versions')
ON CONFLICT (version) DO NOTHING;
