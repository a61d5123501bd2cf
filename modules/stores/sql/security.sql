-- Row-level security, and what the public API roles can reach. Supabase serves every table of an
-- exposed schema to its API roles: anon (anyone with the project's public anon key) and authenticated
-- (any signed-in user), and its default privileges grant them every right on each new table. So the
-- tables the queue creates get row-level security on, with no policy for those roles, and their
-- grants revoked. The service role (the program's key) bypasses RLS; a table's owner is not subject to
-- it. Host tables the host made itself are left exactly as they are; embq_table_access() lets the
-- self-test warn when anon can read them. Applied by the fresh install and by migration 0004.

-- The queue's own tables: always ours.
ALTER TABLE {{cache}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{migrations_table}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{batch_jobs}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{model_migrations}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{runs_table}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{workers_table}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{alerts_table}} ENABLE ROW LEVEL SECURITY;

-- The host tables, when the queue created them and nobody uses them yet: exactly what host_tables.sql
-- (and the Supabase file of version 1) creates, a documents table of (id, name, type, created_at) whose
-- text ids default to gen_random_uuid()::text, and chunks with text ids of the same default, both still
-- empty. A host's own tables differ; tables of that shape that already hold rows are a chatbot's
-- production data (version 1 created them long ago) and are left exactly as they are: turning RLS on
-- would silently cut off every reader that is not their owner. The self-test warns about those.
DO $rls$
DECLARE
    role_name text;
BEGIN
    IF (SELECT array_agg(a.attname::text || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attname::text)
        FROM pg_attribute a
        WHERE a.attrelid = '{{documents}}'::regclass AND a.attnum > 0 AND NOT a.attisdropped)
           = ARRAY['created_at timestamp with time zone', 'id text', 'name text', 'type text']
       AND (SELECT count(*) FROM pg_attribute a JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid IN ('{{documents}}'::regclass, '{{chunks_regclass}}'::regclass) AND a.attname = 'id'
              AND a.atttypid = 'text'::regtype AND pg_get_expr(d.adbin, d.adrelid) = '(gen_random_uuid())::text') = 2
       AND NOT EXISTS (SELECT 1 FROM {{documents}}) AND NOT EXISTS (SELECT 1 FROM {{chunks}})
    THEN
        ALTER TABLE {{documents}} ENABLE ROW LEVEL SECURITY;
        ALTER TABLE {{chunks}} ENABLE ROW LEVEL SECURITY;
        FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE ALL ON TABLE %s, %s FROM %I', '{{documents}}', '{{chunks}}', role_name);
            END IF;
        END LOOP;
    END IF;
END
$rls$;

-- What Supabase's API roles may read of the host tables: per table and role (roles that don't exist,
-- as on a plain PostgreSQL, give no rows), whether it holds SELECT, whether RLS is on, and how many
-- permissive policies let it (or PUBLIC) read. It can read rows when it holds SELECT and RLS is off,
-- or a policy lets it.
CREATE OR REPLACE FUNCTION {{schema}}.embq_table_access()
RETURNS TABLE (table_name text, role_name text, can_select boolean, row_security boolean, policies integer)
LANGUAGE sql STABLE
SET search_path = {{search_path}}
AS $$
    SELECT c.relname::text, r.rolname::text,
           has_table_privilege(r.oid, c.oid, 'SELECT'),
           c.relrowsecurity,
           (SELECT count(*)::integer FROM pg_policy p
            WHERE p.polrelid = c.oid AND p.polpermissive AND p.polcmd IN ('r', '*')
              AND (p.polroles = '{0}'::oid[] OR r.oid = ANY (p.polroles)))
    FROM pg_class c CROSS JOIN pg_roles r
    WHERE c.oid IN ('{{chunks_regclass}}'::regclass, '{{documents}}'::regclass)
      AND r.rolname IN ('anon', 'authenticated')
    ORDER BY 1, 2;
$$;
