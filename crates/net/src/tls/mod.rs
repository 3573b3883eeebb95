//! TLS for every component: Vector's `tls` block, turned into rustls client and server
//! configurations.
//!
//! - Clients trust the operating system's root certificates, plus `ca_file` when given.
//!   `verify_certificate = false` accepts any certificate; `verify_hostname = false` checks the
//!   chain but not the name.
//! - Servers present `crt_file`/`key_file`. With `verify_certificate = true` every client must
//!   present a certificate issued by `ca_file` (or a system root): mutual TLS.
//! - `ca_file`, `crt_file` and `key_file` take a path, or the PEM text itself. Certificates may
//!   be PEM or DER; keys PEM (PKCS#8, PKCS#1, SEC1) or DER PKCS#8, and an encrypted PKCS#8 key
//!   is opened with `key_pass`.
//!
//! Every file is read and checked by [`TlsConfig::check`] (at `validate`) and again when the
//! component is built, so a missing file, a file that holds no certificate, or a key that does
//! not belong to its certificate is an error naming the file before anything is sent.

mod files;
mod verify;

use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use serde::Deserialize;
use sluice_core::component::ConfigIssue;

use files::load_certs;

/// The `tls` block (Vector's fields).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Whether TLS is used. Servers: default false. Clients: TLS follows the URI scheme
    /// (`https://`), or, for plain sockets, this field (default false).
    pub enabled: Option<bool>,
    /// Extra certificate authority to trust (a path or PEM text). Default: none; the system's
    /// roots are trusted either way.
    pub ca_file: Option<String>,
    /// This side's certificate (a path or PEM text): required on servers, optional (a client
    /// certificate) on clients.
    pub crt_file: Option<String>,
    /// The private key of `crt_file` (a path or PEM text).
    pub key_file: Option<String>,
    /// Passphrase of an encrypted `key_file` (PKCS#8).
    pub key_pass: Option<String>,
    /// Clients: check the server's certificate chain (default true). Servers: require and
    /// check a client certificate (default false).
    pub verify_certificate: Option<bool>,
    /// Clients: check that the certificate names the host (default true).
    pub verify_hostname: Option<bool>,
    /// Clients: the name sent in SNI and checked against the certificate. Default: the host of
    /// the address.
    pub server_name: Option<String>,
    /// ALPN protocols to offer (clients) or accept (servers), in order of preference.
    pub alpn_protocols: Option<Vec<String>>,
}

/// Why a TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: cannot read `{path}`: {source}")]
    Read { field: &'static str, path: String, source: std::io::Error },
    #[error("{field}: `{path}` holds no {what} (expected PEM or DER)")]
    Empty { field: &'static str, path: String, what: &'static str },
    #[error("{field}: `{path}`: {message}")]
    Invalid { field: &'static str, path: String, message: String },
    #[error("{field}: {message}")]
    Setting { field: &'static str, message: String },
}

impl TlsError {
    /// The field the error is about, relative to the `tls` block.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Read { field, .. } | Self::Empty { field, .. } | Self::Invalid { field, .. } => field,
            Self::Setting { field, .. } => field,
        }
    }

    /// As a config issue under `prefix` (`tls`).
    pub fn issue(&self, prefix: &str) -> ConfigIssue {
        let issue = ConfigIssue::new(format!("{prefix}.{}", self.field()), self.to_string());
        // A file this machine lacks is about the machine; a file that is there and wrong is not.
        if matches!(self, Self::Read { .. }) { issue.of_environment() } else { issue }
    }
}

/// The process-wide crypto provider (ring).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())).clone()
}

/// The operating system's root certificates, loaded once.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in found.errors.iter().take(3) {
            tracing::warn!(error = %error, "Some system root certificates could not be read.");
        }
        found.certs
    })
}

impl TlsConfig {
    /// Whether a server (or a plain-socket client) uses TLS.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }

    /// For listening components: a block that names files but is not enabled serves plain
    /// text, which is worth a warning.
    pub fn server_warnings(&self, prefix: &str) -> Vec<ConfigIssue> {
        let names_files = self.crt_file.is_some() || self.key_file.is_some() || self.ca_file.is_some();
        if names_files && self.enabled.is_none() {
            vec![ConfigIssue::new(
                format!("{prefix}.enabled"),
                "TLS files are given but `enabled` is not set: this listens without TLS (set `enabled = true`)",
            )]
        } else {
            Vec::new()
        }
    }

    fn alpn(&self) -> Vec<Vec<u8>> {
        self.alpn_protocols.iter().flatten().map(|p| p.as_bytes().to_vec()).collect()
    }

    /// Every problem with the block, for `validate` (files are read and checked).
    /// `server` selects the rules of a listening component.
    pub fn check(&self, prefix: &str, server: bool) -> Vec<ConfigIssue> {
        let result = if server { self.server_config().map(drop) } else { self.client_config().map(drop) };
        match result {
            Ok(()) => Vec::new(),
            Err(err) => vec![err.issue(prefix)],
        }
    }

    /// The trusted roots: the system's plus `ca_file`. With neither, the store is empty: plain
    /// HTTP still works, and every certificate fails as `unknown CA` (a warning says why).
    fn roots(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        if let Some(ca) = &self.ca_file {
            for cert in load_certs("ca_file", ca)? {
                roots.add(cert).map_err(|e| TlsError::Invalid {
                    field: "ca_file",
                    path: files::shown(ca),
                    message: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        if roots.is_empty() {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "The system has no root certificates (install ca-certificates) and no tls.ca_file is given: \
                     HTTPS connections will fail as `unknown CA`."
                );
            });
        }
        Ok(roots)
    }

    /// This side's certificate chain and key, when both are given.
    fn identity(&self) -> Result<Option<files::Identity>, TlsError> {
        match (&self.crt_file, &self.key_file) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Setting { field: "key_file", message: "required with `crt_file`".into() }),
            (None, Some(_)) => Err(TlsError::Setting { field: "crt_file", message: "required with `key_file`".into() }),
            (Some(crt), Some(key)) => files::identity(crt, key, self.key_pass.as_deref()).map(Some),
        }
    }

    /// A client configuration (the HTTP client and socket clients).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setting { field: "enabled", message: e.to_string() })?;
        let verifier = verify::server_verifier(
            self.roots()?,
            self.verify_certificate.unwrap_or(true),
            self.verify_hostname.unwrap_or(true),
        )?;
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let mut config = match self.identity()? {
            Some(id) => builder
                .with_client_auth_cert(id.chain, id.key)
                .map_err(|e| TlsError::Setting { field: "crt_file", message: e.to_string() })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn();
        Ok(Arc::new(config))
    }

    /// The name to send in SNI and check the certificate against, if overridden.
    pub fn server_name(&self) -> Result<Option<rustls::pki_types::ServerName<'static>>, TlsError> {
        self.server_name
            .as_deref()
            .map(|name| {
                rustls::pki_types::ServerName::try_from(name.to_owned())
                    .map_err(|e| TlsError::Setting { field: "server_name", message: e.to_string() })
            })
            .transpose()
    }

    /// A server configuration (sources that listen).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let Some(id) = self.identity()? else {
            return Err(TlsError::Setting {
                field: "crt_file",
                message: "a listening component with TLS needs `crt_file` and `key_file`".into(),
            });
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setting { field: "enabled", message: e.to_string() })?;
        let require = self.verify_certificate.unwrap_or(false);
        let builder = if require || self.ca_file.is_some() {
            let roots = Arc::new(self.roots()?);
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if require { verifier } else { verifier.allow_unauthenticated() };
            let verifier =
                verifier.build().map_err(|e| TlsError::Setting { field: "ca_file", message: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(id.chain, id.key)
            .map_err(|e| TlsError::Setting { field: "crt_file", message: e.to_string() })?;
        config.alpn_protocols = self.alpn();
        Ok(Arc::new(config))
    }
}

/// A short reason for a failed handshake, from anywhere in an error's source chain: `unknown
/// CA`, `expired`, `name mismatch`, an alert from the peer... `None` when TLS was not the cause.
pub fn handshake_failure(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // tokio-rustls reports a failed handshake as an `io::Error` around the rustls error,
        // and connectors wrap that in another `io::Error` (or a box). `io::Error::source`
        // skips the error it wraps, so look inside explicitly.
        let io =
            err.downcast_ref::<std::io::Error>().or_else(|| err.downcast_ref::<Box<std::io::Error>>().map(|b| &**b));
        next = match io.and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

fn describe(error: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => "unknown CA: the certificate is not issued by a trusted authority".into(),
            C::Expired | C::ExpiredContext { .. } => "expired certificate".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not valid yet".into(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "name mismatch: the certificate does not name this host".into()
            }
            C::Revoked => "revoked certificate".into(),
            C::BadSignature => "bad certificate signature".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => format!("the peer refused the handshake ({alert:?})"),
        rustls::Error::NoCertificatesPresented => "no client certificate presented".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
