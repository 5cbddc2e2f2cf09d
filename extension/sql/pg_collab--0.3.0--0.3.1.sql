-- pg_collab 0.3.0 -> 0.3.1: the search index without GIN's pending list.
--
-- With fastupdate on, each re-indexed document's entries went to the index's pending list, and
-- every ~4 MB the writer that filled it merged the whole list into the index inside its own
-- transaction: hundreds of milliseconds during which a bridge's group commit, and every edit
-- queued behind it, waited. Without it each writer pays for its own entries (the library of
-- 0.3.1 also bounds how much of a writer's time re-indexing takes).

\echo Use "ALTER EXTENSION pg_collab UPDATE TO '0.3.1'" to load this file. \quit

ALTER INDEX @extschema@.texts_tsv SET (fastupdate = off);
-- Entries already pending stay in the list until merged: merge them now, once.
SELECT pg_catalog.gin_clean_pending_list('@extschema@.texts_tsv'::pg_catalog.regclass);
COMMENT ON INDEX @extschema@.texts_tsv IS
  'Full-text index of collab.texts for collab.search; fastupdate off, so that no writer merges '
  'a pending list that others filled.';
