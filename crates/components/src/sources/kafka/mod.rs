//! `kafka`: messages from Kafka topics, as a member of a consumer group.
//!
//! Offsets follow acknowledgements: a partition's offset is committed only up to the last
//! message whose events every destination delivered, stored or discarded by a rule
//! ([`offsets`]). A failed event holds its partition's commit, so it is read again after a
//! restart or a rebalance. Partitions given up in a rebalance wait (up to `drain_timeout_ms`)
//! for their events in flight and commit what is safe first. When the pipeline pushes back,
//! the consumer pauses its partitions and keeps polling, so the group never sees it as stuck.
//!
//! Offsets are committed this way whatever `acknowledgements` says: the commit is how Kafka
//! is acknowledged, and holding it costs the producers nothing.
//!
//! librdkafka runs on a thread of the source's own ([`consumer`]); it hands chunks to this
//! task, which sends them on.

mod consumer;
mod offsets;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_core::component::{
    BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask, wait_ready,
};
use sluice_net::TlsConfig;
use tokio::sync::mpsc;

use super::Out;
use crate::codecs::decoding::FramingMethod;
use crate::codecs::{DecodingConfig, FramingConfig};
use crate::kafka::{Connection, SaslConfig};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Required: `host:port,host:port`.
    pub bootstrap_servers: String,
    /// Required: the consumer group.
    pub group_id: String,
    /// Required: topic names, or regular expressions starting with `^`.
    pub topics: Vec<String>,
    /// Where to start without a committed offset: `largest` (default), `smallest`,
    /// `earliest`, `latest`, `beginning`, `end`, `error`.
    #[serde(default = "default_offset_reset")]
    pub auto_offset_reset: String,
    #[serde(default = "default_commit_interval")]
    pub commit_interval_ms: u64,
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u64,
    #[serde(default = "default_socket_timeout")]
    pub socket_timeout_ms: u64,
    #[serde(default = "default_fetch_wait_max")]
    pub fetch_wait_max_ms: u64,
    /// How long partitions given up in a rebalance wait for their events in flight. Default:
    /// half of `session_timeout_ms`.
    pub drain_timeout_ms: Option<u64>,
    #[serde(default = "default_key_field")]
    pub key_field: String,
    #[serde(default = "default_topic_key")]
    pub topic_key: String,
    #[serde(default = "default_partition_key")]
    pub partition_key: String,
    #[serde(default = "default_offset_key")]
    pub offset_key: String,
    #[serde(default = "default_headers_key")]
    pub headers_key: String,
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
    pub sasl: Option<SaslConfig>,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub decoding: DecodingConfig,
    #[serde(default)]
    pub framing: FramingConfig,
    /// Accepted for Vector configs; consumer lag is not reported yet.
    pub metrics: Option<serde_json::Value>,
}

fn default_offset_reset() -> String {
    "largest".into()
}
fn default_commit_interval() -> u64 {
    5_000
}
fn default_session_timeout() -> u64 {
    10_000
}
fn default_socket_timeout() -> u64 {
    60_000
}
fn default_fetch_wait_max() -> u64 {
    100
}
fn default_key_field() -> String {
    "message_key".into()
}
fn default_topic_key() -> String {
    "topic".into()
}
fn default_partition_key() -> String {
    "partition".into()
}
fn default_offset_key() -> String {
    "offset".into()
}
fn default_headers_key() -> String {
    "headers".into()
}

const OFFSET_RESETS: &[&str] = &["smallest", "earliest", "beginning", "largest", "latest", "end", "error"];

impl KafkaSourceConfig {
    fn connection(&self) -> Connection {
        Connection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            socket_timeout_ms: self.socket_timeout_ms,
            sasl: self.sasl.clone(),
            tls: self.tls.clone(),
            librdkafka_options: self.librdkafka_options.clone(),
        }
    }

    fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms.unwrap_or(self.session_timeout_ms / 2))
    }

    /// The consumer's librdkafka configuration.
    fn client_config(&self) -> rdkafka::ClientConfig {
        let mut config = self.connection().client_config();
        let ours = [
            ("group.id", self.group_id.clone()),
            ("auto.offset.reset", self.auto_offset_reset.clone()),
            ("session.timeout.ms", self.session_timeout_ms.to_string()),
            ("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string()),
            // Offsets are committed by the source, only past safe events.
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            ("enable.partition.eof", "false".into()),
            ("client.id", format!("sluice-{}", self.group_id)),
        ];
        for (key, value) in ours {
            if !self.librdkafka_options.contains_key(key) || key.starts_with("enable.auto") {
                config.set(key, value);
            }
        }
        config
    }
}

impl SourceConfig for KafkaSourceConfig {
    fn can_acknowledge(&self) -> bool {
        true
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.connection().check();
        if self.group_id.is_empty() {
            issues.push(ConfigIssue::new("group_id", "must not be empty"));
        }
        if self.topics.is_empty() {
            issues.push(ConfigIssue::new("topics", "name at least one topic (or a `^regex`)"));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if topic.starts_with('^')
                && let Err(e) = regex::Regex::new(topic)
            {
                issues.push(ConfigIssue::new(format!("topics[{i}]"), format!("invalid regular expression: {e}")));
            }
        }
        if !OFFSET_RESETS.contains(&self.auto_offset_reset.as_str()) {
            issues.push(ConfigIssue::new(
                "auto_offset_reset",
                format!("`{}` is not one of {}", self.auto_offset_reset, OFFSET_RESETS.join(", ")),
            ));
        }
        if self.drain_timeout() >= Duration::from_millis(self.session_timeout_ms) {
            issues.push(ConfigIssue::new(
                "drain_timeout_ms",
                "must be less than session_timeout_ms, or the group drops this consumer while it drains",
            ));
        }
        for key in ["enable.auto.commit", "enable.auto.offset.store"] {
            if self.librdkafka_options.get(key).is_some_and(|v| v == "true") {
                issues.push(ConfigIssue::new(
                    format!("librdkafka_options.\"{key}\""),
                    "sluice commits offsets itself, only past delivered events; remove this option",
                ));
            }
        }
        if let Err(e) = self.framing.framer(FramingMethod::Bytes, None) {
            issues.push(ConfigIssue::new("framing", e));
        }
        if issues.is_empty()
            && let Err(issue) = crate::kafka::probe::<rdkafka::consumer::BaseConsumer>(&self.client_config())
        {
            issues.push(issue);
        }
        issues
    }

    fn warnings(&self) -> Vec<ConfigIssue> {
        let mut warnings = Vec::new();
        if self.metrics.is_some() {
            warnings.push(ConfigIssue::new("metrics", "consumer lag metrics are not reported yet; ignored"));
        }
        warnings
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let framer = self.framing.framer(FramingMethod::Bytes, None).map_err(BuildError)?;
        let fields = consumer::Fields::new(self);
        let settings = consumer::Settings {
            config: self.client_config(),
            topics: self.topics.clone(),
            commit_interval: Duration::from_millis(self.commit_interval_ms.max(1)),
            drain_timeout: self.drain_timeout(),
            decoder: self.decoding.decoder("kafka"),
            framer,
            fields,
        };
        let (tx, rx) = mpsc::channel(4);
        let handle = consumer::start(cx.id.clone(), settings, tx, cx.out.ledger().clone())?;
        Ok(Box::pin(run(cx, rx, handle)))
    }
}

async fn run(cx: SourceContext, mut rx: mpsc::Receiver<Out>, handle: consumer::Handle) -> Result<(), ()> {
    let SourceContext { mut out, mut shutdown, mut ready, dead_letter, .. } = cx;
    tokio::select! {
        () = wait_ready(&mut ready) => handle.start(),
        () = shutdown.wait() => {
            // Stopped before it started: nothing was read.
            drop(out);
            handle.finished().await;
            return Ok(());
        }
    }
    let mut stopping = false;
    loop {
        let next = tokio::select! {
            biased;
            () = shutdown.wait(), if !stopping => {
                stopping = true;
                handle.stop();
                continue;
            }
            next = rx.recv() => next,
        };
        match next {
            Some(Out::Chunk(chunk)) => {
                if out.send(chunk).await.is_err() && !stopping {
                    stopping = true;
                    handle.stop();
                }
            }
            Some(Out::DeadLetters(events, failure)) => {
                out.ledger().accept(events.len());
                dead_letter.submit(events, failure).await;
            }
            None => break,
        }
    }
    // Downstream drains once this sender is gone; the consumer commits what it delivers.
    drop(out);
    handle.finished().await;
    Ok(())
}
