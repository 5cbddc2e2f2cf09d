//! The pg_collab SQL calls the bridge makes, on pooled connections with cached statements.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::error::{Error, Result};

/// Longest document name pg_collab accepts, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// The name rules of `collab.documents.name`, checked before anything reaches the database.
pub fn validate_doc_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS {
        return Err(Error::InvalidDocName(format!(
            "must be 1 to {MAX_NAME_CHARS} characters, got {n}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidDocName(
            "must not contain control characters".into(),
        ));
    }
    Ok(())
}

pub fn pg_config(url: &str, application_name: &str) -> Result<tokio_postgres::Config, String> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("invalid --database-url: {e}"))?;
    cfg.application_name(application_name);
    cfg.connect_timeout(Duration::from_secs(10));
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(30));
    Ok(cfg)
}

pub fn pool(cfg: tokio_postgres::Config, size: usize) -> Result<Pool, String> {
    let mgr = Manager::from_config(
        cfg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(size.max(1))
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(10)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object> {
    Ok(pool.get().await?)
}

/// A pooled connection for a write. Acquisition is retried (nothing was sent yet, so that is
/// safe); a statement that fails half-way is not, as it may have committed.
async fn client_retrying(pool: &Pool) -> Result<deadpool_postgres::Object> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match pool.get().await {
            Ok(c) => return Ok(c),
            Err(e) if attempt < 2 => {
                tracing::warn!("no database connection for a write: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay *= 3;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends a batch with one `collab.apply_updates` call; returns the last sequence assigned.
pub async fn apply_updates(pool: &Pool, doc: &str, updates: &[&[u8]], origin: &str) -> Result<i64> {
    let c = client_retrying(pool).await?;
    let st = c
        .prepare_cached("SELECT collab.apply_updates($1, $2::bytea[], $3)")
        .await?;
    let row = c.query_one(&st, &[&doc, &updates, &origin]).await?;
    Ok(row.try_get(0)?)
}

pub async fn head_seq(pool: &Pool, doc: &str) -> Result<i64> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached("SELECT head_seq FROM collab.documents WHERE name = $1")
        .await?;
    let row = c.query_opt(&st, &[&doc]).await?;
    Ok(match row {
        Some(r) => r.try_get(0)?,
        None => 0,
    })
}

pub async fn state_vector(pool: &Pool, doc: &str) -> Result<Vec<u8>> {
    let c = client(pool).await?;
    let st = c.prepare_cached("SELECT collab.state_vector($1)").await?;
    Ok(c.query_one(&st, &[&doc]).await?.try_get(0)?)
}

pub async fn diff(pool: &Pool, doc: &str, state_vector: &[u8]) -> Result<Vec<u8>> {
    let c = client(pool).await?;
    let st = c.prepare_cached("SELECT collab.diff($1, $2)").await?;
    Ok(c.query_one(&st, &[&doc, &state_vector]).await?.try_get(0)?)
}

/// Head sequence and whole state, read in one snapshot.
pub async fn state(pool: &Pool, doc: &str) -> Result<(i64, Vec<u8>)> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached(
            "SELECT coalesce((SELECT head_seq FROM collab.documents WHERE name = $1), 0), \
             collab.state($1)",
        )
        .await?;
    let row = c.query_one(&st, &[&doc]).await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// Head sequence, text of field `content`, and the document as JSON text, in one snapshot.
pub async fn summary(pool: &Pool, doc: &str) -> Result<(i64, String, String)> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached(
            "SELECT coalesce((SELECT head_seq FROM collab.documents WHERE name = $1), 0), \
             collab.text($1), collab.to_json($1)::text",
        )
        .await?;
    let row = c.query_one(&st, &[&doc]).await?;
    Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
}

pub async fn broadcast(pool: &Pool, doc: &str, payload: &[u8], origin: &str) -> Result<()> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached("SELECT collab.broadcast($1, $2, $3)")
        .await?;
    c.execute(&st, &[&doc, &payload, &origin]).await?;
    Ok(())
}

/// One row of `collab.updates_since`.
pub struct LogRow {
    pub seq: i64,
    pub update: Vec<u8>,
    pub origin: Option<String>,
}

pub async fn updates_since(pool: &Pool, doc: &str, seq: i64) -> Result<Vec<LogRow>> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached("SELECT seq, update, origin FROM collab.updates_since($1, $2)")
        .await?;
    c.query(&st, &[&doc, &seq])
        .await?
        .into_iter()
        .map(|r| {
            Ok(LogRow {
                seq: r.try_get(0)?,
                update: r.try_get(1)?,
                origin: r.try_get(2)?,
            })
        })
        .collect()
}

/// One entry of the document list.
pub struct DocInfo {
    pub name: String,
    pub head_seq: i64,
    pub updated_at: std::time::SystemTime,
}

/// The most recently edited documents (at most `limit`).
pub async fn list_docs(pool: &Pool, limit: i64) -> Result<Vec<DocInfo>> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached(
            "SELECT name, head_seq, updated_at FROM collab.documents \
             ORDER BY updated_at DESC, name LIMIT $1",
        )
        .await?;
    c.query(&st, &[&limit])
        .await?
        .into_iter()
        .map(|r| {
            Ok(DocInfo {
                name: r.try_get(0)?,
                head_seq: r.try_get(1)?,
                updated_at: r.try_get(2)?,
            })
        })
        .collect()
}

/// One version of the history: a burst of updates with no pause longer than the gap.
pub struct Version {
    pub seq_from: i64,
    pub seq_to: i64,
    pub first_at: std::time::SystemTime,
    pub last_at: std::time::SystemTime,
    pub updates: i64,
    /// How the burst was written: "sql" when no update of it came through a bridge.
    pub via_sql: bool,
}

/// Head sequence, the first sequence still readable, and the newest versions of the log (edits
/// separated by pauses longer than `gap_secs`), newest first; looks at the last 20,000 updates.
pub async fn history(
    pool: &Pool,
    doc: &str,
    gap_secs: f64,
    limit: i64,
) -> Result<(i64, i64, Vec<Version>)> {
    let c = client(pool).await?;
    let head = c
        .prepare_cached("SELECT head_seq, history_from FROM collab.documents WHERE name = $1")
        .await?;
    let Some(row) = c.query_opt(&head, &[&doc]).await? else {
        return Ok((0, 0, Vec::new()));
    };
    let (head_seq, history_from): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    // The pause that ends a version is computed in SQL so only the summary crosses the wire.
    let st = c
        .prepare_cached(
            "WITH u AS ( \
               SELECT u.seq, u.created_at, u.origin, \
                      CASE WHEN u.created_at - lag(u.created_at) OVER (ORDER BY u.seq) \
                                <= make_interval(secs => $2) THEN 0 ELSE 1 END AS brk \
               FROM collab.updates u JOIN collab.documents d ON d.id = u.doc_id \
               WHERE d.name = $1 AND u.seq > d.head_seq - 20000), \
             g AS (SELECT *, sum(brk) OVER (ORDER BY seq) AS grp FROM u) \
             SELECT min(seq), max(seq), min(created_at), max(created_at), count(*), \
                    bool_and(origin IS NULL OR origin NOT LIKE '%/%') \
             FROM g GROUP BY grp ORDER BY max(seq) DESC LIMIT $3",
        )
        .await?;
    let versions = c
        .query(&st, &[&doc, &gap_secs, &limit])
        .await?
        .into_iter()
        .map(|r| {
            Ok(Version {
                seq_from: r.try_get(0)?,
                seq_to: r.try_get(1)?,
                first_at: r.try_get(2)?,
                last_at: r.try_get(3)?,
                updates: r.try_get(4)?,
                via_sql: r.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((head_seq, history_from, versions))
}

/// The document as it was at sequence `seq`, as one update.
pub async fn state_at(pool: &Pool, doc: &str, seq: i64) -> Result<Vec<u8>> {
    let c = client(pool).await?;
    let st = c.prepare_cached("SELECT collab.state_at($1, $2)").await?;
    Ok(c.query_one(&st, &[&doc, &seq]).await?.try_get(0)?)
}

pub async fn ping(pool: &Pool) -> Result<()> {
    let c = client(pool).await?;
    c.simple_query("SELECT 1").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_extension_rules() {
        assert!(validate_doc_name("team/notes").is_ok());
        assert!(validate_doc_name("").is_err());
        assert!(validate_doc_name("a\nb").is_err());
        assert!(validate_doc_name(&"é".repeat(255)).is_ok());
        assert!(validate_doc_name(&"é".repeat(256)).is_err());
    }
}
