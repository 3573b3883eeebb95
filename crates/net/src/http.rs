//! The HTTP client every HTTP-speaking sink uses: one pool per sink, `http://` and `https://`
//! (rustls, [`crate::tls`]), proxies ([`crate::proxy`]), errors sorted into what a sink needs
//! to count and decide on.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::proxy::{ProxyConfig, ProxyConnector};
use crate::tls::{TlsConfig, TlsError, handshake_failure};

/// A request body.
pub type Body = Full<Bytes>;
/// A response, its body not read yet.
pub type Response = http::Response<hyper::body::Incoming>;

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The TLS handshake failed (unknown CA, expired, name mismatch...): `error_type="tls"`.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// No connection could be made (refused, unreachable, DNS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection broke before a whole response arrived (reset, closed mid-response).
    #[error("request failed: {0}")]
    Transport(String),
}

impl SendError {
    /// The `error_type` label this failure is counted under.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Tls(_) => "tls",
            Self::Connect(_) => "connection_failed",
            Self::Transport(_) => "request_failed",
        }
    }
}

/// A pooled HTTP/1.1 client speaking `http://` and `https://`.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<ProxyConnector>, Body>,
    proxies: Option<Arc<hyper_util::client::proxy::matcher::Matcher>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// A client with the given `tls` block (`None`: system roots, full verification), without
    /// proxies from the configuration (the environment's still apply).
    pub fn new(tls: Option<&TlsConfig>) -> Result<Self, TlsError> {
        Self::with_proxy(tls, &ProxyConfig::default())
    }

    /// A client with the given `tls` and `proxy` blocks.
    pub fn with_proxy(tls: Option<&TlsConfig>, proxy: &ProxyConfig) -> Result<Self, TlsError> {
        let default = TlsConfig::default();
        let tls = tls.unwrap_or(&default);
        let config = Arc::unwrap_or_clone(tls.client_config()?);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let builder = HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
        let builder = match tls.server_name()? {
            Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            None => builder,
        };
        let proxies = crate::proxy::matcher(proxy).map(Arc::new);
        let connector = builder.enable_http1().wrap_connector(ProxyConnector::new(http, proxies.clone()));
        Ok(Self { inner: Client::builder(TokioExecutor::new()).build(connector), proxies })
    }

    /// Sends a request and waits for the response head.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped request is abandoned with its connection.
    pub async fn send(&self, mut request: http::Request<Body>) -> Result<Response, SendError> {
        // A plain-HTTP request through a proxy carries the proxy's credentials itself (an
        // https one gives them in its CONNECT).
        if request.uri().scheme_str() == Some("http")
            && let Some(auth) =
                self.proxies.as_ref().and_then(|m| m.intercept(request.uri())).and_then(|i| i.basic_auth().cloned())
        {
            request.headers_mut().insert(http::header::PROXY_AUTHORIZATION, auth);
        }
        self.inner.request(request).await.map_err(|err| classify(&err))
    }
}

/// Sorts a client error by its cause.
fn classify(err: &hyper_util::client::legacy::Error) -> SendError {
    if let Some(reason) = handshake_failure(err) {
        return SendError::Tls(reason);
    }
    let detail = crate::error_chain(err);
    if err.is_connect() { SendError::Connect(detail) } else { SendError::Transport(detail) }
}
