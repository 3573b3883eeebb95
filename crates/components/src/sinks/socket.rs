//! `socket`: events written to a TCP (optionally TLS) or Unix stream socket, or sent as UDP or
//! Unix datagrams, on the shared sink driver.
//!
//! Delivered means handed to the kernel: written to the socket without error (a stream), or
//! sent (a datagram). Neither TCP nor UDP tells the sender that the peer's application read
//! the data, so an event written just before the peer dies can be lost without anyone
//! knowing; a UDP datagram can be dropped anywhere on the way. A write that fails is retried
//! on a new connection, so an event can arrive twice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::TlsConfig;
use sluice_net::server::Connector;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::driver::{
    self, BatchConfig, CallResult, ConcurrencyLimit, DriverSettings, EncodedBatch, ItemResult, PartitionKey,
    RequestConfig, Service,
};
use crate::codecs::{Encoder, EncodingConfig, SinkFraming};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketSinkConfig {
    /// Required: `tcp`, `udp`, `unix_stream` (also `unix`) or `unix_datagram`.
    pub mode: Mode,
    /// Required for tcp and udp: `host:port`.
    pub address: Option<String>,
    /// Required for the unix modes.
    pub path: Option<PathBuf>,
    /// Required.
    pub encoding: EncodingConfig,
    /// Streams: after each event, `newline_delimited` (default), `character_delimited` or
    /// `bytes` (nothing). Datagrams are one event each.
    #[serde(default)]
    pub framing: SinkFraming,
    /// TCP: accepted; keepalive is left to the system.
    pub keepalive: Option<serde_json::Value>,
    /// Accepted; the system's buffer size is kept.
    pub send_buffer_bytes: Option<usize>,
    /// TCP: TLS (`tls.enabled`).
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Tcp,
    Udp,
    #[serde(alias = "unix")]
    UnixStream,
    UnixDatagram,
}

impl Mode {
    fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::UnixStream)
    }
}

/// How long a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl SinkConfig for SocketSinkConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(0.0)
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(1 << 20)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.framing.delimiter().err());
        match self.mode {
            Mode::Tcp | Mode::Udp => match &self.address {
                None => issues.push(ConfigIssue::new("address", "required for mode tcp and udp (`host:port`)")),
                Some(address) if address.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) => {
                    issues.push(ConfigIssue::new("address", format!("`{address}` is not `host:port`")));
                }
                Some(_) => {}
            },
            Mode::UnixStream | Mode::UnixDatagram if self.path.is_none() => {
                issues.push(ConfigIssue::new("path", "required for the unix modes"));
            }
            _ => {}
        }
        match self.tls.as_ref().filter(|t| t.is_enabled()) {
            Some(_) if self.mode != Mode::Tcp => issues.push(ConfigIssue::new("tls", "TLS needs `mode = \"tcp\"`")),
            Some(tls) => issues.extend(tls.check("tls", false)),
            None => {}
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let delimiter = if self.mode.is_stream() { self.framing.delimiter().map_err(issue)? } else { None };
        let tls = match self.tls.as_ref().filter(|t| t.is_enabled()) {
            Some(tls) => {
                let host = self.address.as_deref().and_then(|a| a.rsplit_once(':')).map(|(h, _)| h).unwrap_or("");
                Some(Connector::new(tls, host).map_err(BuildError)?)
            }
            None => None,
        };
        let target = match self.mode {
            Mode::Tcp | Mode::Udp => Target::Net(self.address.clone().unwrap_or_default()),
            Mode::UnixStream | Mode::UnixDatagram => Target::Unix(self.path.clone().unwrap_or_default()),
        };
        let service = SocketService {
            mode: self.mode,
            target,
            tls,
            encoder: self.encoding.build(),
            delimiter,
            conn: Mutex::new(None),
        };
        Ok(Box::new(SocketSink { service, cx }))
    }
}

struct SocketSink {
    service: SocketService,
    cx: SinkContext,
}

impl Sink for SocketSink {
    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let SocketSink { service, cx } = *self;
            // Events go out as they come (one write per chunk), one write at a time, so a
            // stream keeps their order.
            let batch = BatchConfig {
                max_events: Some(1_000),
                max_bytes: Some(1 << 20),
                timeout_secs: Some(0.0),
                flush_when_idle: None,
            };
            let request = RequestConfig { retry_max_duration_secs: Some(5.0), ..RequestConfig::default() };
            let mut settings = DriverSettings::new(&batch, &request, (None, 1 << 20, 0.0));
            settings.concurrency = ConcurrencyLimit::Fixed(1);
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

enum Target {
    Net(String),
    Unix(PathBuf),
}

type Stream = Box<dyn AsyncWrite + Unpin + Send>;

enum Conn {
    Stream(Stream),
    Udp(tokio::net::UdpSocket),
    UnixDatagram(tokio::net::UnixDatagram),
}

struct SocketService {
    mode: Mode,
    target: Target,
    tls: Option<Connector>,
    encoder: Encoder,
    delimiter: Option<u8>,
    conn: Mutex<Option<Conn>>,
}

impl SocketService {
    async fn connect(&self) -> Result<Conn, (String, &'static str)> {
        let failed = |e: std::io::Error| (e.to_string(), "connection_failed");
        match (&self.target, self.mode) {
            (Target::Net(address), Mode::Tcp) => {
                let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address.as_str()))
                    .await
                    .map_err(|_| (format!("no connection to {address} within {CONNECT_TIMEOUT:?}"), "timeout"))?
                    .map_err(failed)?;
                let _ = tcp.set_nodelay(true);
                match &self.tls {
                    Some(connector) => {
                        let stream = connector
                            .connect(tcp)
                            .await
                            .map_err(|reason| (format!("TLS handshake with {address} failed: {reason}"), "tls"))?;
                        Ok(Conn::Stream(Box::new(stream)))
                    }
                    None => Ok(Conn::Stream(Box::new(tcp))),
                }
            }
            (Target::Net(address), _) => {
                let peer: SocketAddr = tokio::net::lookup_host(address.as_str())
                    .await
                    .map_err(failed)?
                    .next()
                    .ok_or_else(|| (format!("`{address}` resolves to no address"), "connection_failed"))?;
                let local: SocketAddr = if peer.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let socket = tokio::net::UdpSocket::bind(local).await.map_err(failed)?;
                socket.connect(peer).await.map_err(failed)?;
                Ok(Conn::Udp(socket))
            }
            (Target::Unix(path), Mode::UnixDatagram) => {
                let socket = tokio::net::UnixDatagram::unbound().map_err(failed)?;
                socket.connect(path).map_err(failed)?;
                Ok(Conn::UnixDatagram(socket))
            }
            (Target::Unix(path), _) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(failed)?;
                Ok(Conn::Stream(Box::new(stream)))
            }
        }
    }
}

impl Service for SocketService {
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        self.encoder.encode(event, buf).map_err(|e| e.0)?;
        buf.extend(self.delimiter);
        Ok(())
    }

    fn partition(&self, _event: &LogEvent) -> Result<PartitionKey, String> {
        Ok(PartitionKey::new())
    }

    fn call<'a>(&'a self, _key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let mut conn = self.conn.lock().await;
            if conn.is_none() {
                match self.connect().await {
                    Ok(new) => *conn = Some(new),
                    Err((message, error_type)) => return CallResult::no_answer(&message, error_type),
                }
            }
            let Some(open) = conn.as_mut() else { return CallResult::no_answer(&"no connection", "connection_failed") };
            match open {
                Conn::Stream(stream) => {
                    let written = async {
                        stream.write_all(batch.as_bytes()).await?;
                        stream.flush().await
                    };
                    match written.await {
                        Ok(()) => CallResult::Delivered,
                        Err(e) => {
                            // The connection is gone; the next try opens a new one.
                            *conn = None;
                            CallResult::no_answer(&format!("write failed: {e}"), "write_failed")
                        }
                    }
                }
                Conn::Udp(_) | Conn::UnixDatagram(_) => {
                    let mut results = Vec::with_capacity(batch.len());
                    let mut retry = false;
                    for item in batch.items() {
                        let sent = match open {
                            Conn::Udp(socket) => socket.send(item).await,
                            Conn::UnixDatagram(socket) => socket.send(item).await,
                            Conn::Stream(_) => Ok(item.len()),
                        };
                        results.push(match sent {
                            Ok(_) => ItemResult::Delivered,
                            // Too large for one datagram: no retry will fit it.
                            Err(e) if e.raw_os_error() == Some(90) => {
                                ItemResult::Permanent { status: None, message: format!("datagram too large: {e}") }
                            }
                            Err(e) => {
                                retry = true;
                                ItemResult::Retriable { status: None, message: format!("send failed: {e}") }
                            }
                        });
                    }
                    if retry {
                        *conn = None;
                    }
                    if results.iter().all(|r| *r == ItemResult::Delivered) {
                        CallResult::Delivered
                    } else {
                        CallResult::PerItem(results)
                    }
                }
            }
        })
    }
}
