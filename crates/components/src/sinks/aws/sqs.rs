//! `aws_sqs`: events as SQS messages, sent with `SendMessageBatch` (up to 10 messages, 256 KiB
//! a request) over SQS's JSON protocol, on the shared sink driver's per-item path.
//!
//! - Each message's result is read from the answer: `Successful` entries are delivered;
//!   `Failed` ones with `SenderFault` go to the dead-letter queue alone, with SQS's code and
//!   message; the others are sent again.
//! - A whole answer: throttling and 5xx are retriable; a request too long is split; a missing
//!   queue, denied access or bad credentials dead-letter the batch in one step.
//! - An event that comes through another sink's `.dead_letter` output carries its last
//!   failure as message attributes (`dead_letter_reason`, `dead_letter_message`,
//!   `dead_letter_sink`, `dead_letter_status`, `dead_letter_attempts`), so a queue of failed
//!   events says why each failed.

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_core::json::write_str;
use sluice_net::aws::{AwsAuth, AwsClient};
use sluice_net::http::HttpClient;
use sluice_net::{ProxyConfig, TlsConfig};

use crate::codecs::{Encoder, EncodingConfig};
use crate::sinks::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, ItemResult, PartitionKey, RequestConfig, Service,
};
use crate::sinks::http_api;
use crate::sinks::template::Template;

/// SQS's limits: 10 messages and 256 KiB per `SendMessageBatch`.
const MAX_MESSAGES: usize = 10;
const MAX_REQUEST_BYTES: usize = 262_144;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsSinkConfig {
    /// Required: `https://sqs.<region>.amazonaws.com/<account>/<queue>`.
    pub queue_url: String,
    /// Default: `AWS_REGION`, then the profile's; with `endpoint`, `us-east-1`.
    pub region: Option<String>,
    /// Another SQS endpoint. Default: the scheme and host of `queue_url`.
    pub endpoint: Option<String>,
    /// Required.
    pub encoding: EncodingConfig,
    /// FIFO queues: the message group, a template.
    pub message_group_id: Option<String>,
    /// FIFO queues: the deduplication id, a template.
    pub message_deduplication_id: Option<String>,
    /// At most 10 events and 262144 bytes a request (SQS's limits). Default timeout 1 s.
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    #[serde(default)]
    pub auth: AwsAuth,
    pub tls: Option<TlsConfig>,
    /// HTTP proxies. Default: `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`.
    #[serde(default)]
    pub proxy: ProxyConfig,
}

impl SqsSinkConfig {
    fn templates(&self) -> Result<(Option<Template>, Option<Template>), ConfigIssue> {
        let parse = |field: &str, text: &Option<String>| {
            text.as_deref().map(Template::parse).transpose().map_err(|m| ConfigIssue::new(field, m))
        };
        Ok((
            parse("message_group_id", &self.message_group_id)?,
            parse("message_deduplication_id", &self.message_deduplication_id)?,
        ))
    }

    /// Where requests go: `endpoint`, else the queue URL's scheme and host.
    fn target(&self) -> Result<String, ConfigIssue> {
        let (field, text) = match &self.endpoint {
            Some(endpoint) => ("endpoint", endpoint.as_str()),
            None => ("queue_url", self.queue_url.as_str()),
        };
        let uri: http::Uri = text.parse().map_err(|e| ConfigIssue::new(field, format!("not a valid URI: {e}")))?;
        match (uri.scheme_str(), uri.authority()) {
            (Some(scheme @ ("http" | "https")), Some(authority)) => Ok(format!("{scheme}://{authority}/")),
            _ => Err(ConfigIssue::new(field, "must be an `http://` or `https://` URL")),
        }
    }
}

impl SinkConfig for SqsSinkConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(1.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(MAX_REQUEST_BYTES).min(MAX_REQUEST_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = self.encoding.check();
        issues.extend(self.templates().err());
        issues.extend(self.target().err());
        issues.extend(self.auth.check("auth"));
        issues.extend(http_api::tls_proxy_issues(self.tls.as_ref(), &self.proxy));
        if self.batch.max_events.is_some_and(|n| n == 0 || n > MAX_MESSAGES) {
            issues.push(ConfigIssue::new("batch.max_events", "from 1 to 10 (SQS sends at most 10 messages a request)"));
        }
        if self.batch.max_bytes.is_some_and(|n| n > MAX_REQUEST_BYTES) {
            issues.push(ConfigIssue::new("batch.max_bytes", "at most 262144 (SQS's request limit)"));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let issue = |i: ConfigIssue| BuildError(format!("{}: {}", i.path, i.message));
        let (group, dedup) = self.templates().map_err(issue)?;
        let target = self.target().map_err(issue)?;
        let http = http_api::client(self.tls.as_ref(), &self.proxy, &cx)?;
        Ok(Box::new(SqsSink { config: self.clone(), group, dedup, target, http, cx }))
    }
}

struct SqsSink {
    config: SqsSinkConfig,
    group: Option<Template>,
    dedup: Option<Template>,
    target: String,
    http: HttpClient,
    cx: SinkContext,
}

impl Sink for SqsSink {
    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let SqsSink { config, group, dedup, target, http, cx } = *self;
            let region = sluice_net::aws::region(
                config.region.as_deref().or_else(|| region_of(&config.queue_url)),
                config.auth.profile.as_deref(),
                true,
            )
            .await
            .unwrap_or_else(|_| "us-east-1".to_owned());
            let client = AwsClient::new(http, &config.auth, region, "sqs").await;
            if let Err(err) = client.check_credentials().await {
                tracing::error!(component_id = &*cx.id, error = %err, "No AWS credentials; every batch will fail until some are found.");
            }
            let service = SqsService {
                client,
                target,
                queue_url: config.queue_url.clone(),
                group,
                dedup,
                encoder: config.encoding.build(),
            };
            let mut batch = config.batch.clone();
            batch.max_events = Some(batch.max_events.unwrap_or(MAX_MESSAGES).min(MAX_MESSAGES));
            let settings = DriverSettings::new(&batch, &config.request, (Some(MAX_MESSAGES), MAX_REQUEST_BYTES, 1.0));
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

/// The region in an AWS queue URL (`https://sqs.<region>.amazonaws.com/...`).
fn region_of(queue_url: &str) -> Option<&str> {
    let host = queue_url.split("://").nth(1)?.split('/').next()?;
    let mut parts = host.split('.');
    (parts.next()? == "sqs").then(|| parts.next()).flatten().filter(|r| !r.is_empty() && *r != "amazonaws")
}

struct SqsService {
    client: AwsClient,
    target: String,
    queue_url: String,
    group: Option<Template>,
    dedup: Option<Template>,
    encoder: Encoder,
}

/// `SendMessageBatch`'s answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchAnswer {
    #[serde(default)]
    successful: Vec<Entry>,
    #[serde(default)]
    failed: Vec<FailedEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FailedEntry {
    id: String,
    #[serde(default)]
    sender_fault: bool,
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// An error answer of the JSON protocol (services send `message`, `Message`, or both).
#[derive(Debug, Default, Deserialize)]
struct ErrorAnswer {
    #[serde(rename = "__type", default)]
    kind: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "Message", default)]
    message_capitalised: Option<String>,
}

impl SqsService {
    fn request_body(&self, batch: &EncodedBatch) -> Vec<u8> {
        let mut body = Vec::with_capacity(batch.bytes() + batch.len() * 16 + self.queue_url.len() + 32);
        body.extend_from_slice(b"{\"QueueUrl\":");
        write_str(&mut body, &self.queue_url);
        body.extend_from_slice(b",\"Entries\":[");
        for (i, item) in batch.items().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            // Each item is an entry object without its id: `{"MessageBody":...}`.
            body.extend_from_slice(format!("{{\"Id\":\"{i}\",").as_bytes());
            body.extend_from_slice(item.get(1..).unwrap_or_default());
        }
        body.extend_from_slice(b"]}");
        body
    }

    async fn send(&self, batch: &EncodedBatch) -> CallResult {
        let request = http::Request::post(&self.target)
            .header(http::header::CONTENT_TYPE, "application/x-amz-json-1.0")
            .header("x-amz-target", "AmazonSQS.SendMessageBatch");
        let body = Bytes::from(self.request_body(batch));
        let response = match self.client.send(request, body, false).await {
            Ok(response) => response,
            Err(err) => return CallResult::no_answer(&err, err.error_type()),
        };
        let status = response.status();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(err) => {
                // Without the answer nobody knows which messages were taken: send them again.
                return CallResult::Retriable {
                    status: Some(status.as_u16()),
                    message: format!("the answer was cut short: {err}"),
                    retry_after: None,
                    error_type: "request_failed",
                };
            }
        };
        if !status.is_success() {
            return classify(status, &body);
        }
        let answer: BatchAnswer = match serde_json::from_slice(&body) {
            Ok(answer) => answer,
            Err(err) => {
                return CallResult::Retriable {
                    status: Some(status.as_u16()),
                    message: format!("unreadable answer: {err}"),
                    retry_after: None,
                    error_type: "invalid_response",
                };
            }
        };
        CallResult::PerItem(item_results(answer, batch.len()))
    }

    /// Writes one entry, without its id: `{"MessageBody":…[,"MessageGroupId":…][,…]}`.
    fn entry(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let mut message = Vec::new();
        self.encoder.encode(event, &mut message).map_err(|e| e.to_string())?;
        let message = String::from_utf8(message).map_err(|_| "SQS messages must be UTF-8 text".to_owned())?;
        buf.extend_from_slice(b"{\"MessageBody\":");
        write_str(buf, &message);
        for (name, template) in [("MessageGroupId", &self.group), ("MessageDeduplicationId", &self.dedup)] {
            if let Some(template) = template {
                let value = template.render(event).map_err(|e| format!("{name}: {e}"))?;
                buf.extend_from_slice(format!(",\"{name}\":").as_bytes());
                write_str(buf, &value);
            }
        }
        if let Some(failure) = event.dead_letters().last() {
            buf.extend_from_slice(b",\"MessageAttributes\":{");
            let status = failure.status.map(|s| s.to_string());
            let attempts = failure.attempts.to_string();
            let attributes = [
                ("dead_letter_reason", Some(failure.reason.as_str())),
                ("dead_letter_message", Some(failure.message.as_str())),
                ("dead_letter_sink", Some(failure.sink_id.as_str())),
                ("dead_letter_status", status.as_deref()),
                ("dead_letter_attempts", Some(attempts.as_str())),
            ];
            let mut first = true;
            for (name, value) in attributes {
                let Some(value) = value.filter(|v| !v.is_empty()) else { continue };
                if !first {
                    buf.push(b',');
                }
                first = false;
                write_str(buf, name);
                buf.extend_from_slice(b":{\"DataType\":\"String\",\"StringValue\":");
                write_str(buf, value);
                buf.push(b'}');
            }
            buf.push(b'}');
        }
        buf.push(b'}');
        Ok(())
    }
}

/// Sorts a whole-request error answer of the JSON protocol.
fn classify(status: http::StatusCode, body: &[u8]) -> CallResult {
    let error: ErrorAnswer = serde_json::from_slice(body).unwrap_or_default();
    let code = error.kind.rsplit('#').next().unwrap_or_default().to_owned();
    let text = error.message.or(error.message_capitalised).unwrap_or_default();
    let message = format!("SQS answered {status} {code}: {text}");
    let status_code = Some(status.as_u16());
    let throttled = code.contains("Throttl") || code == "RequestThrottled" || code == "KmsThrottled";
    if throttled || status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
        return CallResult::Retriable { status: status_code, message, retry_after: None, error_type: "http_status" };
    }
    if code == "BatchRequestTooLong" || code == "InvalidParameterValue" || code == "InvalidMessageContents" {
        return CallResult::Permanent { status: status_code, message };
    }
    CallResult::DestinationError { status: status_code, message }
}

/// One result per message of the batch, in order, from `SendMessageBatch`'s answer.
fn item_results(answer: BatchAnswer, messages: usize) -> Vec<ItemResult> {
    let mut results: Vec<Option<ItemResult>> = vec![None; messages];
    for entry in answer.successful {
        if let Some(slot) = entry.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Some(ItemResult::Delivered);
        }
    }
    for entry in answer.failed {
        let message = format!("SQS refused the message: {} {}", entry.code, entry.message);
        let result = if entry.sender_fault {
            ItemResult::Permanent { status: None, message }
        } else {
            ItemResult::Retriable { status: None, message }
        };
        if let Some(slot) = entry.id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
            *slot = Some(result);
        }
    }
    // A message the answer does not mention is sent again.
    results
        .into_iter()
        .map(|r| r.unwrap_or(ItemResult::Retriable { status: None, message: "not in SQS's answer".to_owned() }))
        .collect()
}

impl Service for SqsService {
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        self.entry(event, buf)
    }

    fn call<'a>(&'a self, _key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(self.send(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_gets_its_own_result_from_the_answer() {
        let answer: BatchAnswer = serde_json::from_str(
            r#"{"Successful":[{"Id":"0","MessageId":"a"},{"Id":"3","MessageId":"b"}],
                "Failed":[{"Id":"1","SenderFault":true,"Code":"InvalidMessageContents","Message":"bad"},
                          {"Id":"2","SenderFault":false,"Code":"InternalError","Message":"try again"}]}"#,
        )
        .unwrap_or_default();
        let results = item_results(answer, 5);
        assert_eq!(results[0], ItemResult::Delivered);
        assert!(
            matches!(&results[1], ItemResult::Permanent { message, .. } if message.contains("InvalidMessageContents"))
        );
        assert!(matches!(&results[2], ItemResult::Retriable { message, .. } if message.contains("InternalError")));
        assert_eq!(results[3], ItemResult::Delivered);
        assert!(matches!(&results[4], ItemResult::Retriable { .. }), "not mentioned: sent again");
    }

    #[test]
    fn whole_request_errors_are_retried_split_or_dead_lettered() {
        let answer = |status: u16, kind: &str| {
            let body = format!("{{\"__type\":\"com.amazonaws.sqs#{kind}\",\"message\":\"m\",\"Message\":\"m\"}}");
            classify(http::StatusCode::from_u16(status).unwrap_or_default(), body.as_bytes())
        };
        assert!(matches!(answer(400, "ThrottlingException"), CallResult::Retriable { .. }));
        assert!(matches!(answer(500, "InternalError"), CallResult::Retriable { .. }));
        assert!(matches!(answer(400, "BatchRequestTooLong"), CallResult::Permanent { .. }), "split");
        match answer(400, "QueueDoesNotExist") {
            CallResult::DestinationError { message, .. } => {
                assert!(message.contains("QueueDoesNotExist: m"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
