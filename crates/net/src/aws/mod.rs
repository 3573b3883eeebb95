//! One AWS layer for every AWS component (`aws_s3`, `aws_sqs`, later CloudWatch Logs and
//! Kinesis Firehose): the region, credentials in Vector's order, and request signing.
//!
//! - Region: the component's `region`, else `AWS_REGION`/`AWS_DEFAULT_REGION`, else the
//!   profile's. With an `endpoint` and no region, `us-east-1` (S3-compatible stores ignore it).
//! - Credentials, first match wins: `auth.access_key_id` + `secret_access_key`
//!   (+ `session_token`); `auth.credentials_file` (+ `auth.profile`); else the default chain
//!   (environment, shared config and credentials files with `auth.profile`, web identity token
//!   as on EKS, ECS container credentials, EC2 IMDSv2). `auth.assume_role` then assumes that
//!   role (with `external_id`, `session_name`) using the credentials found. Providers come from
//!   `aws-config`; credentials are cached and refreshed five minutes before they expire.
//! - Signing: SigV4 by `aws-sigv4`, never by hand.
//!
//! No credentials is an error at start and on every request ([`AwsError::Credentials`]),
//! counted as `error_type="credentials"`, never a stream of 403s.

mod client;
mod credentials;
mod sign;

use serde::Deserialize;
use sluice_core::component::ConfigIssue;

pub use client::{AwsClient, AwsSendError};
pub use credentials::AwsCredentials;
pub use sign::{Payload, sign};

/// The `auth` block of AWS components (Vector's fields).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AwsAuth {
    /// Static access key id; needs `secret_access_key`.
    pub access_key_id: Option<String>,
    /// Static secret key.
    pub secret_access_key: Option<String>,
    /// Session token of temporary static credentials.
    pub session_token: Option<String>,
    /// A role ARN to assume with the credentials found.
    pub assume_role: Option<String>,
    /// External id for `assume_role`.
    pub external_id: Option<String>,
    /// Session name for `assume_role`. Default: `sluice-<random>` (chosen by the SDK).
    pub session_name: Option<String>,
    /// A shared credentials file to read (with `profile`).
    pub credentials_file: Option<String>,
    /// The profile of the shared files. Default `default` (or `AWS_PROFILE`).
    pub profile: Option<String>,
    /// Region of the STS endpoint used by `assume_role`. Default: the component's region.
    pub region: Option<String>,
    /// Seconds to wait for credentials from the default chain. Default 5.
    pub load_timeout_secs: Option<u64>,
    /// IMDS client settings (accepted; the SDK's defaults are used).
    pub imds: Option<ImdsSettings>,
}

/// `auth.imds` (Vector's fields).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImdsSettings {
    pub max_attempts: Option<u32>,
    pub connect_timeout_seconds: Option<u64>,
    pub read_timeout_seconds: Option<u64>,
}

/// Why an AWS request could not be prepared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    #[error("no AWS credentials: {0}")]
    Credentials(String),
    #[error("cannot sign the request: {0}")]
    Signing(String),
    #[error("no AWS region: set `region` (or AWS_REGION), or an `endpoint`")]
    NoRegion,
}

impl AwsAuth {
    /// Problems `validate` can see without asking AWS.
    pub fn check(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                issues.push(ConfigIssue::new(format!("{prefix}.secret_access_key"), "required with `access_key_id`"))
            }
            (None, Some(_)) => {
                issues.push(ConfigIssue::new(format!("{prefix}.access_key_id"), "required with `secret_access_key`"))
            }
            _ => {}
        }
        if self.access_key_id.is_some() && self.credentials_file.is_some() {
            issues.push(ConfigIssue::new(
                format!("{prefix}.credentials_file"),
                "give either static keys or a credentials file, not both",
            ));
        }
        if let Some(file) = &self.credentials_file
            && !std::path::Path::new(file).is_file()
        {
            issues.push(ConfigIssue::new(format!("{prefix}.credentials_file"), format!("`{file}` does not exist")));
        }
        if let Some(role) = &self.assume_role
            && !role.starts_with("arn:")
        {
            issues.push(ConfigIssue::new(
                format!("{prefix}.assume_role"),
                "must be a role ARN (`arn:aws:iam::…:role/…`)",
            ));
        }
        issues
    }
}

/// The region to sign for: `configured`, else the environment, else the profile's; with an
/// endpoint override and none of those, `us-east-1`.
pub async fn region(configured: Option<&str>, profile: Option<&str>, has_endpoint: bool) -> Result<String, AwsError> {
    if let Some(region) = configured.filter(|r| !r.is_empty()) {
        return Ok(region.to_owned());
    }
    for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Ok(region) = std::env::var(var)
            && !region.is_empty()
        {
            return Ok(region);
        }
    }
    let mut from_profile = aws_config::profile::ProfileFileRegionProvider::builder();
    if let Some(profile) = profile {
        from_profile = from_profile.profile_name(profile);
    }
    use aws_config::meta::region::ProvideRegion;
    if let Some(region) = from_profile.build().region().await {
        return Ok(region.to_string());
    }
    if has_endpoint { Ok("us-east-1".to_owned()) } else { Err(AwsError::NoRegion) }
}
