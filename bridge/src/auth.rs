//! Access tokens (JWT with one pinned algorithm and key, or a JWKS file whose keys a token's
//! `kid` picks), document rights, token sources, the revocation list, the Origin allow-list,
//! and development mode's login.
//!
//! Claims: `exp` (required), `nbf`, `iss` and `aud` (checked when configured; `aud` a string or
//! an array, RFC 7519), `sub`, and `docs`: `{"name": "read"|"write", "prefix*": ...}`. The
//! longest matching pattern decides; `"*"` matches every document.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{read_secret_file, Config, JwtAlgorithm};
use crate::error::{Error, Result};

/// Secret of development mode. Public on purpose: `--dev` only runs on loopback addresses.
pub const DEV_SECRET: &str = "pg_collab development secret: never use outside --dev";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub docs: HashMap<String, Access>,
}

/// `aud`: one audience or several (RFC 7519 allows both).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Who is calling and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub subject: String,
    pub expires_at: u64,
    docs: HashMap<String, Access>,
}

impl Principal {
    /// The right on `doc`: the longest pattern that matches decides.
    pub fn access(&self, doc: &str) -> Option<Access> {
        self.docs
            .iter()
            .filter(|(pattern, _)| match pattern.strip_suffix('*') {
                Some(prefix) => doc.starts_with(prefix),
                None => pattern.as_str() == doc,
            })
            .max_by_key(|(pattern, _)| (pattern.len(), !pattern.ends_with('*')))
            .map(|(_, a)| *a)
    }

    pub fn require(&self, doc: &str, needed: Access) -> Result<Access> {
        match self.access(doc) {
            Some(a) if a >= needed => Ok(a),
            Some(_) => Err(Error::Forbidden(format!("read-only access to \"{doc}\""))),
            None => Err(Error::Forbidden(format!("no access to \"{doc}\""))),
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The verification keys: one pinned key, or the keys of a JWKS file by `kid`.
enum Keys {
    Single(DecodingKey),
    ByKid(HashMap<String, (DecodingKey, Algorithm)>),
}

pub struct Auth {
    keys: RwLock<Keys>,
    jwks_file: Option<PathBuf>,
    revoked: RwLock<HashSet<String>>,
    revoked_file: Option<PathBuf>,
    validation: Validation,
    cookie_name: String,
    allow_query_token: bool,
    allowed_origins: Vec<String>,
    dev_key: Option<EncodingKey>,
    /// Lifetime of development-mode tokens: short, the page signs in again well before it ends.
    dev_token_secs: u64,
    issuer: Option<String>,
    audience: Option<String>,
}

impl Auth {
    /// Builds the verifier from configuration; refuses ambiguous or insecure setups.
    pub fn from_config(cfg: &Config) -> Result<Self, String> {
        let jwt_secret = match (&cfg.jwt_secret, &cfg.jwt_secret_file) {
            (Some(_), Some(_)) => {
                return Err("give either --jwt-secret or --jwt-secret-file, not both".into())
            }
            (Some(s), None) => Some(s.clone()),
            (None, Some(f)) => Some(read_secret_file(f, "--jwt-secret-file")?),
            (None, None) => None,
        };
        let jwt_secret = &jwt_secret;
        if cfg.jwt_jwks_file.is_some()
            && (cfg.dev || jwt_secret.is_some() || cfg.jwt_public_key.is_some())
        {
            return Err(
                "--jwt-jwks-file holds every key: drop --dev, --jwt-secret and --jwt-public-key"
                    .into(),
            );
        }
        let (alg, key, dev_key) = if let Some(path) = &cfg.jwt_jwks_file {
            let keys = load_jwks(path)?;
            // The algorithm is each key's; the validation's list is replaced per token.
            (Algorithm::HS256, Keys::ByKid(keys), None)
        } else if cfg.dev {
            if !cfg.listen.ip().is_loopback() {
                return Err(format!(
                    "--dev is refused on {}: development mode only binds loopback addresses",
                    cfg.listen
                ));
            }
            if jwt_secret.is_some() || cfg.jwt_public_key.is_some() {
                return Err("--dev uses a fixed secret: drop --jwt-secret/--jwt-public-key".into());
            }
            (
                Algorithm::HS256,
                Keys::Single(DecodingKey::from_secret(DEV_SECRET.as_bytes())),
                Some(EncodingKey::from_secret(DEV_SECRET.as_bytes())),
            )
        } else {
            let (alg, key, dev_key) = match (jwt_secret, &cfg.jwt_public_key, cfg.jwt_algorithm) {
                (Some(_), Some(_), _) => {
                    return Err("give either --jwt-secret or --jwt-public-key, not both".into())
                }
                (Some(secret), None, None | Some(JwtAlgorithm::Hs256)) => {
                    if secret.len() < 32 {
                        return Err("--jwt-secret must be at least 32 bytes".into());
                    }
                    (
                        Algorithm::HS256,
                        DecodingKey::from_secret(secret.as_bytes()),
                        None,
                    )
                }
                (Some(_), None, Some(a)) => {
                    return Err(format!("--jwt-algorithm {a:?} needs --jwt-public-key"))
                }
                (None, Some(path), alg) => {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    match alg {
                        Some(JwtAlgorithm::Rs256) => (
                            Algorithm::RS256,
                            DecodingKey::from_rsa_pem(&pem).map_err(|e| e.to_string())?,
                            None,
                        ),
                        Some(JwtAlgorithm::Eddsa) => (
                            Algorithm::EdDSA,
                            DecodingKey::from_ed_pem(&pem).map_err(|e| e.to_string())?,
                            None,
                        ),
                        _ => {
                            return Err(
                                "--jwt-public-key needs --jwt-algorithm rs256 or eddsa".into()
                            )
                        }
                    }
                }
                (None, None, _) => {
                    return Err(
                        "no token verification configured: give --jwt-secret(-file), \
                         --jwt-public-key, --jwt-jwks-file or (on loopback only) --dev"
                            .into(),
                    )
                }
            };
            (alg, Keys::Single(key), dev_key)
        };
        let mut validation = Validation::new(alg);
        validation.leeway = cfg.jwt_leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &cfg.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &cfg.jwt_audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        } else {
            validation.validate_aud = false;
        }
        validation.set_required_spec_claims(&required);
        if cfg.allowed_origins.iter().any(|o| o.trim() == "*") && !cfg.auth_cookie.is_empty() {
            return Err(
                "--allowed-origins '*' would let any site act with its visitors' cookies: \
                 list the origins, or turn cookies off with --auth-cookie ''"
                    .into(),
            );
        }
        let revoked = match &cfg.revoked_subjects_file {
            Some(f) => load_revoked(f)?,
            None => HashSet::new(),
        };
        let mut allowed_origins: Vec<String> = cfg
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        if cfg.dev {
            let port = cfg.listen.port();
            allowed_origins.push(format!("http://localhost:{port}"));
            allowed_origins.push(format!("http://127.0.0.1:{port}"));
        }
        Ok(Auth {
            keys: RwLock::new(key),
            jwks_file: cfg.jwt_jwks_file.clone(),
            revoked: RwLock::new(revoked),
            revoked_file: cfg.revoked_subjects_file.clone(),
            validation,
            cookie_name: cfg.auth_cookie.clone(),
            allow_query_token: cfg.allow_query_token,
            allowed_origins,
            dev_key,
            dev_token_secs: cfg.dev_token_secs,
            issuer: cfg.jwt_issuer.clone(),
            audience: cfg.jwt_audience.clone(),
        })
    }

    pub fn dev_token_secs(&self) -> u64 {
        self.dev_token_secs
    }

    pub fn is_dev(&self) -> bool {
        self.dev_key.is_some()
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// Verifies a token: signature with the pinned algorithm and key, then exp/nbf/iss/aud.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let decoded = {
            let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
            match &*keys {
                Keys::Single(key) => jsonwebtoken::decode::<Claims>(token, key, &self.validation),
                Keys::ByKid(by_kid) => {
                    let header = jsonwebtoken::decode_header(token)
                        .map_err(|_| Error::InvalidToken("malformed token".into()))?;
                    let kid = header
                        .kid
                        .ok_or_else(|| Error::InvalidToken("no kid in the token header".into()))?;
                    let (key, alg) = by_kid
                        .get(&kid)
                        .ok_or_else(|| Error::InvalidToken("unknown kid".into()))?;
                    let mut validation = self.validation.clone();
                    validation.algorithms = vec![*alg];
                    jsonwebtoken::decode::<Claims>(token, key, &validation)
                }
            }
        };
        let data = decoded.map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => Error::TokenExpired,
            ErrorKind::InvalidAudience => Error::InvalidToken("wrong audience".into()),
            ErrorKind::InvalidIssuer => Error::InvalidToken("wrong issuer".into()),
            ErrorKind::ImmatureSignature => Error::InvalidToken("not valid yet".into()),
            ErrorKind::InvalidAlgorithm => Error::InvalidToken("algorithm not accepted".into()),
            ErrorKind::InvalidSignature => Error::InvalidToken("bad signature".into()),
            ErrorKind::MissingRequiredClaim(c) => Error::InvalidToken(format!("missing claim {c}")),
            _ => Error::InvalidToken("malformed token".into()),
        })?;
        let c = data.claims;
        let subject = c.sub.unwrap_or_default();
        if self.is_revoked(&subject) {
            return Err(Error::InvalidToken("revoked".into()));
        }
        Ok(Principal {
            subject,
            expires_at: c.exp,
            docs: c.docs,
        })
    }

    /// The token of a request: `Authorization: Bearer`, then the cookie, then (if enabled)
    /// `?token=`.
    pub fn token_from(&self, headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(t) = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
            {
                return Some(t.trim().to_string());
            }
        }
        if !self.cookie_name.is_empty() {
            let jar = axum_extra::extract::CookieJar::from_headers(headers);
            if let Some(c) = jar.get(&self.cookie_name) {
                let value = c.value_trimmed();
                if !value.is_empty() {
                    return Some(value.to_string());
                }
            }
        }
        if self.allow_query_token {
            return query_token.map(str::to_string);
        }
        None
    }

    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Principal> {
        let token = self
            .token_from(headers, query_token)
            .ok_or(Error::Unauthenticated)?;
        self.verify(&token)
    }

    /// Browsers always send Origin on WebSocket upgrades and cross-site POSTs: it must be in the
    /// allow-list (`*` allows all) or be the same origin as Host. No Origin: not a browser.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<()> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .map_err(|_| Error::OriginNotAllowed("unreadable Origin".into()))?
            .trim_end_matches('/')
            .to_ascii_lowercase();
        if self
            .allowed_origins
            .iter()
            .any(|o| o == "*" || *o == origin)
        {
            return Ok(());
        }
        // Same origin: the page was served by this host (e.g. the demo page under `/`).
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase);
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if host.is_some() && origin_host == host.as_deref() {
            return Ok(());
        }
        Err(Error::OriginNotAllowed(origin))
    }

    /// Development mode: a short-lived token with write access to every document.
    pub fn dev_token(&self, name: &str) -> Result<String> {
        let key = self.dev_key.as_ref().ok_or(Error::NotFound)?;
        let now = now_secs();
        let claims = Claims {
            sub: Some(name.to_string()),
            exp: now + self.dev_token_secs,
            nbf: Some(now.saturating_sub(5)),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(Audience::One),
            docs: HashMap::from([("*".to_string(), Access::Write)]),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// The leeway for `exp`: a connection lives until its token's `exp` plus this.
    pub fn leeway_secs(&self) -> u64 {
        self.validation.leeway
    }

    pub fn is_revoked(&self, subject: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(subject)
    }

    /// Re-reads the JWKS and revocation files (SIGHUP or a change); a file that cannot be read
    /// or parsed leaves the previous keys or list in place. Returns the revoked subjects.
    pub fn reload(&self) -> HashSet<String> {
        if let Some(path) = &self.jwks_file {
            match load_jwks(path) {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "token keys reloaded");
                    *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Keys::ByKid(keys);
                }
                Err(e) => tracing::warn!("keeping the previous token keys: {e}"),
            }
        }
        if let Some(path) = &self.revoked_file {
            match load_revoked(path) {
                Ok(set) => {
                    tracing::info!(subjects = set.len(), "revocation list reloaded");
                    *self.revoked.write().unwrap_or_else(|p| p.into_inner()) = set;
                }
                Err(e) => tracing::warn!("keeping the previous revocation list: {e}"),
            }
        }
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The files [`Auth::reload`] reads (to watch for changes).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.jwks_file
            .iter()
            .chain(self.revoked_file.iter())
            .cloned()
            .collect()
    }

    /// `Set-Cookie` value carrying a development token.
    pub fn dev_cookie(&self, token: &str) -> String {
        format!(
            "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.cookie_name, self.dev_token_secs
        )
    }

    /// `Set-Cookie` value that removes the token cookie.
    pub fn expired_cookie(&self) -> String {
        format!(
            "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
            self.cookie_name
        )
    }
}

/// Reads a JWKS file: every key needs a `kid`; its algorithm is the key's `alg`, or follows
/// from its type (`oct`: HS256, `RSA`: RS256, `OKP`: EdDSA).
fn load_jwks(path: &Path) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
    use jsonwebtoken::jwk::AlgorithmParameters;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --jwt-jwks-file {}: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("--jwt-jwks-file {} is no JWKS: {e}", path.display()))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| format!("a key in {} has no kid", path.display()))?;
        let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(a), _) => {
                Algorithm::try_from(a).map_err(|e| format!("key {kid}: algorithm: {e}"))?
            }
            (None, AlgorithmParameters::OctetKey(_)) => Algorithm::HS256,
            (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
            (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
            (None, _) => return Err(format!("key {kid}: give its alg")),
        };
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            if let AlgorithmParameters::OctetKey(k) = &jwk.algorithm {
                if k.value.len() < 43 {
                    return Err(format!("key {kid}: an HMAC key needs at least 32 bytes"));
                }
            }
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        keys.insert(kid, (key, alg));
    }
    if keys.is_empty() {
        return Err(format!("--jwt-jwks-file {} has no keys", path.display()));
    }
    Ok(keys)
}

/// Reads the revocation list: one subject a line, `#` starts a comment.
fn load_revoked(path: &Path) -> Result<HashSet<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read --revoked-subjects-file {}: {e}",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(docs: &[(&str, Access)]) -> Principal {
        Principal {
            subject: "t".into(),
            expires_at: 0,
            docs: docs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn longest_pattern_decides() {
        let p = principal(&[
            ("team/*", Access::Write),
            ("team/archive/*", Access::Read),
            ("notes", Access::Read),
        ]);
        assert_eq!(p.access("team/a"), Some(Access::Write));
        assert_eq!(p.access("team/archive/x"), Some(Access::Read));
        assert_eq!(p.access("notes"), Some(Access::Read));
        assert_eq!(p.access("notes2"), None);
        assert!(p.require("team/archive/x", Access::Write).is_err());
        let all = principal(&[("*", Access::Write)]);
        assert_eq!(all.access("anything"), Some(Access::Write));
    }
}
