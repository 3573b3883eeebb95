//! Signed requests to an AWS service over the shared HTTP client.

use bytes::Bytes;
use http_body_util::Full;

use super::{AwsAuth, AwsCredentials, AwsError, Payload, sign};
use crate::http::{HttpClient, Response, SendError};

/// Why a signed request got no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsSendError {
    #[error(transparent)]
    Prepare(#[from] AwsError),
    #[error(transparent)]
    Send(#[from] SendError),
}

impl AwsSendError {
    /// The `error_type` this failure is counted under.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Prepare(AwsError::Credentials(_)) => "credentials",
            Self::Prepare(_) => "signing",
            Self::Send(err) => err.error_type(),
        }
    }
}

/// One component's way to AWS: the HTTP client, its credentials, the region and service.
#[derive(Debug)]
pub struct AwsClient {
    http: HttpClient,
    credentials: AwsCredentials,
    region: String,
    service: &'static str,
}

impl AwsClient {
    /// Resolves the credential providers of `auth` (nothing is fetched yet).
    pub async fn new(http: HttpClient, auth: &AwsAuth, region: String, service: &'static str) -> Self {
        let credentials = AwsCredentials::new(auth, &region).await;
        Self { http, credentials, region, service }
    }

    /// Fetches credentials once, so that a missing one is reported at start.
    pub async fn check_credentials(&self) -> Result<(), AwsError> {
        self.credentials.get().await.map(drop)
    }

    /// Signs and sends a request. `s3` selects S3's signing rules (payload hash header, keys
    /// signed as sent).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn send(&self, request: http::request::Builder, body: Bytes, s3: bool) -> Result<Response, AwsSendError> {
        let credentials = self.credentials.get().await?;
        let mut request =
            request.body(Full::new(body.clone())).map_err(|e| AwsError::Signing(format!("invalid request: {e}")))?;
        let payload = if s3 { Payload::S3(&body) } else { Payload::Signed(&body) };
        sign(&mut request, &credentials, &self.region, self.service, payload)?;
        Ok(self.http.send(request).await?)
    }
}
