//! `http_server` (legacy name `http`): events from HTTP requests.
//!
//! Acknowledgements (on by default): a request is answered `response_code` only after every
//! destination of every event in it has delivered the event or stored it durably. If any
//! failed, the answer is 500 naming why; if the outcome takes longer than `ack_timeout_secs`,
//! the answer is 503 so the sender retries. A request whose body cannot be decoded is
//! rejected whole with 400 (nothing from it enters the pipeline).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode, Uri};
use serde::Deserialize;
use sluice_core::Chunk;
use sluice_core::ack::{BatchNotifier, EventFinalizer, Outcome};
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask};
use sluice_core::event::resolve_all;
use sluice_core::ledger::ComponentLedger;
use sluice_net::TlsConfig;
use sluice_net::server::{Acceptor, TlsIncoming};
use tokio::sync::mpsc;
use vrl::value::{KeyString, Value};

use super::{EventBuilder, Stoppable, TlsListener, count_rejected, forwarder, handshake_failed};
use crate::codecs::decoding::{Decoder, DecodingCodec, FrameStats, Framer, FramingMethod};
use crate::codecs::{DecodingConfig, FramingConfig};

/// Default `max_body_bytes`.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Over the limit, how long and how much of the rest of a body is read and thrown away before
/// the 413.
const DRAIN_TIME: Duration = Duration::from_secs(10);
const DRAIN_BYTES: usize = 1 << 30;
/// How long a client has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Required: `ip:port` to listen on.
    pub address: SocketAddr,
    /// Path that accepts events. Default `/`.
    #[serde(default = "default_path")]
    pub path: String,
    /// `false` accepts any path under `path`. Default true.
    #[serde(default = "crate::default_true")]
    pub strict_path: bool,
    /// Default `POST`.
    #[serde(default)]
    pub method: HttpMethod,
    /// Status answered on success. Default 200.
    #[serde(default = "default_response_code")]
    pub response_code: u16,
    /// Request headers copied into each event (`*` wildcards allowed).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Query parameters copied into each event.
    #[serde(default)]
    pub query_parameters: Vec<String>,
    /// Field for the request path. Default `path`; `""` disables it.
    #[serde(default = "default_path_key")]
    pub path_key: String,
    /// Field for the client's IP. Default `""` (off).
    #[serde(default)]
    pub host_key: String,
    pub auth: Option<HttpServerAuth>,
    #[serde(default)]
    pub decoding: DecodingConfig,
    #[serde(default)]
    pub framing: FramingConfig,
    /// Vector's deprecated `encoding` (`text`, `ndjson`, `json`, `binary`): accepted with a
    /// warning naming its `decoding`/`framing` equivalent, which it stands for.
    pub encoding: Option<LegacyEncoding>,
    /// sluice: seconds to wait for the events' outcome before answering 503. Default 30.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: f64,
    /// sluice: the largest request body (before decompression) taken, in bytes; a larger one
    /// is answered 413. Default 64 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Accepted for compatibility.
    pub keepalive: Option<Keepalive>,
    /// TLS (`enabled = true` with `crt_file` and `key_file`); `verify_certificate = true`
    /// requires client certificates issued by `ca_file` (mutual TLS). Default: plain HTTP.
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keepalive {
    pub max_connection_age_secs: Option<u64>,
    pub max_connection_age_jitter_factor: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpServerAuth {
    Basic { username: String, password: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Head,
    Get,
    Put,
    #[default]
    Post,
    Patch,
    Delete,
}

fn default_path() -> String {
    "/".into()
}
fn default_path_key() -> String {
    "path".into()
}
fn default_response_code() -> u16 {
    200
}
fn default_ack_timeout() -> f64 {
    30.0
}

fn default_max_body_bytes() -> usize {
    MAX_BODY_BYTES
}

/// Reads a request body of at most `limit` bytes. A larger one is answered 413 as early as
/// the client lets it be seen: at once when the client waits for `100 Continue` (it then never
/// sends the body) or when nothing of it was read; otherwise the rest is read and thrown
/// away (for at most [`DRAIN_TIME`] and [`DRAIN_BYTES`]) before answering, because most
/// clients read the answer only once they have sent everything, and a connection closed under
/// them is a broken pipe, not a 413.
async fn read_body(headers: &HeaderMap, body: axum::body::Body, limit: usize) -> Result<Bytes, Response> {
    use http_body_util::BodyExt;
    let too_large = || {
        let message = format!("body larger than {limit} bytes (max_body_bytes)\n");
        (StatusCode::PAYLOAD_TOO_LARGE, [(http::header::CONNECTION, "close")], message).into_response()
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let expects_continue = headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if declared.is_some_and(|n| n > limit as u64) && expects_continue {
        return Err(too_large());
    }
    let mut body = body;
    let mut out = BytesMut::new();
    let mut over = declared.is_some_and(|n| n > limit as u64);
    let mut drained = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(_))) => return Err(reply(StatusCode::BAD_REQUEST, "body could not be read\n")),
            Ok(None) => break,
            // Draining took too long: answer now (the client may see a reset).
            Err(_) if over => break,
            Err(_) => return Err(reply(StatusCode::REQUEST_TIMEOUT, "body not received in time\n")),
        };
        let Ok(data) = frame.into_data() else { continue };
        if over {
            drained += data.len();
            if drained > DRAIN_BYTES {
                break;
            }
            continue;
        }
        if out.len() + data.len() > limit {
            over = true;
            out = BytesMut::new();
            continue;
        }
        out.extend_from_slice(&data);
    }
    if over { Err(too_large()) } else { Ok(out.freeze()) }
}

struct Shared {
    config: HttpServerConfig,
    method: Method,
    expected_auth: Option<String>,
    framer: Framer,
    builder: EventBuilder,
    acknowledgements: bool,
    ack_timeout: Duration,
    tx: mpsc::Sender<Chunk>,
    ledger: Arc<ComponentLedger>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegacyEncoding {
    Text,
    Ndjson,
    Json,
    Binary,
}

impl LegacyEncoding {
    /// The codec and framing it stands for, and how that is written now.
    fn replacement(self) -> (DecodingCodec, FramingMethod, &'static str) {
        match self {
            Self::Text => {
                (DecodingCodec::Bytes, FramingMethod::NewlineDelimited, "decoding.codec = \"bytes\" (the default)")
            }
            Self::Ndjson => (DecodingCodec::Json, FramingMethod::NewlineDelimited, "decoding.codec = \"json\""),
            Self::Json => {
                (DecodingCodec::Json, FramingMethod::Bytes, "decoding.codec = \"json\" with framing.method = \"bytes\"")
            }
            Self::Binary => (DecodingCodec::Bytes, FramingMethod::Bytes, "framing.method = \"bytes\""),
        }
    }
}

impl HttpServerConfig {
    /// The decoding and framing in effect: the legacy `encoding` when given.
    fn codecs(&self) -> Result<(Decoder, Framer), String> {
        match self.encoding {
            Some(encoding) => {
                let (codec, method, _) = encoding.replacement();
                let decoding = DecodingConfig { codec, ..self.decoding.clone() };
                let framer = self.framing.framer(method, None)?;
                Ok((decoding.decoder("http_server"), framer))
            }
            None => Ok((
                self.decoding.decoder("http_server"),
                self.framing.framer(self.decoding.default_stream_framing(), None)?,
            )),
        }
    }
}

impl SourceConfig for HttpServerConfig {
    fn can_acknowledge(&self) -> bool {
        true
    }

    fn ack_timeout_secs(&self) -> Option<f64> {
        Some(self.ack_timeout_secs)
    }

    fn warnings(&self) -> Vec<ConfigIssue> {
        let mut warnings = self.tls.as_ref().map(|tls| tls.server_warnings("tls")).unwrap_or_default();
        if let Some(encoding) = self.encoding {
            let (_, _, now) = encoding.replacement();
            warnings
                .push(ConfigIssue::new("encoding", format!("`encoding` is deprecated (in Vector too); write {now}")));
        }
        warnings
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if StatusCode::from_u16(self.response_code).is_err() {
            issues.push(ConfigIssue::new("response_code", "not a valid HTTP status"));
        }
        if !self.path.starts_with('/') {
            issues.push(ConfigIssue::new("path", "must start with `/`"));
        }
        if !(self.ack_timeout_secs.is_finite() && self.ack_timeout_secs > 0.0) {
            issues.push(ConfigIssue::new("ack_timeout_secs", "must be a positive number of seconds"));
        }
        if let Some(tls) = self.tls.as_ref().filter(|t| t.is_enabled()) {
            issues.extend(tls.check("tls", true));
        }
        if self.max_body_bytes == 0 {
            issues.push(ConfigIssue::new("max_body_bytes", "must be at least 1"));
        }
        if self.encoding.is_some() && (self.decoding.codec != DecodingCodec::Bytes || self.framing.method.is_some()) {
            issues.push(ConfigIssue::new(
                "encoding",
                "`encoding` and `decoding`/`framing` both given; keep `decoding`/`framing`",
            ));
        }
        issues
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let (decoder, framer) = self.codecs().map_err(BuildError)?;
        // Kept across a reload that replaces this source: connections wait, never refused.
        let (listener, lease) = sluice_core::listeners::take(self.address)
            .map_err(|e| BuildError(format!("cannot listen on {}: {e}", self.address)))?;
        let builder = EventBuilder::new(cx.id.clone(), decoder, Some(&self.host_key));
        let expected_auth = self.auth.as_ref().map(|HttpServerAuth::Basic { username, password }| {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            format!("Basic {token}")
        });
        let method = match self.method {
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Get => Method::GET,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Post => Method::POST,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
        };
        let tls = match self.tls.as_ref().filter(|t| t.is_enabled()) {
            Some(tls) => Some(tls.server_config().map_err(|e| BuildError(format!("tls.{e}")))?),
            None => None,
        };
        let config = self.clone();
        let SourceContext { out, mut shutdown, acknowledgements, .. } = cx;
        Ok(Box::pin(async move {
            let (tx, ledger, forward) = forwarder(out);
            let shared = Arc::new(Shared {
                ack_timeout: Duration::from_secs_f64(config.ack_timeout_secs),
                config,
                method,
                expected_auth,
                framer,
                builder,
                acknowledgements,
                tx,
                ledger: ledger.clone(),
            });
            let app = axum::Router::new().fallback(handle).layer(DefaultBodyLimit::disable()).with_state(shared);
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
                tracing::error!(error = %e, "Cannot register the listener.");
            })?;
            let stopping = shutdown.clone();
            // Accepting stops at once; accepted connections get their answers first.
            let stop = async move {
                shutdown.wait().await;
                tokio::time::sleep(super::CLOSE_GRACE).await;
            };
            let served = match tls {
                None => {
                    let listener = Stoppable { inner: listener, stop: stopping };
                    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                        .with_graceful_shutdown(stop)
                        .await
                }
                Some(tls) => {
                    let acceptor = Acceptor::new(tls, TLS_HANDSHAKE_TIMEOUT);
                    let on_failure = handshake_failed(ledger);
                    let incoming = TlsIncoming::new(listener, acceptor, on_failure).map_err(|e| {
                        tracing::error!(error = %e, "Cannot register the listener.");
                    })?;
                    let listener = Stoppable { inner: TlsListener(incoming), stop: stopping };
                    axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                        .with_graceful_shutdown(stop)
                        .await
                }
            };
            if let Err(err) = &served {
                tracing::error!(error = %err, "HTTP server failed.");
            }
            let _ = forward.await;
            drop(lease);
            served.map_err(|_| ())
        }))
    }
}

/// The client's address, for plain and TLS listeners alike.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Stoppable<tokio::net::TcpListener>>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Stoppable<tokio::net::TcpListener>>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Stoppable<TlsListener>>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Stoppable<TlsListener>>) -> Self {
        Self(*stream.remote_addr())
    }
}

fn reply(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

fn header_fields(config: &HttpServerConfig, headers: &HeaderMap, uri: &Uri) -> Vec<(KeyString, Value)> {
    let mut extra = Vec::new();
    for wanted in &config.headers {
        if wanted.contains('*') {
            let pattern = wanted.to_ascii_lowercase();
            let (prefix, suffix) = pattern.split_once('*').unwrap_or((&pattern, ""));
            for (name, value) in headers {
                let name = name.as_str();
                if name.starts_with(prefix) && name.ends_with(suffix) {
                    extra.push((KeyString::from(name), Value::Bytes(Bytes::copy_from_slice(value.as_bytes()))));
                }
            }
        } else {
            let value = headers
                .get(wanted.as_str())
                .map_or(Value::Null, |v| Value::Bytes(Bytes::copy_from_slice(v.as_bytes())));
            extra.push((KeyString::from(wanted.as_str()), value));
        }
    }
    if !config.query_parameters.is_empty() {
        let pairs: Vec<(String, String)> = uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        Some((percent_decode(k)?, percent_decode(v)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        for wanted in &config.query_parameters {
            let value = pairs.iter().find(|(k, _)| k == wanted).map_or(Value::Null, |(_, v)| Value::from(v.as_str()));
            extra.push((KeyString::from(wanted.as_str()), value));
        }
    }
    if !config.path_key.is_empty() {
        extra.push((KeyString::from(config.path_key.as_str()), Value::from(uri.path())));
    }
    extra
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The body as sent, decompressed by its `Content-Encoding`: at most 4 × `limit` bytes, a
/// larger one is refused whole (413), never cut.
pub(super) fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Box<Response>> {
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let most = (limit as u64).saturating_mul(4);
    let mut out = Vec::new();
    let result = match encoding.as_str() {
        "identity" | "" => return Ok(body),
        "gzip" => flate2::read::MultiGzDecoder::new(&body[..]).take(most + 1).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(&body[..]).take(most + 1).read_to_end(&mut out),
        _ => {
            return Err(Box::new(reply(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported Content-Encoding\n")));
        }
    };
    match result {
        Ok(_) if out.len() as u64 > most => Err(Box::new(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body larger than {most} bytes once decompressed (4 x max_body_bytes)\n"),
            )
                .into_response(),
        )),
        Ok(_) => Ok(Bytes::from(out)),
        Err(_) => Err(Box::new(reply(StatusCode::BAD_REQUEST, "body could not be decompressed\n"))),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let config = &shared.config;
    let path_ok =
        if config.strict_path { uri.path() == config.path } else { uri.path().starts_with(config.path.as_str()) };
    if !path_ok {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != shared.method {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    if let Some(expected) = &shared.expected_auth {
        let given = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return (StatusCode::UNAUTHORIZED, [(http::header::WWW_AUTHENTICATE, "Basic")], "unauthorized\n")
                .into_response();
        }
    }
    let body = match read_body(&headers, body, config.max_body_bytes).await {
        Ok(body) => body,
        Err(response) => {
            // Nothing of it became events: the client was told (413, or 400/408).
            shared.ledger.error("request_rejected", "receiving");
            return response;
        }
    };
    shared.ledger.received_bytes(body.len());
    let body = match decompress(&headers, body, config.max_body_bytes) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let mut buf = BytesMut::from(&body[..]);
    let mut frames = Vec::new();
    let mut stats = FrameStats::default();
    shared.framer.split(&mut buf, &mut frames, &mut stats);
    shared.framer.finish(&mut buf, &mut frames, &mut stats);
    count_rejected(&shared.ledger, stats.oversized, "oversized", "frame longer than max_length");
    if frames.is_empty() {
        return reply(status(config.response_code), "");
    }
    let mut extra = header_fields(config, &headers, &uri);
    let host = (!config.host_key.is_empty()).then(|| Bytes::from(peer.ip().to_string()));
    let (notifier, mut receiver) = BatchNotifier::with_receiver();
    let finalizer = if shared.acknowledgements { EventFinalizer::new(notifier) } else { EventFinalizer::default() };
    let mut chunk = Vec::with_capacity(frames.len());
    let (failed, error) = shared.builder.decode_all(frames, finalizer, host.as_ref(), &extra, &mut chunk);
    extra.clear();
    if failed > 0 {
        // Reject the whole request so the sender can fix it; nothing from it was sent, and
        // every frame of it is counted: the bad ones as `decode_error`, the rest as
        // `request_rejected`.
        let rejected = chunk.len();
        resolve_all(chunk, Outcome::Discarded);
        count_rejected(&shared.ledger, failed, "decode_error", error.as_deref().unwrap_or_default());
        count_rejected(
            &shared.ledger,
            rejected,
            "request_rejected",
            "another frame of the request could not be decoded",
        );
        let message = format!("body could not be decoded: {}\n", error.unwrap_or_default());
        return (StatusCode::BAD_REQUEST, message).into_response();
    }
    if let Err(err) = shared.tx.send(chunk).await {
        count_rejected(&shared.ledger, err.0.len(), "shutting_down", "request arrived while the source was stopping");
        resolve_all(err.0, Outcome::Failed);
        return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down; send again\n");
    }
    if !shared.acknowledgements {
        return reply(status(config.response_code), "");
    }
    match tokio::time::timeout(shared.ack_timeout, receiver.wait()).await {
        Ok(Outcome::Failed) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "delivery failed: events were not delivered or stored; send again\n",
        ),
        Ok(_) => reply(status(config.response_code), ""),
        Err(_) => reply(StatusCode::SERVICE_UNAVAILABLE, "not acknowledged within ack_timeout_secs; send again\n"),
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn query_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%zz"), None);
    }
}
