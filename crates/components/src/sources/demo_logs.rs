//! `demo_logs`: generated events in well-known log formats, plus `llm_inference` (one JSON
//! object per event describing an LLM inference call). Does not acknowledge (nobody to tell).

use bytes::Bytes;
use chrono::Utc;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use sluice_core::ack::EventFinalizer;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask};
use vrl::value::{KeyString, Value};

use super::{EventBuilder, count_rejected};
use crate::codecs::decoding::{FrameStats, FramingMethod};
use crate::codecs::{DecodingConfig, FramingConfig};

/// Events per chunk when `interval = 0`.
const CHUNK: u64 = 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoLogsConfig {
    /// Required: `apache_common`, `apache_error`, `syslog`, `bsd_syslog`, `json`, `shuffle` or
    /// `llm_inference`.
    pub format: DemoFormat,
    /// Lines to pick from; required with `format = "shuffle"`.
    #[serde(default)]
    pub lines: Vec<String>,
    /// Prefix each shuffled line with a sequence number. Default false.
    #[serde(default)]
    pub sequence: bool,
    /// Seconds between events; 0 means as fast as the pipeline takes them. Default 1.0.
    #[serde(default = "default_interval")]
    pub interval: f64,
    /// Events to produce, then finish. Default: unlimited.
    pub count: Option<u64>,
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// How each generated line is split into frames. Default `bytes` (a line is a frame).
    #[serde(default)]
    pub framing: FramingConfig,
}

fn default_interval() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoFormat {
    ApacheCommon,
    ApacheError,
    Syslog,
    BsdSyslog,
    Json,
    Shuffle,
    LlmInference,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
const PATHS: [&str; 6] = ["/", "/api/v1/users", "/login", "/static/app.js", "/healthz", "/search?q=rust"];
const STATUSES: [u16; 7] = [200, 200, 200, 201, 304, 404, 500];
const USERS: [&str; 5] = ["-", "alice", "bob", "carol", "dave"];
const HOSTS: [&str; 4] = ["10.0.0.7", "192.168.1.20", "172.16.4.2", "203.0.113.9"];
const APPS: [&str; 4] = ["nginx", "sshd", "cron", "kernel"];
const MESSAGES: [&str; 5] = [
    "connection accepted",
    "session opened for user root",
    "request timed out",
    "disk usage at 91%",
    "configuration reloaded",
];
const MODELS: [&str; 4] = ["llama-3-70b", "mistral-large", "gpt-4o", "qwen2.5-72b"];
const INFERENCE_TYPES: [&str; 3] = ["chat", "completion", "embedding"];

fn pick<'a, T>(rng: &mut SmallRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

impl DemoLogsConfig {
    fn line(&self, rng: &mut SmallRng, n: u64) -> String {
        let now = Utc::now();
        match self.format {
            DemoFormat::ApacheCommon => format!(
                "{} - {} [{}] \"{} {} HTTP/1.1\" {} {}",
                pick(rng, &HOSTS),
                pick(rng, &USERS),
                now.format("%d/%b/%Y:%H:%M:%S %z"),
                pick(rng, &METHODS),
                pick(rng, &PATHS),
                pick(rng, &STATUSES),
                rng.random_range(100..50_000)
            ),
            DemoFormat::ApacheError => format!(
                "[{}] [core:error] [pid {}:tid {}] [client {}:{}] {}",
                now.format("%a %b %d %H:%M:%S%.6f %Y"),
                rng.random_range(1000..9999),
                rng.random_range(1000..99999),
                pick(rng, &HOSTS),
                rng.random_range(1024..65535),
                pick(rng, &MESSAGES)
            ),
            DemoFormat::Syslog => format!(
                "<{}>1 {} {} {} {} ID{} - {}",
                rng.random_range(0..191),
                now.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                pick(rng, &HOSTS),
                pick(rng, &APPS),
                rng.random_range(100..9999),
                rng.random_range(1..999),
                pick(rng, &MESSAGES)
            ),
            DemoFormat::BsdSyslog => format!(
                "<{}>{} {} {}[{}]: {}",
                rng.random_range(0..191),
                now.format("%b %e %H:%M:%S"),
                pick(rng, &HOSTS),
                pick(rng, &APPS),
                rng.random_range(100..9999),
                pick(rng, &MESSAGES)
            ),
            DemoFormat::Json => serde_json::json!({
                "host": pick(rng, &HOSTS),
                "user-identifier": pick(rng, &USERS),
                "datetime": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
                "method": pick(rng, &METHODS),
                "request": pick(rng, &PATHS),
                "protocol": "HTTP/1.1",
                "status": pick(rng, &STATUSES).to_string(),
                "bytes": rng.random_range(100..50_000),
                "referer": "https://example.com/",
            })
            .to_string(),
            DemoFormat::Shuffle => {
                let line = pick(rng, &self.lines).clone();
                if self.sequence { format!("{n} {line}") } else { line }
            }
            DemoFormat::LlmInference => {
                let inference_type = *pick(rng, &INFERENCE_TYPES);
                let latency: u64 =
                    if rng.random_bool(0.05) { rng.random_range(5_001..30_000) } else { rng.random_range(80..5_000) };
                serde_json::json!({
                    "log_id": format!("{:016x}{:016x}", rng.random::<u64>(), n),
                    "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "model": pick(rng, &MODELS),
                    "prompt_tokens": rng.random_range(5..4_000),
                    "completion_tokens": if inference_type == "embedding" { 0 } else { rng.random_range(1..2_000) },
                    "latency_ms": latency,
                    "user_id": format!("user-{:05}", rng.random_range(0..50_000)),
                    "is_fine_tune": rng.random_bool(0.1),
                    "inference_type": inference_type,
                })
                .to_string()
            }
        }
    }
}

impl SourceConfig for DemoLogsConfig {
    fn can_acknowledge(&self) -> bool {
        false
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.format == DemoFormat::Shuffle && self.lines.is_empty() {
            issues.push(ConfigIssue::new("lines", "required (non-empty) when `format = \"shuffle\"`"));
        }
        if !(self.interval.is_finite() && self.interval >= 0.0) {
            issues.push(ConfigIssue::new("interval", "must be a number of seconds, 0 or more"));
        }
        issues
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let config = self.clone();
        let builder = EventBuilder::new(cx.id.clone(), self.decoding.decoder("demo_logs"), None);
        let framer = self.framing.framer(FramingMethod::Bytes, None).map_err(BuildError)?;
        let SourceContext { mut out, mut shutdown, globals, .. } = cx;
        let service = [(KeyString::from("service"), Value::Bytes(Bytes::from_static(b"vector")))];
        Ok(Box::pin(async move {
            let mut rng = SmallRng::from_rng(&mut rand::rng());
            let total = config.count.unwrap_or(u64::MAX);
            let per_chunk = if config.interval > 0.0 { 1 } else { CHUNK };
            let mut ticker = (config.interval > 0.0)
                .then(|| tokio::time::interval(std::time::Duration::from_secs_f64(config.interval)));
            let mut produced = 0u64;
            while produced < total {
                if let Some(ticker) = ticker.as_mut() {
                    tokio::select! {
                        biased;
                        () = shutdown.wait() => break,
                        _ = ticker.tick() => {}
                    }
                } else if shutdown.is_triggered() {
                    break;
                }
                let n = per_chunk.min(total - produced);
                let lines = (0..n).map(|i| Bytes::from(config.line(&mut rng, produced + i)));
                let frames: Vec<Bytes> = if framer.is_bytes() {
                    lines.collect()
                } else {
                    let (mut frames, mut stats) = (Vec::new(), FrameStats::default());
                    for line in lines {
                        let mut buf = bytes::BytesMut::from(&line[..]);
                        framer.split(&mut buf, &mut frames, &mut stats);
                        framer.finish(&mut buf, &mut frames, &mut stats);
                    }
                    count_rejected(out.ledger(), stats.oversized, "oversized", "frame longer than max_length");
                    frames
                };
                produced += n;
                let mut chunk = Vec::with_capacity(frames.len());
                let (failed, error) = builder.decode_all(
                    frames,
                    EventFinalizer::default(),
                    Some(&globals.hostname),
                    &service,
                    &mut chunk,
                );
                count_rejected(out.ledger(), failed, "decode_error", error.as_deref().unwrap_or_default());
                if out.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok(())
        }))
    }
}
