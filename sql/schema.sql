-- pg_collab schema: documents, their append-only update log, checkpoints, and the NOTIFY
-- trigger. Functions are generated from Rust (extension/src/api) and documented in comments.sql.

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
    updated_at     timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);  -- every write updates its row: leave room for HOT updates

-- No foreign key to documents: writers hold the document row lock and the per-row RI trigger
-- would cost more than the insert itself on batched ingest. Deletion cascades by trigger.
CREATE TABLE updates (
    doc_id     bigint NOT NULL,
    seq        bigint NOT NULL,
    update     bytea NOT NULL,
    origin     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, seq)
);

CREATE TABLE checkpoints (
    doc_id     bigint NOT NULL,
    seq        bigint NOT NULL,
    state      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (doc_id, seq)
);

COMMENT ON TABLE documents IS
  'One row per collaborative document (a Yjs room), created on first write. head_seq is the '
  'last log sequence; checkpoint_seq the newest checkpoint; history_from the sequence below '
  'which history was pruned; sizes in bytes (tail_bytes: log bytes after the newest checkpoint).';
COMMENT ON TABLE updates IS
  'Append-only log of Yjs v1 updates, numbered per document from 1 without gaps. Kept as '
  'history until collab.prune() drops it.';
COMMENT ON TABLE checkpoints IS
  'Merged document state as of a sequence (Yjs v1 update); reads start from the newest one.';
COMMENT ON COLUMN documents.name IS 'Document name: the room name Yjs clients use (1-255 characters, no control characters).';
COMMENT ON COLUMN updates.origin IS 'Free-form tag of the writer (e.g. a bridge connection), echoed in notifications.';

-- plpgsql resolves the Rust functions it calls at run time, so they may be created later.
CREATE FUNCTION _notify_updates() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The writer (collab.apply_update(s) or an SQL edit) left the batch's payload for us:
    -- nothing is re-read or re-merged here, and no transition table is captured.
    PERFORM pg_notify('collab', @extschema@._take_notification());
    RETURN NULL;
END
$$;

CREATE TRIGGER notify_updates
    AFTER INSERT ON updates
    FOR EACH STATEMENT EXECUTE FUNCTION _notify_updates();

CREATE FUNCTION _delete_document() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM @extschema@.updates WHERE doc_id = OLD.id;
    DELETE FROM @extschema@.checkpoints WHERE doc_id = OLD.id;
    PERFORM pg_notify('collab', json_build_object('type', 'deleted', 'doc', OLD.name)::text);
    RETURN OLD;
END
$$;

CREATE TRIGGER delete_document
    AFTER DELETE ON documents
    FOR EACH ROW EXECUTE FUNCTION _delete_document();

COMMENT ON FUNCTION _notify_updates() IS
  'Statement trigger on collab.updates: one NOTIFY on channel collab per batch, payload '
  '{"type":"update","doc","seq_from","seq_to","origin","update"?} (update: base64, only when '
  'the payload fits in 8000 bytes). Sent at commit only. Rows not written by the collab '
  'functions are refused.';
COMMENT ON FUNCTION _delete_document() IS
  'Row trigger on collab.documents: removes the log and checkpoints of a deleted document and '
  'notifies {"type":"deleted","doc"}.';
