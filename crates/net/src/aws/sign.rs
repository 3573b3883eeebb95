//! SigV4 signing of a request by `aws-sigv4`.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;

use super::AwsError;

/// How the body is covered by the signature.
pub enum Payload<'a> {
    /// The body's SHA-256 is signed, and sent as `x-amz-content-sha256` (S3).
    S3(&'a [u8]),
    /// The body is signed (query and JSON protocols: SQS, STS).
    Signed(&'a [u8]),
}

/// Signs `request` in place for `service` in `region`.
pub fn sign<B>(
    request: &mut http::Request<B>,
    credentials: &Credentials,
    region: &str,
    service: &str,
    payload: Payload<'_>,
) -> Result<(), AwsError> {
    let mut settings = SigningSettings::default();
    let body = match payload {
        Payload::S3(body) => {
            // S3 keys are signed as sent: no normalisation, no double encoding.
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            body
        }
        Payload::Signed(body) => body,
    };
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| AwsError::Signing(e.to_string()))?
        .into();
    let headers: Vec<(&str, &str)> =
        request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
    let uri = request.uri().to_string();
    let signable =
        SignableRequest::new(request.method().as_str(), &uri, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|e| AwsError::Signing(e.to_string()))?;
    let (instructions, _signature) =
        aws_sigv4::http_request::sign(signable, &params).map_err(|e| AwsError::Signing(e.to_string()))?.into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}
