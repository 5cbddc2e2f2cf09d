-- Deleting a document is final: no read, no write, no resync brings it back, until an
-- administrator recreates it on purpose.
\set VERBOSITY default
\c - app
SELECT collab.insert_text('doomed', 'content', 0, 'old text');
SELECT collab.state('doomed') AS old_state \gset
\c - dba
SELECT collab.delete_document('doomed');
SELECT collab.delete_document('doomed');
SELECT head_seq, deleted_at IS NOT NULL AS deleted FROM collab.document_info('doomed');
\c - app
SELECT collab.text('doomed');
\echo :LAST_ERROR_SQLSTATE
-- A stale client resyncing its whole copy.
SELECT collab.apply_update('doomed', :'old_state'::bytea);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.recreate_document('doomed');
\echo :LAST_ERROR_SQLSTATE
SELECT name FROM collab.list_documents() WHERE name = 'doomed';
\c - dba
SELECT collab.recreate_document('doomed');
\c - app
SELECT collab.text('doomed');
SELECT collab.insert_text('doomed', 'content', 0, 'new');
SELECT head_seq, deleted_at FROM collab.document_info('doomed');
