//! Credentials in Vector's order, from `aws-config`'s providers, cached until shortly before
//! they expire.

use std::time::{Duration, SystemTime};

use aws_config::provider_config::ProviderConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_types::region::Region;

use super::{AwsAuth, AwsError};

/// Credentials are refreshed this long before they expire.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);

/// A component's credentials: where they come from, and the last ones obtained.
pub struct AwsCredentials {
    provider: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
    timeout: Duration,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AwsCredentials")
    }
}

fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

impl AwsCredentials {
    /// The providers `auth` names, in Vector's order (see the module docs).
    pub async fn new(auth: &AwsAuth, region: &str) -> Self {
        let region = Region::new(region.to_owned());
        let http = http_client();
        let conf = ProviderConfig::empty()
            .with_http_client(http.clone())
            .with_sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
            .with_time_source(aws_smithy_async::time::SystemTimeSource::new())
            .with_region(Some(region.clone()));
        let base = match (&auth.access_key_id, &auth.secret_access_key, &auth.credentials_file) {
            (Some(id), Some(secret), _) => SharedCredentialsProvider::new(Credentials::new(
                id,
                secret,
                auth.session_token.clone(),
                None,
                "sluice-config",
            )),
            (_, _, Some(file)) => {
                use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};
                let files = EnvConfigFiles::builder().with_file(EnvConfigFileKind::Credentials, file).build();
                let mut provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
                    .configure(&conf)
                    .profile_files(files);
                if let Some(profile) = &auth.profile {
                    provider = provider.profile_name(profile);
                }
                SharedCredentialsProvider::new(provider.build())
            }
            _ => {
                let mut chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                    .configure(conf.clone())
                    .region(region.clone());
                if let Some(profile) = &auth.profile {
                    chain = chain.profile_name(profile);
                }
                SharedCredentialsProvider::new(chain.build().await)
            }
        };
        let provider = match &auth.assume_role {
            Some(role) => {
                let sts_region = auth.region.clone().map(Region::new).unwrap_or(region.clone());
                let mut sdk = aws_types::SdkConfig::builder()
                    .http_client(http)
                    .sleep_impl(aws_smithy_async::rt::sleep::SharedAsyncSleep::new(
                        aws_smithy_async::rt::sleep::TokioSleep::new(),
                    ))
                    .time_source(aws_smithy_async::time::SharedTimeSource::new(
                        aws_smithy_async::time::SystemTimeSource::new(),
                    ))
                    .region(sts_region.clone())
                    .behavior_version(aws_config::BehaviorVersion::latest());
                // The SDK's own variables for another STS endpoint (a VPC endpoint, a test server).
                if let Some(endpoint) = ["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"]
                    .iter()
                    .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
                {
                    sdk = sdk.endpoint_url(endpoint);
                }
                let sdk = sdk.build();
                let mut builder = aws_config::sts::AssumeRoleProvider::builder(role).configure(&sdk).region(sts_region);
                if let Some(id) = &auth.external_id {
                    builder = builder.external_id(id);
                }
                if let Some(name) = &auth.session_name {
                    builder = builder.session_name(name);
                }
                SharedCredentialsProvider::new(builder.build_from_provider(base).await)
            }
            None => base,
        };
        let timeout = Duration::from_secs(auth.load_timeout_secs.unwrap_or(5).max(1));
        Self { provider, cached: tokio::sync::Mutex::new(None), timeout }
    }

    /// Current credentials: the cached ones while they are fresh, else new ones.
    ///
    /// # Cancel safety
    /// Cancel safe (a refresh in progress is abandoned and tried again by the next caller).
    pub async fn get(&self) -> Result<Credentials, AwsError> {
        let mut cached = self.cached.lock().await;
        if let Some(creds) = cached.as_ref()
            && creds.expiry().is_none_or(|at| at > SystemTime::now() + REFRESH_BEFORE)
        {
            return Ok(creds.clone());
        }
        let fresh = tokio::time::timeout(self.timeout, self.provider.provide_credentials())
            .await
            .map_err(|_| AwsError::Credentials(format!("none found within {:?}", self.timeout)))?
            .map_err(|e| AwsError::Credentials(crate::error_chain(&e)))?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}
