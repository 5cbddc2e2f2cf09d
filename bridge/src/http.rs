//! HTTP API: document list, reads, history and writes, the session, development login, health
//! and metrics. Every answer carries `Cache-Control: no-store`; document reads carry
//! `ETag: "<head seq>"` and honour `If-None-Match`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use deadpool_postgres::Pool;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Access, Principal};
use crate::db;
use crate::error::{Error, Result};
use crate::protocol;
use crate::ws::TokenQuery;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/docs", get(list_docs))
        .route("/api/docs/{doc}", get(get_doc))
        .route("/api/docs/{doc}/state", get(get_state))
        .route("/api/docs/{doc}/history", get(get_history))
        .route("/api/docs/{doc}/updates", post(post_update))
        .route("/api/docs/{doc}/restore", post(post_restore))
        .route("/api/docs/{doc}/authors", get(get_authors))
        .route("/api/search", get(search))
        .route("/api/session", get(session))
        .route("/api/dev/login", post(dev_login))
        .route("/api/dev/logout", post(dev_logout))
        .route("/api/{*rest}", axum::routing::any(unknown_api))
        .route("/healthz", get(healthz))
        .layer(axum::middleware::map_response(no_store))
}

/// `/metrics`: on the main address, or alone on `--admin-listen`.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .layer(axum::middleware::map_response(no_store))
}

async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Query parameters of document reads: the optional token (when enabled) and a version.
#[derive(Deserialize, Default)]
pub struct DocQuery {
    token: Option<String>,
    /// `state?at=SEQ`: the document as it was at that sequence.
    at: Option<i64>,
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Any other path under `/api/`: a JSON 404, never the page.
async fn unknown_api() -> Error {
    Error::NotFound
}

#[derive(Deserialize)]
struct SessionQuery {
    token: Option<String>,
    /// Also answer the caller's right on this document (the token alone decides: no query).
    doc: Option<String>,
}

/// `GET /api/session[?doc=NAME]`: who the token (cookie or header) says the caller is, until
/// when, and with `doc` their right on that document (`null`: none).
async fn session(
    State(st): State<AppState>,
    Query(q): Query<SessionQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let principal = st.auth.authenticate(&headers, q.token.as_deref())?;
    let mut body = json!({
        "name": principal.subject,
        "expires_at": principal.expires_at,
        "dev": st.auth.is_dev(),
    });
    if let Some(doc) = q.doc {
        db::validate_doc_name(&doc)?;
        body["access"] = json!(principal.access(&doc));
    }
    Ok(Json(body).into_response())
}

/// `GET /api/docs`: the most recently edited documents the caller may read.
async fn list_docs(
    State(st): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let principal = st.auth.authenticate(&headers, q.token.as_deref())?;
    let docs: Vec<_> = list_all_shards(&st, 500)
        .await?
        .into_iter()
        .filter_map(|d| {
            let access = principal.access(&d.name)?;
            Some(json!({
                "name": d.name,
                "head_seq": d.head_seq,
                "updated_at": millis(d.updated_at),
                "access": access,
            }))
        })
        .take(100)
        .collect();
    Ok(Json(json!({ "docs": docs })).into_response())
}

/// The most recently edited documents of every shard, newest first.
async fn list_all_shards(st: &AppState, limit: i64) -> Result<Vec<db::DocInfo>> {
    let mut docs = gather_shards(st, "document list", |pool| db::list_docs(pool, limit)).await?;
    docs.sort_by_key(|d| std::cmp::Reverse(d.updated_at));
    docs.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(docs)
}

/// One call on every shard at once (reads go to the replica if there is one), the answers put
/// together. A shard that does not answer is left out (its documents are unavailable, the
/// others are not); the call fails only when no shard answers.
async fn gather_shards<'a, T, F, Fut>(st: &'a AppState, what: &str, call: F) -> Result<Vec<T>>
where
    F: Fn(&'a Pool) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>>>,
{
    let calls = st
        .shards
        .all()
        .iter()
        .map(|s| call(s.replica.as_ref().unwrap_or(&s.pool)));
    let mut all = Vec::new();
    let (mut last_err, mut answered) = (None, false);
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        match r {
            Ok(part) => {
                answered = true;
                all.extend(part);
            }
            Err(e) => {
                tracing::warn!(shard = i, "{what} incomplete: {e}");
                last_err = Some(e);
            }
        }
    }
    if let (false, Some(e)) = (answered, last_err) {
        return Err(e);
    }
    Ok(all)
}

/// Pause between two updates that starts a new version in the history.
const VERSION_GAP_SECS: f64 = 5.0;

/// `GET /api/docs/{doc}/history`: versions of the log (bursts of edits), newest first.
async fn get_history(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&st, &headers, &q.token, &doc, Access::Read)?;
    if let Some(resp) = not_modified(&st, &headers, &doc).await? {
        return Ok(resp);
    }
    let (pool, replica) = st.read_pool_for(&doc);
    let (head, history_from, versions) = db::history(pool, &doc, VERSION_GAP_SECS, 100).await?;
    let versions: Vec<_> = versions
        .into_iter()
        .map(|v| {
            json!({
                "seq_from": v.seq_from,
                "seq_to": v.seq_to,
                "first_at": millis(v.first_at),
                "last_at": millis(v.last_at),
                "updates": v.updates,
                "via": if v.via_sql { "sql" } else { "editor" },
                "authors": v.authors,
            })
        })
        .collect();
    let body = json!({
        "name": doc,
        "head_seq": head,
        "history_from": history_from,
        "versions": versions,
    });
    Ok(from_replica(
        with_etag(Json(body).into_response(), head),
        replica,
    ))
}

fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    token: &Option<String>,
    doc: &str,
    needed: Access,
) -> Result<Principal> {
    db::validate_doc_name(doc)?;
    let principal = st.auth.authenticate(headers, token.as_deref())?;
    principal.require(doc, needed)?;
    Ok(principal)
}

fn etag(seq: i64) -> String {
    format!("\"{seq}\"")
}

fn matches_etag(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

fn with_etag(mut resp: Response, seq: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&etag(seq)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// 304 when the client's ETag is still the head sequence.
async fn not_modified(st: &AppState, headers: &HeaderMap, doc: &str) -> Result<Option<Response>> {
    if headers.get(header::IF_NONE_MATCH).is_none() {
        return Ok(None);
    }
    let head = db::head_seq(st.read_pool_for(doc).0, doc).await?;
    Ok(matches_etag(headers, &etag(head))
        .then(|| with_etag(StatusCode::NOT_MODIFIED.into_response(), head)))
}

/// `GET /api/docs/{doc}`: name, head sequence, text of `content`, and the document as JSON.
async fn get_doc(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let principal = authorize(&st, &headers, &q.token, &doc, Access::Read)?;
    if let Some(resp) = not_modified(&st, &headers, &doc).await? {
        return Ok(resp);
    }
    let access = principal.access(&doc);
    let (pool, replica) = st.read_pool_for(&doc);
    let (head, text, json) = db::summary(pool, &doc).await?;
    let json: serde_json::Value =
        serde_json::from_str(&json).map_err(|e| Error::Internal(e.to_string()))?;
    let body = json!({"name": doc, "head_seq": head, "text": text, "json": json, "access": access});
    Ok(from_replica(
        with_etag(Json(body).into_response(), head),
        replica,
    ))
}

/// Marks a response read from the replica (`x-collab-read-from: replica`): it may be behind
/// the primary by the replica's replay lag (docs/operations.md).
fn from_replica(mut resp: Response, replica: bool) -> Response {
    if replica {
        resp.headers_mut().insert(
            header::HeaderName::from_static("x-collab-read-from"),
            HeaderValue::from_static("replica"),
        );
    }
    resp
}

fn binary(bytes: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        bytes,
    )
        .into_response()
}

/// `GET /api/docs/{doc}/state`: the whole document as one Yjs v1 update; with `?at=SEQ`, the
/// document as it was at that sequence (410 when that part of the history was pruned).
async fn get_state(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<DocQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&st, &headers, &q.token, &doc, Access::Read)?;
    let (pool, replica) = st.read_pool_for(&doc);
    if let Some(at) = q.at {
        let head = db::head_seq(pool, &doc).await?;
        if !(0..=head).contains(&at) {
            return Err(Error::BadRequest(format!(
                "at must be between 0 and the head sequence {head}, got {at}"
            )));
        }
        let state = db::state_at(pool, &doc, at).await?;
        let mut resp = from_replica(binary(state), replica);
        resp.headers_mut().insert(
            header::HeaderName::from_static("x-collab-seq"),
            HeaderValue::from(at),
        );
        return Ok(resp);
    }
    if let Some(resp) = not_modified(&st, &headers, &doc).await? {
        return Ok(resp);
    }
    let (head, state) = db::state(pool, &doc).await?;
    Ok(from_replica(with_etag(binary(state), head), replica))
}

/// `POST /api/docs/{doc}/updates`: body is one Yjs v1 update; needs write access.
async fn post_update(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    st.auth.check_origin(&headers)?;
    let principal = authorize(&st, &headers, &q.token, &doc, Access::Write)?;
    if body.is_empty() {
        return Err(Error::BadRequest(
            "empty body: expected a Yjs v1 update".into(),
        ));
    }
    if !protocol::check_update(&body)? {
        let head = db::head_seq(st.pool_for(&doc), &doc).await?;
        return Ok(Json(json!({"name": doc, "seq": null, "head_seq": head})).into_response());
    }
    let origin = format!("{}/http", st.bridge_id);
    let seq = st
        .batcher_for(&doc)
        .submit_as(
            &doc,
            body.to_vec(),
            origin,
            Some(principal.subject.as_str().into()),
        )
        .await
        .map_err(|_| Error::Internal("update lost".into()))??;
    Ok(with_etag(
        Json(json!({"name": doc, "seq": seq, "head_seq": seq})).into_response(),
        seq,
    ))
}

#[derive(Deserialize)]
struct RestoreQuery {
    token: Option<String>,
    /// The version to restore: the document as it was right after this sequence.
    seq: i64,
}

/// `POST /api/docs/{doc}/restore?seq=N` (write right): makes the document read as it did at
/// `seq`, as one new update that every client receives and merges (`collab.restore`), recorded
/// under the token's subject. Answers the new head sequence.
async fn post_restore(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<RestoreQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    st.auth.check_origin(&headers)?;
    let principal = authorize(&st, &headers, &q.token, &doc, Access::Write)?;
    let pool = st.pool_for(&doc);
    let head = db::head_seq(pool, &doc).await?;
    if !(0..=head).contains(&q.seq) {
        return Err(Error::BadRequest(format!(
            "seq must be between 0 and the head sequence {head}, got {}",
            q.seq
        )));
    }
    let head = db::restore(pool, &doc, q.seq, &principal.subject).await?;
    Ok(with_etag(
        Json(json!({"name": doc, "restored": q.seq, "head_seq": head})).into_response(),
        head,
    ))
}

#[derive(Deserialize)]
struct AuthorsQuery {
    token: Option<String>,
    field: Option<String>,
}

/// `GET /api/docs/{doc}/authors[?field=content]` (read right): who wrote each run of the
/// current text (`collab.text_authors`).
async fn get_authors(
    State(st): State<AppState>,
    Path(doc): Path<String>,
    Query(q): Query<AuthorsQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&st, &headers, &q.token, &doc, Access::Read)?;
    let field = q.field.as_deref().unwrap_or("content");
    let n = field.chars().count();
    if n == 0 || n > db::MAX_NAME_CHARS {
        return Err(Error::BadRequest(
            "field must be 1 to 255 characters".into(),
        ));
    }
    let spans: Vec<_> = db::text_authors(st.read_pool_for(&doc).0, &doc, field)
        .await?
        .into_iter()
        .map(|s| json!({"position": s.position, "length": s.length, "author": s.author, "text": s.text}))
        .collect();
    Ok(Json(json!({"name": doc, "field": field, "spans": spans})).into_response())
}

/// The text search configurations PostgreSQL 15 ships (`\dF`): an unknown name would be an
/// undefined-object error, which the bridge reserves for deleted documents.
const SEARCH_LANGUAGES: &[&str] = &[
    "simple",
    "arabic",
    "armenian",
    "basque",
    "catalan",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hindi",
    "hungarian",
    "indonesian",
    "irish",
    "italian",
    "lithuanian",
    "nepali",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "serbian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
    "yiddish",
];

#[derive(Deserialize)]
struct SearchQuery {
    token: Option<String>,
    q: String,
    /// Text search configuration (default `simple`).
    lang: Option<String>,
    limit: Option<i32>,
}

/// `GET /api/search?q=...[&lang=english][&limit=20]`: documents whose text matches, best first,
/// only those the token may read, with a snippet (matches between `<mark>` and `</mark>`).
async fn search(
    State(st): State<AppState>,
    Query(q): Query<SearchQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let principal = st.auth.authenticate(&headers, q.token.as_deref())?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(Error::BadRequest("limit must be between 1 and 100".into()));
    }
    if q.q.chars().count() > 1000 {
        return Err(Error::BadRequest(
            "q must be at most 1000 characters".into(),
        ));
    }
    let lang = q.lang.as_deref().unwrap_or("simple");
    if !SEARCH_LANGUAGES.contains(&lang) {
        return Err(Error::BadRequest(format!(
            "lang must be one of PostgreSQL's text search configurations: {}",
            SEARCH_LANGUAGES.join(", ")
        )));
    }
    // The database applies the bridge role's rights; the token's are applied here, so ask for
    // more than the page (a token that reads few of many matches may get fewer than `limit`).
    let hits: Vec<_> = search_all_shards(&st, &q.q, lang, limit * 5)
        .await?
        .into_iter()
        .filter_map(|h| {
            let access = principal.access(&h.name)?;
            Some(json!({
                "name": h.name,
                "rank": h.rank,
                "snippet": h.snippet,
                "seq": h.seq,
                "access": access,
            }))
        })
        .take(limit as usize)
        .collect();
    Ok(Json(json!({"q": q.q, "results": hits})).into_response())
}

/// Matches from every shard, best first.
async fn search_all_shards(st: &AppState, q: &str, lang: &str, limit: i32) -> Result<Vec<db::Hit>> {
    let mut hits = gather_shards(st, "search", |pool| db::search(pool, q, lang, limit)).await?;
    hits.sort_by(|a, b| b.rank.total_cmp(&a.rank));
    hits.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(hits)
}

#[derive(Deserialize)]
struct Login {
    name: String,
}

/// `POST /api/dev/login {"name": ...}` (development mode only): sets the token cookie.
async fn dev_login(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    if !st.auth.is_dev() {
        return Err(Error::NotFound);
    }
    st.auth.check_origin(&headers)?;
    let login: Login = serde_json::from_slice(&body)
        .map_err(|e| Error::BadRequest(format!("expected {{\"name\": \"...\"}}: {e}")))?;
    let name = login.name.trim();
    let n = name.chars().count();
    if n == 0 || n > 64 || name.chars().any(char::is_control) {
        return Err(Error::BadRequest("name must be 1 to 64 characters".into()));
    }
    let token = st.auth.dev_token(name)?;
    let cookie = HeaderValue::from_str(&st.auth.dev_cookie(&token))
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut resp =
        Json(json!({"name": name, "expires_in": st.auth.dev_token_secs()})).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

/// `POST /api/dev/logout` (development mode only): removes the token cookie.
async fn dev_logout(State(st): State<AppState>, headers: HeaderMap) -> Result<Response> {
    if !st.auth.is_dev() {
        return Err(Error::NotFound);
    }
    st.auth.check_origin(&headers)?;
    let cookie = HeaderValue::from_str(&st.auth.expired_cookie())
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(resp)
}

/// `GET /healthz`: 200 when the database answers and the listener is connected, else 503.
async fn healthz(State(st): State<AppState>) -> Response {
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(3), db::ping(&st.pool)).await,
        Ok(Ok(()))
    );
    let listener = st.listener_alive.load(Relaxed);
    let ok = database && listener && !st.cancel.is_cancelled();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "database": database,
        "listener": listener,
        "bridge_id": st.bridge_id,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        st.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_match_strong_weak_and_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"3\", W/\"7\""),
        );
        assert!(matches_etag(&h, "\"7\""));
        assert!(matches_etag(&h, "\"3\""));
        assert!(!matches_etag(&h, "\"4\""));
    }
}
