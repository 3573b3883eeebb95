//! HTTP proxies for the HTTP client: Vector's `proxy` block and the `HTTP_PROXY`,
//! `HTTPS_PROXY` and `NO_PROXY` variables.
//!
//! - `https://` destinations go through a `CONNECT` tunnel; TLS to the destination runs inside
//!   it, so the proxy sees no content.
//! - `http://` destinations are sent to the proxy in absolute form, with `Proxy-Authorization`
//!   when the proxy URL has credentials.
//! - A host in `no_proxy` (or `NO_PROXY`: names match subdomains too, IPs and CIDR ranges, `*`
//!   for all) is reached directly.
//!
//! The block's `http`/`https` override the variables; its `no_proxy` entries are added to
//! `NO_PROXY`. `enabled = false` ignores the variables as well. A component's block is merged
//! over the top-level `proxy` first (`ProxyConfig::over`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
pub use sluice_core::proxy::ProxyConfig;
use tokio::net::TcpStream;

fn env(upper: &str) -> Option<String> {
    std::env::var(upper).ok().or_else(|| std::env::var(upper.to_ascii_lowercase()).ok()).filter(|v| !v.is_empty())
}

/// The rules of a (merged) `proxy` block over the environment. `None`: no proxy.
pub(crate) fn matcher(config: &ProxyConfig) -> Option<Matcher> {
    if config.enabled == Some(false) {
        return None;
    }
    let http = config.http.clone().or_else(|| env("HTTP_PROXY"));
    let https = config.https.clone().or_else(|| env("HTTPS_PROXY"));
    let all = env("ALL_PROXY");
    if http.is_none() && https.is_none() && all.is_none() {
        return None;
    }
    let mut no: Vec<String> = env("NO_PROXY").into_iter().collect();
    no.extend(config.no_proxy.iter().cloned());
    let mut builder = Matcher::builder().no(no.join(","));
    if let Some(all) = all {
        builder = builder.all(all);
    }
    if let Some(http) = http {
        builder = builder.http(http);
    }
    if let Some(https) = https {
        builder = builder.https(https);
    }
    Some(builder.build())
}

/// A connection, direct or through a proxy; `proxied` marks one to a proxy that expects
/// absolute-form requests.
pub struct ProxyStream {
    inner: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for ProxyStream {
    fn connected(&self) -> Connected {
        self.inner.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for ProxyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for ProxyStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects directly, through a `CONNECT` tunnel (https), or to the proxy (http).
#[derive(Clone)]
pub struct ProxyConnector {
    http: HttpConnector,
    matcher: Option<Arc<Matcher>>,
}

impl ProxyConnector {
    pub(crate) fn new(http: HttpConnector, matcher: Option<Arc<Matcher>>) -> Self {
        Self { http, matcher }
    }
}

impl tower_service::Service<http::Uri> for ProxyConnector {
    type Response = ProxyStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: http::Uri) -> Self::Future {
        let mut http = self.http.clone();
        let intercept = self.matcher.as_ref().and_then(|m| m.intercept(&dst));
        Box::pin(async move {
            match intercept {
                None => Ok(ProxyStream { inner: http.call(dst).await?, proxied: false }),
                Some(proxy) if dst.scheme_str() == Some("https") => {
                    let mut tunnel = hyper_util::client::legacy::connect::proxy::Tunnel::new(proxy.uri().clone(), http);
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    Ok(ProxyStream { inner: tunnel.call(dst).await?, proxied: false })
                }
                Some(proxy) => Ok(ProxyStream { inner: http.call(proxy.uri().clone()).await?, proxied: true }),
            }
        })
    }
}
