//! The push request of the `loki` sink: each event encoded once into an entry record (labels,
//! time, metadata, line), records grouped into streams at send time, the body written as
//! snappy protobuf or JSON, and Loki's list of refused entries read back.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::future::BoxFuture;
use sluice_core::LogEvent;
use sluice_core::json::write_str;
use sluice_net::http::HttpClient;
use vrl::value::Value;

use super::{LokiCompression, LokiConfig, OutOfOrderAction};
use crate::codecs::Encoder;
use crate::sinks::driver::{CallResult, EncodedBatch, ItemResult, PartitionKey, Service};
use crate::sinks::http_api::{self, Compression};
use crate::sinks::template::{Template, lookup};

/// How labels (or structured metadata) are made from an event.
#[derive(Debug, Clone)]
pub enum LabelRule {
    One {
        name: String,
        template: Template,
    },
    /// `pattern` has a `*`, replaced by each key of the object at `field`.
    Expand {
        pattern: String,
        field: String,
    },
}

/// Where and how pushes are sent.
pub struct Transport {
    pub http: HttpClient,
    pub uri: http::Uri,
    pub auth: Option<http::HeaderValue>,
    /// `request.headers`.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

pub struct LokiService {
    http: HttpClient,
    uri: http::Uri,
    encoder: Encoder,
    labels: Vec<LabelRule>,
    metadata: Vec<LabelRule>,
    tenant: Option<Template>,
    auth: Option<http::HeaderValue>,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    compression: LokiCompression,
    out_of_order: OutOfOrderAction,
    /// Top-level fields left out of each line.
    skip: Vec<String>,
    /// Nested fields left out of each line (the event is copied to remove them).
    skip_nested: Vec<String>,
    /// The newest time sent on each stream (for `out_of_order_action` drop and rewrite).
    newest: Mutex<HashMap<String, i64>>,
}

impl LokiService {
    pub fn new(
        config: &LokiConfig,
        transport: Transport,
        labels: Vec<LabelRule>,
        metadata: Vec<LabelRule>,
        tenant: Option<Template>,
    ) -> Self {
        let Transport { http, uri, auth, headers } = transport;
        let mut removed: Vec<String> = Vec::new();
        if config.remove_timestamp {
            removed.push(sluice_core::event::fields::timestamp().to_owned());
        }
        let fields_of = |rules: &[LabelRule]| -> Vec<String> {
            rules
                .iter()
                .flat_map(|rule| match rule {
                    LabelRule::One { template, .. } => template.fields().map(str::to_owned).collect::<Vec<_>>(),
                    LabelRule::Expand { field, .. } => vec![field.clone()],
                })
                .collect()
        };
        if config.remove_label_fields {
            removed.extend(fields_of(&labels));
        }
        if config.remove_structured_metadata_fields {
            removed.extend(fields_of(&metadata));
        }
        removed.sort();
        removed.dedup();
        let (skip_nested, skip) = removed.into_iter().partition(|f| f.contains('.'));
        Self {
            http,
            uri,
            encoder: config.encoding.build(),
            labels,
            metadata,
            tenant,
            auth,
            headers,
            compression: config.compression,
            out_of_order: config.out_of_order_action,
            skip,
            skip_nested,
            newest: Mutex::new(HashMap::new()),
        }
    }
}

/// Label names from map keys: what Loki does not allow becomes `_`.
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn text(value: &Value) -> String {
    value.to_string_lossy().into_owned()
}

/// The pairs `rules` make of `event`, sorted by name; rules that cannot be rendered, and
/// empty values, are left out.
fn render(rules: &[LabelRule], event: &LogEvent) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for rule in rules {
        match rule {
            LabelRule::One { name, template } => {
                if let Ok(value) = template.render(event)
                    && !value.is_empty()
                {
                    out.insert(name.clone(), value);
                }
            }
            LabelRule::Expand { pattern, field } => {
                if let Some(Value::Object(map)) = lookup(event.value(), field) {
                    for (key, value) in map {
                        let value = text(value);
                        if !value.is_empty() {
                            out.insert(pattern.replace('*', &sanitize(key)), value);
                        }
                    }
                }
            }
        }
    }
    out
}

fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

fn put_pairs(buf: &mut Vec<u8>, pairs: &BTreeMap<String, String>) {
    buf.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (name, value) in pairs {
        put(buf, name.as_bytes());
        put(buf, value.as_bytes());
    }
}

/// One entry, read back from its record.
struct Entry<'a> {
    labels: Vec<(&'a str, &'a str)>,
    time: i64,
    metadata: Vec<(&'a str, &'a str)>,
    line: &'a [u8],
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.bytes.get(..n)?, self.bytes.get(n..)?);
        self.bytes = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }
    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
    fn pairs(&mut self) -> Option<Vec<(&'a str, &'a str)>> {
        (0..self.u32()?).map(|_| Some((self.str()?, self.str()?))).collect()
    }
    fn entry(record: &'a [u8]) -> Option<Entry<'a>> {
        let mut r = Reader { bytes: record };
        let labels = r.pairs()?;
        let time = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let metadata = r.pairs()?;
        let line = r.bytes()?;
        Some(Entry { labels, time, metadata, line })
    }
}

/// A label set as Loki writes it in messages (Prometheus' `{a="x", b="y"}`).
fn stream_name(labels: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

mod proto {
    //! Loki's push protobuf (`logproto.PushRequest`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// The entries of one stream, by index into the batch.
struct Stream<'a> {
    name: String,
    labels: Vec<(&'a str, &'a str)>,
    entries: Vec<usize>,
}

fn protobuf_body(streams: &[Stream], entries: &[Entry], times: &[i64]) -> Vec<u8> {
    use prost::Message;
    let request = proto::PushRequest {
        streams: streams
            .iter()
            .map(|s| proto::Stream {
                labels: s.name.clone(),
                hash: 0,
                entries: s
                    .entries
                    .iter()
                    .map(|&i| proto::Entry {
                        timestamp: Some(proto::Timestamp {
                            seconds: times[i].div_euclid(1_000_000_000),
                            nanos: times[i].rem_euclid(1_000_000_000) as i32,
                        }),
                        line: String::from_utf8_lossy(entries[i].line).into_owned(),
                        structured_metadata: entries[i]
                            .metadata
                            .iter()
                            .map(|(n, v)| proto::LabelPair { name: (*n).to_owned(), value: (*v).to_owned() })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let encoded = request.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&encoded).unwrap_or(encoded)
}

fn json_body(streams: &[Stream], entries: &[Entry], times: &[i64]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.iter().map(|e| e.line.len() + 32).sum::<usize>() + 64);
    body.extend_from_slice(b"{\"streams\":[");
    for (si, stream) in streams.iter().enumerate() {
        if si > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"stream\":{");
        for (i, (name, value)) in stream.labels.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            write_str(&mut body, name);
            body.push(b':');
            write_str(&mut body, value);
        }
        body.extend_from_slice(b"},\"values\":[");
        for (n, &i) in stream.entries.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"[\"");
            body.extend_from_slice(itoa::Buffer::new().format(times[i]).as_bytes());
            body.extend_from_slice(b"\",");
            write_str(&mut body, &String::from_utf8_lossy(entries[i].line));
            if !entries[i].metadata.is_empty() {
                body.extend_from_slice(b",{");
                for (m, (name, value)) in entries[i].metadata.iter().enumerate() {
                    if m > 0 {
                        body.push(b',');
                    }
                    write_str(&mut body, name);
                    body.push(b':');
                    write_str(&mut body, value);
                }
                body.push(b'}');
            }
            body.push(b']');
        }
        body.extend_from_slice(b"]}");
    }
    body.extend_from_slice(b"]}");
    body
}

/// Go's `time.Time.String()` as Loki writes it: `2026-12-02 08:00:00.25 +0000 UTC`.
fn parse_go_time(text: &str) -> Option<i64> {
    let mut parts: Vec<&str> = text.split(' ').collect();
    if parts.len() == 4 {
        parts.pop();
    }
    let text = parts.join(" ");
    let time = chrono::DateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f %z").ok()?;
    time.timestamp_nanos_opt()
}

/// Reads Loki's 400 listing refused entries (`entry with timestamp T ignored, reason: 'R',`
/// lines, then `total ignored: N out of M for stream: S`) into per-entry results: the listed
/// entries are refused, the other entries of a listed stream delivered. Loki reports one
/// stream's refusals only, so entries of streams it does not name are sent again (Loki
/// ignores an entry it already has). `None` when the list cannot be matched to the batch
/// entry by entry (it is cut short, or names a time several entries of the stream share).
fn refused_entries(body: &str, streams: &[Stream], times: &[i64], results: &mut [ItemResult]) -> Option<()> {
    let mut listed: Vec<(i64, String)> = Vec::new();
    let mut matched = 0;
    let mut named: Vec<&str> = Vec::new();
    for line in body.lines() {
        if let Some(rest) = line.trim().strip_prefix("entry with timestamp ") {
            let at = rest.find(" ignored, reason: '")?;
            let reason = rest[at + 19..].trim_end_matches(',').trim_end_matches('\'');
            listed.push((parse_go_time(&rest[..at])?, reason.to_owned()));
        } else if let Some(at) = line.find("total ignored: ") {
            let rest = &line[at + 15..];
            let total: usize = rest.split(' ').next()?.parse().ok()?;
            let name = rest.split_once(" for stream: ")?.1.trim();
            let stream = streams.iter().find(|s| s.name == name)?;
            named.push(&stream.name);
            if total != listed.len() {
                return None;
            }
            // Entries of a stream that share a time can only be told apart when all are listed.
            let mut by_time: BTreeMap<i64, (usize, String)> = BTreeMap::new();
            for (time, reason) in listed.drain(..) {
                by_time.entry(time).or_insert((0, reason)).0 += 1;
            }
            for (time, (count, reason)) in by_time {
                let candidates: Vec<usize> = stream.entries.iter().copied().filter(|&i| times[i] == time).collect();
                if candidates.len() != count {
                    return None;
                }
                for i in candidates {
                    results[i] = ItemResult::Permanent { status: Some(400), message: format!("Loki: {reason}") };
                    matched += 1;
                }
            }
        }
    }
    if matched == 0 || !listed.is_empty() {
        return None;
    }
    for stream in streams.iter().filter(|s| !named.contains(&s.name.as_str())) {
        for &i in &stream.entries {
            let message =
                "Loki refused entries of another stream of this push and does not say about this one; sent again"
                    .to_owned();
            results[i] = ItemResult::Retriable { status: Some(400), message };
        }
    }
    Some(())
}

/// [`refused_entries`] for one stream `{app="web"}` of entries at `times`.
#[cfg(test)]
pub(crate) fn refused_in_one_stream(body: &str, times: &[i64], results: &mut [ItemResult]) -> Option<()> {
    let labels = vec![("app", "web")];
    let streams = vec![Stream { name: stream_name(&labels), labels, entries: (0..times.len()).collect() }];
    refused_entries(body, &streams, times, results)
}

impl Service for LokiService {
    fn partition(&self, event: &LogEvent) -> Result<PartitionKey, String> {
        match &self.tenant {
            Some(tenant) => Ok(vec![tenant.render(event).map_err(|e| format!("tenant_id: {e}"))?]),
            None => Ok(PartitionKey::new()),
        }
    }

    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let mut labels = render(&self.labels, event);
        if labels.is_empty() {
            labels.insert("agent".to_owned(), "vector".to_owned());
        }
        put_pairs(buf, &labels);
        let time = match event.get(sluice_core::event::fields::timestamp()) {
            Some(Value::Timestamp(ts)) => *ts,
            _ => event.ingest_time(),
        };
        buf.extend_from_slice(&time.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
        put_pairs(buf, &render(&self.metadata, event));
        let mark = buf.len();
        buf.extend_from_slice(&[0; 4]);
        let skip: Vec<&str> = self.skip.iter().map(String::as_str).collect();
        let nested =
            !self.skip_nested.is_empty() && self.skip_nested.iter().any(|p| lookup(event.value(), p).is_some());
        let encoded = if nested {
            let mut value = event.value().clone();
            for path in &self.skip_nested {
                let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
                let parent = parent.split('.').try_fold(&mut value, |v, k| match v {
                    Value::Object(map) => map.get_mut(k),
                    _ => None,
                });
                if let Some(Value::Object(map)) = parent {
                    map.remove(key);
                }
            }
            let copy = LogEvent::from_value(
                value,
                sluice_core::event::EventMetadata::new(event.source_id(), event.ingest_time()),
            );
            self.encoder.encode_without(&copy, &skip, buf)
        } else {
            self.encoder.encode_without(event, &skip, buf)
        };
        encoded.map_err(|e| e.to_string())?;
        let len = (buf.len() - mark - 4) as u32;
        buf[mark..mark + 4].copy_from_slice(&len.to_le_bytes());
        Ok(())
    }

    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let Some(entries) = batch.items().map(Reader::entry).collect::<Option<Vec<Entry>>>() else {
                return CallResult::Permanent { status: None, message: "unreadable entry record".to_owned() };
            };
            let mut streams: Vec<Stream> = Vec::new();
            let mut by_name: HashMap<String, usize> = HashMap::new();
            for (i, entry) in entries.iter().enumerate() {
                let name = stream_name(&entry.labels);
                let at = *by_name.entry(name.clone()).or_insert_with(|| {
                    streams.push(Stream { name, labels: entry.labels.clone(), entries: Vec::new() });
                    streams.len() - 1
                });
                streams[at].entries.push(i);
            }
            let mut times: Vec<i64> = entries.iter().map(|e| e.time).collect();
            let mut results = vec![ItemResult::Delivered; entries.len()];
            if self.out_of_order != OutOfOrderAction::Accept
                && let Ok(mut newest) = self.newest.lock()
            {
                for stream in &mut streams {
                    let last = newest.entry(stream.name.clone()).or_insert(i64::MIN);
                    stream.entries.retain(|&i| {
                        if times[i] >= *last {
                            *last = times[i];
                            return true;
                        }
                        match self.out_of_order {
                            OutOfOrderAction::RewriteTimestamp => {
                                times[i] = *last;
                                true
                            }
                            _ => {
                                results[i] = ItemResult::Discarded { reason: "out_of_order" };
                                false
                            }
                        }
                    });
                }
                streams.retain(|s| !s.entries.is_empty());
            }
            if streams.is_empty() {
                return CallResult::PerItem(results);
            }
            let (body, content_type, encoding) = match self.compression {
                LokiCompression::Snappy => {
                    (protobuf_body(&streams, &entries, &times), "application/x-protobuf", Compression::None)
                }
                LokiCompression::Gzip => (json_body(&streams, &entries, &times), "application/json", Compression::Gzip),
                LokiCompression::None => (json_body(&streams, &entries, &times), "application/json", Compression::None),
            };
            let body = match encoding.compress(body) {
                Ok(body) => body,
                Err(err) => return CallResult::Permanent { status: None, message: format!("cannot compress: {err}") },
            };
            let request = http_api::with_headers(http::Request::post(self.uri.clone()), &self.headers);
            let mut request = http_api::body_headers(request, content_type, encoding);
            if let Some(tenant) = key.first() {
                match http::HeaderValue::try_from(tenant.as_str()) {
                    Ok(value) => request = request.header("X-Scope-OrgID", value),
                    Err(_) => {
                        let message = format!("tenant_id `{tenant}` cannot be a header value");
                        return CallResult::Permanent { status: None, message };
                    }
                }
            }
            if let Some(auth) = &self.auth {
                request = request.header(http::header::AUTHORIZATION, auth);
            }
            let answer = match http_api::exchange(&self.http, request, body).await {
                Ok(answer) => answer,
                Err(result) => return result,
            };
            if answer.status.is_success() {
                let dropped = results.iter().any(|r| matches!(r, ItemResult::Discarded { .. }));
                return if dropped { CallResult::PerItem(results) } else { CallResult::Delivered };
            }
            let text = String::from_utf8_lossy(&answer.body);
            if answer.status == http::StatusCode::BAD_REQUEST
                && refused_entries(&text, &streams, &times, &mut results).is_some()
            {
                return CallResult::PerItem(results);
            }
            answer.result()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lokis_list_of_refused_entries_is_matched_entry_by_entry() {
        let labels = vec![("app", "web")];
        let streams = vec![Stream { name: stream_name(&labels), labels, entries: vec![0, 1, 2] }];
        assert_eq!(streams[0].name, "{app=\"web\"}");
        let base = 1_796_198_400_000_000_000_i64;
        let times = [base + 2_000_000_000, base, base + 3_000_000_000];
        let body = "entry with timestamp 2026-12-02 08:00:00 +0000 UTC ignored, reason: 'entry out of order',\n\
                    user 'fake', total ignored: 1 out of 3 for stream: {app=\"web\"}";
        let mut results = vec![ItemResult::Delivered; 3];
        assert!(refused_entries(body, &streams, &times, &mut results).is_some());
        assert_eq!(results[0], ItemResult::Delivered);
        assert!(matches!(&results[1], ItemResult::Permanent { message, .. } if message == "Loki: entry out of order"));
        // A list cut short (Loki lists at most 10) cannot be matched.
        let cut = body.replace("total ignored: 1", "total ignored: 12");
        assert!(refused_entries(&cut, &streams, &times, &mut vec![ItemResult::Delivered; 3]).is_none());
        assert_eq!(parse_go_time("2026-12-02 08:00:00.25 +0000 UTC"), Some(base + 250_000_000));
    }
}
