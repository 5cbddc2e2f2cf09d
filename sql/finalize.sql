-- Runs after pgrx created the functions: their documentation (visible in \df+), then every
-- privilege, then the first notification key.

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
  'updates_since(doc, seq) -> setof (seq, update, origin, created_at). The updates after seq, '
  'one row each, for listeners catching up; from pruned history the first row is the floor '
  'checkpoint (origin ''checkpoint'').';
COMMENT ON FUNCTION prune(text, timestamptz) IS
  'prune(doc, before) -> bigint. Drops log rows and checkpoints older than before, keeping a '
  'checkpoint where history is cut (at the end of a log row). Returns the number of updates '
  'deleted.';
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
COMMENT ON FUNCTION apply_updates(text, bytea[], text, text[]) IS
  'apply_updates(doc, updates[], origin, authors[]) -> bigint. apply_updates recording the '
  'author of each update (authors[i] with updates[i]; NULL: collab.author or the SQL role). '
  'Bridges pass their clients'' token subjects.';
COMMENT ON FUNCTION restore(text, bigint) IS
  'restore(doc, seq) -> bigint. Makes the document read as it did right after update seq (text '
  'with formatting, XML, map and array roots), as one new update that concurrent editors merge '
  'like any other; the restore is a version of its own (origin ''restore <seq>''). Needs the '
  'write right. Returns the head sequence.';
COMMENT ON FUNCTION undo_author(text, text, bigint, bigint, text) IS
  'undo_author(doc, author, after, upto DEFAULT NULL, field DEFAULT ''content'') -> bigint. '
  'Deletes the characters of a text root that author inserted in updates after..upto and that '
  'are still there, as one new update. What the author deleted is not brought back. Needs the '
  'write right. Returns the head sequence.';
COMMENT ON FUNCTION history(text, bigint) IS
  'history(doc, after DEFAULT 0) -> setof (seq, author, origin, created_at, bytes). The log '
  'after sequence after with the author of each update. Needs the read right.';
COMMENT ON FUNCTION text_authors(text, text) IS
  'text_authors(doc, field DEFAULT ''content'') -> setof (position, length, author, text). Who '
  'wrote the current text: runs of characters by one author (the author of the update that '
  'inserted them; NULL before 0.3.0 or pruned). Needs the read right.';
COMMENT ON FUNCTION search(text, text, integer) IS
  'search(query, config DEFAULT ''simple'', lim DEFAULT 20) -> setof (name, rank, snippet, seq). '
  'Full-text search (websearch syntax) over the documents indexed in text search configuration '
  'config that the caller may read, best first; matches in the snippet are between <mark> and '
  '</mark>.';
COMMENT ON FUNCTION set_search_language(text, text) IS
  'set_search_language(doc, config) -> boolean. The text search configuration the document is '
  'indexed in (simple until set). Needs the write right. Whether the document exists.';
COMMENT ON FUNCTION refresh_search(bigint) IS
  'refresh_search(lim DEFAULT NULL) -> bigint. Indexes documents whose searchable text is '
  'missing (written before 0.3.0) or stale (collab.search_lag), at most lim. collab_admin and '
  'collab_bridge. How many were indexed.';
COMMENT ON FUNCTION search_backlog() IS
  'search_backlog() -> (documents, oldest_write). How far search is behind the writes: the '
  'documents whose searchable text is stale or missing, and when the oldest write not yet '
  'searchable was made (NULL: none). collab_admin and collab_bridge.';
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
    compact(text), prune(text, timestamptz), delete_document(text), recreate_document(text),
    apply_updates(text, bytea[], text, text[]), restore(text, bigint),
    undo_author(text, text, bigint, bigint, text), history(text, bigint),
    text_authors(text, text), search(text, text, integer), set_search_language(text, text)
TO collab_user;
GRANT EXECUTE ON FUNCTION
    grant_access(text, text, text), revoke_access(text, text), rotate_notification_key(),
    refresh_search(bigint), search_backlog()
TO collab_admin;
-- Readers (every document) may join the indexed texts with their own tables.
GRANT SELECT ON document_texts TO collab_reader;
GRANT EXECUTE ON FUNCTION notification_keys(), refresh_search(bigint), search_backlog()
TO collab_bridge;
-- Administrators may read the rules; they change them with grant_access / revoke_access.
GRANT SELECT ON access_rules TO collab_admin;

-- The first notification key.
SELECT @extschema@.rotate_notification_key();
