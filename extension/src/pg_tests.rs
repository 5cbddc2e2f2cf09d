//! `#[pg_test]`s: every SQL function, its error cases (by SQLSTATE), randomized and mutated
//! input, and real editing traces replayed through SQL.

#[pgrx::pg_schema]
mod tests {

    use pgrx::datum::DatumWithOid;
    use pgrx::prelude::*;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, ReadTxn, StateVector, Text, Transact};

    // The backend runs as another user, who may not be allowed to read the checkout.
    const SVELTE: &[u8] = include_bytes!("../../../shared/traces/sveltecomponent.json.gz");
    const PAPER: &[u8] = include_bytes!("../../../shared/traces/automerge-paper.json.gz");

    fn embedded(bytes: &[u8], name: &str) -> collab_trace::Trace {
        collab_trace::parse_gz(bytes, std::path::Path::new(name)).expect("trace parses")
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
        Spi::get_one::<T>(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    fn one_with<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> T {
        Spi::get_one_with_args::<T>(sql, args)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    /// Runs `sql` in a subtransaction and returns its SQLSTATE ('ok' when it succeeded): the
    /// error paths are checked without ending the test's transaction, and the backend is seen to
    /// carry on after each of them.
    fn sqlstate(sql: &str) -> String {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS \
             $$ BEGIN EXECUTE q; RETURN 'ok'; EXCEPTION WHEN OTHERS THEN RETURN SQLSTATE; END $$",
        )
        .expect("helper");
        one_with::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()])
    }

    fn apply(doc: &str, update: &[u8]) -> i64 {
        one_with::<i64>(
            "SELECT collab.apply_update($1, $2)",
            &[doc.into(), update.into()],
        )
    }

    fn text_of(doc: &str) -> String {
        one_with::<String>("SELECT collab.text($1)", &[doc.into()])
    }

    fn count(sql: &str) -> i64 {
        one::<i64>(sql)
    }

    /// A yrs peer, like a browser tab holding the document.
    struct Peer {
        doc: yrs::Doc,
    }

    impl Peer {
        fn new(client: u64) -> Self {
            Peer {
                doc: yrs::Doc::with_options(yrs::Options {
                    client_id: yrs::block::ClientID::new(client),
                    offset_kind: yrs::OffsetKind::Utf16,
                    ..Default::default()
                }),
            }
        }
        fn insert(&self, at: u32, s: &str) -> Vec<u8> {
            let text = self.doc.get_or_insert_text("content");
            let mut txn = self.doc.transact_mut();
            text.insert(&mut txn, at, s);
            txn.encode_update_v1()
        }
        fn receive(&self, update: &[u8]) {
            let u = yrs::Update::decode_v1(update).expect("decodes");
            self.doc.transact_mut().apply_update(u).expect("applies");
        }
        fn text(&self) -> String {
            let text = self.doc.get_or_insert_text("content");
            let txn = self.doc.transact();
            text.get_string(&txn)
        }
        fn state_vector(&self) -> Vec<u8> {
            use yrs::updates::encoder::Encode;
            self.doc.transact().state_vector().encode_v1()
        }
    }

    #[pg_test]
    fn apply_update_assigns_per_document_sequences() {
        let p = Peer::new(1);
        assert_eq!(apply("a", &p.insert(0, "hello")), 1);
        assert_eq!(apply("a", &p.insert(5, " world")), 2);
        assert_eq!(apply("b", &Peer::new(2).insert(0, "other")), 1);
        assert_eq!(text_of("a"), "hello world");
        assert_eq!(
            count("SELECT head_seq FROM collab.documents WHERE name = 'a'"),
            2
        );
        assert_eq!(count("SELECT count(*) FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id WHERE d.name = 'a'"), 2);
        let origin: String = one("SELECT origin FROM collab.updates WHERE seq = 1 AND origin IS NOT NULL UNION ALL SELECT 'none' LIMIT 1");
        assert_eq!(origin, "none");
        apply_with_origin();
    }

    fn apply_with_origin() {
        let u = Peer::new(3).insert(0, "x");
        let seq = one_with::<i64>(
            "SELECT collab.apply_update('c', $1, 'bridge-1/conn-7')",
            &[u.as_slice().into()],
        );
        assert_eq!(seq, 1);
        let origin: String = one("SELECT u.origin FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id WHERE d.name = 'c'");
        assert_eq!(origin, "bridge-1/conn-7");
    }

    #[pg_test]
    fn apply_updates_is_one_batch_with_one_sequence_range() {
        let p = Peer::new(1);
        let batch: Vec<Vec<u8>> = (0..10).map(|i| p.insert(i, "x")).collect();
        let last = one_with::<i64>(
            "SELECT collab.apply_updates('batch', $1, 'o')",
            &[batch.clone().into()],
        );
        assert_eq!(last, 10);
        assert_eq!(text_of("batch"), "xxxxxxxxxx");
        assert_eq!(
            count("SELECT sum(span)::int8 FROM collab.updates WHERE origin = 'o'"),
            10
        );
        // A bad element refuses the whole batch.
        let mut bad = batch.clone();
        bad.push(vec![0xff, 0xfe, 0xfd]);
        let q = format!(
            "SELECT collab.apply_updates('batch', ARRAY[{}]::bytea[])",
            bad.iter()
                .map(|u| format!("'\\x{}'", hex(u)))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(sqlstate(&q), "22P03");
        assert_eq!(
            count("SELECT head_seq FROM collab.documents WHERE name = 'batch'"),
            10
        );
        assert_eq!(
            sqlstate("SELECT collab.apply_updates('batch', '{}'::bytea[])"),
            "22003"
        );
        assert_eq!(
            sqlstate("SELECT collab.apply_updates('batch', ARRAY[NULL]::bytea[])"),
            "22004"
        );
    }

    #[pg_test]
    fn writes_in_a_read_only_transaction_are_25006_and_reads_still_work() {
        // What a hot standby does to every transaction (bridge/tests/replica.rs runs this on a
        // real one): writes fail with read_only_sql_transaction, not an internal error.
        one::<i64>("SELECT collab.insert_text('ro', 'content', 0, 'kept')");
        assert_eq!(sqlstate("SELECT 1"), "ok"); // creates the helper while writes are allowed
        Spi::run("SET LOCAL transaction_read_only = on").expect("set");
        for sql in [
            "SELECT collab.insert_text('ro', 'content', 0, 'x')",
            "SELECT collab.set_text('ro', 'content', 'y')",
            "SELECT collab.compact('ro')",
        ] {
            let code = one_with::<String>("SELECT pg_temp.sqlstate_of($1)", &[sql.into()]);
            assert_eq!(code, "25006", "{sql}");
        }
        assert_eq!(text_of("ro"), "kept");
    }

    #[pg_test]
    fn bad_input_is_a_clean_error_and_stores_nothing() {
        let good = hex(&Peer::new(1).insert(0, "ok"));
        let cases = [
            ("SELECT collab.apply_update(NULL, '\\x00')", "22004"),
            ("SELECT collab.apply_update('d', NULL)", "22004"),
            ("SELECT collab.apply_update('', '\\x0000')", "22023"),
            (
                &format!("SELECT collab.apply_update(repeat('x', 256), '\\x{good}')"),
                "22023",
            ),
            (
                "SELECT collab.apply_update(E'new\\nline', '\\x0000')",
                "22023",
            ),
            ("SELECT collab.apply_update('d', '\\x')", "22P03"),
            ("SELECT collab.apply_update('d', '\\xffffffff')", "22P03"),
            ("SELECT collab.apply_update('d', '\\x01')", "22P03"),
            ("SELECT collab.text('d', NULL)", "22004"),
            ("SELECT collab.text('d', '')", "22023"),
            ("SELECT collab.diff('d', '\\xffff')", "22P03"),
            ("SELECT collab.diff('d', NULL)", "22004"),
            (
                "SELECT collab.insert_text('d', 'content', -1, 'x')",
                "22003",
            ),
            ("SELECT collab.insert_text('d', 'content', 1, 'x')", "22003"),
            (
                "SELECT collab.insert_text('d', 'content', NULL, 'x')",
                "22004",
            ),
            ("SELECT collab.delete_text('d', 'content', 0, 1)", "22003"),
            ("SELECT collab.delete_text('d', 'content', 0, -1)", "22003"),
            ("SELECT collab.state_at('d', 5)", "22003"),
            ("SELECT collab.state_at('d', -1)", "22003"),
            (
                "SELECT collab.broadcast('d', decode(repeat('ab', 7000), 'hex'))",
                "54000",
            ),
        ];
        for (sql, code) in cases {
            assert_eq!(sqlstate(sql), code, "{sql}");
        }
        Spi::run("SET LOCAL collab.max_update_bytes = 16").expect("set");
        let big = hex(&Peer::new(2).insert(0, &"y".repeat(100)));
        assert_eq!(
            sqlstate(&format!("SELECT collab.apply_update('d', '\\x{big}')")),
            "54000"
        );
        Spi::run("RESET collab.max_update_bytes").expect("reset");
        // Nothing was stored by any of those, and the backend carries on.
        assert_eq!(count("SELECT count(*) FROM collab.updates"), 0);
        assert_eq!(
            apply("d", &Peer::new(1).insert(0, "ok")),
            1,
            "backend still serves writes"
        );
        assert_eq!(text_of("d"), "ok");
    }

    #[pg_test]
    fn updates_with_missing_dependencies_are_kept_until_they_integrate() {
        let p = Peer::new(1);
        let first = p.insert(0, "ab");
        let second = p.insert(2, "cd");
        assert_eq!(apply("pending", &second), 1);
        assert_eq!(text_of("pending"), "");
        // The pending struct is part of the stored state, not dropped.
        let state: Vec<u8> = one("SELECT collab.state('pending')");
        let q = Peer::new(9);
        q.receive(&state);
        q.receive(&first);
        assert_eq!(q.text(), "abcd");
        assert_eq!(apply("pending", &first), 2);
        assert_eq!(text_of("pending"), "abcd");
    }

    #[pg_test]
    fn reads_of_state_vector_and_diff_serve_sync() {
        let a = Peer::new(1);
        apply("sync", &a.insert(0, "hello"));
        let b = Peer::new(2);
        b.receive(&one_with::<Vec<u8>>(
            "SELECT collab.diff('sync', $1)",
            &[b.state_vector().as_slice().into()],
        ));
        assert_eq!(b.text(), "hello");
        apply("sync", &a.insert(5, "!"));
        let d: Vec<u8> = one_with(
            "SELECT collab.diff('sync', $1)",
            &[b.state_vector().as_slice().into()],
        );
        let full: Vec<u8> = one("SELECT collab.state('sync')");
        assert!(d.len() < full.len(), "diff carries only what is missing");
        b.receive(&d);
        assert_eq!(b.text(), "hello!");
        let sv: Vec<u8> = one("SELECT collab.state_vector('sync')");
        let sv = StateVector::decode_v1(&sv).expect("sv");
        assert_eq!(sv.get(&yrs::block::ClientID::new(1)), 6);
        // An unknown document is empty, like a fresh Yjs room.
        let empty: Vec<u8> = one("SELECT collab.state('never-written')");
        assert_eq!(empty, vec![0, 0]);
        assert_eq!(text_of("never-written"), "");
    }

    #[pg_test]
    fn to_json_shows_every_root_type() {
        let p = Peer::new(1);
        let meta = p.doc.get_or_insert_map("meta");
        let update = {
            use yrs::Map;
            let mut txn = p.doc.transact_mut();
            meta.insert(&mut txn, "title", "Notes");
            txn.encode_update_v1()
        };
        apply("json", &update);
        apply("json", &p.insert(0, "body"));
        let json: pgrx::JsonB = one("SELECT collab.to_json('json')");
        assert_eq!(
            json.0,
            serde_json::json!({"content": "body", "meta": {"title": "Notes"}})
        );
        assert_eq!(sqlstate("SELECT collab.text('json', 'meta')"), "42809");
        assert_eq!(
            sqlstate("SELECT collab.insert_text('json', 'meta', 0, 'x')"),
            "42809"
        );
    }

    #[pg_test]
    fn sql_text_edits_are_yjs_updates_counted_in_characters() {
        assert_eq!(
            one::<i64>("SELECT collab.insert_text('e', 'content', 0, 'héllo 😀 world')"),
            1
        );
        assert_eq!(
            one::<i64>("SELECT collab.insert_text('e', 'content', 8, 'big ')"),
            2
        );
        assert_eq!(text_of("e"), "héllo 😀 big world");
        assert_eq!(
            one::<i32>("SELECT length(collab.text('e'))"),
            17,
            "positions agree with length()"
        );
        one::<i64>("SELECT collab.delete_text('e', 'content', 6, 2)");
        assert_eq!(text_of("e"), "héllo big world");
        one::<i64>("SELECT collab.set_text('e', 'content', 'hello big wide world')");
        assert_eq!(text_of("e"), "hello big wide world");
        let head: i64 = one("SELECT collab.set_text('e', 'content', 'hello big wide world')");
        assert_eq!(head, 4, "an unchanged text writes nothing");
        // Every edit is a stored, decodable Yjs update that replays to the same text.
        let p = Peer::new(7);
        Spi::connect(|c| {
            let rows = c
                .select("SELECT update FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id WHERE d.name = 'e' ORDER BY seq", None, &[])
                .expect("select");
            for r in rows {
                let u: Vec<u8> = r.get(1).expect("get").expect("not null");
                p.receive(&u);
            }
        });
        assert_eq!(p.text(), "hello big wide world");
        one::<i64>("SELECT collab.insert_text('e', 'title', 0, 'Title')");
        assert_eq!(one::<String>("SELECT collab.text('e', 'title')"), "Title");
    }

    #[pg_test]
    fn sql_edits_and_concurrent_peers_converge() {
        let a = Peer::new(1);
        let b = Peer::new(2);
        apply("conv", &a.insert(0, "The fox"));
        b.receive(&one::<Vec<u8>>("SELECT collab.state('conv')"));
        // Concurrently: a types at the end, b at the start, SQL rewrites the middle word.
        let ua = a.insert(7, " jumps");
        let ub = b.insert(0, ">> ");
        one::<i64>("SELECT collab.set_text('conv', 'content', 'The quick fox')");
        apply("conv", &ub);
        apply("conv", &ua);
        for peer in [&a, &b] {
            let d: Vec<u8> = one_with(
                "SELECT collab.diff('conv', $1)",
                &[peer.state_vector().as_slice().into()],
            );
            peer.receive(&d);
        }
        let server = text_of("conv");
        assert_eq!(server, ">> The quick fox jumps");
        assert_eq!(a.text(), server);
        assert_eq!(b.text(), server);
    }

    #[pg_test]
    fn compaction_history_and_pruning() {
        let p = Peer::new(1);
        for (i, word) in ["one", " two", " three", " four"].iter().enumerate() {
            let at = p.text().chars().count() as u32;
            assert_eq!(apply("hist", &p.insert(at, word)), i as i64 + 1);
        }
        assert_eq!(one::<i64>("SELECT collab.compact('hist')"), 4);
        assert_eq!(
            one::<i64>("SELECT checkpoint_seq FROM collab.documents WHERE name = 'hist'"),
            4
        );
        apply("hist", &p.insert(18, " five"));
        assert_eq!(one::<String>("SELECT collab.text_at('hist', 2)"), "one two");
        assert_eq!(one::<String>("SELECT collab.text_at('hist', 0)"), "");
        assert_eq!(
            one::<String>("SELECT collab.text_at('hist', 5)"),
            text_of("hist")
        );
        let q = Peer::new(2);
        q.receive(&one::<Vec<u8>>("SELECT collab.state_at('hist', 3)"));
        assert_eq!(q.text(), "one two three");
        // The log is kept: all five rows are still there.
        assert_eq!(
            count("SELECT count(*) FROM collab.updates_since('hist', 0)"),
            5
        );
        assert_eq!(
            count("SELECT min(seq) FROM collab.updates_since('hist', 3)"),
            4
        );
        // Prune everything written before now + 1 minute: history is cut at the head, with a
        // checkpoint there so the current document stays whole.
        let deleted: i64 = one("SELECT collab.prune('hist', now() + interval '1 minute')");
        assert_eq!(deleted, 5);
        assert_eq!(text_of("hist"), "one two three four five");
        assert_eq!(sqlstate("SELECT collab.state_at('hist', 2)"), "55000");
        let since: Vec<(i64, Option<String>)> = Spi::connect(|c| {
            c.select(
                "SELECT seq, origin FROM collab.updates_since('hist', 0)",
                None,
                &[],
            )
            .expect("select")
            .map(|r| (r.get(1).expect("g").expect("n"), r.get(2).expect("g")))
            .collect()
        });
        assert_eq!(since, vec![(5, Some("checkpoint".to_string()))]);
        apply("hist", &p.insert(0, ">"));
        assert_eq!(text_of("hist"), ">one two three four five");
        assert_eq!(
            one::<String>("SELECT collab.text_at('hist', 6)"),
            ">one two three four five"
        );
    }

    /// Documents written at the same pace fall due for a checkpoint together; one transaction
    /// writes one, and the others wait for later transactions unless their tail doubled.
    #[pg_test]
    fn a_transaction_writes_one_checkpoint_unless_a_tail_reached_twice_what_is_due() {
        Spi::run("SET LOCAL collab.compact_threshold = 100").expect("set");
        let long = "x".repeat(120);
        let peers: Vec<Peer> = (1..=3).map(Peer::new).collect();
        for (i, p) in peers.iter().enumerate() {
            apply(&format!("due-{i}"), &p.insert(0, &long));
        }
        let checkpoints = || count("SELECT count(*) FROM collab.checkpoints");
        assert_eq!(checkpoints(), 1, "one checkpoint for three documents due");
        // A second write doubles due-1's tail: it no longer waits.
        apply("due-1", &peers[1].insert(0, &long));
        assert_eq!(checkpoints(), 2);
        assert_eq!(
            count("SELECT count(*) FROM collab.documents WHERE checkpoint_seq = 0"),
            1,
            "due-2 still waits"
        );
    }

    #[pg_test]
    fn automatic_compaction_bounds_the_uncompacted_tail() {
        Spi::run("SET LOCAL collab.compact_threshold = 200").expect("set");
        let p = Peer::new(1);
        for i in 0..100u32 {
            apply("auto", &p.insert(i, "z"));
        }
        let (cp, tail): (i64, i64) = Spi::get_two::<i64, i64>(
            "SELECT checkpoint_seq, tail_bytes FROM collab.documents WHERE name = 'auto'",
        )
        .map(|(a, b)| (a.expect("cp"), b.expect("tail")))
        .expect("row");
        assert!(cp > 50, "checkpoints were written (latest at {cp})");
        // All in one transaction: after its first checkpoint, a document waits for twice
        // what is due (see the next test).
        assert!(tail < 2 * 200 + 64, "tail {tail} stays near the threshold");
        assert!(count("SELECT count(*) FROM collab.checkpoints") >= 3);
        // A cold rebuild (checkpoint + tail) equals the live document.
        assert_eq!(
            one::<String>("SELECT collab.text_at('auto', 100)"),
            "z".repeat(100)
        );
        assert_eq!(
            count("SELECT count(*) FROM collab.updates"),
            100,
            "log kept as history"
        );
    }

    #[pg_test]
    fn a_rolled_back_write_leaves_no_trace_in_the_backend_cache() {
        apply("rb", &Peer::new(1).insert(0, "kept"));
        assert_eq!(text_of("rb"), "kept");
        // The EXCEPTION block of sqlstate_of rolls back the edit together with the division.
        let code = sqlstate("SELECT collab.insert_text('rb', 'content', 0, 'LOST ') / 0");
        assert_eq!(code, "22012");
        assert_eq!(text_of("rb"), "kept");
        assert_eq!(
            one::<i64>("SELECT collab.insert_text('rb', 'content', 4, '!')"),
            2
        );
        assert_eq!(text_of("rb"), "kept!");
        assert_eq!(count("SELECT count(*) FROM collab.updates"), 2);
    }

    #[pg_test]
    fn the_log_is_written_only_through_the_collab_functions() {
        apply("direct", &Peer::new(1).insert(0, "x"));
        let id: i64 = one("SELECT id FROM collab.documents WHERE name = 'direct'");
        let u = hex(&Peer::new(2).insert(0, "y"));
        let insert =
            format!("INSERT INTO collab.updates (doc_id, seq, update) VALUES ({id}, 2, '\\x{u}')");
        // Even a role a DBA granted INSERT on the log is refused: rows must come through the
        // functions (or be the owner's, as in a restore).
        Spi::run(
            "CREATE ROLE intruder; GRANT USAGE ON SCHEMA collab TO intruder; \
             GRANT INSERT ON collab.updates TO intruder; SET ROLE intruder",
        )
        .expect("role");
        assert_eq!(sqlstate(&insert), "42501");
        Spi::run("RESET ROLE").expect("reset");
        assert_eq!(count("SELECT count(*) FROM collab.updates"), 1);
        let through_the_function = format!("SELECT collab.apply_update('direct', '\\x{u}')");
        assert_eq!(one::<i64>(&through_the_function), 2);
    }

    #[pg_test]
    fn the_owner_may_load_rows_directly_as_a_restore_does() {
        let peer = Peer::new(1);
        apply("restored", &peer.insert(0, "x"));
        let id: i64 = one("SELECT id FROM collab.documents WHERE name = 'restored'");
        let u = hex(&peer.insert(1, "y"));
        assert_eq!(
            sqlstate(&format!(
                "INSERT INTO collab.updates (doc_id, seq, update) VALUES ({id}, 2, '\\x{u}')"
            )),
            "ok"
        );
        Spi::run(&format!(
            "UPDATE collab.documents SET head_seq = 2 WHERE id = {id}"
        ))
        .expect("head");
        assert_eq!(text_of("restored"), "xy");
    }

    #[pg_test]
    fn deleting_a_document_is_final_until_an_admin_recreates_it() {
        apply("gone", &Peer::new(1).insert(0, "x"));
        one::<i64>("SELECT collab.compact('gone')");
        assert!(one::<bool>("SELECT collab.delete_document('gone')"));
        assert!(!one::<bool>("SELECT collab.delete_document('gone')"));
        assert_eq!(count("SELECT count(*) FROM collab.updates"), 0);
        assert_eq!(count("SELECT count(*) FROM collab.checkpoints"), 0);
        // A stale client resyncing its copy, or anyone reading, is refused.
        let stale = hex(&Peer::new(1).insert(0, "x"));
        assert_eq!(
            sqlstate(&format!("SELECT collab.apply_update('gone', '\\x{stale}')")),
            "42704"
        );
        assert_eq!(sqlstate("SELECT collab.text('gone')"), "42704");
        assert_eq!(
            sqlstate("SELECT collab.insert_text('gone', 'content', 0, 'z')"),
            "42704"
        );
        assert_eq!(
            count("SELECT count(*) FROM collab.documents WHERE name = 'gone' AND deleted_at IS NOT NULL"),
            1
        );
        // Re-created on purpose, it starts afresh.
        assert!(one::<bool>("SELECT collab.recreate_document('gone')"));
        assert!(!one::<bool>("SELECT collab.recreate_document('gone')"));
        assert_eq!(text_of("gone"), "");
        assert_eq!(apply("gone", &Peer::new(2).insert(0, "new")), 1);
        assert_eq!(text_of("gone"), "new");
    }

    #[pg_test]
    fn every_function_and_table_is_documented() {
        let undocumented: i64 = one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = 'collab' AND obj_description(p.oid, 'pg_proc') IS NULL",
        );
        assert_eq!(undocumented, 0);
        let tables: i64 = one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'collab' AND c.relkind = 'r' AND obj_description(c.oid, 'pg_class') IS NULL",
        );
        assert_eq!(tables, 0);
    }

    #[pg_test]
    fn replaying_a_real_trace_one_update_per_call_gives_its_end_content() {
        let trace = embedded(SVELTE, "sveltecomponent");
        let updates = trace.to_updates(11);
        for u in &updates {
            apply("svelte", u);
        }
        assert_eq!(text_of("svelte"), trace.end_content);
        assert_eq!(
            count("SELECT head_seq FROM collab.documents WHERE name = 'svelte'"),
            updates.len() as i64
        );
        // A cold rebuild from checkpoint + log agrees with the cached document.
        let head = updates.len() as i64;
        let cold: String = one_with("SELECT collab.text_at('svelte', $1)", &[head.into()]);
        assert_eq!(cold, trace.end_content);
    }

    #[pg_test]
    fn replaying_a_large_trace_in_batches_gives_its_end_content() {
        let trace = embedded(PAPER, "automerge-paper");
        let updates = trace.to_updates(12);
        for chunk in updates.chunks(1000) {
            one_with::<i64>(
                "SELECT collab.apply_updates('paper', $1)",
                &[chunk.to_vec().into()],
            );
        }
        assert_eq!(text_of("paper"), trace.end_content);
        assert_eq!(one::<i32>("SELECT length(collab.text('paper'))"), 104_852);
    }

    #[pg_test]
    fn random_and_mutated_updates_never_break_a_document() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let p = Peer::new(1);
        let mut real = Vec::new();
        for i in 0..20u32 {
            let u = p.insert(i, &format!("w{i} "));
            real.push(u.clone());
            apply("fuzz", &u);
        }
        let expected = text_of("fuzz");
        let mut runner = TestRunner::new(Config {
            cases: 300,
            failure_persistence: None,
            ..Config::default()
        });
        let allowed = ["ok", "22P03", "22000", "54000"];
        // Random bytes.
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..64), |bytes| {
                let code = sqlstate(&format!(
                    "SELECT collab.apply_update('fuzz', '\\x{}')",
                    hex(&bytes)
                ));
                prop_assert!(allowed.contains(&code.as_str()), "{code} for {bytes:?}");
                Ok(())
            })
            .expect("random bytes");
        // Real updates with bytes flipped, truncated or extended.
        let strategy = (
            0..real.len(),
            any::<prop::sample::Index>(),
            any::<u8>(),
            0..3u8,
        );
        runner
            .run(&strategy, |(which, at, value, how)| {
                let mut u = real[which].clone();
                let i = at.index(u.len());
                match how {
                    0 => u[i] ^= value | 1,
                    1 => u.truncate(i),
                    _ => u.insert(i, value),
                }
                let code = sqlstate(&format!(
                    "SELECT collab.apply_update('fuzz', '\\x{}')",
                    hex(&u)
                ));
                prop_assert!(allowed.contains(&code.as_str()), "{code} for {u:?}");
                Ok(())
            })
            .expect("mutated updates");
        // Whatever was accepted, the document still reads, rebuilds cold, and kept the real text.
        let now = text_of("fuzz");
        let head: i64 = one("SELECT head_seq FROM collab.documents WHERE name = 'fuzz'");
        let cold: String = one_with("SELECT collab.text_at('fuzz', $1)", &[head.into()]);
        assert_eq!(now, cold);
        assert!(!expected.is_empty());
        let _: Vec<u8> = one("SELECT collab.state('fuzz')");
        let _: pgrx::JsonB = one("SELECT collab.to_json('fuzz')");
    }

    /// A batch's depth check is the same whether the structs of its first scan are kept (up to
    /// 65,536) or the batch is scanned again (past that): a batch whose last updates nest one
    /// level too deep is refused whole, and one level less is stored.
    #[pg_test]
    fn nesting_is_checked_in_batches_past_the_structs_kept_from_the_first_scan() {
        use crate::scan::build;
        Spi::run("SET collab.max_nesting = 50").expect("set");
        Spi::run("CREATE TEMP TABLE batch (i bigint, u bytea)").expect("table");
        let p = Peer::new(7);
        let filler: Vec<Vec<u8>> = (0..70_000u32).map(|i| p.insert(i, "z")).collect();
        let levels = |upto: u32| (0..upto).map(|l| build::nested_map_level("m", l));
        for (doc, n) in [("kept", 10usize), ("rescanned", filler.len())] {
            let too_deep: Vec<Vec<u8>> = filler[..n].iter().cloned().chain(levels(51)).collect();
            Spi::run("TRUNCATE batch").expect("truncate");
            Spi::run_with_args(
                "INSERT INTO batch SELECT i, u FROM unnest($1::bytea[]) WITH ORDINALITY AS t(u, i)",
                &[too_deep.into()],
            )
            .expect("batch");
            assert_eq!(
                sqlstate(&format!(
                    "SELECT collab.apply_updates('{doc}', \
                     (SELECT array_agg(u ORDER BY i) FROM batch))"
                )),
                "54001",
                "{doc}"
            );
            assert_eq!(
                count(&format!(
                    "SELECT count(*) FROM collab.updates u JOIN collab.documents d \
                     ON d.id = u.doc_id WHERE d.name = '{doc}'"
                )),
                0,
                "nothing of {doc} stored"
            );
            let fine: Vec<Vec<u8>> = filler[..n].iter().cloned().chain(levels(50)).collect();
            let last = one_with::<i64>(
                "SELECT collab.apply_updates($1, $2)",
                &[doc.into(), fine.into()],
            );
            assert_eq!(last, (n + 50) as i64, "{doc}");
        }
    }

    #[pg_test]
    fn nesting_past_the_limit_is_refused_in_one_update_and_level_by_level() {
        use crate::scan::build;
        Spi::run("SET collab.max_nesting = 50").expect("set");
        assert_eq!(
            sqlstate(&format!(
                "SELECT collab.apply_update('deep', '\\x{}')",
                hex(&build::nested_maps("m", 51))
            )),
            "54001"
        );
        assert_eq!(
            sqlstate(&format!(
                "SELECT collab.apply_update('deep', '\\x{}')",
                hex(&build::any_item("m", "k", &build::nested_any(51, true)))
            )),
            "54001"
        );
        for level in 0..50 {
            apply("levels", &build::nested_map_level("m", level));
        }
        assert_eq!(
            sqlstate(&format!(
                "SELECT collab.apply_update('levels', '\\x{}')",
                hex(&build::nested_map_level("m", 50))
            )),
            "54001"
        );
        let json: pgrx::JsonB = one("SELECT collab.to_json('levels')");
        let mut depth = 0;
        let mut cur = &json.0["m"];
        while let Some(next) = cur.get("k") {
            depth += 1;
            cur = next;
        }
        assert_eq!(depth, 50);
        // A lower limit later: the stored document fails cleanly, the log still reads.
        Spi::run("SET collab.max_nesting = 10; SET collab.cache_documents = 0").expect("set");
        assert_eq!(sqlstate("SELECT collab.text_at('levels', 50)"), "54001");
        assert_eq!(
            count("SELECT count(*) FROM collab.updates_since('levels', 0)"),
            50
        );
    }

    #[pg_test]
    fn the_cache_keeps_its_byte_budget_and_evicted_writes_stay_undoable() {
        Spi::run("SET collab.cache_bytes = '256kB'").expect("set");
        for i in 0..20 {
            Spi::run(&format!(
                "SELECT collab.insert_text('budget{i}', 'content', 0, repeat('x', 10000))"
            ))
            .expect("write");
            assert!(crate::cache::held_bytes() <= 256 * 1024);
        }
        // A document this subtransaction wrote is evicted (dirty or not), read again (rebuilt
        // from the subtransaction's own rows), then the subtransaction rolls back: what it
        // wrote must not survive in the cache.
        Spi::run("SET collab.cache_documents = 1").expect("set");
        Spi::run("SELECT collab.insert_text('undo', 'content', 0, 'kept')").expect("write");
        Spi::run(
            "DO $$ BEGIN \
               PERFORM collab.insert_text('undo', 'content', 0, 'gone '); \
               PERFORM collab.insert_text('other', 'content', 0, 'x'); \
               PERFORM collab.text('undo'); \
               RAISE EXCEPTION 'undo'; \
             EXCEPTION WHEN raise_exception THEN NULL; END $$",
        )
        .expect("rolled back");
        assert_eq!(text_of("undo"), "kept");
    }

    #[pg_test]
    fn updates_since_pages_through_a_long_log_in_order() {
        let p = Peer::new(9);
        let mut batch = Vec::new();
        for i in 0..3000u32 {
            batch.push(format!("'\\x{}'::bytea", hex(&p.insert(i, "x"))));
        }
        Spi::run(&format!(
            "SELECT collab.apply_updates('paged', ARRAY[{}])",
            batch.join(",")
        ))
        .expect("batch");
        // Every row once, in order, across many pages; LIMIT stops reading early.
        assert_eq!(
            count(
                "SELECT count(*) FROM (SELECT seq, lag(seq) OVER (ORDER BY ord) AS prev \
                 FROM collab.updates_since('paged', 100) WITH ORDINALITY AS u(seq, update, \
                 origin, created_at, ord)) s WHERE prev IS NULL OR seq = prev + 1"
            ),
            2900
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM (SELECT * FROM collab.updates_since('paged', 0) LIMIT 5) l"
            ),
            5
        );
        assert_eq!(
            count("SELECT count(*) FROM collab.updates_since('paged', 3000)"),
            0
        );
    }
}
