-- Full-text search over every document's plain text: ranking, phrases, per-document rights,
-- the language a document is indexed in, a document changed after indexing, bad input.
\set VERBOSITY default
\c - dba
SELECT collab.insert_text('team/cats', 'content', 0,
  'Cats purr. Cats sleep all day, and the cats are sleeping now.') AS seq;
SELECT collab.insert_text('team/dogs', 'content', 0, 'Dogs bark at cats.') AS seq;
SELECT collab.insert_text('private/diary', 'content', 0, 'I dreamt of cats again.') AS seq;
-- Every text root is indexed, not only content.
SELECT collab.insert_text('team/dogs', 'title', 0, 'Barking') AS seq;

-- Best rank first (more and closer matches), with the matches marked in the snippet.
SELECT name, rank > 0 AS ranked, snippet FROM collab.search('cats');
SELECT name FROM collab.search('"cats sleep"');
SELECT name FROM collab.search('purr or bark') ORDER BY name;
SELECT name FROM collab.search('cats -dogs') ORDER BY name;
SELECT name, snippet FROM collab.search('barking');
SELECT name FROM collab.search('cats', lim => 1);

-- Only what the caller may read: bob reads team/*, carol nothing; readers see everything.
\c - bob
SELECT name FROM collab.search('cats') ORDER BY name;
\c - carol
SELECT count(*) FROM collab.search('cats');
\c - viewer
SELECT name FROM collab.search('cats') ORDER BY name;
-- Readers may join the indexed text with their own tables; others may not.
SELECT name, seq, language FROM collab.document_texts WHERE tsv @@ 'purr'::tsquery;
\c - alice
SELECT name FROM collab.document_texts;
\echo :LAST_ERROR_SQLSTATE

-- A document changed after indexing is found by its new words, not its old ones, at commit.
SELECT collab.set_text('team/dogs', 'content', 'Dogs howl at the moon.') AS seq;
SELECT name FROM collab.search('moon');
SELECT name FROM collab.search('bark');
BEGIN;
SELECT collab.set_text('team/dogs', 'content', 'Dogs bark again.') AS seq;
ROLLBACK;
SELECT name FROM collab.search('bark');

-- Language: documents are indexed in 'simple' until set; English stems "sleeping" to "sleep".
SELECT name FROM collab.search('sleep');
SELECT collab.set_search_language('team/cats', 'english');
SELECT name FROM collab.search('sleep', 'english');
SELECT name FROM collab.search('sleep');
SELECT collab.set_search_language('team/none', 'english');
\c - bob
SELECT collab.set_search_language('team/cats', 'simple');
\echo :LAST_ERROR_SQLSTATE

-- Bad input: a clean error with its SQLSTATE.
SELECT * FROM collab.search(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.search('cats', 'klingon');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.search('cats', lim => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM collab.search('cats', lim => 100000);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM collab.search('');
SELECT count(*) FROM collab.search('!!! & | <->');
\c - mallory
SELECT * FROM collab.search('cats');
\echo :LAST_ERROR_SQLSTATE
\c - dba
SELECT collab.refresh_search();
-- Under a search lag the second write leaves the text stale, and refresh_search with the same
-- lag leaves a document written within it to its writers; without a lag it indexes it.
SET collab.search_lag = 60000;
SELECT collab.set_text('lagged', 'content', 'first words') > 0 AS written;
SELECT collab.set_text('lagged', 'content', 'second zebra') > 0 AS written;
SELECT count(*) AS zebras FROM collab.search('zebra');
SELECT collab.refresh_search();
SET collab.search_lag = 0;
SELECT collab.refresh_search();
SELECT name FROM collab.search('zebra');
\c - app
SELECT collab.refresh_search();
\echo :LAST_ERROR_SQLSTATE
-- A lagging writer spends at most a tenth of its time indexing (after a few ms saved up): of
-- three large documents written in one transaction, the first is searchable at commit, and
-- the others wait for the writer's next turns or refresh_search.
\c - dba
SET collab.search_lag = 60000;
BEGIN;
SELECT bool_and(collab.set_text('big-' || i, 'content', repeat('wombat' || i || ' ', 40000)) > 0)
  AS written FROM generate_series(1, 3) i;
COMMIT;
SELECT name FROM collab.search('wombat1 or wombat2 or wombat3');
SET collab.search_lag = 0;
SELECT collab.refresh_search();
SELECT name FROM collab.search('wombat1 or wombat2 or wombat3') ORDER BY name;
