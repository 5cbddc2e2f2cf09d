-- PL/Proxy functions of a pg_collab proxy database: the same `collab.*` calls as on a pg_collab
-- database, each run on the shard that owns the document (partition collab.shard_hash(doc) &
-- (count - 1) of the server collab_shards), and the document list gathered from every shard.
-- Not part of the extension: installed by `scripts/shards.sh install-proxy`, which creates the
-- server collab_shards (one partition per shard) first. collab-bridge --shard-url routes with
-- the same hash (bridge/src/shards.rs). Rights: the proxy checks only EXECUTE (granted to the
-- same role names as the extension's); per-document rights are checked on the shard, as the
-- role the proxy's user mapping logs in as.

CREATE SCHEMA IF NOT EXISTS collab;
REVOKE ALL ON SCHEMA collab FROM PUBLIC;
COMMENT ON SCHEMA collab IS 'pg_collab proxy: collab.* functions that run on the shard owning each document (PL/Proxy)';

DO $$
BEGIN
    -- The extension's role names (cluster-wide; absent when the proxy has its own cluster).
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'collab_reader') THEN
        CREATE ROLE collab_reader NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'collab_writer') THEN
        CREATE ROLE collab_writer NOLOGIN IN ROLE collab_reader;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'collab_admin') THEN
        CREATE ROLE collab_admin NOLOGIN IN ROLE collab_writer;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA collab TO collab_reader;

-- The shard hash: the first 4 bytes of SHA-256 of the name's UTF-8 bytes, as a signed int4.
-- PL/Proxy's RUN ON keeps its lowest bits (hash & (partitions - 1)).
CREATE OR REPLACE FUNCTION collab.shard_hash(doc text) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    RETURN ('x' || left(encode(sha256(convert_to(doc, 'UTF8')), 'hex'), 8))::bit(32)::integer;
COMMENT ON FUNCTION collab.shard_hash(text) IS
    'shard hash of a document name: first 4 bytes of SHA-256 of its UTF-8 bytes (int4); the owning partition is its lowest bits, as in collab-bridge --shard-url';
REVOKE ALL ON FUNCTION collab.shard_hash(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.shard_hash(text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.text(doc text, field text DEFAULT 'content') RETURNS text
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.text(text, text) IS 'collab.text on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.text(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.text(text, text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.to_json(doc text) RETURNS jsonb
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.to_json(text) IS 'collab.to_json on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.to_json(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.to_json(text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.state(doc text) RETURNS bytea
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.state(text) IS 'collab.state on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.state(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.state(text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.state_vector(doc text) RETURNS bytea
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.state_vector(text) IS 'collab.state_vector on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.state_vector(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.state_vector(text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.diff(doc text, state_vector bytea) RETURNS bytea
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.diff(text, bytea) IS 'collab.diff on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.diff(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.diff(text, bytea) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.state_at(doc text, seq bigint) RETURNS bytea
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.state_at(text, bigint) IS 'collab.state_at on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.state_at(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.state_at(text, bigint) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.text_at(doc text, seq bigint, field text DEFAULT 'content') RETURNS text
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.text_at(text, bigint, text) IS 'collab.text_at on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.text_at(text, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.text_at(text, bigint, text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.document_info(doc text) RETURNS TABLE(head_seq bigint, checkpoint_seq bigint, history_from bigint, update_count bigint, log_bytes bigint, created_at timestamptz, updated_at timestamptz, deleted_at timestamptz)
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.document_info(text) IS 'collab.document_info on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.document_info(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.document_info(text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.updates_since(doc text, seq bigint) RETURNS TABLE(seq bigint, update bytea, origin text, created_at timestamptz)
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.updates_since(text, bigint) IS 'collab.updates_since on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.updates_since(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.updates_since(text, bigint) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.apply_update(doc text, update bytea, origin text DEFAULT NULL) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.apply_update(text, bytea, text) IS 'collab.apply_update on the shard that owns doc (the shard notifies its listeners)';
REVOKE ALL ON FUNCTION collab.apply_update(text, bytea, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.apply_update(text, bytea, text) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.apply_updates(doc text, updates bytea[], origin text DEFAULT NULL) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.apply_updates(text, bytea[], text) IS 'collab.apply_updates on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.apply_updates(text, bytea[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.apply_updates(text, bytea[], text) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.insert_text(doc text, field text, "position" integer, value text) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.insert_text(text, text, integer, text) IS 'collab.insert_text on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.insert_text(text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.insert_text(text, text, integer, text) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.delete_text(doc text, field text, "position" integer, length integer) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.delete_text(text, text, integer, integer) IS 'collab.delete_text on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.delete_text(text, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.delete_text(text, text, integer, integer) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.set_text(doc text, field text, new_text text) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.set_text(text, text, text) IS 'collab.set_text on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.set_text(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.set_text(text, text, text) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.broadcast(doc text, payload bytea, origin text DEFAULT NULL) RETURNS void
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.broadcast(text, bytea, text) IS 'collab.broadcast on the shard that owns doc (its bridges relay it)';
REVOKE ALL ON FUNCTION collab.broadcast(text, bytea, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.broadcast(text, bytea, text) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.compact(doc text) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.compact(text) IS 'collab.compact on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.compact(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.compact(text) TO collab_admin;

CREATE OR REPLACE FUNCTION collab.delete_document(doc text) RETURNS boolean
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.delete_document(text) IS 'collab.delete_document on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.delete_document(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.delete_document(text) TO collab_admin;

CREATE OR REPLACE FUNCTION collab.recreate_document(doc text) RETURNS boolean
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.recreate_document(text) IS 'collab.recreate_document on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.recreate_document(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.recreate_document(text) TO collab_admin;

-- Issue #13's calls (extension 0.3.0): restore, attribution, and search gathered like the list.
CREATE OR REPLACE FUNCTION collab.apply_updates(doc text, updates bytea[], origin text, authors text[]) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.apply_updates(text, bytea[], text, text[]) IS 'collab.apply_updates with one author per update, on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.apply_updates(text, bytea[], text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.apply_updates(text, bytea[], text, text[]) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.restore(doc text, seq bigint) RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.restore(text, bigint) IS 'collab.restore on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.restore(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.restore(text, bigint) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.undo_author(doc text, author text, after bigint, upto bigint DEFAULT NULL, field text DEFAULT 'content') RETURNS bigint
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.undo_author(text, text, bigint, bigint, text) IS 'collab.undo_author on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.undo_author(text, text, bigint, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.undo_author(text, text, bigint, bigint, text) TO collab_writer;

CREATE OR REPLACE FUNCTION collab.history(doc text, after bigint DEFAULT 0)
    RETURNS TABLE(seq bigint, author text, origin text, created_at timestamptz, bytes bigint)
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.history(text, bigint) IS 'collab.history on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.history(text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.history(text, bigint) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.text_authors(doc text, field text DEFAULT 'content')
    RETURNS TABLE("position" bigint, length bigint, author text, text text)
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.text_authors(text, text) IS 'collab.text_authors on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.text_authors(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.text_authors(text, text) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.set_search_language(doc text, config text) RETURNS boolean
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON collab.shard_hash(doc); $$;
COMMENT ON FUNCTION collab.set_search_language(text, text) IS 'collab.set_search_language on the shard that owns doc';
REVOKE ALL ON FUNCTION collab.set_search_language(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.set_search_language(text, text) TO collab_writer;

-- Search: every shard's best `lim` (each checks the caller's read rights), then the best `lim`
-- of them all. Ranks are comparable across shards: ts_rank depends on the document and the
-- query only, not on the rest of the corpus.
CREATE OR REPLACE FUNCTION collab.search_on_shards(query text, config text, lim integer)
    RETURNS TABLE(name text, rank real, snippet text, seq bigint)
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON ALL; SELECT * FROM collab.search(query, config, lim); $$;
COMMENT ON FUNCTION collab.search_on_shards(text, text, integer) IS
    'collab.search(query, config, lim) of every shard, unsorted (collab.search sorts and limits it)';
REVOKE ALL ON FUNCTION collab.search_on_shards(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.search_on_shards(text, text, integer) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.search(query text, config text DEFAULT 'simple', lim integer DEFAULT 20)
    RETURNS TABLE(name text, rank real, snippet text, seq bigint)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        SELECT s.name, s.rank, s.snippet, s.seq FROM collab.search_on_shards(query, config, lim) s
        ORDER BY s.rank DESC, s.name LIMIT lim;
    END;
COMMENT ON FUNCTION collab.search(text, text, integer) IS
    'full-text search over the documents of every shard the caller may read, best first';
REVOKE ALL ON FUNCTION collab.search(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.search(text, text, integer) TO collab_reader;

-- The document list: every shard's newest `lim`, then the newest `lim` of them all.
CREATE OR REPLACE FUNCTION collab.list_documents_on_shards(lim bigint)
    RETURNS TABLE(name text, head_seq bigint, updated_at timestamptz)
    LANGUAGE plproxy AS $$ CLUSTER 'collab_shards'; RUN ON ALL; SELECT * FROM collab.list_documents(lim); $$;
COMMENT ON FUNCTION collab.list_documents_on_shards(bigint) IS
    'collab.list_documents(lim) of every shard, unsorted (collab.list_documents sorts and limits it)';
REVOKE ALL ON FUNCTION collab.list_documents_on_shards(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.list_documents_on_shards(bigint) TO collab_reader;

CREATE OR REPLACE FUNCTION collab.list_documents(lim bigint DEFAULT 100)
    RETURNS TABLE(name text, head_seq bigint, updated_at timestamptz)
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    BEGIN ATOMIC
        SELECT s.name, s.head_seq, s.updated_at FROM collab.list_documents_on_shards(lim) s
        ORDER BY s.updated_at DESC, s.name LIMIT lim;
    END;
COMMENT ON FUNCTION collab.list_documents(bigint) IS
    'the most recently edited documents (at most lim) the caller may read, gathered from every shard';
REVOKE ALL ON FUNCTION collab.list_documents(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION collab.list_documents(bigint) TO collab_reader;
