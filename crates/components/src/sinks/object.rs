//! What every object-store sink shares (`aws_s3`, `azure_blob`, `gcp_cloud_storage`):
//! object names, and turning a batch into one object body, compressed off the async workers.
//!
//! An object's name is `<key_prefix rendered><time>[-<uuid>].<extension>`: the prefix is a
//! template rendered per event (events with different prefixes never share an object), the
//! time is when the object is built, formatted with `filename_time_format`, and the extension
//! follows the compression (`log`, `log.gz`, `log.zst`) unless `filename_extension` is set.

use std::io::Write;

use serde::Deserialize;
use sluice_core::component::ConfigIssue;

use super::driver::{CallResult, EncodedBatch, PartitionKey};
use super::template::Template;

/// `compression` of object sinks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectCompression {
    None,
    #[default]
    Gzip,
    Zstd,
}

impl ObjectCompression {
    fn extension(self) -> &'static str {
        match self {
            Self::None => "log",
            Self::Gzip => "log.gz",
            Self::Zstd => "log.zst",
        }
    }

    /// The `Content-Encoding` an object gets.
    pub fn content_encoding(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("gzip"),
            Self::Zstd => Some("zstd"),
        }
    }
}

/// How objects are named.
#[derive(Debug, Clone)]
pub struct ObjectNaming {
    pub prefix: Template,
    pub time_format: String,
    pub append_uuid: bool,
    pub extension: String,
}

impl ObjectNaming {
    pub fn new(
        prefix: &str,
        time_format: &str,
        append_uuid: bool,
        extension: Option<&str>,
        compression: ObjectCompression,
    ) -> Result<Self, ConfigIssue> {
        let prefix = Template::parse(prefix).map_err(|m| ConfigIssue::new("key_prefix", m))?;
        let extension = extension.unwrap_or(compression.extension()).trim_start_matches('.').to_owned();
        Ok(Self { prefix, time_format: time_format.to_owned(), append_uuid, extension })
    }

    /// The partition of an event: its rendered prefix (none when the prefix is the same for
    /// every event). Events with different prefixes never share an object.
    pub fn partition(&self, event: &sluice_core::LogEvent) -> Result<PartitionKey, String> {
        if !self.prefix.is_dynamic() {
            return Ok(PartitionKey::new());
        }
        self.prefix.render(event).map(|prefix| vec![prefix]).map_err(|e| format!("prefix: {e}"))
    }

    /// The name of a new object for a batch of partition `key`.
    pub fn name(&self, key: &PartitionKey) -> String {
        match key.first() {
            Some(prefix) => self.key(prefix),
            None => self.key(&self.prefix.static_prefix()),
        }
    }

    /// The name of a new object under `prefix` (a rendered `key_prefix`).
    fn key(&self, prefix: &str) -> String {
        use std::fmt::Write;
        let mut key = String::with_capacity(prefix.len() + 64);
        key.push_str(prefix);
        let _ = write!(key, "{}", chrono::Utc::now().format(&self.time_format));
        if self.append_uuid {
            key.push('-');
            key.push_str(&uuid::Uuid::new_v4().to_string());
        }
        if !self.extension.is_empty() {
            key.push('.');
            key.push_str(&self.extension);
        }
        key
    }
}

/// The body of one object: each event's encoding followed by `delimiter`, compressed.
fn object_body(
    batch: &EncodedBatch,
    delimiter: Option<u8>,
    compression: ObjectCompression,
) -> std::io::Result<Vec<u8>> {
    let raw_len = batch.bytes() + batch.len();
    match compression {
        ObjectCompression::None => {
            let mut body = Vec::with_capacity(raw_len);
            write_items(&mut body, batch, delimiter)?;
            Ok(body)
        }
        ObjectCompression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(raw_len / 4), flate2::Compression::default());
            write_items(&mut gz, batch, delimiter)?;
            gz.finish()
        }
        ObjectCompression::Zstd => {
            let mut zstd = zstd::Encoder::new(Vec::with_capacity(raw_len / 4), 3)?;
            write_items(&mut zstd, batch, delimiter)?;
            zstd.finish()
        }
    }
}

fn write_items(out: &mut impl Write, batch: &EncodedBatch, delimiter: Option<u8>) -> std::io::Result<()> {
    let delimiter: &[u8] = match &delimiter {
        Some(d) => std::slice::from_ref(d),
        None => &[],
    };
    for item in batch.items() {
        out.write_all(item)?;
        out.write_all(delimiter)?;
    }
    Ok(())
}

/// Builds an object's body; compression runs off the async workers when the runtime has
/// other threads, so batches compress on every core.
pub fn compress(
    batch: &EncodedBatch,
    delimiter: Option<u8>,
    compression: ObjectCompression,
) -> std::io::Result<Vec<u8>> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(|| object_body(batch, delimiter, compression))
    } else {
        object_body(batch, delimiter, compression)
    }
}

/// How an upload ended: delivered on 2xx; otherwise `classify` reads the answer's status,
/// headers and body. `sent` is the request's result, its failure already sorted.
pub async fn upload_result(
    sent: Result<sluice_net::http::Response, CallResult>,
    classify: impl FnOnce(http::StatusCode, &http::HeaderMap, &[u8]) -> CallResult,
) -> CallResult {
    use http_body_util::BodyExt;
    let response = match sent {
        Ok(response) => response,
        Err(result) => return result,
    };
    let status = response.status();
    if status.is_success() {
        return CallResult::Delivered;
    }
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    classify(status, &headers, &body)
}
