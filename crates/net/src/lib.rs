//! Transport shared by every component, so that no source or sink opens a socket or builds a
//! client by itself:
//! - [`tls`]: Vector's `tls` block as rustls configurations, for clients and servers;
//! - [`http`]: the one HTTP client (connection pool, TLS, proxies, classified errors);
//! - [`server`]: accepting TLS connections, handshakes off the accept loop;
//! - [`aws`]: region, credentials in Vector's order, SigV4 signing;
//! - [`gcp`]: service account tokens and API keys for Google Cloud.

pub mod aws;
pub mod gcp;
pub mod http;
pub mod proxy;
pub mod server;
#[cfg(feature = "test-pki")]
pub mod test_pki;
pub mod tls;

pub use proxy::ProxyConfig;
pub use tls::{TlsConfig, TlsError};

/// An error and its causes on one line (`outer: cause: root cause`).
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
