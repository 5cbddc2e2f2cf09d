-- Documentation of the generated functions, visible in \df+ (pgrx creates the functions; this
-- file runs after them).

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
  'Internal, for the trigger on collab.updates: the NOTIFY payload of the batch just inserted.';
