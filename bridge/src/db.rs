//! The pg_collab SQL calls the bridge makes, on pooled connections with cached statements.
//! How those connections are made (connection string, TLS, pool) is `pgconn`.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::backoff::Backoff;
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

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object> {
    Ok(pool.get().await?)
}

/// A pooled connection for a write. Acquisition is retried (nothing was sent yet, so that is
/// safe); a statement that fails half-way is not, as it may have committed.
pub(crate) async fn client_retrying(pool: &Pool) -> Result<deadpool_postgres::Object> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut attempt = 0;
    loop {
        match pool.get().await {
            Ok(c) => return Ok(c),
            Err(e) if attempt < 2 => {
                tracing::warn!("no database connection for a write: {e}; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn head_seq(pool: &Pool, doc: &str) -> Result<i64> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached("SELECT head_seq FROM collab.document_info($1)")
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
            "SELECT coalesce((SELECT head_seq FROM collab.document_info($1)), 0), \
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
            "SELECT coalesce((SELECT head_seq FROM collab.document_info($1)), 0), \
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

/// At most `limit` rows of `collab.updates_since(doc, seq)`: the extension reads its log a
/// page at a time and stops at the limit, so a catch-up costs a page of memory on both sides.
pub async fn updates_since(pool: &Pool, doc: &str, seq: i64, limit: i64) -> Result<Vec<LogRow>> {
    let c = client(pool).await?;
    let st = c
        // In the select list (ProjectSet) the function is asked for rows one at a time and the
        // LIMIT stops it: in FROM, PostgreSQL would first run it to the end into a tuplestore,
        // so every page of a long catch-up would read the whole rest of the log.
        .prepare_cached(
            "SELECT (r).seq, (r).update, (r).origin \
             FROM (SELECT collab.updates_since($1, $2) AS r LIMIT $3) page",
        )
        .await?;
    c.query(&st, &[&doc, &seq, &limit])
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

/// The most recently edited documents (at most `limit`) the bridge's role may read.
pub async fn list_docs(pool: &Pool, limit: i64) -> Result<Vec<DocInfo>> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached("SELECT name, head_seq, updated_at FROM collab.list_documents($1)")
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

/// One version of the history: a burst of updates from one kind of source (SQL or a bridge) with
/// no pause longer than the gap.
pub struct Version {
    pub seq_from: i64,
    pub seq_to: i64,
    pub first_at: std::time::SystemTime,
    pub last_at: std::time::SystemTime,
    pub updates: i64,
    /// How the burst was written: "sql" when no update of it came through a bridge.
    pub via_sql: bool,
    /// Who wrote it (the recorded authors, sorted).
    pub authors: Vec<String>,
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
        .prepare_cached("SELECT head_seq, history_from FROM collab.document_info($1)")
        .await?;
    let Some(row) = c.query_opt(&head, &[&doc]).await? else {
        return Ok((0, 0, Vec::new()));
    };
    let (head_seq, history_from): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    // The pause that ends a version is computed in SQL so only the summary crosses the wire.
    let st = c
        .prepare_cached(
            "WITH s AS ( \
               SELECT seq, created_at, author, (origin IS NULL OR origin NOT LIKE '%/%') AS sql \
               FROM collab.history($1, $4)), \
             u AS ( \
               SELECT *, CASE WHEN created_at - lag(created_at) OVER w <= make_interval(secs => $2) \
                               AND lag(sql) OVER w = sql THEN 0 ELSE 1 END AS brk \
               FROM s WINDOW w AS (ORDER BY seq)), \
             g AS (SELECT *, sum(brk) OVER (ORDER BY seq) AS grp FROM u) \
             SELECT min(seq), max(seq), min(created_at), max(created_at), count(*), bool_and(sql), \
                    coalesce(array_agg(DISTINCT author) FILTER (WHERE author IS NOT NULL), '{}') \
             FROM g GROUP BY grp ORDER BY max(seq) DESC LIMIT $3",
        )
        .await?;
    let versions = c
        .query(&st, &[&doc, &gap_secs, &limit, &(head_seq - 20000).max(0)])
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
                authors: r.try_get(6)?,
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

/// Restores the document to its version at `seq` as one new update recorded under `author`
/// (`collab.restore`); returns the head sequence afterwards.
pub async fn restore(pool: &Pool, doc: &str, seq: i64, author: &str) -> Result<i64> {
    let mut c = client_retrying(pool).await?;
    let tx = c.transaction().await?;
    // The bridge writes for its token's subject, as its lanes do with apply_updates' authors.
    let set = tx
        .prepare_cached("SELECT set_config('collab.author', $1, true)")
        .await?;
    tx.execute(&set, &[&author]).await?;
    let st = tx.prepare_cached("SELECT collab.restore($1, $2)").await?;
    let head: i64 = tx.query_one(&st, &[&doc, &seq]).await?.try_get(0)?;
    tx.commit().await?;
    Ok(head)
}

/// A run of a text by one author (`collab.text_authors`).
pub struct Span {
    pub position: i64,
    pub length: i64,
    pub author: Option<String>,
    pub text: String,
}

pub async fn text_authors(pool: &Pool, doc: &str, field: &str) -> Result<Vec<Span>> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached("SELECT position, length, author, text FROM collab.text_authors($1, $2)")
        .await?;
    c.query(&st, &[&doc, &field])
        .await?
        .into_iter()
        .map(|r| {
            Ok(Span {
                position: r.try_get(0)?,
                length: r.try_get(1)?,
                author: r.try_get(2)?,
                text: r.try_get(3)?,
            })
        })
        .collect()
}

/// Indexes up to `limit` documents whose search text is stale or missing and that nobody wrote
/// for `lag` (`--search-lag-ms`: the lanes re-index the ones still written); how many. Small calls, each
/// its own transaction: a writer that meets a document being indexed waits for one call only.
pub async fn refresh_search(pool: &Pool, limit: i64, lag: Duration) -> Result<i64> {
    let mut c = client(pool).await?;
    let tx = c.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL collab.search_lag = {}",
        lag.as_millis()
    ))
    .await?;
    let st = tx
        .prepare_cached("SELECT collab.refresh_search($1)")
        .await?;
    let n = tx.query_one(&st, &[&limit]).await?.try_get(0)?;
    tx.commit().await?;
    Ok(n)
}

/// How far search is behind (`collab.search_backlog`): stale documents, and the age of the
/// oldest write search does not have yet (`None`: none).
pub async fn search_backlog(pool: &Pool) -> Result<(i64, Option<Duration>)> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached(
            "SELECT documents, extract(epoch FROM now() - oldest_write)::float8 \
             FROM collab.search_backlog()",
        )
        .await?;
    let row = c.query_one(&st, &[]).await?;
    let age: Option<f64> = row.try_get(1)?;
    Ok((
        row.try_get(0)?,
        age.map(|s| Duration::from_secs_f64(s.max(0.0))),
    ))
}

/// A document matching a search (`collab.search`).
pub struct Hit {
    pub name: String,
    pub rank: f32,
    pub snippet: String,
    pub seq: i64,
}

/// The best `limit` matches of `query` among the documents the bridge's role may read (the
/// caller filters them by its token's rights).
pub async fn search(pool: &Pool, query: &str, config: &str, limit: i32) -> Result<Vec<Hit>> {
    let c = client(pool).await?;
    let st = c
        .prepare_cached("SELECT name, rank, snippet, seq FROM collab.search($1, $2, $3)")
        .await?;
    c.query(&st, &[&query, &config, &limit])
        .await?
        .into_iter()
        .map(|r| {
            Ok(Hit {
                name: r.try_get(0)?,
                rank: r.try_get(1)?,
                snippet: r.try_get(2)?,
                seq: r.try_get(3)?,
            })
        })
        .collect()
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
