-- Restoring a version: one new update that makes the document read as it did then (a version
-- of its own in the history), merged like any other update. Text here; XML, map and array
-- roots and concurrent edits in the #[pg_test]s and the unit tests of restore.rs.
\set VERBOSITY default
\c - alice
SELECT collab.insert_text('team/story', 'content', 0, 'Once upon a time') AS seq;
SELECT collab.insert_text('team/story', 'title', 0, 'Draft') AS seq;
SELECT collab.set_text('team/story', 'content', 'Once upon a time there was a cat') AS seq;
SELECT collab.set_text('team/story', 'content', 'Twice upon a time there was a dog') AS seq;
SELECT collab.insert_text('team/story', 'notes', 0, 'added later') AS seq;
SELECT collab.restore('team/story', 3) AS seq;
SELECT collab.text('team/story'), collab.text('team/story', 'title'), collab.text('team/story', 'notes');
SELECT seq, author, origin FROM collab.history('team/story', 5);
-- The restore is a version too: it can be restored back.
SELECT collab.restore('team/story', 5) AS seq;
SELECT collab.text('team/story'), collab.text('team/story', 'notes');
-- Already equal: nothing is written.
SELECT collab.restore('team/story', 7) AS seq;
-- Version 0 is the empty document.
SELECT collab.restore('team/story', 0) AS seq;
SELECT collab.to_json('team/story');
-- Only what was there is searchable.
SELECT count(*) FROM collab.search('cat');

-- Bad input, and rights: restoring needs the write right.
SELECT collab.restore('team/story', 99);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.restore('team/story', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.restore('team/story', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.restore('team/never', 1);
\echo :LAST_ERROR_SQLSTATE
\c - bob
SELECT collab.restore('team/story', 1);
\echo :LAST_ERROR_SQLSTATE
\c - dba
SELECT collab.prune('team/story', now() + interval '1 minute');
SELECT collab.insert_text('team/story', 'content', 0, 'x') AS seq;
SELECT collab.restore('team/story', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.delete_document('team/story');
SELECT collab.restore('team/story', 1);
\echo :LAST_ERROR_SQLSTATE
