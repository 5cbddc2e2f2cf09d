-- A tour of pg_collab in psql:  scripts/db.sh psql -f sql/examples/tour.sql
\set ON_ERROR_STOP on
\echo '--- edits in SQL are Yjs updates, appended to the log and announced with NOTIFY (sealed: psql shows ciphertext)'
LISTEN collab;
SELECT collab.insert_text('tour', 'content', 0, 'Hello world');
SELECT collab.insert_text('tour', 'content', 5, ',');
SELECT collab.set_text('tour', 'content', 'Hello, wide world!');
SELECT collab.text('tour');

\echo '--- documents, with head sequence, sizes and timestamps'
SELECT name, head_seq, updated_at FROM collab.list_documents();
SELECT head_seq, checkpoint_seq, update_count, log_bytes FROM collab.document_info('tour');

\echo '--- the log is history: every version stays readable'
SELECT seq, collab.text_at('tour', seq) FROM generate_series(0, 3) AS seq;
SELECT seq, octet_length(update) AS bytes, origin FROM collab.updates_since('tour', 0);

\echo '--- what a Yjs client needs to sync'
SELECT encode(collab.state_vector('tour'), 'hex') AS state_vector;
SELECT octet_length(collab.diff('tour', '\x00')) AS diff_for_an_empty_client;

\echo '--- every root type as JSON'
SELECT collab.to_json('tour');

\echo '--- a checkpoint, then bad input: a clean ERROR with a SQLSTATE, nothing stored'
SELECT collab.compact('tour');
\set ON_ERROR_STOP off
\set VERBOSITY verbose
SELECT collab.apply_update('tour', '\xdeadbeef');
SELECT collab.insert_text('tour', 'content', 999, 'x');
