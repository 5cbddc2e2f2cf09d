-- Who wrote what: every update records its author (the SQL role, or what the application sets
-- in collab.author, or one author per update from a bridge), reported by collab.history and,
-- per run of characters, by collab.text_authors. collab.undo_author takes one author's
-- insertions out.
\set VERBOSITY default
\c - alice
SELECT collab.insert_text('team/notes', 'content', 0, 'Hello world') AS seq;
SET collab.author = 'ada@example.com';
SELECT collab.insert_text('team/notes', 'content', 5, ', dear') AS seq;
RESET collab.author;
\c - app
SELECT collab.insert_text('team/notes', 'content', 17, '!') AS seq;
SELECT seq, author, origin, bytes > 0 AS stored FROM collab.history('team/notes');
SELECT seq, author FROM collab.history('team/notes', 2);
SELECT * FROM collab.text_authors('team/notes');
-- A bridge passes its clients' token subjects, one per update (NULL: its own default).
\c - bridge
SELECT collab.apply_updates('team/copy', ARRAY[collab.state('team/notes'), collab.state('team/notes')], 'bridge-1/7', ARRAY['grace', NULL]) AS seq;
SELECT seq, author, origin FROM collab.history('team/copy');
SELECT * FROM collab.text_authors('team/copy');
-- The old three-argument form still works (bridges of 0.2.0 during a rolling upgrade).
SELECT collab.apply_updates('team/copy', ARRAY[collab.state('team/notes')], 'bridge-0/1') AS seq;
SELECT seq, author FROM collab.history('team/copy', 1);

-- Undo one author's changes: ada's ", dear" goes, what others wrote stays, even "my " that
-- alice typed inside ada's words.
\c - alice
SELECT collab.insert_text('team/notes', 'content', 7, 'my ') AS seq;
SELECT collab.text('team/notes');
SELECT collab.undo_author('team/notes', 'ada@example.com', 0) AS seq;
SELECT collab.text('team/notes');
SELECT * FROM collab.text_authors('team/notes');
SELECT seq, author, origin FROM collab.history('team/notes', 4);
-- Nothing of hers left: no new version.
SELECT collab.undo_author('team/notes', 'ada@example.com', 0) AS seq;

-- Bad input.
SELECT collab.apply_updates('team/copy', ARRAY[collab.state('team/notes')], 'x', ARRAY['a', 'b']);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.apply_updates('team/copy', ARRAY[collab.state('team/notes')], 'x', ARRAY['']);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.apply_updates('team/copy', ARRAY[collab.state('team/notes')], 'x', NULL);
\echo :LAST_ERROR_SQLSTATE
SET collab.author = E'eve\nroot';
SELECT collab.insert_text('team/notes', 'content', 0, 'x');
\echo :LAST_ERROR_SQLSTATE
RESET collab.author;
SELECT collab.insert_text('team/notes', 'content', 0, repeat('x', 0)) AS seq;
SELECT * FROM collab.text_authors('team/notes', 'meta');
SELECT collab.undo_author('team/notes', 'ada@example.com', 99);
\echo :LAST_ERROR_SQLSTATE
SELECT collab.undo_author('team/notes', NULL, 0);
\echo :LAST_ERROR_SQLSTATE
\c - carol
SELECT * FROM collab.history('team/notes');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.text_authors('team/notes');
\echo :LAST_ERROR_SQLSTATE
\c - bob
SELECT collab.undo_author('team/notes', 'alice', 0);
\echo :LAST_ERROR_SQLSTATE
