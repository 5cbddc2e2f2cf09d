-- pg_collab schema: documents, their append-only update log, checkpoints, per-document access
-- rules, the notification keys, and the triggers. Functions are generated from Rust
-- (extension/src/api); finalize.sql documents them and sets every privilege.
--
-- Every table belongs to the extension's owner and is granted to nobody: applications go
-- through the functions (see the README's "Security"). The trigger functions run with a fixed
-- search_path and schema-qualify everything.

CREATE TABLE documents (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE
                   CHECK (char_length(name) BETWEEN 1 AND 255 AND name !~ '[[:cntrl:]]'),
    head_seq       bigint NOT NULL DEFAULT 0,
    checkpoint_seq bigint NOT NULL DEFAULT 0,
    history_from   bigint NOT NULL DEFAULT 0,
    update_count   bigint NOT NULL DEFAULT 0,
    log_bytes      bigint NOT NULL DEFAULT 0,
    tail_bytes     bigint NOT NULL DEFAULT 0,
    state_bytes    bigint NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
) WITH (fillfactor = 50);  -- every write updates its row: leave room for HOT updates

-- No foreign key to documents: writers hold the document row lock and the per-row RI trigger
-- would cost more than the insert itself on batched ingest. Deletion cascades by trigger.
CREATE TABLE updates (
    doc_id     bigint NOT NULL,
    seq        bigint NOT NULL,
    update     bytea NOT NULL,
    origin     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    author     text,
    -- The row holds updates seq .. seq + span - 1 (a pack: extension/src/pack.rs). Last, as
    -- the 0.4.0 upgrade added it.
    span       int NOT NULL DEFAULT 1 CHECK (span >= 1),
    PRIMARY KEY (doc_id, seq)
);

CREATE TABLE checkpoints (
    doc_id     bigint NOT NULL,
    seq        bigint NOT NULL,
    state      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, seq)
);

-- Checkpoints are whole document states (100 kB to several MB) and are written inside a
-- client's write, under the document's row lock: lz4 compresses them about 7x faster than
-- PostgreSQL's default pglz and reads them back 5x faster, for about 15% more space (measured
-- on the editing traces: bench/RESULTS.md). Large updates (pastes) gain the same way; small
-- ones are never compressed. A server built without lz4 keeps its default.
DO $lz4$
BEGIN
    ALTER TABLE @extschema@.checkpoints ALTER COLUMN state SET COMPRESSION lz4;
    ALTER TABLE @extschema@.updates ALTER COLUMN update SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'pg_collab: this server has no lz4; checkpoints keep the default compression';
END
$lz4$;

COMMENT ON TABLE documents IS
  'One row per collaborative document (a Yjs room), created on first write. head_seq is the '
  'last log sequence; checkpoint_seq the newest checkpoint; history_from the sequence below '
  'which history was pruned; sizes in bytes (tail_bytes: log bytes after the newest checkpoint).';
COMMENT ON TABLE updates IS
  'Append-only log of Yjs v1 updates, numbered per document from 1 without gaps. A row holds '
  'span updates from seq on: the update itself when span = 1, else each prefixed with its '
  'length as a lib0 varuint (Yjs writeVarUint8Array). Kept as history until collab.prune() '
  'drops it.';
COMMENT ON TABLE checkpoints IS
  'Merged document state as of a sequence (Yjs v1 update); reads start from the newest one.';
-- Who may do what with which documents, beyond the collab_reader / collab_writer /
-- collab_admin roles (which cover every document). A role's right on a document is the highest
-- level of the rules for the roles it has the privileges of whose pattern matches the name.
CREATE TABLE access_rules (
    role       name NOT NULL,
    pattern    text NOT NULL CHECK (pattern <> '' AND (pattern = '*' OR
                                    position('*' IN left(pattern, -1)) = 0)),
    level      text NOT NULL CHECK (level IN ('read', 'write', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, pattern)
);

-- Keys that seal notifications (see notify.rs). Not dumped: a restored database makes its own
-- at CREATE EXTENSION, and bridges fetch it.
CREATE TABLE notification_keys (
    id         int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key        bytea NOT NULL CHECK (octet_length(key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE access_rules IS
  'Per-document rights: role (and its members) may read/write/admin the documents whose name '
  'matches pattern (''*'' every document, ''prefix*'' names starting with prefix, else the exact '
  'name). Change it with collab.grant_access / collab.revoke_access.';
COMMENT ON TABLE notification_keys IS
  'XChaCha20-Poly1305 keys sealing the notifications on channel collab (newest in use). Readable '
  'only by the owner and, through collab.notification_keys(), by collab_bridge.';
COMMENT ON COLUMN documents.deleted_at IS
  'Set when collab.delete_document deleted the document: its log is gone and the name stays '
  'refused until collab.recreate_document.';
COMMENT ON COLUMN documents.name IS 'Document name: the room name Yjs clients use (1-255 characters, no control characters).';
COMMENT ON COLUMN updates.origin IS 'Free-form tag of the writer (e.g. a bridge connection), echoed in notifications.';

COMMENT ON COLUMN updates.author IS
  'Who made the update: the token subject for bridge writes, collab.author or the SQL role for '
  'SQL edits (NULL: written before 0.3.0).';
COMMENT ON COLUMN updates.span IS
  'How many updates the row holds (sequences seq .. seq + span - 1): consecutive updates of one '
  'write by one author share a row of up to about 1.8 kB.';

-- The plain text of every document (all text and XML roots), for full-text search, written by
-- the writes themselves (see extension/src/api/search.rs): current at commit, or within
-- collab.search_lag. tsv is computed by the writer only when the text changed (a generated
-- column would be recomputed at every update). Derived data, but dumped so a restore is
-- searchable at once.
CREATE TABLE texts (
    doc_id     bigint PRIMARY KEY,
    seq        bigint NOT NULL,
    language   regconfig NOT NULL DEFAULT 'pg_catalog.simple',
    body       text NOT NULL,
    tsv        tsvector NOT NULL,
    indexed_at timestamptz NOT NULL DEFAULT now()
);
-- fastupdate off (0.3.1): with GIN's pending list, each re-indexed document (a GIN entry per
-- distinct word, tens of thousands for a large one) went to the list, and every ~4 MB the
-- writer that filled it merged the whole list into the index inside its own transaction:
-- hundreds of milliseconds during which a bridge's group commit, and every edit queued behind
-- it, waited. Without it each writer pays for its own entries, and searches never scan a list.
CREATE INDEX texts_tsv ON texts USING gin (tsv) WITH (fastupdate = off);
COMMENT ON INDEX texts_tsv IS
  'Full-text index of collab.texts for collab.search; fastupdate off, so that no writer merges '
  'a pending list that others filled.';

COMMENT ON TABLE texts IS
  'Plain text of each document (text roots, and the text content of XML roots, at most 256 kB), '
  'refreshed by the writes (at commit, or within collab.search_lag); tsv is its tsvector in the '
  'document''s language. Search with collab.search; readers join it through the view '
  'collab.document_texts.';
COMMENT ON COLUMN texts.seq IS
  'The head sequence the text was taken at (below the document''s head_seq: stale, refreshed '
  'within collab.search_lag).';
COMMENT ON COLUMN texts.language IS
  'Text search configuration of the document (collab.set_search_language).';

-- What collab_reader (who may read every document) joins with application tables.
CREATE VIEW document_texts AS
    SELECT d.name, t.seq, t.language, t.body, t.tsv, t.indexed_at
    FROM @extschema@.texts t JOIN @extschema@.documents d ON d.id = t.doc_id
    WHERE d.deleted_at IS NULL;
COMMENT ON VIEW document_texts IS
  'Every live document''s indexed plain text and tsvector, by name, for joins with application '
  'tables (collab_reader). Roles with per-document rights use collab.search.';

-- plpgsql resolves the Rust functions it calls at run time, so they may be created later.
CREATE FUNCTION _notify_updates() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload text;
BEGIN
    -- The writer (collab.apply_update(s) or an SQL edit) left the batch's payload for us:
    -- nothing is re-read or re-merged here, and no transition table is captured. NULL: rows
    -- the owner inserted directly (a restore), which nobody needs to hear about.
    payload := @extschema@._take_notification();
    IF payload IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify('collab', payload);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER notify_updates
    AFTER INSERT ON updates
    FOR EACH STATEMENT EXECUTE FUNCTION _notify_updates();

-- collab.delete_document keeps the row as a tombstone; this covers the owner deleting rows
-- (collab.recreate_document, maintenance).
CREATE FUNCTION _delete_document() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM @extschema@.updates WHERE doc_id = OLD.id;
    DELETE FROM @extschema@.checkpoints WHERE doc_id = OLD.id;
    DELETE FROM @extschema@.texts WHERE doc_id = OLD.id;
    RETURN OLD;
END
$$;

CREATE TRIGGER delete_document
    AFTER DELETE ON documents
    FOR EACH ROW EXECUTE FUNCTION _delete_document();

-- Every backend caches the rules and the key; a change tells them all at commit.
CREATE FUNCTION _rules_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM @extschema@._invalidate(TG_RELID);
    RETURN NULL;
END
$$;

CREATE TRIGGER rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON access_rules
    FOR EACH STATEMENT EXECUTE FUNCTION _rules_changed();
CREATE TRIGGER keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON notification_keys
    FOR EACH STATEMENT EXECUTE FUNCTION _rules_changed();

-- pg_dump keeps the documents, their log and checkpoints, the rules and the id sequence.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.documents', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.updates', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.access_rules', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.documents_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.texts', '');

COMMENT ON FUNCTION _notify_updates() IS
  'Statement trigger on collab.updates: one NOTIFY on channel collab per batch, sealed with the '
  'notification key (see the README). Sent at commit only. Rows not written by the collab '
  'functions are refused, except from the owner (a restore), which are not notified.';
COMMENT ON FUNCTION _delete_document() IS
  'Row trigger on collab.documents: removes the log and checkpoints of a deleted row.';
COMMENT ON FUNCTION _rules_changed() IS
  'Statement trigger on collab.access_rules and collab.notification_keys: every backend reloads '
  'its cached rules and key after the change commits.';
