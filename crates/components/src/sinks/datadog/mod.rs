//! The Datadog sinks (`datadog_logs`, `datadog_metrics`) and what they share: the site and
//! endpoint, and the API key of each event.
//!
//! An event's key is its secret `datadog_api_key` (VRL: `set_secret("datadog_api_key", …)`),
//! else the sink's `default_api_key`. Events are partitioned by key, so one tenant's bad key
//! (a 403) fails only that tenant's batches: they are dead-lettered whole, in one step, and
//! every other key keeps flowing.

pub mod logs;
pub mod metrics;

use sluice_core::LogEvent;
use sluice_core::component::ConfigIssue;

use super::http_api;

/// The event secret holding a per-event API key (Vector's name).
pub const API_KEY_SECRET: &str = "datadog_api_key";

/// Fields every Datadog sink has (each config lists them itself: serde cannot flatten into
/// a config that refuses unknown fields).
#[derive(Debug, Clone, Default)]
pub struct DatadogCommon {
    /// The key for events that carry none.
    pub default_api_key: Option<String>,
    /// The Datadog site. Default: `DD_SITE`, else `datadoghq.com`.
    pub site: Option<String>,
    /// A base URL that replaces the site's intake (a proxy, a test server).
    pub endpoint: Option<String>,
}

impl DatadogCommon {
    /// `endpoint`, else `https://<intake prefix>.<site>`.
    pub fn base_url(&self, intake: &str) -> Result<String, ConfigIssue> {
        match &self.endpoint {
            Some(endpoint) => http_api::base_url("endpoint", endpoint),
            None => {
                let site = self
                    .site
                    .clone()
                    .or_else(|| std::env::var("DD_SITE").ok())
                    .unwrap_or_else(|| "datadoghq.com".to_owned());
                http_api::base_url("site", &format!("https://{intake}.{site}"))
            }
        }
    }

    /// The key of `event`: its secret, else the default.
    pub fn api_key(&self, event: &LogEvent) -> Result<String, String> {
        match event.secret(API_KEY_SECRET).or(self.default_api_key.as_deref()) {
            Some(key) if !key.is_empty() => Ok(key.to_owned()),
            _ => Err(format!("no Datadog API key: set `default_api_key`, or the event's `{API_KEY_SECRET}` secret")),
        }
    }

    pub fn check(&self, intake: &str) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Some(key) = &self.default_api_key
            && http::HeaderValue::try_from(key.as_str()).is_err()
        {
            issues.push(ConfigIssue::new("default_api_key", "has characters a header cannot carry"));
        }
        issues.extend(self.base_url(intake).err());
        issues
    }
}
