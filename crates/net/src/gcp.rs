//! Google Cloud credentials for GCP components (`gcp_cloud_storage`): a service account's
//! OAuth2 access token (a JWT signed RS256 by `ring`, exchanged at the account's `token_uri`),
//! cached until a minute before it expires; or an API key.
//!
//! Where credentials come from: `credentials_path`, else `GOOGLE_APPLICATION_CREDENTIALS`;
//! `api_key` instead of either. The metadata server of GCE/GKE is not used yet.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;

use crate::http::HttpClient;

/// The scope tokens are asked for.
pub const STORAGE_SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Tokens are renewed this long before they expire.
const RENEW_BEFORE: Duration = Duration::from_secs(60);

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no Google Cloud credentials: {0}")]
pub struct GcpAuthError(pub String);

/// A service account key file (the fields used).
#[derive(Debug, Clone, Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl ServiceAccount {
    /// Reads and checks a key file: JSON, with a usable RSA private key.
    pub fn read(path: &str) -> Result<Self, GcpAuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| GcpAuthError(format!("cannot read `{path}`: {e}")))?;
        let account: Self = serde_json::from_str(&text)
            .map_err(|e| GcpAuthError(format!("`{path}` is not a service account key: {e}")))?;
        account.key_pair().map_err(|e| GcpAuthError(format!("`{path}`: {}", e.0)))?;
        Ok(account)
    }

    fn key_pair(&self) -> Result<ring::signature::RsaKeyPair, GcpAuthError> {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(self.private_key.as_bytes())
            .map_err(|e| GcpAuthError(format!("private_key is not a PKCS#8 PEM key: {e}")))?;
        ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| GcpAuthError(format!("private_key is not a usable RSA key: {e}")))
    }

    /// The signed assertion exchanged for a token.
    fn assertion(&self, now: u64) -> Result<String, GcpAuthError> {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": self.private_key_id });
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": STORAGE_SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let key = self.key_pair()?;
        let mut signature = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| GcpAuthError("cannot sign the token request".into()))?;
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }
}

/// How requests are authorised.
#[derive(Debug)]
pub enum GcpAuth {
    /// `Authorization: Bearer <token>` from a service account.
    ServiceAccount { account: ServiceAccount, cached: tokio::sync::Mutex<Option<(String, Instant)>> },
    /// `?key=<api key>`.
    ApiKey(String),
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default = "default_expires_in")]
    expires_in: u64,
}

fn default_expires_in() -> u64 {
    3600
}

impl GcpAuth {
    /// From `credentials_path` (or `GOOGLE_APPLICATION_CREDENTIALS`) or `api_key`.
    pub fn new(credentials_path: Option<&str>, api_key: Option<&str>) -> Result<Self, GcpAuthError> {
        if let Some(key) = api_key {
            return Ok(Self::ApiKey(key.to_owned()));
        }
        let path = credentials_path
            .map(str::to_owned)
            .or_else(|| std::env::var("GOOGLE_APPLICATION_CREDENTIALS").ok().filter(|p| !p.is_empty()))
            .ok_or_else(|| {
                GcpAuthError(
                    "set `credentials_path` (a service account key), GOOGLE_APPLICATION_CREDENTIALS, or `api_key`"
                        .into(),
                )
            })?;
        Ok(Self::ServiceAccount { account: ServiceAccount::read(&path)?, cached: tokio::sync::Mutex::new(None) })
    }

    /// The API key to add to URLs, if that is how requests are authorised.
    pub fn api_key(&self) -> Option<&str> {
        match self {
            Self::ApiKey(key) => Some(key),
            Self::ServiceAccount { .. } => None,
        }
    }

    /// The `Authorization` value, fetching a new token when the cached one is about to expire.
    ///
    /// # Cancel safety
    /// Cancel safe (an abandoned fetch is started again by the next caller).
    pub async fn authorization(&self, http: &HttpClient) -> Result<Option<String>, GcpAuthError> {
        let Self::ServiceAccount { account, cached } = self else { return Ok(None) };
        let mut cached = cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() + RENEW_BEFORE < *until
        {
            return Ok(Some(format!("Bearer {token}")));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            account.assertion(now)?
        );
        let request = http::Request::post(&account.token_uri)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| GcpAuthError(format!("token_uri `{}`: {e}", account.token_uri)))?;
        let response = http.send(request).await.map_err(|e| GcpAuthError(format!("token request: {e}")))?;
        let status = response.status();
        let answer = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
            return Err(GcpAuthError(format!("the token endpoint answered {status}: {text}")));
        }
        let token: TokenAnswer =
            serde_json::from_slice(&answer).map_err(|e| GcpAuthError(format!("unreadable token answer: {e}")))?;
        let value = format!("Bearer {}", token.access_token);
        *cached = Some((token.access_token, Instant::now() + Duration::from_secs(token.expires_in)));
        Ok(Some(value))
    }
}
