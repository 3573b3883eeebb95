//! `socket`: lines over TCP, datagrams over UDP. Does not acknowledge: TCP and UDP have no way
//! to tell a sender that its data is safe, so data read from the kernel is at the pipeline's
//! mercy (as in Vector). Peer address goes to `host_key`, peer port to `port_key`. TCP may be
//! TLS (`tls.enabled`), with client certificates required by `tls.verify_certificate`.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use sluice_core::ack::EventFinalizer;
use sluice_core::component::{BuildError, SourceConfig, SourceContext, SourceTask};
use sluice_core::ledger::ComponentLedger;
use sluice_net::TlsConfig;
use vrl::value::{KeyString, Value};

use super::Out;
use super::listen::{self, Listener, Protocol};
use super::{EventBuilder, count_rejected};
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
        let listener = match self.mode {
            SocketMode::Tcp => {
                Listener::tcp(self.address, self.tls.as_ref(), self.tls_handshake_timeout_secs, self.connection_limit)?
            }
            SocketMode::Udp => Listener::udp(self.address, self.max_length)?,
        };
        let conn = Conn { framer, builder, port_key };
        let timeout = std::time::Duration::from_secs(self.shutdown_timeout_secs);
        let SourceContext { out, shutdown, dead_letter, .. } = cx;
        Ok(Box::pin(listen::run(listener, conn, out, dead_letter, shutdown, timeout)))
    }
}

#[derive(Clone)]
struct Conn {
    framer: Framer,
    builder: EventBuilder,
    port_key: Option<KeyString>,
}

impl Protocol for Conn {
    type Framing = ();

    fn split(&self, _state: &mut (), buf: &mut BytesMut, frames: &mut Vec<Bytes>, eof: bool, ledger: &ComponentLedger) {
        let mut stats = FrameStats::default();
        self.framer.split(buf, frames, &mut stats);
        if eof {
            self.framer.finish(buf, frames, &mut stats);
        } else if self.framer.tail_oversized(buf) {
            // Vector discards an oversized frame; drop what we have of it.
            buf.clear();
            stats.oversized += 1;
        }
        count_rejected(ledger, stats.oversized, "oversized", "frame longer than max_length");
    }

    fn datagram(&self, data: &[u8], frames: &mut Vec<Bytes>, ledger: &ComponentLedger) {
        let mut buf = BytesMut::from(data);
        let mut stats = FrameStats::default();
        self.framer.split(&mut buf, frames, &mut stats);
        self.framer.finish(&mut buf, frames, &mut stats);
        count_rejected(ledger, stats.oversized, "oversized", "frame longer than max_length");
    }

    fn emit(&self, frames: &mut Vec<Bytes>, peer: Option<SocketAddr>, ledger: &ComponentLedger, out: &mut Vec<Out>) {
        let host = peer.map(|p| Bytes::from(p.ip().to_string()));
        let extra: Vec<(KeyString, Value)> = match (&self.port_key, peer) {
            (Some(key), Some(peer)) => vec![(key.clone(), Value::from(i64::from(peer.port())))],
            _ => Vec::new(),
        };
        let mut chunk = Vec::with_capacity(frames.len());
        let (failed, error) =
            self.builder.decode_all(frames.drain(..), EventFinalizer::default(), host.as_ref(), &extra, &mut chunk);
        count_rejected(ledger, failed, "decode_error", error.as_deref().unwrap_or_default());
        if !chunk.is_empty() {
            out.push(Out::Chunk(chunk));
        }
    }
}
