-- supabase: 20261130000003
-- Version 3: reserved. A placeholder for the migration 0003 being written on another branch; it is
-- replaced by that migration when the branches are merged.

INSERT INTO {{migrations_table}} (version, name) VALUES (3, 'reserved')
ON CONFLICT (version) DO NOTHING;
