//! Backups and upgrades as a DBA does them: `pg_dump -Fc` + `pg_restore` and a plain-SQL dump
//! into fresh databases, and `ALTER EXTENSION pg_collab UPDATE` of databases created with the
//! released 0.1.0, 0.2.0, 0.3.0 and 0.3.1 scripts. Documents with history, checkpoints, pruned
//! ranges and packed log rows must come back
//! with identical text, state, head_seq and earlier versions; an upgraded database must have
//! exactly the objects, privileges and comments of a fresh install.

use std::collections::BTreeMap;
use std::process::Command;

use collab_tests::{pg_config, Cluster, Peer};
use tokio_postgres::Client;

/// Fills database `postgres` through the functions: a document with history, a checkpoint
/// and a pruned range; one written in SQL; a large one; a deleted one; a per-document rule.
async fn fill(cluster: &Cluster) {
    let db = cluster.connect().await;
    let peer = Peer::new(7);
    let mut at = 0;
    for word in ["alpha ", "beta ", "gamma "] {
        let u = peer.insert(at, word);
        at += word.len() as u32;
        db.execute("SELECT collab.apply_update('history', $1)", &[&u])
            .await
            .expect("apply");
    }
    db.execute("SELECT collab.compact('history')", &[])
        .await
        .expect("compact");
    let cut: String = db
        .query_one("SELECT now()::text", &[])
        .await
        .expect("now")
        .get(0);
    for word in ["delta ", "epsilon"] {
        let u = peer.insert(at, word);
        at += word.len() as u32;
        db.execute(
            "SELECT collab.apply_update('history', $1, 'bridge-1/3')",
            &[&u],
        )
        .await
        .expect("apply");
    }
    let pruned: i64 = db
        .query_one(
            "SELECT collab.prune('history', $1::text::timestamptz)",
            &[&cut],
        )
        .await
        .expect("prune")
        .get(0);
    assert_eq!(pruned, 3, "the three updates before the cut are pruned");
    db.batch_execute(
        "SELECT collab.insert_text('team/notes', 'content', 0, 'Hello'); \
         SELECT collab.set_text('team/notes', 'content', 'Hello, wide world!'); \
         SELECT collab.insert_text('gone', 'content', 0, 'bye'); \
         SELECT collab.delete_document('gone'); \
         CREATE ROLE team_a; \
         SELECT collab.grant_access('team_a', 'team/*', 'write');",
    )
    .await
    .expect("SQL edits");
    let big = Peer::new(8).insert(0, &"x".repeat(30_000));
    db.execute("SELECT collab.apply_update('big', $1)", &[&big])
        .await
        .expect("big");
}

/// Everything a reader can tell about each document, from a fresh backend (no cache): head,
/// history floor, text, state, and the text of every version still readable.
async fn documents(db: &Client) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let names = db
        .query("SELECT name FROM collab.documents ORDER BY name", &[])
        .await
        .expect("names");
    for row in names {
        let name: String = row.get(0);
        let info = db
            .query_one(
                "SELECT head_seq, history_from, checkpoint_seq, update_count, log_bytes, \
                 deleted_at IS NOT NULL FROM collab.document_info($1)",
                &[&name],
            )
            .await
            .expect("info");
        let (head, floor): (i64, i64) = (info.get(0), info.get(1));
        let mut desc = format!(
            "head={head} history_from={floor} checkpoint={} updates={} bytes={} deleted={}",
            info.get::<_, i64>(2),
            info.get::<_, i64>(3),
            info.get::<_, i64>(4),
            info.get::<_, bool>(5)
        );
        if !info.get::<_, bool>(5) {
            let r = db
                .query_one("SELECT collab.text($1), collab.state($1)", &[&name])
                .await
                .expect("read");
            let state: Vec<u8> = r.get(1);
            desc += &format!(
                " text={:?} state_bytes={}",
                r.get::<_, String>(0),
                state.len()
            );
            desc += &format!(" state={state:?}");
            // Searchable as before, with the same text (a dump keeps collab.texts; an upgrade
            // indexes the old documents).
            let indexed: Option<String> = db
                .query_one(
                    "SELECT (SELECT body FROM collab.document_texts WHERE name = $1)",
                    &[&name],
                )
                .await
                .expect("indexed text")
                .get(0);
            desc += &format!(" indexed={indexed:?}");
            for seq in floor..=head {
                let t: String = db
                    .query_one("SELECT collab.text_at($1, $2)", &[&name, &seq])
                    .await
                    .expect("text_at")
                    .get(0);
                desc += &format!(" at{seq}={t:?}");
            }
        }
        out.insert(name, desc);
    }
    out
}

async fn rules(db: &Client) -> Vec<String> {
    db.query(
        "SELECT role || ' ' || pattern || ' ' || level FROM collab.access_rules ORDER BY 1",
        &[],
    )
    .await
    .expect("rules")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

fn run(mut cmd: Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a batch by one author, which 0.4.0 stores in shared (packed) log rows.
async fn fill_packed(cluster: &Cluster) {
    let db = cluster.connect().await;
    let peer = Peer::new(11);
    let batch: Vec<Vec<u8>> = (0..200).map(|i| peer.insert(i, "p")).collect();
    db.execute("SELECT collab.apply_updates('packed', $1)", &[&batch])
        .await
        .expect("batch");
    let (rows, updates): (i64, i64) = db
        .query_one(
            "SELECT count(*), sum(span)::int8 FROM collab.updates u \
             JOIN collab.documents d ON d.id = u.doc_id WHERE d.name = 'packed'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .expect("rows");
    assert_eq!(updates, 200);
    assert!(rows < 20, "the batch shares rows: {rows}");
}

#[tokio::test]
async fn dumps_and_restores_keep_every_document_and_rule() {
    let cluster = Cluster::start();
    fill(&cluster).await;
    fill_packed(&cluster).await;
    let before = documents(&cluster.connect().await).await;
    assert!(before["history"].contains("history_from=3"), "{before:?}");
    assert!(before["packed"].contains(&"p".repeat(200)), "{before:?}");
    assert!(before["gone"].contains("deleted=true"), "{before:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let custom = dir.path().join("db.dump");
    let plain = dir.path().join("db.sql");

    let mut dump = cluster.tool("pg_dump");
    dump.args(["-Fc", "-d", "postgres", "-f"]).arg(&custom);
    run(dump);
    let mut dump = cluster.tool("pg_dump");
    dump.args(["-d", "postgres", "-f"]).arg(&plain);
    run(dump);
    let sql = std::fs::read_to_string(&plain).expect("dump");
    for table in ["documents", "updates", "checkpoints", "access_rules"] {
        assert!(
            sql.contains(&format!("COPY collab.{table} ")),
            "no COPY collab.{table} in the dump"
        );
    }
    assert!(
        !sql.contains("COPY collab.notification_keys"),
        "the notification key is not dumped"
    );

    cluster.psql("postgres", "CREATE DATABASE restored_custom");
    let mut restore = cluster.tool("pg_restore");
    restore
        .args(["--exit-on-error", "-d", "restored_custom"])
        .arg(&custom);
    run(restore);
    cluster.psql("postgres", "CREATE DATABASE restored_plain");
    let mut psql = cluster.tool("psql");
    psql.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        "restored_plain",
        "-f",
    ])
    .arg(&plain);
    run(psql);

    let original_rules = rules(&cluster.connect().await).await;
    for db in ["restored_custom", "restored_plain"] {
        let c = cluster.connect_as("postgres", db).await;
        assert_eq!(documents(&c).await, before, "{db}: documents differ");
        assert_eq!(rules(&c).await, original_rules, "{db}: rules differ");
        // Writing goes on where it stopped: sequences and ids continue.
        let seq: i64 = c
            .query_one(
                "SELECT collab.insert_text('history', 'content', 0, '> ')",
                &[],
            )
            .await
            .expect("write after restore")
            .get(0);
        assert_eq!(seq, 6, "{db}");
        c.execute(
            "SELECT collab.insert_text('brand-new', 'content', 0, 'x')",
            &[],
        )
        .await
        .expect("a new document after restore");
        // The deleted document stays deleted.
        let e = c
            .query_one("SELECT collab.text('gone')", &[])
            .await
            .expect_err("deleted");
        assert_eq!(e.code().map(|c| c.code()), Some("42704"), "{db}");
        // A restore makes its own notification key.
        let keys: i64 = c
            .query_one("SELECT count(*) FROM collab.notification_keys()", &[])
            .await
            .expect("keys")
            .get(0);
        assert_eq!(keys, 1, "{db}");
    }
}

/// Every object of the extension with its definition, privileges and comment, in one sorted
/// list: what must be identical between a fresh install and an upgraded database.
async fn catalog(db: &Client) -> Vec<String> {
    const Q: &str = "
        SELECT 'function ' || p.oid::regprocedure::text || ' returns ' || pg_get_function_result(p.oid)
               || ' lang=' || l.lanname || ' secdef=' || p.prosecdef::text || ' vol=' || p.provolatile::text
               || ' strict=' || p.proisstrict::text || ' config=' || coalesce(p.proconfig::text, '')
               || ' src=' || p.prosrc || ' bin=' || coalesce(p.probin, '')
               || ' acl=' || coalesce((SELECT string_agg(a.grantee::regrole::text || ':' || a.privilege_type, ',' ORDER BY 1)
                                       FROM aclexplode(p.proacl) a), '')
               || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '')
        FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
        WHERE p.pronamespace = 'collab'::regnamespace
        UNION ALL
        SELECT 'relation ' || c.oid::regclass::text || ' kind=' || c.relkind::text
               || ' options=' || coalesce(c.reloptions::text, '')
               || ' acl=' || coalesce((SELECT string_agg(a.grantee::regrole::text || ':' || a.privilege_type, ',' ORDER BY 1)
                                       FROM aclexplode(c.relacl) a), '')
               || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '')
        FROM pg_class c WHERE c.relnamespace = 'collab'::regnamespace
        UNION ALL
        SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || ' notnull=' || a.attnotnull::text || ' identity=' || a.attidentity::text
               || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
               || ' comment=' || coalesce(col_description(a.attrelid, a.attnum), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = 'collab'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
          AND NOT a.attisdropped
        UNION ALL
        SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
        FROM pg_constraint WHERE connamespace = 'collab'::regnamespace
        UNION ALL
        SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        WHERE c.relnamespace = 'collab'::regnamespace
        UNION ALL
        SELECT 'trigger ' || pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE c.relnamespace = 'collab'::regnamespace AND NOT t.tgisinternal
        UNION ALL
        SELECT 'member ' || pg_describe_object(classid, objid, objsubid) FROM pg_depend
        WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
          AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_collab')
        UNION ALL
        SELECT 'dumped ' || t::regclass::text || ' ' || coalesce(f, '')
        FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS u(t, f)
        WHERE e.extname = 'pg_collab'
        UNION ALL
        SELECT 'extension ' || extname || ' ' || extversion || ' ' || extrelocatable::text || ' ' || extnamespace::regnamespace::text
        FROM pg_extension WHERE extname = 'pg_collab'
        UNION ALL
        SELECT 'schema acl ' || coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname = 'collab'
        ORDER BY 1";
    db.query(Q, &[])
        .await
        .expect("catalog")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Puts the released install scripts (0.1.0 to 0.3.1) where `CREATE EXTENSION ... VERSION` finds
/// them (they are not installed with the extension: with the current library they are only good
/// for being upgraded).
fn install_released_scripts() {
    for version in ["0.1.0", "0.2.0", "0.3.0", "0.3.1"] {
        install_released_script(version);
    }
}

fn install_released_script(version: &str) {
    let out = Command::new(pg_config())
        .arg("--sharedir")
        .output()
        .expect("pg_config");
    let dest = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        .join(format!("extension/pg_collab--{version}.sql"));
    let src = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../sql/released/pg_collab--{version}.sql"));
    std::fs::copy(&src, &dest).unwrap_or_else(|e| {
        panic!(
            "cannot copy {} to {} (run the tests as the owner of the installation): {e}",
            src.display(),
            dest.display()
        )
    });
}

#[tokio::test]
async fn a_database_of_release_0_1_0_upgrades_in_place_through_0_2_0_and_keeps_every_document() {
    upgrades_from("0.1.0").await;
}

#[tokio::test]
async fn a_database_of_release_0_2_0_upgrades_in_place_through_0_3_0_and_keeps_every_document() {
    upgrades_from("0.2.0").await;
}

#[tokio::test]
async fn a_database_of_release_0_3_0_upgrades_in_place_through_0_3_1_and_keeps_every_document() {
    upgrades_from("0.3.0").await;
}

#[tokio::test]
async fn a_database_of_the_previous_release_upgrades_in_place_and_keeps_every_document() {
    upgrades_from("0.3.1").await;
}

/// A database made by release `from`, holding the documents of `fill`, upgraded to this
/// release by `ALTER EXTENSION pg_collab UPDATE`, equals a fresh install and works as one.
async fn upgrades_from(from: &str) {
    install_released_scripts();
    let cluster = Cluster::start();
    fill(&cluster).await;
    let source = documents(&cluster.connect().await).await;

    // An old database holding the same documents, stored as that release stored them (`fill`
    // writes one update per call, so every log row holds one update, as before 0.4.0; the
    // checkpoint and counter formats did not change; 0.1.0 had no tombstones, so the deleted
    // document is left out; authors and search texts are 0.3.0's). The rows are copied in
    // rather than written with the old functions, which would run this release's library
    // against the old schema.
    cluster.psql("postgres", "CREATE DATABASE old");
    cluster.psql(
        "old",
        &format!("CREATE EXTENSION pg_collab VERSION '{from}'"),
    );
    assert_eq!(
        cluster.psql(
            "old",
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_collab'"
        ),
        format!("{from}\n")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let cols = "id, name, head_seq, checkpoint_seq, history_from, update_count, log_bytes, \
                tail_bytes, state_bytes, created_at, updated_at";
    let live = "doc_id IN (SELECT id FROM collab.documents WHERE deleted_at IS NULL)";
    // From 0.3.0 on, updates have authors and documents have search texts.
    let with_texts = from >= "0.3.0";
    let update_cols = if with_texts {
        "doc_id, seq, update, origin, created_at, author"
    } else {
        "doc_id, seq, update, origin, created_at"
    };
    let mut tables = vec![
        (
            "documents",
            cols.to_string(),
            format!("SELECT {cols} FROM collab.documents WHERE deleted_at IS NULL"),
        ),
        (
            "updates",
            update_cols.to_string(),
            format!("SELECT {update_cols} FROM collab.updates WHERE {live}"),
        ),
        (
            "checkpoints",
            "doc_id, seq, state, created_at".to_string(),
            format!("SELECT doc_id, seq, state, created_at FROM collab.checkpoints WHERE {live}"),
        ),
    ];
    if with_texts {
        let text_cols = "doc_id, seq, language, body, tsv, indexed_at";
        tables.push((
            "texts",
            text_cols.to_string(),
            format!("SELECT {text_cols} FROM collab.texts WHERE {live}"),
        ));
    }
    for (table, cols, select) in &tables {
        let file = dir.path().join(table);
        cluster.psql(
            "postgres",
            &format!("\\copy ({select}) TO '{}'", file.display()),
        );
        let mut psql = cluster.tool("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "old"])
            .args(["-c", "SET session_replication_role = replica"])
            .arg("-c")
            .arg(format!(
                "\\copy collab.{table} ({cols}) FROM '{}'",
                file.display()
            ));
        run(psql);
    }
    cluster.psql(
        "old",
        "SELECT setval('collab.documents_id_seq', (SELECT max(id) FROM collab.documents))",
    );

    // What scripts/db.sh runs at every start.
    cluster.psql("old", "ALTER EXTENSION pg_collab UPDATE");
    assert_eq!(
        cluster.psql(
            "old",
            "SELECT extversion FROM pg_extension WHERE extname = 'pg_collab'"
        ),
        format!("{}\n", env!("CARGO_PKG_VERSION"))
    );
    let old = cluster.connect_as("postgres", "old").await;
    let mut expected = source.clone();
    expected.remove("gone");
    assert_eq!(documents(&old).await, expected);

    // The old documents are searchable (indexed by the 0.3.0 upgrade, or copied with 0.3.0's).
    let found: String = old
        .query_one(
            "SELECT string_agg(name, ',' ORDER BY name) FROM collab.search('gamma')",
            &[],
        )
        .await
        .expect("search after upgrade")
        .get(0);
    assert_eq!(found, "history");

    // The upgraded database is a fresh install of this release: same objects, privileges,
    // comments.
    cluster.psql("postgres", "CREATE DATABASE fresh");
    cluster.psql("fresh", "CREATE EXTENSION pg_collab");
    let fresh = cluster.connect_as("postgres", "fresh").await;
    let (upgraded, installed) = (catalog(&old).await, catalog(&fresh).await);
    assert!(
        installed.len() > 100,
        "the catalog lists every object: {installed:#?}"
    );
    let only_upgraded: Vec<_> = upgraded.iter().filter(|l| !installed.contains(l)).collect();
    let only_installed: Vec<_> = installed.iter().filter(|l| !upgraded.contains(l)).collect();
    assert!(
        only_upgraded.is_empty() && only_installed.is_empty(),
        "upgrade script and install script differ:\nonly after the upgrade: {only_upgraded:#?}\n\
         only in a fresh install: {only_installed:#?}"
    );

    // And it works as one: rights, writes, sealed notifications.
    let seq: i64 = old
        .query_one(
            "SELECT collab.insert_text('history', 'content', 0, '> ')",
            &[],
        )
        .await
        .expect("write after upgrade")
        .get(0);
    assert_eq!(seq, 6);
    // A batch goes into shared rows of the upgraded table, and reads back update by update.
    let peer = Peer::new(12);
    let batch: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, s)| peer.insert(i as u32, s))
        .collect();
    old.execute(
        "SELECT collab.apply_updates('after-upgrade', $1)",
        &[&batch],
    )
    .await
    .expect("batch after upgrade");
    let (rows, since, text): (i64, i64, String) = old
        .query_one(
            "SELECT (SELECT count(*) FROM collab.updates u JOIN collab.documents d \
                     ON d.id = u.doc_id WHERE d.name = 'after-upgrade'), \
                    (SELECT count(*) FROM collab.updates_since('after-upgrade', 1)), \
                    collab.text('after-upgrade')",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .expect("packed after upgrade");
    assert_eq!((rows, since, text.as_str()), (1, 2, "abc"));
    old.batch_execute("CREATE ROLE upgraded_app LOGIN IN ROLE collab_writer")
        .await
        .expect("role");
    let app = cluster.connect_as("upgraded_app", "old").await;
    let text: String = app
        .query_one("SELECT collab.text('history')", &[])
        .await
        .expect("an application reads")
        .get(0);
    assert_eq!(text, "> alpha beta gamma delta epsilon");
    let e = app
        .query_one("SELECT count(*) FROM collab.updates", &[])
        .await
        .expect_err("no table access");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"));
}

#[tokio::test]
async fn drop_extension_refuses_while_documents_exist_unless_cascade() {
    let cluster = Cluster::start();
    let db = cluster.connect().await;
    // An installation that never held a document drops as any extension does.
    db.batch_execute("DROP EXTENSION pg_collab; CREATE EXTENSION pg_collab")
        .await
        .expect("an empty installation drops");
    let db = cluster.connect().await; // a new backend: the guard is checked once per backend
    db.execute(
        "SELECT collab.insert_text('kept', 'content', 0, 'precious')",
        &[],
    )
    .await
    .expect("write");
    let e = db
        .batch_execute("DROP EXTENSION pg_collab")
        .await
        .expect_err("refused");
    let err = e.as_db_error().expect("a server error");
    assert_eq!(err.code().code(), "2BP01", "dependent_objects_still_exist");
    assert!(
        err.detail()
            .is_some_and(|d| d.contains("collab.stored_documents")),
        "{err:?}"
    );
    let text: String = db
        .query_one("SELECT collab.text('kept')", &[])
        .await
        .expect("still there")
        .get(0);
    assert_eq!(text, "precious");
    let listed: i64 = db
        .query_one("SELECT count(*) FROM collab.stored_documents", &[])
        .await
        .expect("the guard lists the documents")
        .get(0);
    assert_eq!(listed, 1);
    db.batch_execute("DROP EXTENSION pg_collab CASCADE")
        .await
        .expect("CASCADE drops, documents included");
}
