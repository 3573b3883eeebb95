//! `kafka`: events produced to a Kafka topic, on the shared sink driver.
//!
//! - An idempotent producer with `acks=all` (librdkafka's `enable.idempotence`): a message is
//!   delivered when every in-sync replica has it, and librdkafka's own retries never write it
//!   twice.
//! - One driver request is one batch of messages; each message's delivery report is its
//!   result. A message the broker or client refuses for good (too large, an invalid record,
//!   a policy) goes to the dead-letter queue on its own; one that times out
//!   (`message_timeout_ms`) is sent again by the driver, within its retry deadline.
//! - `topic` is a template: events are batched per rendered topic. `key_field` names the field
//!   whose value is the message key; `headers_key` a map field whose entries become headers.

use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::TlsConfig;
use std::collections::BTreeMap;
use vrl::value::Value;

use super::driver::{
    self, BatchConfig, CallResult, ConcurrencyLimit, DriverSettings, EncodedBatch, ItemResult, PartitionKey,
    RequestConfig, Service,
};
use super::template::{Template, lookup};
use crate::codecs::{Encoder, EncodingConfig};
use crate::kafka::{Connection, SaslConfig};

/// Batches: 10 MB, 1 s (Vector's batch timeout for this sink).
const DEFAULT_BATCH_BYTES: usize = 10_000_000;
/// Batches produced at once.
const CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Required: `host:port,host:port`.
    pub bootstrap_servers: String,
    /// Required: the topic (a template).
    pub topic: String,
    /// The field whose value is the message key. Default: no key.
    pub key_field: Option<String>,
    /// A map field whose entries become message headers. Default: none.
    pub headers_key: Option<String>,
    /// Required: how events become message payloads.
    pub encoding: EncodingConfig,
    /// `none` (default), `gzip`, `lz4`, `snappy` or `zstd`.
    #[serde(default)]
    pub compression: KafkaCompression,
    #[serde(default)]
    pub batch: BatchConfig,
    /// How long librdkafka tries to deliver one message. Default 300000.
    #[serde(default = "default_message_timeout")]
    pub message_timeout_ms: u64,
    #[serde(default = "default_socket_timeout")]
    pub socket_timeout_ms: u64,
    pub rate_limit_duration_secs: Option<f64>,
    pub rate_limit_num: Option<u64>,
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
    pub sasl: Option<SaslConfig>,
    pub tls: Option<TlsConfig>,
    /// Accepted for Vector configs; the health check reads the cluster's metadata.
    pub healthcheck_topic: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    #[default]
    None,
    Gzip,
    Lz4,
    Snappy,
    Zstd,
}

impl KafkaCompression {
    fn codec(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Lz4 => "lz4",
            Self::Snappy => "snappy",
            Self::Zstd => "zstd",
        }
    }
}

fn default_message_timeout() -> u64 {
    300_000
}
fn default_socket_timeout() -> u64 {
    60_000
}

impl KafkaSinkConfig {
    fn connection(&self) -> Connection {
        Connection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            socket_timeout_ms: self.socket_timeout_ms,
            sasl: self.sasl.clone(),
            tls: self.tls.clone(),
            librdkafka_options: self.librdkafka_options.clone(),
        }
    }

    fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = self.connection().client_config();
        let ours = [
            ("enable.idempotence", "true".to_owned()),
            ("acks", "all".to_owned()),
            ("compression.codec", self.compression.codec().to_owned()),
            ("message.timeout.ms", self.message_timeout_ms.to_string()),
            ("client.id", "sluice".to_owned()),
        ];
        for (key, value) in ours {
            if !self.librdkafka_options.contains_key(key) {
                config.set(key, value);
            }
        }
        config
    }

    fn topic(&self) -> Result<Template, ConfigIssue> {
        Template::parse(&self.topic).map_err(|m| ConfigIssue::new("topic", m))
    }

    fn driver_settings(&self) -> DriverSettings {
        let request = RequestConfig {
            rate_limit_duration_secs: self.rate_limit_duration_secs,
            rate_limit_num: self.rate_limit_num,
            ..RequestConfig::default()
        };
        let mut settings = DriverSettings::new(&self.batch, &request, (None, DEFAULT_BATCH_BYTES, 1.0));
        settings.concurrency = ConcurrencyLimit::Fixed(CONCURRENCY);
        // librdkafka reports on every message within message_timeout_ms; the driver must not
        // give up first (the message would still be sent, then sent again).
        settings.request_timeout = Duration::from_millis(self.message_timeout_ms) + Duration::from_secs(30);
        settings
    }
}

impl SinkConfig for KafkaSinkConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(1.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.connection().check();
        issues.extend(self.topic().err());
        issues.extend(self.encoding.check());
        if issues.is_empty()
            && let Err(issue) = crate::kafka::probe::<rdkafka::producer::BaseProducer>(&self.client_config())
        {
            issues.push(issue);
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let topic = self.topic().map_err(issue)?;
        let producer: FutureProducer =
            self.client_config().create().map_err(|e| BuildError(format!("cannot create the Kafka producer: {e}")))?;
        let service = KafkaService {
            producer,
            topic,
            key_field: self.key_field.as_deref().map(|k| k.trim_start_matches('.').to_owned()),
            headers_key: self.headers_key.as_deref().map(|k| k.trim_start_matches('.').to_owned()),
            encoder: self.encoding.build(),
        };
        Ok(Box::new(KafkaSink { settings: self.driver_settings(), service, cx }))
    }
}

struct KafkaSink {
    settings: DriverSettings,
    service: KafkaService,
    cx: SinkContext,
}

impl Sink for KafkaSink {
    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let KafkaSink { settings, service, cx } = *self;
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

struct KafkaService {
    producer: FutureProducer,
    topic: Template,
    key_field: Option<String>,
    headers_key: Option<String>,
    encoder: Encoder,
}

/// Marks an absent key or header value in the envelope.
const ABSENT: u32 = u32::MAX;

impl Service for KafkaService {
    /// Each event is an envelope: the key, the headers, then the payload (see [`Envelope`]).
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let key = self.key_field.as_deref().and_then(|f| lookup(event.value(), f)).and_then(bytes_of);
        put_optional(buf, key.as_deref());
        let headers = self.headers_key.as_deref().and_then(|f| lookup(event.value(), f));
        match headers {
            Some(Value::Object(map)) => {
                let count = u32::try_from(map.len()).map_err(|_| "too many headers".to_owned())?;
                buf.extend_from_slice(&count.to_le_bytes());
                for (name, value) in map {
                    put_optional(buf, Some(name.as_bytes()));
                    put_optional(buf, bytes_of(value).as_deref());
                }
            }
            Some(Value::Null) | None => buf.extend_from_slice(&0u32.to_le_bytes()),
            Some(_) => return Err(format!("`{}` is not a map of headers", self.headers_key.as_deref().unwrap_or(""))),
        }
        self.encoder.encode(event, buf).map_err(|e| e.0)
    }

    fn partition(&self, event: &LogEvent) -> Result<PartitionKey, String> {
        Ok(vec![self.topic.render(event)?])
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let topic = key.first().map(String::as_str).unwrap_or_default();
            let mut pending = Vec::with_capacity(batch.len());
            for item in batch.items() {
                let Some(envelope) = Envelope::read(item) else {
                    pending.push(Err(ItemResult::Permanent { status: None, message: "bad envelope".into() }));
                    continue;
                };
                let mut record = envelope.record(topic);
                loop {
                    match self.producer.send_result(record) {
                        Ok(delivery) => {
                            pending.push(Ok(delivery));
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            // librdkafka's queue is full: wait for deliveries to make room.
                            record = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((error, _)) => {
                            pending.push(Err(item_failure(&error)));
                            break;
                        }
                    }
                }
            }
            let mut results = Vec::with_capacity(pending.len());
            for entry in pending {
                results.push(match entry {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => ItemResult::Delivered,
                        Ok(Err((error, _))) => item_failure(&error),
                        Err(_) => ItemResult::Retriable { status: None, message: "the producer was closed".into() },
                    },
                    Err(result) => result,
                });
            }
            if results.iter().all(|r| *r == ItemResult::Delivered) {
                CallResult::Delivered
            } else {
                CallResult::PerItem(results)
            }
        })
    }
}

/// A message's key and value as bytes: strings as they are, other values as JSON text.
fn bytes_of(value: &Value) -> Option<std::borrow::Cow<'_, [u8]>> {
    match value {
        Value::Null => None,
        Value::Bytes(b) => Some(std::borrow::Cow::Borrowed(&b[..])),
        other => Some(std::borrow::Cow::Owned(other.to_string_lossy().into_owned().into_bytes())),
    }
}

fn put_optional(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(bytes);
        }
        None => buf.extend_from_slice(&ABSENT.to_le_bytes()),
    }
}

/// One encoded event: `key`, `count` headers (name, value), then the payload to the end. Each
/// part is a little-endian `u32` length ([`ABSENT`] for none) and its bytes.
struct Envelope<'a> {
    key: Option<&'a [u8]>,
    headers: Vec<(&'a [u8], Option<&'a [u8]>)>,
    payload: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn read(mut item: &'a [u8]) -> Option<Self> {
        let key = take_optional(&mut item)?;
        let count = take_u32(&mut item)?;
        let mut headers = Vec::with_capacity(count.min(64) as usize);
        for _ in 0..count {
            let name = take_optional(&mut item)??;
            headers.push((name, take_optional(&mut item)?));
        }
        Some(Self { key, headers, payload: item })
    }

    fn record(&self, topic: &'a str) -> FutureRecord<'a, [u8], [u8]> {
        let mut record = FutureRecord::to(topic).payload(self.payload);
        if let Some(key) = self.key {
            record = record.key(key);
        }
        if !self.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
            for (name, value) in &self.headers {
                let name = String::from_utf8_lossy(name);
                headers = headers.insert(Header { key: &name, value: *value });
            }
            record = record.headers(headers);
        }
        record
    }
}

fn take_u32(item: &mut &[u8]) -> Option<u32> {
    let (head, rest) = item.split_first_chunk::<4>()?;
    *item = rest;
    Some(u32::from_le_bytes(*head))
}

fn take_optional<'a>(item: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let len = take_u32(item)?;
    if len == ABSENT {
        return Some(None);
    }
    let len = len as usize;
    if item.len() < len {
        return None;
    }
    let (bytes, rest) = item.split_at(len);
    *item = rest;
    Some(Some(bytes))
}

/// How one message fared when librdkafka refused it or reported it failed.
fn item_failure(error: &KafkaError) -> ItemResult {
    let message = format!("Kafka: {error}");
    match error.rdkafka_error_code() {
        Some(code) if is_permanent(code) => ItemResult::Permanent { status: None, message },
        _ => ItemResult::Retriable { status: None, message },
    }
}

/// Errors no retry can fix: the message itself, or the topic, is refused.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::InvalidRecord
            | C::InvalidMessage
            | C::InvalidTopic
            | C::UnknownTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::PolicyViolation
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let mut buf = Vec::new();
        put_optional(&mut buf, Some(b"key"));
        buf.extend_from_slice(&2u32.to_le_bytes());
        put_optional(&mut buf, Some(b"a"));
        put_optional(&mut buf, Some(b"1"));
        put_optional(&mut buf, Some(b"b"));
        put_optional(&mut buf, None);
        buf.extend_from_slice(b"{\"message\":\"x\"}");
        let envelope = Envelope::read(&buf).unwrap_or_else(|| panic!("envelope"));
        assert_eq!(envelope.key, Some(&b"key"[..]));
        assert_eq!(envelope.headers, vec![(&b"a"[..], Some(&b"1"[..])), (&b"b"[..], None)]);
        assert_eq!(envelope.payload, b"{\"message\":\"x\"}");
    }

    #[test]
    fn truncated_envelopes_are_refused() {
        let mut buf = Vec::new();
        put_optional(&mut buf, Some(b"key"));
        assert!(Envelope::read(&buf[..5]).is_none());
        assert!(Envelope::read(&buf).is_none(), "no header count");
    }

    #[test]
    fn size_and_authorization_errors_are_permanent_timeouts_are_not() {
        let failure = |code| item_failure(&KafkaError::MessageProduction(code));
        assert!(matches!(failure(RDKafkaErrorCode::MessageSizeTooLarge), ItemResult::Permanent { .. }));
        assert!(matches!(failure(RDKafkaErrorCode::TopicAuthorizationFailed), ItemResult::Permanent { .. }));
        assert!(matches!(failure(RDKafkaErrorCode::MessageTimedOut), ItemResult::Retriable { .. }));
        assert!(matches!(failure(RDKafkaErrorCode::AllBrokersDown), ItemResult::Retriable { .. }));
    }
}
