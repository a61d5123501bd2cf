-- Who may call the queue: only the function owner and service_role (Supabase's service-role key).
-- Supabase's default privileges grant EXECUTE on new functions to anon and authenticated, which
-- would let anyone holding the public anon key claim, read or rewrite chunks over the REST API; so
-- EXECUTE is revoked from PUBLIC and from each of those roles by name. Roles that don't exist (a
-- plain PostgreSQL) are skipped. Applied by both the PostgreSQL store and the Supabase migration.
DO $grants$
DECLARE
    fn regprocedure;
    role_name text;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = '{{schema}}'::regnamespace AND p.proname LIKE 'embq\_%'
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
        FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
                EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', fn, role_name);
            END IF;
        END LOOP;
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', fn);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        -- The functions run with the caller's rights: service_role needs the tables (Supabase grants
        -- these already; a plain PostgreSQL may not).
        GRANT USAGE ON SCHEMA {{schema}} TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{chunks}}, {{documents}}, {{cache}} TO service_role;
        GRANT SELECT ON {{migrations_table}} TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{batch_jobs}} TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{model_migrations}} TO service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {{runs_table}}, {{workers_table}}, {{alerts_table}} TO service_role;
    END IF;
    -- The cache, the version table, the run history, the watchers and the alerts are the queue's own: not for
    -- the public API roles at all.
    FOREACH role_name IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{cache}}', role_name);
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{migrations_table}}', role_name);
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{batch_jobs}}', role_name);
            EXECUTE format('REVOKE ALL ON TABLE %s FROM %I', '{{model_migrations}}', role_name);
            EXECUTE format('REVOKE ALL ON TABLE %s, %s, %s FROM %I',
                           '{{runs_table}}', '{{workers_table}}', '{{alerts_table}}', role_name);
        END IF;
    END LOOP;
END
$grants$;
