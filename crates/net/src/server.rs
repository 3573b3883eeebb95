//! Accepting TLS connections. Handshakes run in their own tasks, bounded in time, so a slow or
//! silent client holds up no one; a failed handshake is reported with its reason and the
//! connection closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// A server-side TLS connection.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Called with the peer and the reason of each failed handshake.
pub type OnFailure = Arc<dyn Fn(SocketAddr, &str) + Send + Sync>;

/// Server side of TLS for one listening component.
#[derive(Clone)]
pub struct Acceptor {
    inner: tokio_rustls::TlsAcceptor,
    timeout: Duration,
}

impl Acceptor {
    pub fn new(config: Arc<rustls::ServerConfig>, timeout: Duration) -> Self {
        Self { inner: tokio_rustls::TlsAcceptor::from(config), timeout }
    }

    /// Completes the handshake on an accepted connection.
    ///
    /// # Cancel safety
    /// Cancel safe (the connection is dropped).
    pub async fn accept(&self, tcp: TcpStream) -> Result<TlsStream, String> {
        match tokio::time::timeout(self.timeout, self.inner.accept(tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(err)) => Err(crate::tls::handshake_failure(&err).unwrap_or_else(|| err.to_string())),
            Err(_) => Err(format!("no handshake within {:?}", self.timeout)),
        }
    }
}

/// Connections whose handshake completed, from a listener accepting in the background. The
/// background task ends when this is dropped.
pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, acceptor: Acceptor, on_failure: OnFailure) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        on_failure(local, &format!("cannot accept: {err}"));
                        // Out of descriptors and the like: give the system a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx, on_failure) = (acceptor.clone(), tx.clone(), on_failure.clone());
                tokio::spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(stream) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Err(reason) => on_failure(peer, &reason),
                    }
                });
            }
        });
        Ok(Self { rx, local, task })
    }

    /// The next connection, or `None` once the listener failed for good.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<(TlsStream, SocketAddr)> {
        self.rx.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client-side TLS connection over TCP (the `socket` sink).
pub type ClientTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Client side of TLS for plain streams: the `tls` block and the name to check.
#[derive(Clone)]
pub struct Connector {
    inner: tokio_rustls::TlsConnector,
    name: rustls::pki_types::ServerName<'static>,
}

impl Connector {
    /// `host` is checked against the certificate unless `tls.server_name` names another.
    pub fn new(tls: &crate::TlsConfig, host: &str) -> Result<Self, String> {
        let config = tls.client_config().map_err(|e| format!("tls.{e}"))?;
        let name = match tls.server_name().map_err(|e| format!("tls.{e}"))? {
            Some(name) => name,
            None => rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|e| format!("`{host}` is not a name TLS can check: {e}"))?,
        };
        Ok(Self { inner: tokio_rustls::TlsConnector::from(config), name })
    }

    /// Completes the handshake; the error is the handshake's reason.
    pub async fn connect(&self, tcp: TcpStream) -> Result<ClientTlsStream, String> {
        self.inner
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|e| crate::tls::handshake_failure(&e).unwrap_or_else(|| e.to_string()))
    }
}
