//! Access tokens (JWT with one pinned algorithm and key), document rights, token sources,
//! the Origin allow-list, and development mode's login.
//!
//! Claims: `exp` (required), `nbf`, `iss` and `aud` (checked when configured), `sub`, and
//! `docs`: `{"name": "read"|"write", "prefix*": ...}`. The longest matching pattern decides;
//! `"*"` matches every document.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{Config, JwtAlgorithm};
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
    pub aud: Option<String>,
    #[serde(default)]
    pub docs: HashMap<String, Access>,
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

pub struct Auth {
    key: DecodingKey,
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
        let (alg, key, dev_key) = if cfg.dev {
            if !cfg.listen.ip().is_loopback() {
                return Err(format!(
                    "--dev is refused on {}: development mode only binds loopback addresses",
                    cfg.listen
                ));
            }
            if cfg.jwt_secret.is_some() || cfg.jwt_public_key.is_some() {
                return Err("--dev uses a fixed secret: drop --jwt-secret/--jwt-public-key".into());
            }
            (
                Algorithm::HS256,
                DecodingKey::from_secret(DEV_SECRET.as_bytes()),
                Some(EncodingKey::from_secret(DEV_SECRET.as_bytes())),
            )
        } else {
            match (&cfg.jwt_secret, &cfg.jwt_public_key, cfg.jwt_algorithm) {
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
                        "no token verification configured: give --jwt-secret, --jwt-public-key \
                         or (on loopback only) --dev"
                            .into(),
                    )
                }
            }
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
            key,
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
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => Error::TokenExpired,
                ErrorKind::InvalidAudience => Error::InvalidToken("wrong audience".into()),
                ErrorKind::InvalidIssuer => Error::InvalidToken("wrong issuer".into()),
                ErrorKind::ImmatureSignature => Error::InvalidToken("not valid yet".into()),
                ErrorKind::InvalidAlgorithm => Error::InvalidToken("algorithm not accepted".into()),
                ErrorKind::InvalidSignature => Error::InvalidToken("bad signature".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    Error::InvalidToken(format!("missing claim {c}"))
                }
                _ => Error::InvalidToken("malformed token".into()),
            },
        )?;
        let c = data.claims;
        Ok(Principal {
            subject: c.sub.unwrap_or_default(),
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
        for v in headers.get_all(header::COOKIE) {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(';') {
                if let Some((k, val)) = pair.trim().split_once('=') {
                    if k == self.cookie_name && !val.is_empty() {
                        return Some(val.trim_matches('"').to_string());
                    }
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
            aud: self.audience.clone(),
            docs: HashMap::from([("*".to_string(), Access::Write)]),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| Error::Internal(e.to_string()))
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
