//! The SQL surface in the DBA's own language: the pg_regress files in `sql/regress` (privileges,
//! per-document rights, tombstones) run against a throwaway cluster, connecting as the roles an
//! application, a reader, an administrator and a bridge would use, and must print exactly
//! `sql/regress/expected/*.out`.

use std::path::PathBuf;
use std::process::Command;

use collab_tests::{pg_bin, pg_config, Cluster};

/// The tests, in order (`setup` creates the extension and the roles).
const TESTS: &[&str] = &[
    "setup",
    "privileges",
    "rights",
    "tombstones",
    "search",
    "attribution",
    "restore",
];

fn pg_regress() -> PathBuf {
    let out = Command::new(pg_config())
        .arg("--pgxs")
        .output()
        .expect("pg_config runs");
    // .../lib/postgresql/15/lib/pgxs/src/makefiles/pgxs.mk -> .../pgxs/src/test/regress/pg_regress
    let pgxs = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    pgxs.parent()
        .and_then(|p| p.parent())
        .map(|src| src.join("test/regress/pg_regress"))
        .expect("pgxs path")
}

#[test]
fn the_sql_regression_tests_print_what_they_expect() {
    let cluster = Cluster::start();
    cluster.psql("postgres", "CREATE DATABASE collab_regress");
    let out = tempfile::tempdir().expect("temp dir");
    // COLLAB_REGRESS_OUT=<dir> keeps the results (results/*.out) to review or to bless.
    let kept = std::env::var_os("COLLAB_REGRESS_OUT").map(PathBuf::from);
    let input = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sql/regress");
    let status = Command::new(pg_regress())
        .args(["--use-existing", "--host=127.0.0.1", "--user=postgres"])
        .arg(format!("--port={}", cluster.port))
        .arg(format!("--bindir={}", pg_bin()))
        .arg(format!("--inputdir={}", input.display()))
        .arg(format!(
            "--outputdir={}",
            kept.as_deref().unwrap_or(out.path()).display()
        ))
        .arg("--dbname=collab_regress")
        .args(TESTS)
        .status()
        .expect("pg_regress runs");
    let diffs = std::fs::read_to_string(
        kept.as_deref()
            .unwrap_or(out.path())
            .join("regression.diffs"),
    )
    .unwrap_or_default();
    assert!(status.success(), "pg_regress found differences:\n{diffs}");
}

/// Rules are cached per backend: a change must reach sessions that are already open (and
/// hold the old rules), at the changing transaction's commit and not before.
#[tokio::test]
async fn a_rule_change_reaches_sessions_already_open_at_commit() {
    let cluster = Cluster::start();
    let mut admin = cluster.connect().await;
    admin
        .batch_execute(
            "CREATE ROLE carol LOGIN IN ROLE collab_user; \
             SELECT collab.insert_text('team/plan', 'content', 0, 'Plan');",
        )
        .await
        .expect("setup");
    let carol = cluster.connect_as("carol", "postgres").await;
    let read = || async {
        match carol
            .query_one("SELECT collab.text('team/plan')", &[])
            .await
        {
            Ok(r) => Ok(r.get::<_, String>(0)),
            Err(e) => Err(e.code().map(|c| c.code().to_string())),
        }
    };
    assert_eq!(read().await, Err(Some("42501".into())));
    let tx = admin.transaction().await.expect("begin");
    tx.execute("SELECT collab.grant_access('carol', 'team/*', 'read')", &[])
        .await
        .expect("grant");
    assert_eq!(
        read().await,
        Err(Some("42501".into())),
        "not before the grant commits"
    );
    tx.commit().await.expect("commit");
    assert_eq!(read().await, Ok("Plan".to_string()));
    admin
        .execute("SELECT collab.revoke_access('carol', 'team/*')", &[])
        .await
        .expect("revoke");
    assert_eq!(read().await, Err(Some("42501".into())));
}
