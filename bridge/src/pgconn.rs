//! How the bridge connects to PostgreSQL: the connection string (URL or key=value, with libpq's
//! TLS parameters that tokio-postgres does not know), the TLS policy (rustls), the pool. The
//! SQL the bridge sends lives in `db`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`: tokio-postgres parses `disable`, `prefer` and `require` itself; the two
/// verifying modes are handled here (they connect as `require` with a verifying TLS config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err("sslmode=allow is not supported (use prefer or disable)".into());
            }
            other => {
                return Err(format!(
                    "invalid sslmode {other:?} (disable, prefer, require, verify-ca or verify-full)"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted CA certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCerts {
    /// None given: `prefer`/`require` do not verify, `verify-*` use the system roots.
    Unset,
    /// The platform's store (`sslrootcert=system`).
    System,
    File(PathBuf),
}

/// The stream of a (possibly) TLS connection made by [`PgTarget::connect`].
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<tokio_postgres::Socket>>::Stream;

/// How the bridge connects to PostgreSQL: the tokio-postgres settings plus the TLS policy from
/// `sslmode`/`sslrootcert` and `--database-ca-file`. Used by the pool and the LISTEN connection.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    /// Whether the server certificate chain is checked (host name too with `verify-full`).
    pub verifies: bool,
    tls: MakeRustlsConnect,
}

impl PgTarget {
    pub async fn connect(
        &self,
    ) -> std::result::Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, TlsStream>,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }

    /// At startup: one connection, so that a setup that can never work (an untrusted
    /// certificate, no TLS where it is required, credentials or a client certificate the server
    /// refuses, a database that does not exist) stops the bridge with a clear message instead
    /// of retrying forever. A database that is merely unreachable is only logged (the bridge
    /// retries).
    pub async fn check_at_startup(&self) -> Result<(), String> {
        match self.connect().await {
            Ok(_) => Ok(()),
            Err(e) if is_tls_error(&e) => Err(format!(
                "cannot connect to PostgreSQL with sslmode={}: {}{}",
                self.ssl_mode.as_str(),
                error_chain(&e),
                if self.verifies {
                    " (check --database-ca-file / sslrootcert and the host name in --database-url)"
                } else {
                    ""
                }
            )),
            Err(e) if is_login_error(&e) => Err(format!(
                "PostgreSQL refused the bridge's login: {} (check the user, password, database, \
                 sslcert/sslkey in --database-url and the server's pg_hba.conf)",
                error_chain(&e)
            )),
            Err(e) => {
                tracing::warn!(
                    "database not reachable at startup: {}; retrying in the background",
                    error_chain(&e)
                );
                Ok(())
            }
        }
    }
}

/// The server refused the login itself (SQLSTATE class 28, or no such database): retrying
/// with the same settings cannot help.
fn is_login_error(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        c.code().starts_with("28") || *c == tokio_postgres::error::SqlState::INVALID_CATALOG_NAME
    })
}

/// An error with its causes (tokio-postgres' Display leaves out why a TLS handshake failed).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        let s = err.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = err.source();
    }
    out
}

/// A TLS failure that retrying cannot fix: rustls refused the handshake (certificate not
/// trusted, wrong host name, ...) or the server does not offer TLS where it is required.
fn is_tls_error(e: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<rustls::Error>() || err.to_string().contains("server does not support TLS") {
            return true;
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if inner.is::<rustls::Error>() {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Parses `--database-url` (URL or key=value form) and builds the TLS policy.
pub fn pg_config(
    url: &str,
    ca_file: Option<&Path>,
    application_name: &str,
) -> Result<PgTarget, String> {
    let (rest, ssl) = split_ssl_params(url).map_err(|e| format!("invalid --database-url: {e}"))?;
    let mut cfg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| format!("invalid --database-url: {e}"))?;
    let mode = ssl.mode.unwrap_or(SslMode::Prefer);
    let identity = match (&ssl.cert, &ssl.key) {
        (Some(cert), Some(key)) if mode != SslMode::Disable => {
            Some(load_identity(Path::new(cert), Path::new(key))?)
        }
        (Some(_), Some(_)) | (None, None) => None,
        _ => return Err("sslcert and sslkey in --database-url go together".into()),
    };
    let roots = match (ssl.rootcert, ca_file) {
        (Some(_), Some(_)) => {
            return Err(
                "give the database CA either as sslrootcert in --database-url or as \
                 --database-ca-file, not both"
                    .into(),
            )
        }
        (Some(r), None) if r == "system" => RootCerts::System,
        (Some(r), None) => RootCerts::File(PathBuf::from(r)),
        (None, Some(f)) => RootCerts::File(f.to_path_buf()),
        (None, None) => RootCerts::Unset,
    };
    cfg.ssl_mode(match mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    let needs_tls = !matches!(mode, SslMode::Disable | SslMode::Prefer);
    if needs_tls
        && cfg
            .get_hosts()
            .iter()
            .any(|h| !matches!(h, tokio_postgres::config::Host::Tcp(_)))
    {
        return Err(format!(
            "sslmode={} needs a TCP host: PostgreSQL has no TLS over Unix sockets",
            mode.as_str()
        ));
    }
    cfg.application_name(application_name);
    cfg.connect_timeout(Duration::from_secs(10));
    cfg.keepalives(true);
    cfg.keepalives_idle(Duration::from_secs(30));
    let (tls, verifies) = tls_config(mode, &roots, identity)?;
    Ok(PgTarget {
        config: cfg,
        ssl_mode: mode,
        verifies,
        tls: MakeRustlsConnect::new(tls),
    })
}

/// The TLS parameters of a connection string that tokio-postgres does not handle itself.
#[derive(Debug, Default, PartialEq)]
struct SslParams {
    mode: Option<SslMode>,
    rootcert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a connection string
/// (tokio-postgres knows neither the verifying modes nor certificate files); returns the rest
/// for tokio-postgres to parse.
fn split_ssl_params(url: &str) -> Result<(String, SslParams), String> {
    let mut p = SslParams::default();
    let mut take = |key: &str, value: String| -> Result<bool, String> {
        match key {
            "sslmode" => p.mode = Some(SslMode::parse(&value)?),
            "sslrootcert" => p.rootcert = Some(value),
            "sslcert" => p.cert = Some(value),
            "sslkey" => p.key = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // Like tokio-postgres (and libpq): credentials end at the first '@', parameters start at
        // the next '?'.
        let after_creds = url.find('@').map_or(0, |i| i + 1);
        let Some(q) = url[after_creds..].find('?').map(|i| i + after_creds) else {
            return Ok((url.to_string(), p));
        };
        let mut kept = Vec::new();
        for pair in url[q + 1..].split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if !take(&percent_decode(k)?, percent_decode(v)?)? {
                kept.push(pair);
            }
        }
        let mut rest = url[..q].to_string();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        Ok((rest, p))
    } else {
        // key=value form: keyword, '=', a value that is 'quoted' or ends at whitespace, with
        // backslash escapes in both.
        let mut rest = String::new();
        let mut chars = url.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            let Some(&(start, _)) = chars.peek() else {
                break;
            };
            let mut key = String::new();
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
                key.push(c);
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            if chars.next_if(|(_, c)| *c == '=').is_none() {
                return Err(format!("expected '=' after {key:?}"));
            }
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            let mut value = String::new();
            if chars.next_if(|(_, c)| *c == '\'').is_some() {
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                        Some((_, c)) => value.push(c),
                        None => return Err("unterminated quoted value".into()),
                    }
                }
            } else {
                while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                    if c == '\\' {
                        value.extend(chars.next().map(|(_, c)| c));
                    } else {
                        value.push(c);
                    }
                }
            }
            let end = chars.peek().map_or(url.len(), |&(i, _)| i);
            if !take(&key, value)? {
                rest.push_str(&url[start..end]);
                rest.push(' ');
            }
        }
        Ok((rest.trim_end().to_string(), p))
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid percent-encoding in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("invalid UTF-8 in {s:?}"))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_roots(roots: &RootCerts) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::File(path) => {
            let what = format!("database CA file {}", path.display());
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {what}: {e}"))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| format!("cannot read {what}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{what} holds no PEM certificate"));
            }
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| format!("invalid certificate in {what}: {e}"))?;
            }
        }
        RootCerts::System | RootCerts::Unset => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!("system CA certificates: {e}");
            }
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(
                    "no system CA certificates found for verifying the database server \
                     (install ca-certificates or pass --database-ca-file)"
                        .into(),
                );
            }
        }
    }
    Ok(store)
}

/// The rustls configuration for a mode, and whether it verifies the server. As in libpq:
/// `prefer`/`require` encrypt without checking the certificate unless a CA is given (then the
/// chain is checked), `verify-ca` checks the chain, `verify-full` the chain and the host name.
/// A client certificate (`sslcert`, PEM, with its chain) and its private key (`sslkey`, PEM:
/// PKCS#8, PKCS#1 or SEC1), for servers that authenticate clients by certificate.
type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn load_identity(cert: &Path, key: &Path) -> Result<Identity, String> {
    let what = format!("client certificate file {} (sslcert)", cert.display());
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {what}: {e}"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read {what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "cannot read a PEM private key from {} (sslkey): {e}",
            key.display()
        )
    })?;
    Ok((certs, key))
}

fn tls_config(
    mode: SslMode,
    roots: &RootCerts,
    identity: Option<Identity>,
) -> Result<(ClientConfig, bool), String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, roots) {
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, RootCerts::Unset) => {
            Arc::new(NoVerification(provider))
        }
        _ => {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(roots)?), provider)
                    .build()
                    .map_err(|e| format!("TLS setup: {e}"))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let verifies = mode != SslMode::Disable
        && !matches!(
            (mode, roots),
            (SslMode::Prefer | SslMode::Require, RootCerts::Unset)
        );
    let builder = builder.with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("client certificate and key (sslcert, sslkey): {e}"))?,
    };
    Ok((config, verifies))
}

/// `sslmode=prefer|require` without a CA: encrypted, server not authenticated (handshake
/// signatures are still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first, the name last: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

pub fn pool(target: PgTarget, size: usize) -> Result<Pool, String> {
    let mgr = Manager::from_config(
        target.config,
        target.tls,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn ssl_params_are_taken_out_of_urls() {
        let (rest, p) = split_ssl_params(
            "postgres://u:p%3F@db:5432/x?application_name=a&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem\
             &sslcert=%2Fetc%2Fc.crt&sslkey=%2Fetc%2Fc.key",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p%3F@db:5432/x?application_name=a");
        assert_eq!(p.mode, Some(SslMode::VerifyFull));
        assert_eq!(p.rootcert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(p.cert.as_deref(), Some("/etc/c.crt"));
        assert_eq!(p.key.as_deref(), Some("/etc/c.key"));
        let (rest, p) = split_ssl_params("postgresql://db/x?sslmode=require").unwrap();
        assert_eq!(
            (rest.as_str(), p.mode, p.rootcert),
            ("postgresql://db/x", Some(SslMode::Require), None)
        );
        let (rest, p) = split_ssl_params("postgres://db/x").unwrap();
        assert_eq!(
            (rest.as_str(), p),
            ("postgres://db/x", SslParams::default())
        );
        assert!(split_ssl_params("postgres://db/x?sslmode=bogus").is_err());
        assert!(split_ssl_params("postgres://db/x?sslmode=allow").is_err());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn ssl_params_are_taken_out_of_key_value_strings() {
        let (rest, p) = split_ssl_params(
            "host=db  sslmode = verify-ca password='a b\\'c' sslrootcert='/my certs/ca.pem' user=u",
        )
        .unwrap();
        assert_eq!(rest, "host=db password='a b\\'c' user=u");
        assert_eq!(p.mode, Some(SslMode::VerifyCa));
        assert_eq!(p.rootcert.as_deref(), Some("/my certs/ca.pem"));
        let cfg: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(cfg.get_password(), Some(&b"a b'c"[..]));
        assert!(split_ssl_params("host=db sslmode").is_err());
        assert!(split_ssl_params("host=db sslrootcert='x").is_err());
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn multi_host_strings_keep_every_host_and_the_session_attribute() {
        // A failover pair (docs/operations.md): connections go to whichever host accepts writes.
        use tokio_postgres::config::{Host, TargetSessionAttrs};
        for url in [
            "postgres://u@h1:5432,h2:5433/db?target_session_attrs=read-write&sslmode=disable",
            "host=h1,h2 port=5432,5433 user=u dbname=db target_session_attrs=read-write sslmode=disable",
        ] {
            let t = pg_config(url, None, "app").unwrap();
            let hosts: Vec<String> = t
                .config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    Host::Tcp(h) => h.clone(),
                    #[cfg(unix)]
                    Host::Unix(p) => p.display().to_string(),
                })
                .collect();
            assert_eq!(hosts, ["h1", "h2"], "{url}");
            assert_eq!(t.config.get_ports(), [5432, 5433], "{url}");
            assert_eq!(
                t.config.get_target_session_attrs(),
                TargetSessionAttrs::ReadWrite,
                "{url}"
            );
        }
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn the_target_carries_the_tls_policy() {
        let t = pg_config("postgres://db/x", None, "app").unwrap();
        assert_eq!((t.ssl_mode, t.verifies), (SslMode::Prefer, false));
        let t = pg_config("postgres://db/x?sslmode=disable", None, "app").unwrap();
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let t = pg_config("host=db sslmode=require", None, "app").unwrap();
        assert_eq!((t.ssl_mode, t.verifies), (SslMode::Require, false));
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ca".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&ca, cert.pem()).unwrap();
        let t = pg_config("postgres://db/x?sslmode=verify-full", Some(&ca), "app").unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert!(t.verifies);
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        // A CA turns on verification with require, as in libpq.
        assert!(
            pg_config("postgres://db/x?sslmode=require", Some(&ca), "app")
                .unwrap()
                .verifies
        );
        let both = format!(
            "postgres://db/x?sslmode=verify-ca&sslrootcert={}",
            ca.display()
        );
        assert!(pg_config(&both, Some(&ca), "app")
            .err()
            .unwrap()
            .contains("not both"));
        let missing = pg_config(
            "postgres://db/x?sslmode=verify-full",
            Some(&dir.path().join("nope.pem")),
            "app",
        );
        assert!(missing
            .err()
            .unwrap()
            .contains("cannot read database CA file"));
        let unix = pg_config("host=/run/postgresql sslmode=require", None, "app");
        assert!(unix.err().unwrap().contains("Unix sockets"));

        // A client certificate needs its key, and both must be readable PEM.
        let half = format!("postgres://db/x?sslmode=require&sslcert={}", ca.display());
        assert!(pg_config(&half, None, "app")
            .err()
            .unwrap()
            .contains("go together"));
        let key_file = dir.path().join("client.key");
        std::fs::write(&key_file, "not a key").unwrap();
        let with_key = format!("{half}&sslkey={}", key_file.display());
        let err = pg_config(&with_key, None, "app").err().unwrap();
        assert!(
            err.contains("PEM private key") && err.contains("(sslkey)"),
            "{err}"
        );
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        assert!(pg_config(&with_key, None, "app").is_ok());
    }
}
