//! `socket`: lines over TCP, datagrams over UDP. Does not acknowledge: TCP and UDP have no way
//! to tell a sender that its data is safe, so data read from the kernel is at the pipeline's
//! mercy (as in Vector). Peer address goes to `host_key`, peer port to `port_key`. TCP may be
//! TLS (`tls.enabled`), with client certificates required by `tls.verify_certificate`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use sluice_core::ack::EventFinalizer;
use sluice_core::component::{BuildError, SourceConfig, SourceContext, SourceTask};
use sluice_core::ledger::ComponentLedger;
use sluice_core::shutdown::ShutdownSignal;
use sluice_net::TlsConfig;
use sluice_net::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Semaphore, mpsc};
use vrl::value::{KeyString, Value};

use super::{EventBuilder, count_rejected, forwarder, handshake_failed};
use crate::codecs::decoding::{FrameStats, Framer, FramingMethod};
use crate::codecs::{DecodingConfig, FramingConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketConfig {
    /// Required: `tcp` or `udp`.
    pub mode: SocketMode,
    /// Required: `ip:port` to listen on.
    pub address: SocketAddr,
    /// Longest frame in bytes (legacy). Default 102400.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Field for the peer's IP. Default `host`; `""` disables it.
    pub host_key: Option<String>,
    /// Field for the peer's port. Default `port`; `""` disables it.
    #[serde(default = "default_port_key")]
    pub port_key: String,
    /// TCP: seconds to let connections finish at shutdown. Default 30.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// TCP: most connections at once. Default: unlimited.
    pub connection_limit: Option<u32>,
    #[serde(default)]
    pub decoding: DecodingConfig,
    #[serde(default)]
    pub framing: FramingConfig,
    /// TCP: TLS. Default: plain TCP.
    pub tls: Option<TlsConfig>,
    /// TCP with TLS: seconds a client has to complete the handshake. Default 60.
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketMode {
    Tcp,
    Udp,
}

fn default_max_length() -> usize {
    102_400
}
fn default_port_key() -> String {
    "port".into()
}
fn default_shutdown_timeout() -> u64 {
    30
}
fn default_handshake_timeout() -> u64 {
    60
}

impl SourceConfig for SocketConfig {
    fn can_acknowledge(&self) -> bool {
        false
    }

    fn warnings(&self) -> Vec<sluice_core::component::ConfigIssue> {
        self.tls.as_ref().map(|tls| tls.server_warnings("tls")).unwrap_or_default()
    }

    fn check(&self, _globals: &sluice_core::component::GlobalOptions) -> Vec<sluice_core::component::ConfigIssue> {
        match self.tls.as_ref().filter(|t| t.is_enabled()) {
            Some(_) if self.mode == SocketMode::Udp => {
                vec![sluice_core::component::ConfigIssue::new("tls", "TLS needs `mode = \"tcp\"`")]
            }
            Some(tls) => tls.check("tls", true),
            None => Vec::new(),
        }
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let default_method = match self.mode {
            SocketMode::Tcp => FramingMethod::NewlineDelimited,
            SocketMode::Udp => FramingMethod::Bytes,
        };
        let framer = self.framing.framer(default_method, Some(self.max_length)).map_err(BuildError)?;
        let builder = EventBuilder::new(cx.id.clone(), self.decoding.decoder("socket"), self.host_key.as_deref());
        let port_key = (!self.port_key.is_empty()).then(|| KeyString::from(self.port_key.as_str()));
        let bind = |e: std::io::Error| BuildError(format!("cannot listen on {}: {e}", self.address));
        let SourceContext { out, shutdown, .. } = cx;
        match self.mode {
            SocketMode::Tcp => {
                let listener = std::net::TcpListener::bind(self.address).map_err(bind)?;
                listener.set_nonblocking(true).map_err(bind)?;
                let limit = self.connection_limit.map(|n| Arc::new(Semaphore::new(n as usize)));
                let tls = match self.tls.as_ref().filter(|t| t.is_enabled()) {
                    Some(tls) => {
                        let config = tls.server_config().map_err(|e| BuildError(format!("tls.{e}")))?;
                        let timeout = std::time::Duration::from_secs(self.tls_handshake_timeout_secs);
                        Some(Acceptor::new(config, timeout))
                    }
                    None => None,
                };
                let conn = Conn { framer, builder, port_key };
                let timeout = std::time::Duration::from_secs(self.shutdown_timeout_secs);
                Ok(Box::pin(run_tcp(listener, tls, conn, limit, timeout, out, shutdown)))
            }
            SocketMode::Udp => {
                let socket = std::net::UdpSocket::bind(self.address).map_err(bind)?;
                socket.set_nonblocking(true).map_err(bind)?;
                let conn = Conn { framer, builder, port_key };
                Ok(Box::pin(run_udp(socket, conn, self.max_length, out, shutdown)))
            }
        }
    }
}

#[derive(Clone)]
struct Conn {
    framer: Framer,
    builder: EventBuilder,
    port_key: Option<KeyString>,
}

impl Conn {
    fn emit(&self, frames: &mut Vec<Bytes>, peer: SocketAddr, ledger: &ComponentLedger) -> Vec<sluice_core::LogEvent> {
        let host = Bytes::from(peer.ip().to_string());
        let extra: Vec<(KeyString, Value)> =
            self.port_key.iter().map(|k| (k.clone(), Value::from(i64::from(peer.port())))).collect();
        let mut chunk = Vec::with_capacity(frames.len());
        let (failed, error) =
            self.builder.decode_all(frames.drain(..), EventFinalizer::default(), Some(&host), &extra, &mut chunk);
        count_rejected(ledger, failed, "decode_error", error.as_deref().unwrap_or_default());
        chunk
    }
}

async fn run_tcp(
    listener: std::net::TcpListener,
    tls: Option<Acceptor>,
    conn: Conn,
    limit: Option<Arc<Semaphore>>,
    shutdown_timeout: std::time::Duration,
    out: sluice_core::component::SourceSender,
    mut shutdown: ShutdownSignal,
) -> Result<(), ()> {
    let accept_log = sluice_core::log_limit::LogLimit::default();
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
        tracing::error!(error = %e, "Cannot register the listener.");
    })?;
    let (tx, ledger, forward) = forwarder(out);
    let on_failure = handshake_failed(ledger.clone());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = match &limit {
            Some(limit) => tokio::select! {
                () = shutdown.wait() => break,
                permit = limit.clone().acquire_owned() => permit.ok(),
            },
            None => None,
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if let Some(folded) = accept_log.admit() {
                        tracing::warn!(error = %err, similar_since_last_line = folded, "Cannot accept a connection.");
                    }
                    ledger.error("accept_failed", "receiving");
                    continue;
                }
            },
        };
        let (conn, tx, ledger) = (conn.clone(), tx.clone(), ledger.clone());
        let (tls, on_failure) = (tls.clone(), on_failure.clone());
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => read_stream(stream, peer, conn, tx, ledger).await,
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => read_stream(stream, peer, conn, tx, ledger).await,
                    Err(reason) => on_failure(peer, &reason),
                },
            }
        });
    }
    drop(tx);
    // Open connections may finish sending for `shutdown_timeout_secs`.
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(shutdown_timeout, drain).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "Closing connections still open after shutdown_timeout_secs; unread data stays with the senders."
        );
        connections.abort_all();
    }
    let _ = forward.await;
    Ok(())
}

async fn read_stream(
    mut stream: impl AsyncRead + Unpin,
    peer: SocketAddr,
    conn: Conn,
    tx: mpsc::Sender<sluice_core::Chunk>,
    ledger: Arc<ComponentLedger>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut frames = Vec::new();
    let mut stats = FrameStats::default();
    loop {
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = stream.read_buf(&mut buf).await;
        let eof = !matches!(read, Ok(n) if n > 0);
        conn.framer.split(&mut buf, &mut frames, &mut stats);
        if eof {
            conn.framer.finish(&mut buf, &mut frames, &mut stats);
        } else if conn.framer.tail_oversized(&buf) {
            // Vector discards an oversized frame; drop what we have of it.
            buf.clear();
            stats.oversized += 1;
        }
        count_rejected(&ledger, std::mem::take(&mut stats.oversized), "oversized", "frame longer than max_length");
        if !frames.is_empty() {
            let chunk = conn.emit(&mut frames, peer, &ledger);
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        if eof {
            break;
        }
    }
}

async fn run_udp(
    socket: std::net::UdpSocket,
    conn: Conn,
    max_length: usize,
    out: sluice_core::component::SourceSender,
    mut shutdown: ShutdownSignal,
) -> Result<(), ()> {
    let socket = tokio::net::UdpSocket::from_std(socket).map_err(|e| {
        tracing::error!(error = %e, "Cannot register the socket.");
    })?;
    let (tx, ledger, forward) = forwarder(out);
    let mut datagram = vec![0u8; 65_536];
    let mut frames = Vec::new();
    let mut stats = FrameStats::default();
    loop {
        let (len, peer) = tokio::select! {
            () = shutdown.wait() => break,
            received = socket.recv_from(&mut datagram) => match received {
                Ok(received) => received,
                Err(err) => {
                    static LOG: sluice_core::log_limit::LogLimit =
                        sluice_core::log_limit::LogLimit::new(sluice_core::log_limit::INTERVAL);
                    if let Some(folded) = LOG.admit() {
                        tracing::warn!(error = %err, similar_since_last_line = folded, "Cannot receive a datagram.");
                    }
                    ledger.error("receive_failed", "receiving");
                    continue;
                }
            },
        };
        if len > max_length {
            count_rejected(&ledger, 1, "oversized", "datagram longer than max_length");
            continue;
        }
        let mut buf = BytesMut::from(&datagram[..len]);
        conn.framer.split(&mut buf, &mut frames, &mut stats);
        conn.framer.finish(&mut buf, &mut frames, &mut stats);
        count_rejected(&ledger, std::mem::take(&mut stats.oversized), "oversized", "frame longer than max_length");
        if !frames.is_empty() {
            let chunk = conn.emit(&mut frames, peer, &ledger);
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
    }
    drop(tx);
    let _ = forward.await;
    Ok(())
}
