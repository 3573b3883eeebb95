//! Listeners shared by the sources that read sockets (`socket`, `syslog`): TCP (optionally
//! TLS), UDP and Unix stream sockets. A [`Protocol`] says how bytes become frames and frames
//! become events (or dead letters); this module accepts, reads, and hands the results to the
//! source's output through one forwarder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_core::component::{BuildError, SourceSender};
use sluice_core::dead_letter::DeadLetterQueue;
use sluice_core::ledger::ComponentLedger;
use sluice_core::log_limit::{INTERVAL, LogLimit};
use sluice_core::shutdown::ShutdownSignal;
use sluice_net::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{Semaphore, mpsc};

use super::{Out, handshake_failed};

/// How one source turns bytes into events.
pub(crate) trait Protocol: Clone + Send + Sync + 'static {
    /// Per-connection framing state.
    type Framing: Default + Send;

    /// Moves the complete frames at the front of `buf` to `frames`; at `eof`, what is left too.
    /// Frames over the limit are dropped and counted in the ledger.
    fn split(
        &self,
        state: &mut Self::Framing,
        buf: &mut BytesMut,
        frames: &mut Vec<Bytes>,
        eof: bool,
        ledger: &ComponentLedger,
    );

    /// The frames of one datagram.
    fn datagram(&self, data: &[u8], frames: &mut Vec<Bytes>, ledger: &ComponentLedger);

    /// Events from `frames` (drained), from `peer` (`None` on Unix sockets).
    fn emit(&self, frames: &mut Vec<Bytes>, peer: Option<SocketAddr>, ledger: &ComponentLedger, out: &mut Vec<Out>);
}

/// Where a listener is.
pub(crate) enum Listener {
    Tcp {
        listener: std::net::TcpListener,
        tls: Option<Acceptor>,
        limit: Option<Arc<Semaphore>>,
        /// Keeps the socket for a successor across a reload.
        lease: sluice_core::listeners::Lease,
    },
    Udp {
        socket: std::net::UdpSocket,
        max_length: usize,
    },
    Unix {
        listener: std::os::unix::net::UnixListener,
        path: PathBuf,
    },
}

impl Listener {
    /// A TCP listener on `address`, with TLS when `tls.enabled`.
    pub fn tcp(
        address: SocketAddr,
        tls: Option<&sluice_net::TlsConfig>,
        handshake_timeout_secs: u64,
        connection_limit: Option<u32>,
    ) -> Result<Self, BuildError> {
        let bind = |e: std::io::Error| BuildError(format!("cannot listen on {address}: {e}"));
        let (listener, lease) = sluice_core::listeners::take(address).map_err(bind)?;
        let tls = match tls.filter(|t| t.is_enabled()) {
            Some(tls) => {
                let config = tls.server_config().map_err(|e| BuildError(format!("tls.{e}")))?;
                Some(Acceptor::new(config, Duration::from_secs(handshake_timeout_secs)))
            }
            None => None,
        };
        let limit = connection_limit.map(|n| Arc::new(Semaphore::new(n as usize)));
        Ok(Self::Tcp { listener, tls, limit, lease })
    }

    /// A UDP socket on `address`; longer datagrams are dropped and counted.
    pub fn udp(address: SocketAddr, max_length: usize) -> Result<Self, BuildError> {
        let bind = |e: std::io::Error| BuildError(format!("cannot listen on {address}: {e}"));
        let socket = std::net::UdpSocket::bind(address).map_err(bind)?;
        socket.set_nonblocking(true).map_err(bind)?;
        Ok(Self::Udp { socket, max_length })
    }
}

/// Runs `listener` until shutdown; connections may finish for `shutdown_timeout`.
pub(crate) async fn run<P: Protocol>(
    listener: Listener,
    protocol: P,
    out: SourceSender,
    dead_letter: Arc<dyn DeadLetterQueue>,
    shutdown: ShutdownSignal,
    shutdown_timeout: Duration,
) -> Result<(), ()> {
    let (tx, ledger, forward) = forwarder(out, dead_letter);
    let result = match listener {
        Listener::Tcp { listener, tls, limit, lease } => {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
                tracing::error!(error = %e, "Cannot register the listener.");
            })?;
            let accept = || async { listener.accept().await.map(|(stream, peer)| Accepted::Tcp(stream, peer)) };
            serve_streams(accept, tls, limit, protocol, tx, ledger, shutdown, shutdown_timeout).await;
            drop(lease);
            Ok(())
        }
        Listener::Unix { listener, path } => {
            let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| {
                tracing::error!(error = %e, path = %path.display(), "Cannot register the socket.");
            })?;
            let accept = || async { listener.accept().await.map(|(stream, _)| Accepted::Unix(stream)) };
            serve_streams(accept, None, None, protocol, tx, ledger, shutdown, shutdown_timeout).await;
            let _ = std::fs::remove_file(&path);
            Ok(())
        }
        Listener::Udp { socket, max_length } => {
            serve_datagrams(socket, max_length, protocol, tx, ledger, shutdown).await
        }
    };
    let _ = forward.await;
    result
}

/// One task hands everything to the source's output: chunks downstream, dead letters to the
/// source's dead-letter queue.
fn forwarder(
    mut out: SourceSender,
    dead_letter: Arc<dyn DeadLetterQueue>,
) -> (mpsc::Sender<Vec<Out>>, Arc<ComponentLedger>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Vec<Out>>(64);
    let ledger = out.ledger().clone();
    let task = tokio::spawn(async move {
        while let Some(batch) = rx.recv().await {
            for item in batch {
                match item {
                    // On error the chunk was already resolved as failed and counted.
                    Out::Chunk(chunk) => {
                        let _ = out.send(chunk).await;
                    }
                    Out::DeadLetters(events, failure) => {
                        out.ledger().accept(events.len());
                        dead_letter.submit(events, failure).await;
                    }
                }
            }
        }
    });
    (tx, ledger, task)
}

/// An accepted stream connection.
enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

#[allow(clippy::too_many_arguments)]
async fn serve_streams<P, A, F>(
    accept: A,
    tls: Option<Acceptor>,
    limit: Option<Arc<Semaphore>>,
    protocol: P,
    tx: mpsc::Sender<Vec<Out>>,
    ledger: Arc<ComponentLedger>,
    mut shutdown: ShutdownSignal,
    shutdown_timeout: Duration,
) where
    P: Protocol,
    A: Fn() -> F,
    F: std::future::Future<Output = std::io::Result<Accepted>>,
{
    let on_failure = handshake_failed(ledger.clone());
    static ACCEPT_LOG: LogLimit = LogLimit::new(INTERVAL);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = match &limit {
            Some(limit) => tokio::select! {
                () = shutdown.wait() => break,
                permit = limit.clone().acquire_owned() => permit.ok(),
            },
            None => None,
        };
        let accepted = tokio::select! {
            () = shutdown.wait() => break,
            accepted = accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    if let Some(folded) = ACCEPT_LOG.admit() {
                        tracing::warn!(error = %err, similar_since_last_line = folded, "Cannot accept a connection.");
                    }
                    ledger.error("accept_failed", "receiving");
                    continue;
                }
            },
        };
        let (protocol, tx, ledger) = (protocol.clone(), tx.clone(), ledger.clone());
        let (tls, on_failure) = (tls.clone(), on_failure.clone());
        connections.spawn(async move {
            let _permit = permit;
            match (accepted, tls) {
                (Accepted::Tcp(stream, peer), Some(tls)) => match tls.accept(stream).await {
                    Ok(stream) => read_stream(stream, Some(peer), protocol, tx, ledger).await,
                    Err(reason) => on_failure(peer, &reason),
                },
                (Accepted::Tcp(stream, peer), None) => read_stream(stream, Some(peer), protocol, tx, ledger).await,
                (Accepted::Unix(stream), _) => read_stream(stream, None, protocol, tx, ledger).await,
            }
        });
    }
    drop(tx);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(shutdown_timeout, drain).await.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "Closing connections still open after shutdown_timeout_secs; unread data stays with the senders."
        );
        connections.abort_all();
    }
}

async fn read_stream<P: Protocol>(
    mut stream: impl AsyncRead + Unpin,
    peer: Option<SocketAddr>,
    protocol: P,
    tx: mpsc::Sender<Vec<Out>>,
    ledger: Arc<ComponentLedger>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut state = P::Framing::default();
    let mut frames = Vec::new();
    loop {
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = stream.read_buf(&mut buf).await;
        if let Ok(n) = read {
            ledger.received_bytes(n);
        }
        let eof = !matches!(read, Ok(n) if n > 0);
        protocol.split(&mut state, &mut buf, &mut frames, eof, &ledger);
        if !frames.is_empty() {
            let mut out = Vec::with_capacity(1);
            protocol.emit(&mut frames, peer, &ledger, &mut out);
            if !out.is_empty() && tx.send(out).await.is_err() {
                break;
            }
        }
        if eof {
            break;
        }
    }
}

async fn serve_datagrams<P: Protocol>(
    socket: std::net::UdpSocket,
    max_length: usize,
    protocol: P,
    tx: mpsc::Sender<Vec<Out>>,
    ledger: Arc<ComponentLedger>,
    mut shutdown: ShutdownSignal,
) -> Result<(), ()> {
    let socket = tokio::net::UdpSocket::from_std(socket).map_err(|e| {
        tracing::error!(error = %e, "Cannot register the socket.");
    })?;
    static RECEIVE_LOG: LogLimit = LogLimit::new(INTERVAL);
    let mut datagram = vec![0u8; 65_536];
    let mut frames = Vec::new();
    loop {
        let (len, peer) = tokio::select! {
            () = shutdown.wait() => break,
            received = socket.recv_from(&mut datagram) => match received {
                Ok(received) => received,
                Err(err) => {
                    if let Some(folded) = RECEIVE_LOG.admit() {
                        tracing::warn!(error = %err, similar_since_last_line = folded, "Cannot receive a datagram.");
                    }
                    ledger.error("receive_failed", "receiving");
                    continue;
                }
            },
        };
        ledger.received_bytes(len);
        if len > max_length {
            super::count_rejected(&ledger, 1, "oversized", "datagram longer than max_length");
            continue;
        }
        protocol.datagram(&datagram[..len], &mut frames, &ledger);
        if !frames.is_empty() {
            let mut out = Vec::with_capacity(1);
            protocol.emit(&mut frames, Some(peer), &ledger, &mut out);
            if !out.is_empty() && tx.send(out).await.is_err() {
                break;
            }
        }
    }
    Ok(())
}
