-- Per-document rights: alice may write team/*, bob may only read it, carol has no right.
\set VERBOSITY default
\c - dba
SELECT collab.grant_access('alice', 'team/*', 'write');
SELECT collab.grant_access('bob', 'team/*', 'read');
SELECT collab.grant_access('nobody', 'team/*', 'read');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.grant_access('bob', 'team/*', 'owner');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.grant_access('bob', 'te*m/', 'read');
\echo :LAST_ERROR_SQLSTATE
-- Administrators may read the rules (nobody may write them but through the functions).
SELECT role, pattern, level FROM collab.access_rules ORDER BY 1, 2;
DELETE FROM collab.access_rules;
\echo :LAST_ERROR_SQLSTATE
SELECT collab.insert_text('team/plan', 'content', 0, 'Plan');
SELECT collab.insert_text('private', 'content', 0, 'Secret');

\c - alice
SELECT collab.insert_text('team/plan', 'content', 4, ' A');
SELECT collab.text('team/plan');
SELECT collab.insert_text('team/new', 'content', 0, 'created by alice');
SELECT collab.text('private');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.insert_text('private', 'content', 0, 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.compact('team/plan');
\echo :LAST_ERROR_SQLSTATE
SELECT name FROM collab.list_documents() ORDER BY 1;
SELECT collab.has_access('team/plan', 'write'), collab.has_access('private');

\c - bob
SELECT collab.text('team/plan');
SELECT seq, origin IS NULL AS via_sql FROM collab.log_entries('team/plan') ORDER BY seq;
-- A denied write stores nothing.
SELECT head_seq FROM collab.document_info('team/plan');
SELECT collab.insert_text('team/plan', 'content', 0, 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.apply_update('team/plan', collab.state('team/plan'));
\echo :LAST_ERROR_SQLSTATE
SELECT collab.apply_update('team/other', '\x0000');
\echo :LAST_ERROR_SQLSTATE
SELECT head_seq FROM collab.document_info('team/plan');
SELECT name FROM collab.list_documents() ORDER BY 1;

\c - carol
SELECT collab.text('team/plan');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.state_vector('team/plan');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.updates_since('team/plan', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.text_at('team/plan', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.document_info('team/plan');
\echo :LAST_ERROR_SQLSTATE
SELECT collab.broadcast('team/plan', '\x01');
\echo :LAST_ERROR_SQLSTATE
SELECT name FROM collab.list_documents();
SELECT collab.has_access('team/plan');

-- A right granted or revoked applies to the next call, in every session.
\c - dba
SELECT collab.grant_access('carol', 'team/plan', 'read');
\c - carol
SELECT collab.text('team/plan');
\c - dba
SELECT collab.revoke_access('carol', 'team/plan');
SELECT collab.revoke_access('carol', 'team/plan');
\c - carol
SELECT collab.text('team/plan');
\echo :LAST_ERROR_SQLSTATE

-- SET ROLE is honoured: the right is the current role's, not the login's (a superuser).
\c - postgres
SET ROLE carol;
SELECT collab.text('team/plan');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
