-- Nothing is usable by PUBLIC; each collab_* role gets exactly its functions.
\set VERBOSITY default
SELECT p.oid::regprocedure AS function,
       p.prosecdef AS security_definer,
       array_to_string(p.proconfig, ', ') AS config,
       (SELECT string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                          ', ' ORDER BY 1)
          FROM aclexplode(p.proacl) a WHERE a.privilege_type = 'EXECUTE'
           AND a.grantee <> p.proowner) AS executable_by
FROM pg_proc p WHERE p.pronamespace = 'collab'::regnamespace
ORDER BY p.proname, p.pronargs;  -- overloads (apply_updates) in a stable order
-- Tables and sequences: nobody but the owner may write; administrators may read the rules.
SELECT c.relname, c.relkind,
       (SELECT string_agg(a.grantee::regrole::text || ':' || a.privilege_type, ', ' ORDER BY 1)
          FROM aclexplode(c.relacl) a WHERE a.grantee <> c.relowner) AS granted
FROM pg_class c WHERE c.relnamespace = 'collab'::regnamespace AND c.relkind IN ('r', 'S')
ORDER BY 1;
SELECT n.nspacl FROM pg_namespace n WHERE nspname = 'collab';
-- Role memberships the install script made.
SELECT r.rolname, array_agg(m.rolname ORDER BY m.rolname) AS member_of
FROM pg_roles r JOIN pg_auth_members am ON am.member = r.oid JOIN pg_roles m ON m.oid = am.roleid
WHERE r.rolname LIKE 'collab\_%' GROUP BY 1 ORDER BY 1;

-- A role that may only connect can do nothing.
\c - mallory
SELECT collab.text('notes');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.documents;
\echo :LAST_ERROR_SQLSTATE

-- An application edits and reads; it cannot touch the tables, even to read them.
\c - app
SELECT collab.insert_text('notes', 'content', 0, 'Hello');
SELECT collab.text('notes');
SELECT name, head_seq FROM collab.list_documents();
SELECT head_seq, history_from, deleted_at FROM collab.document_info('notes');
UPDATE collab.documents SET head_seq = head_seq + 1;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO collab.updates (doc_id, seq, update) VALUES (1, 2, '\x0000');
\echo :LAST_ERROR_SQLSTATE
DELETE FROM collab.checkpoints;
\echo :LAST_ERROR_SQLSTATE
-- Administration is not editing.
SELECT collab.compact('notes');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.prune('notes', now());
\echo :LAST_ERROR_SQLSTATE
SELECT collab.delete_document('notes');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.grant_access('app', '*', 'admin');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.notification_keys();
\echo :LAST_ERROR_SQLSTATE
-- A function cannot be redirected by the caller's search_path.
CREATE TEMP TABLE documents (name text, head_seq bigint);
SET search_path = pg_temp, collab, public;
SELECT collab.text('notes');
RESET search_path;

-- A reader reads, and only reads.
\c - viewer
SELECT collab.text('notes');
SELECT collab.insert_text('notes', 'content', 5, '!');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.broadcast('notes', '\x01');
\echo :LAST_ERROR_SQLSTATE

-- The administrator.
\c - dba
SELECT collab.compact('notes');
SELECT collab.prune('notes', now() - interval '1 day');

-- The bridge: read, write, broadcast, the notification keys; nothing else.
\c - bridge
SELECT collab.apply_update('notes', collab.state('notes')) > 0 AS wrote;
SELECT count(*) AS keys, min(octet_length(key)) AS key_bytes FROM collab.notification_keys();
SELECT collab.compact('notes');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.notification_keys;
\echo :LAST_ERROR_SQLSTATE

-- Settings that cost memory or change behaviour: bounded by the DBA. (The first call loads
-- the library; before that, SET only makes a placeholder, checked when it loads.)
\c - app
SELECT collab.text('notes');
SET collab.max_update_bytes = '1GB';
\echo :LAST_ERROR_SQLSTATE
SET collab.compact_threshold = 0;
\echo :LAST_ERROR_SQLSTATE
SET collab.cache_documents_limit = 100000;
\echo :LAST_ERROR_SQLSTATE
SET collab.cache_documents = 100000;  -- allowed, but capped by collab.cache_documents_limit
SHOW collab.cache_documents_limit;
SHOW collab.max_update_bytes;
