//! `prometheus_exporter`: metrics over Prometheus's pull protocol. It accepts metric events
//! only, so the graph check rejects logs sent to it. sluice has no source of metric events
//! yet, so building it is an error until `internal_metrics` exists.

use std::net::SocketAddr;

use serde::Deserialize;
use sluice_core::component::{BuildError, DataType, Sink, SinkConfig, SinkContext};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporterConfig {
    /// Default `0.0.0.0:9598`.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    pub default_namespace: Option<String>,
    pub buckets: Option<Vec<f64>>,
    pub quantiles: Option<Vec<f64>>,
    #[serde(default)]
    pub distributions_as_summaries: bool,
    /// Default 60.
    pub flush_period_secs: Option<u64>,
    #[serde(default)]
    pub suppress_timestamp: bool,
}

fn default_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9598))
}

impl SinkConfig for PrometheusExporterConfig {
    fn input_type(&self) -> DataType {
        DataType::METRIC
    }

    fn build(&self, _cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        Err(BuildError("metric events are not available yet; no source produces them".into()))
    }
}
