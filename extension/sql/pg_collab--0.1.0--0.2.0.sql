-- pg_collab 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_collab UPDATE).
--
-- 0.2.0 makes the extension fit a shared database: nothing for PUBLIC, the collab_* roles,
-- per-document rights (collab.access_rules), functions with a fixed search_path that check
-- the caller's right, sealed notifications (collab.notification_keys), tombstones for deleted
-- documents, and the tables registered for pg_dump. Documents and their history are kept as
-- they are: the log format did not change (checkpoints and large updates written from now on
-- are compressed with lz4; existing rows keep their compression until rewritten).
--
-- Released upgrade scripts are never edited; the next change gets pg_collab--0.2.0--<next>.sql.

\echo Use "ALTER EXTENSION pg_collab UPDATE" to load this file. \quit

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

ALTER TABLE @extschema@.documents ADD COLUMN deleted_at timestamptz;
COMMENT ON COLUMN @extschema@.documents.deleted_at IS
  'Set when collab.delete_document deleted the document: its log is gone and the name stays '
  'refused until collab.recreate_document.';

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

-- plpgsql resolves the Rust functions it calls at run time, so they may be created later.
CREATE OR REPLACE FUNCTION _notify_updates() RETURNS trigger
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

-- collab.delete_document keeps the row as a tombstone; this covers the owner deleting rows
-- (collab.recreate_document, maintenance).
CREATE OR REPLACE FUNCTION _delete_document() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM @extschema@.updates WHERE doc_id = OLD.id;
    DELETE FROM @extschema@.checkpoints WHERE doc_id = OLD.id;
    RETURN OLD;
END
$$;

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

COMMENT ON FUNCTION _notify_updates() IS
  'Statement trigger on collab.updates: one NOTIFY on channel collab per batch, sealed with the '
  'notification key (see the README). Sent at commit only. Rows not written by the collab '
  'functions are refused, except from the owner (a restore), which are not notified.';
COMMENT ON FUNCTION _delete_document() IS
  'Row trigger on collab.documents: removes the log and checkpoints of a deleted row.';
COMMENT ON FUNCTION _rules_changed() IS
  'Statement trigger on collab.access_rules and collab.notification_keys: every backend reloads '
  'its cached rules and key after the change commits.';

-- The functions generated from Rust: every one now runs with a fixed search_path and checks
-- the caller's right; the new ones are created.
-- extension/src/rights.rs:319
-- pg_collab::rights::_invalidate
CREATE OR REPLACE FUNCTION "_invalidate"(
	"table" oid /* pg_sys :: Oid */
) RETURNS void
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_invalidate_wrapper';

-- extension/src/api/history.rs:162
-- pg_collab::api::history::_take_notification
CREATE OR REPLACE FUNCTION "_take_notification"() RETURNS TEXT /* Option < String > */
STRICT
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_take_notification_wrapper';

-- extension/src/api/write.rs:36
-- pg_collab::api::write::apply_update
CREATE OR REPLACE FUNCTION "apply_update"(
	"doc" TEXT, /* Option < & str > */
	"update" bytea, /* Option < & [u8] > */
	"origin" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'apply_update_wrapper';

-- extension/src/api/write.rs:53
-- pg_collab::api::write::apply_updates
CREATE OR REPLACE FUNCTION "apply_updates"(
	"doc" TEXT, /* Option < & str > */
	"updates" bytea[], /* :: std :: option :: Option < Array < & [u8] > > */
	"origin" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS bigint /* i64 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'apply_updates_wrapper';

-- extension/src/api/history.rs:144
-- pg_collab::api::history::broadcast
CREATE OR REPLACE FUNCTION "broadcast"(
	"doc" TEXT, /* Option < & str > */
	"payload" bytea, /* Option < & [u8] > */
	"origin" TEXT DEFAULT NULL /* Option < & str > */
) RETURNS void
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'broadcast_wrapper';

-- extension/src/api/history.rs:43
-- pg_collab::api::history::compact
CREATE OR REPLACE FUNCTION "compact"(
	"doc" TEXT /* Option < & str > */
) RETURNS bigint /* i64 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'compact_wrapper';

-- extension/src/api/write.rs:140
-- pg_collab::api::write::delete_document
CREATE OR REPLACE FUNCTION "delete_document"(
	"doc" TEXT /* Option < & str > */
) RETURNS bool /* bool */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'delete_document_wrapper';

-- extension/src/api/write.rs:101
-- pg_collab::api::write::delete_text
CREATE OR REPLACE FUNCTION "delete_text"(
	"doc" TEXT, /* Option < & str > */
	"field" TEXT, /* Option < & str > */
	"position" INT, /* Option < i32 > */
	"length" INT /* Option < i32 > */
) RETURNS bigint /* i64 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'delete_text_wrapper';

-- extension/src/api/read.rs:24
-- pg_collab::api::read::diff
CREATE OR REPLACE FUNCTION "diff"(
	"doc" TEXT, /* Option < & str > */
	"state_vector" bytea /* Option < & [u8] > */
) RETURNS bytea /* Vec < u8 > */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'diff_wrapper';

-- extension/src/api/info.rs:19
-- pg_collab::api::info::document_info
CREATE OR REPLACE FUNCTION "document_info"(
	"doc" TEXT /* Option < & str > */
) RETURNS TABLE (
	"head_seq" bigint,  /* i64 */
	"checkpoint_seq" bigint,  /* i64 */
	"history_from" bigint,  /* i64 */
	"update_count" bigint,  /* i64 */
	"log_bytes" bigint,  /* i64 */
	"created_at" timestamp with time zone,  /* Ts */
	"updated_at" timestamp with time zone,  /* Ts */
	"deleted_at" timestamp with time zone  /* Ts */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'document_info_wrapper';

-- extension/src/api/admin.rs:29
-- pg_collab::api::admin::grant_access
CREATE OR REPLACE FUNCTION "grant_access"(
	"role" TEXT, /* Option < & str > */
	"pattern" TEXT, /* Option < & str > */
	"level" TEXT DEFAULT 'write' /* Option < & str > */
) RETURNS void
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'grant_access_wrapper';

-- extension/src/api/admin.rs:149
-- pg_collab::api::admin::has_access
CREATE OR REPLACE FUNCTION "has_access"(
	"doc" TEXT, /* Option < & str > */
	"level" TEXT DEFAULT 'read' /* Option < & str > */
) RETURNS bool /* bool */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'has_access_wrapper';

-- extension/src/api/write.rs:80
-- pg_collab::api::write::insert_text
CREATE OR REPLACE FUNCTION "insert_text"(
	"doc" TEXT, /* Option < & str > */
	"field" TEXT, /* Option < & str > */
	"position" INT, /* Option < i32 > */
	"value" TEXT /* Option < & str > */
) RETURNS bigint /* i64 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'insert_text_wrapper';

-- extension/src/api/info.rs:71
-- pg_collab::api::info::list_documents
CREATE OR REPLACE FUNCTION "list_documents"(
	"lim" bigint DEFAULT 100 /* Option < i64 > */
) RETURNS TABLE (
	"name" TEXT,  /* String */
	"head_seq" bigint,  /* i64 */
	"updated_at" timestamp with time zone  /* Ts */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'list_documents_wrapper';

-- extension/src/api/info.rs:131
-- pg_collab::api::info::log_entries
CREATE OR REPLACE FUNCTION "log_entries"(
	"doc" TEXT, /* Option < & str > */
	"after" bigint DEFAULT 0 /* Option < i64 > */
) RETURNS TABLE (
	"seq" bigint,  /* i64 */
	"origin" TEXT,  /* Option < String > */
	"created_at" timestamp with time zone,  /* Ts */
	"bytes" bigint  /* i64 */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'log_entries_wrapper';

-- extension/src/api/admin.rs:110
-- pg_collab::api::admin::notification_keys
CREATE OR REPLACE FUNCTION "notification_keys"() RETURNS TABLE (
	"id" INT,  /* i32 */
	"key" bytea  /* Vec < u8 > */
)
STRICT STABLE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'notification_keys_wrapper';

-- extension/src/api/history.rs:129
-- pg_collab::api::history::prune
CREATE OR REPLACE FUNCTION "prune"(
	"doc" TEXT, /* Option < & str > */
	"before" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* i64 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'prune_wrapper';

-- extension/src/api/admin.rs:137
-- pg_collab::api::admin::recreate_document
CREATE OR REPLACE FUNCTION "recreate_document"(
	"doc" TEXT /* Option < & str > */
) RETURNS bool /* bool */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'recreate_document_wrapper';

-- extension/src/api/admin.rs:66
-- pg_collab::api::admin::revoke_access
CREATE OR REPLACE FUNCTION "revoke_access"(
	"role" TEXT, /* Option < & str > */
	"pattern" TEXT /* Option < & str > */
) RETURNS bool /* bool */
SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'revoke_access_wrapper';

-- extension/src/api/admin.rs:86
-- pg_collab::api::admin::rotate_notification_key
CREATE OR REPLACE FUNCTION "rotate_notification_key"() RETURNS INT /* i32 */
STRICT SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rotate_notification_key_wrapper';

-- extension/src/api/write.rs:125
-- pg_collab::api::write::set_text
CREATE OR REPLACE FUNCTION "set_text"(
	"doc" TEXT, /* Option < & str > */
	"field" TEXT, /* Option < & str > */
	"new_text" TEXT /* Option < & str > */
) RETURNS bigint /* i64 */
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_text_wrapper';

-- extension/src/api/read.rs:10
-- pg_collab::api::read::state
CREATE OR REPLACE FUNCTION "state"(
	"doc" TEXT /* Option < & str > */
) RETURNS bytea /* Vec < u8 > */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'state_wrapper';

-- extension/src/api/history.rs:67
-- pg_collab::api::history::state_at
CREATE OR REPLACE FUNCTION "state_at"(
	"doc" TEXT, /* Option < & str > */
	"seq" bigint /* Option < i64 > */
) RETURNS bytea /* Vec < u8 > */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'state_at_wrapper';

-- extension/src/api/read.rs:17
-- pg_collab::api::read::state_vector
CREATE OR REPLACE FUNCTION "state_vector"(
	"doc" TEXT /* Option < & str > */
) RETURNS bytea /* Vec < u8 > */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'state_vector_wrapper';

-- extension/src/api/read.rs:37
-- pg_collab::api::read::text
CREATE OR REPLACE FUNCTION "text"(
	"doc" TEXT, /* Option < & str > */
	"field" TEXT DEFAULT 'content' /* Option < & str > */
) RETURNS TEXT /* String */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'text_wrapper';

-- extension/src/api/history.rs:79
-- pg_collab::api::history::text_at
CREATE OR REPLACE FUNCTION "text_at"(
	"doc" TEXT, /* Option < & str > */
	"seq" bigint, /* Option < i64 > */
	"field" TEXT DEFAULT 'content' /* Option < & str > */
) RETURNS TEXT /* String */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'text_at_wrapper';

-- extension/src/api/read.rs:49
-- pg_collab::api::read::to_json
CREATE OR REPLACE FUNCTION "to_json"(
	"doc" TEXT /* Option < & str > */
) RETURNS jsonb /* pgrx :: JsonB */
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'to_json_wrapper';

-- extension/src/api/history.rs:97
-- pg_collab::api::history::updates_since
CREATE OR REPLACE FUNCTION "updates_since"(
	"doc" TEXT, /* Option < & str > */
	"seq" bigint /* Option < i64 > */
) RETURNS TABLE (
	"seq" bigint,  /* i64 */
	"update" bytea,  /* Vec < u8 > */
	"origin" TEXT,  /* Option < String > */
	"created_at" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'updates_since_wrapper';

-- Comments ---------------------------------------------------------------------------------

COMMENT ON FUNCTION apply_update(text, bytea, text) IS
  'apply_update(doc, update, origin DEFAULT NULL) -> bigint. Validates a Yjs v1 update (decodes, '
  'not empty, at most collab.max_update_bytes, integrates into the current document), creates the '
  'document on first write, appends it to the log under the document lock and returns its '
  'sequence. Updates whose dependencies are missing are kept. Notified on channel collab at commit.';
COMMENT ON FUNCTION apply_updates(text, bytea[], text) IS
  'apply_updates(doc, updates[], origin DEFAULT NULL) -> bigint. A batch under one lock, one '
  'sequence range and one notification; all or nothing. Returns the last sequence assigned.';
COMMENT ON FUNCTION state(text) IS
  'state(doc) -> bytea. The whole document as one Yjs v1 update (empty document if never written).';
COMMENT ON FUNCTION state_vector(text) IS
  'state_vector(doc) -> bytea. The document''s Yjs state vector (v1): y-protocols sync step 1.';
COMMENT ON FUNCTION diff(text, bytea) IS
  'diff(doc, state_vector) -> bytea. Exactly what a peer holding that state vector lacks, as a '
  'Yjs v1 update: the answer to y-protocols sync step 1.';
COMMENT ON FUNCTION text(text, text) IS
  'text(doc, field DEFAULT ''content'') -> text. The text of a root field ('''' when absent); '
  'an XML fragment (e.g. ProseMirror) reads as its XML string.';
COMMENT ON FUNCTION to_json(text) IS
  'to_json(doc) -> jsonb. Every root type: text and XML as strings, maps as objects, arrays as arrays.';
COMMENT ON FUNCTION insert_text(text, text, integer, text) IS
  'insert_text(doc, field, position, text) -> bigint. Inserts at a 0-based character position '
  '(counted like length()); stored and notified as a Yjs update. Returns the head sequence.';
COMMENT ON FUNCTION delete_text(text, text, integer, integer) IS
  'delete_text(doc, field, position, length) -> bigint. Deletes characters; stored and notified '
  'as a Yjs update. Returns the head sequence.';
COMMENT ON FUNCTION set_text(text, text, text) IS
  'set_text(doc, field, new_text) -> bigint. Writes only the difference to new_text, so '
  'concurrent edits to unchanged parts survive. Returns the head sequence.';
COMMENT ON FUNCTION delete_document(text) IS
  'delete_document(doc) -> boolean. Deletes the document, its log and checkpoints; notifies '
  '{"type":"deleted"}. Returns whether it existed.';
COMMENT ON FUNCTION compact(text) IS
  'compact(doc) -> bigint. Writes a checkpoint (merged state at the head sequence) that reads '
  'start from; the log is kept as history. Returns the checkpoint sequence.';
COMMENT ON FUNCTION state_at(text, bigint) IS
  'state_at(doc, seq) -> bytea. The document right after update seq (0: empty), as a Yjs v1 update.';
COMMENT ON FUNCTION text_at(text, bigint, text) IS
  'text_at(doc, seq, field DEFAULT ''content'') -> text. A text field as of sequence seq.';
COMMENT ON FUNCTION updates_since(text, bigint) IS
  'updates_since(doc, seq) -> setof (seq, update, origin, created_at). Log rows after seq, for '
  'listeners catching up; from pruned history the first row is the floor checkpoint (origin '
  '''checkpoint'').';
COMMENT ON FUNCTION prune(text, timestamptz) IS
  'prune(doc, before) -> bigint. Drops log rows and checkpoints older than before, keeping a '
  'checkpoint where history is cut. Returns the number of log rows deleted.';
COMMENT ON FUNCTION broadcast(text, bytea, text) IS
  'broadcast(doc, payload, origin DEFAULT NULL). Ephemeral message (e.g. awareness) on channel '
  'collab: {"type":"broadcast","doc","origin","payload":base64}. Stored nowhere.';
COMMENT ON FUNCTION _take_notification() IS
  'Internal, for the trigger on collab.updates: the sealed NOTIFY payload of the batch just '
  'inserted (NULL for rows the owner inserted directly, e.g. a restore).';
COMMENT ON FUNCTION _invalidate(oid) IS
  'Internal, for the triggers on collab.access_rules and collab.notification_keys: every backend '
  'drops its cached rules and key at commit.';
COMMENT ON FUNCTION document_info(text) IS
  'document_info(doc) -> (head_seq, checkpoint_seq, history_from, update_count, log_bytes, '
  'created_at, updated_at, deleted_at). One row for a document ever written (deleted ones with '
  'deleted_at), none otherwise. Needs the read right.';
COMMENT ON FUNCTION list_documents(bigint) IS
  'list_documents(lim DEFAULT 100) -> setof (name, head_seq, updated_at). The most recently '
  'edited documents the caller may read, newest first; deleted ones left out.';
COMMENT ON FUNCTION log_entries(text, bigint) IS
  'log_entries(doc, after DEFAULT 0) -> setof (seq, origin, created_at, bytes). The log''s '
  'metadata after sequence after (no update bytes), for history views. Needs the read right.';
COMMENT ON FUNCTION grant_access(text, text, text) IS
  'grant_access(role, pattern, level DEFAULT ''write''). Lets role and its members read, write '
  'or admin the documents matching pattern (''*'', ''prefix*'' or an exact name); replaces the '
  'level of the same role and pattern. collab_admin only.';
COMMENT ON FUNCTION revoke_access(text, text) IS
  'revoke_access(role, pattern) -> boolean. Removes that rule; whether there was one. '
  'collab_admin only.';
COMMENT ON FUNCTION rotate_notification_key() IS
  'rotate_notification_key() -> int. A new random key seals notifications from now on; all but '
  'the previous key are dropped. Bridges pick it up by themselves. collab_admin only.';
COMMENT ON FUNCTION notification_keys() IS
  'notification_keys() -> setof (id, key). The keys that seal notifications, for bridges '
  '(collab_bridge only).';
COMMENT ON FUNCTION recreate_document(text) IS
  'recreate_document(doc) -> boolean. Removes the tombstone of a deleted document so the name '
  'can be written again, from empty. Needs the admin right. Whether it was deleted.';
COMMENT ON FUNCTION has_access(text, text) IS
  'has_access(doc, level DEFAULT ''read'') -> boolean. Whether the caller may read, write or '
  'admin the document.';

-- Privileges -------------------------------------------------------------------------------
-- Nothing for PUBLIC. Roles are cluster-wide: created by the first database that installs
-- the extension, kept by DROP EXTENSION (other databases may use them).
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['collab_user', 'collab_reader', 'collab_writer', 'collab_admin',
                             'collab_bridge'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$$;
SET LOCAL client_min_messages = warning;  -- "already a member" when another database made them
GRANT collab_user TO collab_reader;
GRANT collab_reader TO collab_writer;
GRANT collab_writer TO collab_admin;
GRANT collab_writer TO collab_bridge;

REVOKE ALL ON SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA @extschema@ FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @extschema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO collab_user;

-- collab_user may call the document functions; what it may do with which document is decided
-- per call by its rights (collab_reader/writer/admin: every document; else collab.access_rules).
GRANT EXECUTE ON FUNCTION
    state(text), state_vector(text), diff(text, bytea), text(text, text), to_json(text),
    state_at(text, bigint), text_at(text, bigint, text), updates_since(text, bigint),
    document_info(text), list_documents(bigint), log_entries(text, bigint),
    has_access(text, text),
    apply_update(text, bytea, text), apply_updates(text, bytea[], text),
    insert_text(text, text, integer, text), delete_text(text, text, integer, integer),
    set_text(text, text, text), broadcast(text, bytea, text),
    compact(text), prune(text, timestamptz), delete_document(text), recreate_document(text)
TO collab_user;
GRANT EXECUTE ON FUNCTION
    grant_access(text, text, text), revoke_access(text, text), rotate_notification_key()
TO collab_admin;
GRANT EXECUTE ON FUNCTION notification_keys() TO collab_bridge;
-- Administrators may read the rules; they change them with grant_access / revoke_access.
GRANT SELECT ON access_rules TO collab_admin;

-- The first notification key.
SELECT @extschema@.rotate_notification_key();
