-- pg_collab 0.3.1 -> 0.4.0: a log row may hold several updates.
--
-- A batched write paid one heap tuple, one index entry and two WAL records per update, which
-- was half of collab.apply_updates' time (bench/RESULTS.md, "Ingest"). From 0.4.0 on,
-- consecutive updates of one write by one author share a row of up to about 1.8 kB: span says
-- how many it holds. Rows already stored hold one update each, which is what span's default
-- says, so adding the column rewrites nothing; its check reads the table once.
-- collab.prune now counts updates, not rows, and cuts history at the end of a row. New:
-- collab.search_backlog(), how far search is behind.

\echo Use "ALTER EXTENSION pg_collab UPDATE TO '0.4.0'" to load this file. \quit

ALTER TABLE @extschema@.updates ADD COLUMN span int NOT NULL DEFAULT 1 CHECK (span >= 1);

COMMENT ON TABLE @extschema@.updates IS
  'Append-only log of Yjs v1 updates, numbered per document from 1 without gaps. A row holds '
  'span updates from seq on: the update itself when span = 1, else each prefixed with its '
  'length as a lib0 varuint (Yjs writeVarUint8Array). Kept as history until collab.prune() '
  'drops it.';
COMMENT ON COLUMN @extschema@.updates.span IS
  'How many updates the row holds (sequences seq .. seq + span - 1): consecutive updates of one '
  'write by one author share a row of up to about 1.8 kB.';
COMMENT ON FUNCTION @extschema@.updates_since(text, bigint) IS
  'updates_since(doc, seq) -> setof (seq, update, origin, created_at). The updates after seq, '
  'one row each, for listeners catching up; from pruned history the first row is the floor '
  'checkpoint (origin ''checkpoint'').';
COMMENT ON FUNCTION @extschema@.prune(text, timestamptz) IS
  'prune(doc, before) -> bigint. Drops log rows and checkpoints older than before, keeping a '
  'checkpoint where history is cut (at the end of a log row). Returns the number of updates '
  'deleted.';

-- How far search is behind the writes (collab-bridge exports it as metrics).
CREATE FUNCTION "search_backlog"() RETURNS TABLE (
	"documents" bigint,  /* i64 */
	"oldest_write" timestamp with time zone  /* Option < pgrx :: datum :: TimestampWithTimeZone > */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'search_backlog_wrapper';
COMMENT ON FUNCTION search_backlog() IS
  'search_backlog() -> (documents, oldest_write). How far search is behind the writes: the '
  'documents whose searchable text is stale or missing, and when the oldest write not yet '
  'searchable was made (NULL: none). collab_admin and collab_bridge.';
-- Nothing for PUBLIC (functions are executable by PUBLIC when created).
REVOKE ALL ON FUNCTION search_backlog() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION search_backlog() TO collab_admin, collab_bridge;

-- Documents written before 0.3.0 (upgraded through pg_collab--0.2.0--0.3.0.sql) become
-- searchable now, with one decode each. Upgrade scripts that need the library run it last, once
-- the tables have this release's layout: the library is always the newest. For a database
-- already at 0.3.x this only re-indexes what its search lag left stale.
SELECT @extschema@.refresh_search();
