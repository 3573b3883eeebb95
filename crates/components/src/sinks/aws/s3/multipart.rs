//! Large objects as multipart uploads: CreateMultipartUpload, one UploadPart per
//! [`PART_BYTES`], CompleteMultipartUpload; an upload that fails is aborted, so no parts are
//! left behind to pay for, and the whole object is sent again by the driver's retry.
//!
//! CompleteMultipartUpload can answer 200 with an error document: the answer's body decides.

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;

use super::{S3Service, classify};
use crate::sinks::driver::CallResult;

/// Objects larger than this (after compression) are uploaded in parts.
pub(super) const MULTIPART_THRESHOLD: usize = 16 * 1024 * 1024;
/// Size of each part but the last (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
struct Initiated {
    #[serde(rename = "UploadId")]
    upload_id: String,
}

/// One step's outcome: the answer's body, or how the whole upload ends.
async fn step(
    service: &S3Service,
    request: http::request::Builder,
    body: Bytes,
) -> Result<(http::HeaderMap, Bytes), CallResult> {
    let response =
        service.client.send(request, body, true).await.map_err(|e| CallResult::no_answer(&e, e.error_type()))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).map_err(|err| CallResult::Retriable {
        status: Some(status.as_u16()),
        message: format!("the answer was cut short: {err}"),
        retry_after: None,
        error_type: "request_failed",
    })?;
    if !status.is_success() || body.windows(7).any(|w| w == b"<Error>") {
        return Err(classify(status, &body, &service.strategy));
    }
    Ok((headers, body))
}

/// Uploads `body` as `url` in parts.
pub(super) async fn upload(service: &S3Service, url: &str, body: Bytes) -> CallResult {
    let mut create = http::Request::post(format!("{url}?uploads"));
    for (name, value) in &service.headers {
        create = create.header(*name, value);
    }
    let upload_id = match step(service, create, Bytes::new()).await {
        Ok((_, answer)) => match quick_xml::de::from_str::<Initiated>(&String::from_utf8_lossy(&answer)) {
            Ok(initiated) if !initiated.upload_id.is_empty() => initiated.upload_id,
            _ => {
                return CallResult::Retriable {
                    status: None,
                    message: "CreateMultipartUpload answered without an UploadId".into(),
                    retry_after: None,
                    error_type: "invalid_response",
                };
            }
        },
        Err(result) => return result,
    };
    let id = percent_encoding::utf8_percent_encode(&upload_id, super::QUERY).to_string();
    let result = parts(service, url, &id, body).await;
    if !matches!(result, CallResult::Delivered) {
        // Best effort: S3 also expires incomplete uploads by the bucket's lifecycle rules.
        let abort = http::Request::delete(format!("{url}?uploadId={id}"));
        let _ = step(service, abort, Bytes::new()).await;
    }
    result
}

async fn parts(service: &S3Service, url: &str, id: &str, body: Bytes) -> CallResult {
    let mut etags = Vec::new();
    let mut offset = 0;
    while offset < body.len() {
        let end = (offset + PART_BYTES).min(body.len());
        let number = etags.len() + 1;
        let part = body.slice(offset..end);
        let request = http::Request::put(format!("{url}?partNumber={number}&uploadId={id}"))
            .header(http::header::CONTENT_LENGTH, part.len());
        match step(service, request, part).await {
            Ok((headers, _)) => match headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()) {
                Some(etag) => etags.push(etag.to_owned()),
                None => {
                    return CallResult::Retriable {
                        status: None,
                        message: format!("UploadPart {number} answered without an ETag"),
                        retry_after: None,
                        error_type: "invalid_response",
                    };
                }
            },
            Err(result) => return result,
        }
        offset = end;
    }
    let mut document = String::from("<CompleteMultipartUpload>");
    for (i, etag) in etags.iter().enumerate() {
        document.push_str(&format!("<Part><PartNumber>{}</PartNumber><ETag>{etag}</ETag></Part>", i + 1));
    }
    document.push_str("</CompleteMultipartUpload>");
    let complete = http::Request::post(format!("{url}?uploadId={id}"))
        .header(http::header::CONTENT_TYPE, "application/xml")
        .header(http::header::CONTENT_LENGTH, document.len());
    match step(service, complete, Bytes::from(document)).await {
        Ok(_) => CallResult::Delivered,
        Err(result) => result,
    }
}
