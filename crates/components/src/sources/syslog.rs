//! `syslog`: RFC 5424 and RFC 3164 messages over TCP (optionally TLS), UDP or a Unix stream
//! socket.
//!
//! Streams are framed by octet counting (RFC 6587: `LEN SP MSG`) with a newline fallback,
//! per frame; a datagram is one message. A frame that is neither RFC 5424 nor RFC 3164 goes
//! to the source's dead-letter queue as it came (reason `parse_error`), and the connection
//! stays open. Like TCP and UDP themselves, syslog has no acknowledgements: what the kernel
//! handed over is at the pipeline's mercy (as in Vector).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use chrono::{Datelike, Utc};
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask};
use sluice_core::dead_letter::{DeadLetterReason, Failure};
use sluice_core::event::{EventMetadata, fields};
use sluice_core::ledger::ComponentLedger;
use sluice_net::TlsConfig;
use syslog_loose::{Message, ProcId, Protocol as Rfc, Variant};
use vrl::value::{KeyString, ObjectMap, Value};

use super::Out;
use super::count_rejected;
use super::listen::{self, Listener, Protocol};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Required: `tcp`, `udp` or `unix`.
    pub mode: Mode,
    /// Required for tcp and udp: `ip:port`.
    pub address: Option<SocketAddr>,
    /// Required for unix: the socket's path.
    pub path: Option<PathBuf>,
    /// Unix: the socket file's permissions (e.g. `0o660`, or `432` as a decimal).
    pub socket_file_mode: Option<u32>,
    /// Longest message in bytes. Default 102400.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Field for the message's hostname (the peer's address when it has none). Default `host`.
    pub host_key: Option<String>,
    /// TCP: most connections at once.
    pub connection_limit: Option<u32>,
    /// TCP: accepted; keepalive is left to the system.
    pub keepalive: Option<serde_json::Value>,
    /// TCP: accepted, not applied yet (warned).
    pub permit_origin: Option<Vec<String>>,
    /// Accepted; the system's buffer size is kept.
    pub receive_buffer_bytes: Option<usize>,
    /// TCP: TLS.
    pub tls: Option<TlsConfig>,
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Tcp,
    Udp,
    Unix,
}

fn default_max_length() -> usize {
    102_400
}
fn default_handshake_timeout() -> u64 {
    60
}

/// How long open connections may go on sending after shutdown starts.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl SourceConfig for SyslogConfig {
    fn can_acknowledge(&self) -> bool {
        false
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match self.mode {
            Mode::Tcp | Mode::Udp if self.address.is_none() => {
                issues.push(ConfigIssue::new("address", "required for mode tcp and udp (`ip:port`)"));
            }
            Mode::Unix if self.path.is_none() => {
                issues.push(ConfigIssue::new("path", "required for mode unix"));
            }
            _ => {}
        }
        match self.tls.as_ref().filter(|t| t.is_enabled()) {
            Some(_) if self.mode != Mode::Tcp => issues.push(ConfigIssue::new("tls", "TLS needs `mode = \"tcp\"`")),
            Some(tls) => issues.extend(tls.check("tls", true)),
            None => {}
        }
        issues
    }

    fn warnings(&self) -> Vec<ConfigIssue> {
        let mut warnings = self.tls.as_ref().map(|tls| tls.server_warnings("tls")).unwrap_or_default();
        if self.permit_origin.is_some() {
            warnings.push(ConfigIssue::new("permit_origin", "not applied yet: every peer is accepted"));
        }
        warnings
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let host_key = match self.host_key.as_deref() {
            Some("") => None,
            Some(key) => Some(KeyString::from(key.trim_start_matches('.'))),
            None => Some(KeyString::from(fields::host())),
        };
        let protocol = Syslog { id: cx.id.clone(), max_length: self.max_length, host_key };
        let bind = |what: String, e: std::io::Error| BuildError(format!("cannot listen on {what}: {e}"));
        let listener = match self.mode {
            Mode::Tcp | Mode::Udp => {
                let address = self.address.ok_or_else(|| BuildError("address: required".into()))?;
                if self.mode == Mode::Tcp {
                    Listener::tcp(address, self.tls.as_ref(), self.tls_handshake_timeout_secs, self.connection_limit)?
                } else {
                    Listener::udp(address, self.max_length)?
                }
            }
            Mode::Unix => {
                let path = self.path.clone().ok_or_else(|| BuildError("path: required".into()))?;
                let shown = path.display().to_string();
                // A socket file left by an earlier run is in the way; anything else is not ours.
                if std::fs::symlink_metadata(&path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(&path);
                }
                let listener = std::os::unix::net::UnixListener::bind(&path).map_err(|e| bind(shown.clone(), e))?;
                listener.set_nonblocking(true).map_err(|e| bind(shown.clone(), e))?;
                if let Some(mode) = self.socket_file_mode {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| BuildError(format!("socket_file_mode: {shown}: {e}")))?;
                }
                Listener::Unix { listener, path }
            }
        };
        let SourceContext { out, shutdown, dead_letter, .. } = cx;
        Ok(Box::pin(listen::run(listener, protocol, out, dead_letter, shutdown, SHUTDOWN_TIMEOUT)))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Syslog {
    pub(crate) id: Arc<str>,
    pub(crate) max_length: usize,
    pub(crate) host_key: Option<KeyString>,
}

/// What a connection's framing carries over between reads.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    /// Bytes of an oversized octet-counted frame still to skip.
    skip: usize,
    /// Inside an oversized newline-delimited frame: skip to the next newline.
    discarding: bool,
}

impl Protocol for Syslog {
    type Framing = Framing;

    fn split(
        &self,
        state: &mut Framing,
        buf: &mut BytesMut,
        frames: &mut Vec<Bytes>,
        eof: bool,
        ledger: &ComponentLedger,
    ) {
        let oversized = split_frames(state, buf, frames, eof, self.max_length);
        count_rejected(ledger, oversized, "oversized", "syslog message longer than max_length");
    }

    fn datagram(&self, data: &[u8], frames: &mut Vec<Bytes>, _ledger: &ComponentLedger) {
        let mut end = data.len();
        while end > 0 && matches!(data[end - 1], b'\n' | b'\r' | b'\0') {
            end -= 1;
        }
        if end > 0 {
            frames.push(Bytes::copy_from_slice(&data[..end]));
        }
    }

    fn emit(&self, frames: &mut Vec<Bytes>, peer: Option<SocketAddr>, ledger: &ComponentLedger, out: &mut Vec<Out>) {
        let now = Utc::now();
        let source_ip = peer.map(|p| Bytes::from(p.ip().to_string()));
        let mut events = Vec::with_capacity(frames.len());
        let mut dead = Vec::new();
        for frame in frames.drain(..) {
            let meta = EventMetadata::new(&self.id, now);
            let text = String::from_utf8_lossy(&frame);
            match syslog_loose::parse_message_with_year_exact(&text, resolve_year, Variant::Either) {
                Ok(message) => events.push(self.event(message, source_ip.as_ref(), meta)),
                Err(_) => dead.push(LogEvent::legacy(frame, "syslog", source_ip.as_ref(), meta)),
            }
        }
        if !events.is_empty() {
            out.push(Out::Chunk(events));
        }
        if !dead.is_empty() {
            ledger.error("parse_error", "receiving");
            let failure = Failure {
                reason: DeadLetterReason::ParseError,
                message: "not a syslog message (neither RFC 5424 nor RFC 3164)".to_owned(),
                status: None,
                attempts: 1,
                first_failure: now,
                last_failure: now,
            };
            out.push(Out::DeadLetters(dead, failure));
        }
    }
}

impl Syslog {
    /// An event in Vector's legacy namespace.
    fn event(&self, message: Message<&str>, source_ip: Option<&Bytes>, meta: EventMetadata) -> LogEvent {
        let mut map = ObjectMap::new();
        let text = |s: &str| Value::Bytes(Bytes::copy_from_slice(s.as_bytes()));
        map.insert(fields::message().into(), text(message.msg));
        let timestamp = message.timestamp.map_or(meta.ingest_time(), |t| t.with_timezone(&Utc));
        map.insert(fields::timestamp().into(), Value::Timestamp(timestamp));
        if let Some(hostname) = message.hostname {
            map.insert("hostname".into(), text(hostname));
        }
        if let Some(key) = &self.host_key {
            match (message.hostname, source_ip) {
                (Some(hostname), _) => {
                    map.insert(key.clone(), text(hostname));
                }
                (None, Some(ip)) => {
                    map.insert(key.clone(), Value::Bytes(ip.clone()));
                }
                (None, None) => {}
            }
        }
        if let Some(appname) = message.appname {
            map.insert("appname".into(), text(appname));
        }
        match message.procid {
            Some(ProcId::PID(pid)) => {
                map.insert("procid".into(), Value::Integer(i64::from(pid)));
            }
            Some(ProcId::Name(name)) => {
                map.insert("procid".into(), text(name));
            }
            None => {}
        }
        if let Some(msgid) = message.msgid {
            map.insert("msgid".into(), text(msgid));
        }
        if let Some(facility) = message.facility {
            map.insert("facility".into(), text(facility.as_str()));
        }
        if let Some(severity) = message.severity {
            map.insert("severity".into(), text(severity.as_str()));
        }
        if let Rfc::RFC5424(version) = message.protocol {
            map.insert("version".into(), Value::Integer(i64::from(version)));
        }
        if let Some(ip) = source_ip {
            map.insert("source_ip".into(), Value::Bytes(ip.clone()));
        }
        for element in &message.structured_data {
            let entry = map.entry(KeyString::from(element.id)).or_insert_with(|| Value::Object(ObjectMap::new()));
            if let Value::Object(params) = entry {
                for (name, value) in &element.params {
                    params.insert(KeyString::from(*name), text(value));
                }
            }
        }
        map.insert(fields::source_type().into(), Value::Bytes(Bytes::from_static(b"syslog")));
        LogEvent::from_value(Value::Object(map), meta)
    }
}

/// RFC 3164 timestamps have no year: this year, or last year for a date still to come (a
/// December line read in January).
fn resolve_year((month, day, ..): syslog_loose::IncompleteDate) -> i32 {
    let now = Utc::now();
    if (month, day) > (now.month(), now.day() + 1) { now.year() - 1 } else { now.year() }
}

/// Octet counting (`LEN SP MSG`) where a frame starts with digits and a space, newlines
/// otherwise. Returns how many frames were over `max_length` (dropped).
pub(crate) fn split_frames(
    state: &mut Framing,
    buf: &mut BytesMut,
    frames: &mut Vec<Bytes>,
    eof: bool,
    max_length: usize,
) -> usize {
    let mut oversized = 0;
    loop {
        if state.skip > 0 {
            let n = state.skip.min(buf.len());
            buf.advance(n);
            state.skip -= n;
            if state.skip > 0 {
                break;
            }
        }
        if state.discarding {
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    buf.advance(i + 1);
                    state.discarding = false;
                }
                None => {
                    buf.clear();
                    break;
                }
            }
        }
        if buf.is_empty() {
            break;
        }
        let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > 0 && digits <= 9 && buf.get(digits) == Some(&b' ') {
            let len: usize = std::str::from_utf8(&buf[..digits]).ok().and_then(|d| d.parse().ok()).unwrap_or(0);
            let total = digits + 1 + len;
            if len > max_length {
                oversized += 1;
                let n = total.min(buf.len());
                buf.advance(n);
                state.skip = total - n;
                continue;
            }
            if buf.len() >= total {
                let mut frame = buf.split_to(total);
                frame.advance(digits + 1);
                push_frame(frames, frame);
                continue;
            }
            if eof {
                // Cut short by the sender: what came is still a message.
                let mut frame = buf.split();
                frame.advance(digits + 1);
                push_frame(frames, frame);
            }
            break;
        }
        if digits == buf.len() && !eof {
            break; // Not enough to tell the framing yet.
        }
        match memchr::memchr(b'\n', buf) {
            Some(i) => {
                let mut frame = buf.split_to(i + 1);
                frame.truncate(i);
                if frame.len() > max_length {
                    oversized += 1;
                } else {
                    push_frame(frames, frame);
                }
            }
            None => {
                if eof {
                    let frame = buf.split();
                    if frame.len() > max_length {
                        oversized += 1;
                    } else {
                        push_frame(frames, frame);
                    }
                } else if buf.len() > max_length {
                    oversized += 1;
                    buf.clear();
                    state.discarding = true;
                }
                break;
            }
        }
    }
    oversized
}

/// A frame without its line ending; empty frames are skipped.
fn push_frame(frames: &mut Vec<Bytes>, mut frame: BytesMut) {
    while frame.last().is_some_and(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        frame.truncate(frame.len() - 1);
    }
    if !frame.is_empty() {
        frames.push(frame.freeze());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(chunks: &[&[u8]], max_length: usize) -> (Vec<String>, usize) {
        let mut state = Framing::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        let mut oversized = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            buf.extend_from_slice(chunk);
            oversized += split_frames(&mut state, &mut buf, &mut frames, i + 1 == chunks.len(), max_length);
        }
        (frames.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect(), oversized)
    }

    #[test]
    fn octet_counted_and_newline_frames_mix_on_one_stream() {
        let (frames, oversized) = split_all(&[b"11 <13>hello w", b"orld<14>line two\n5 <1>a", b"b\n"], 1000);
        assert_eq!(frames, ["<13>hello w", "orld<14>line two", "<1>ab"]);
        assert_eq!(oversized, 0);
    }

    #[test]
    fn oversized_frames_are_skipped_whole_and_the_stream_goes_on() {
        let (frames, oversized) =
            split_all(&[b"24 <13>0123456789", b"0123456789<13>next\n", b"xxxxxxxxxxxx", b"xxxx\n<13>after\n"], 15);
        assert_eq!(frames, ["<13>next", "<13>after"]);
        assert_eq!(oversized, 2);
    }

    #[test]
    fn a_stream_cut_short_keeps_its_last_message() {
        let (frames, _) = split_all(&[b"<13>no newline at the end"], 1000);
        assert_eq!(frames, ["<13>no newline at the end"]);
    }

    fn parse(line: &str) -> Result<serde_json::Value, String> {
        let protocol = Syslog { id: Arc::from("s"), max_length: 1000, host_key: Some("host".into()) };
        let ledger = ComponentLedger::new("s", sluice_core::ledger::ComponentKind::Source, "syslog");
        let mut out = Vec::new();
        let mut frames = vec![Bytes::copy_from_slice(line.as_bytes())];
        protocol.emit(&mut frames, Some("10.0.0.9:514".parse().unwrap_or_else(|e| panic!("{e}"))), &ledger, &mut out);
        match out.pop() {
            Some(Out::Chunk(mut events)) => {
                let event = events.pop().unwrap_or_else(|| panic!("event"));
                Ok(serde_json::to_value(event.value()).unwrap_or_default())
            }
            Some(Out::DeadLetters(_, failure)) => Err(failure.message),
            None => Err("nothing".into()),
        }
    }

    #[test]
    fn rfc5424_fields_and_structured_data() {
        let event = parse(
            r#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 1234 ID47 [exampleSDID@32473 iut="3" eventSource="Application"] An application event"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event["message"], "An application event");
        assert_eq!(event["hostname"], "mymachine.example.com");
        assert_eq!(event["host"], "mymachine.example.com");
        assert_eq!(event["appname"], "evntslog");
        assert_eq!(event["procid"], 1234);
        assert_eq!(event["msgid"], "ID47");
        assert_eq!(event["facility"], "local4");
        assert_eq!(event["severity"], "notice");
        assert_eq!(event["version"], 1);
        assert_eq!(event["source_ip"], "10.0.0.9");
        assert_eq!(event["exampleSDID@32473"]["iut"], "3");
        assert_eq!(event["source_type"], "syslog");
        assert!(event["timestamp"].as_str().is_some_and(|t| t.starts_with("2003-10-11T22:14:15.003")), "{event}");
    }

    #[test]
    fn rfc3164_fields() {
        let event = parse("<34>Oct 11 22:14:15 mymachine su[77]: 'su root' failed for lonvick on /dev/pts/8")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(event["message"], "'su root' failed for lonvick on /dev/pts/8");
        assert_eq!(event["hostname"], "mymachine");
        assert_eq!(event["appname"], "su");
        assert_eq!(event["procid"], 77);
        assert_eq!(event["facility"], "auth");
        assert_eq!(event["severity"], "crit");
        assert!(event.get("version").is_none());
    }

    #[test]
    fn a_line_that_is_not_syslog_is_a_dead_letter() {
        assert!(parse("just some text without a priority").is_err());
        assert!(parse("").is_err());
    }
}
