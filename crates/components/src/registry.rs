//! THE list of every component type. Adding a component is one line here.

use sluice_core::component::{ComponentSpec, parse_sink, parse_source, parse_transform};
use sluice_core::ledger::ComponentKind::{Sink, Source, Transform};

use crate::sinks::aws::s3::S3SinkConfig;
use crate::sinks::aws::sqs::SqsSinkConfig;
use crate::sinks::azure_blob::AzureBlobConfig;
use crate::sinks::clickhouse::ClickhouseConfig;
use crate::sinks::datadog::logs::DatadogLogsConfig;
use crate::sinks::datadog::metrics::DatadogMetricsConfig;
use crate::sinks::elasticsearch::ElasticsearchConfig;
use crate::sinks::gcp_cloud_storage::GcsSinkConfig;
use crate::sinks::kafka::KafkaSinkConfig;
use crate::sinks::loki::LokiConfig;
use crate::sinks::socket::SocketSinkConfig;
use crate::sinks::splunk_hec::SplunkHecLogsConfig;
use crate::sinks::vector::VectorSinkConfig;
use crate::sinks::{
    blackhole::BlackholeConfig, console::ConsoleConfig, file::FileConfig, http::HttpSinkConfig,
    prometheus_exporter::PrometheusExporterConfig,
};
use crate::sources::{
    dead_letter::DeadLetterSourceConfig, demo_logs::DemoLogsConfig, file::FileSourceConfig,
    http_server::HttpServerConfig, internal_metrics::InternalMetricsConfig, kafka::KafkaSourceConfig,
    kubernetes_logs::KubernetesLogsConfig, socket::SocketConfig, stdin::StdinConfig, syslog::SyslogConfig,
    vector::VectorSourceConfig,
};
use crate::transforms::{
    filter::FilterConfig, log_to_metric::LogToMetricConfig, remap::RemapConfig, route::RouteConfig,
};

/// Every component type sluice knows, sources first.
pub fn registry() -> Vec<ComponentSpec> {
    vec![
        ComponentSpec {
            kind: Source,
            type_name: "dead_letter",
            aliases: &[],
            summary: "Events from the disk dead-letter queue, for replay",
            parse: parse_source::<DeadLetterSourceConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "demo_logs",
            aliases: &[],
            summary: "Generated events in common log formats",
            parse: parse_source::<DemoLogsConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "file",
            aliases: &[],
            summary: "Lines of files, tailed; positions move only for acknowledged lines",
            parse: parse_source::<FileSourceConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "http_server",
            aliases: &["http"],
            summary: "Events from HTTP requests, answered after delivery",
            parse: parse_source::<HttpServerConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "internal_metrics",
            aliases: &[],
            summary: "sluice's own counters and gauges as metric events",
            parse: parse_source::<InternalMetricsConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "kafka",
            aliases: &[],
            summary: "Messages from Kafka topics in a consumer group; offsets committed only past delivered events",
            parse: parse_source::<KafkaSourceConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "kubernetes_logs",
            aliases: &[],
            summary: "Pod logs of the node (CRI and Docker formats), partial lines merged",
            parse: parse_source::<KubernetesLogsConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "socket",
            aliases: &[],
            summary: "Lines over TCP, datagrams over UDP",
            parse: parse_source::<SocketConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "stdin",
            aliases: &[],
            summary: "Lines from standard input",
            parse: parse_source::<StdinConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "syslog",
            aliases: &[],
            summary: "RFC 5424 and RFC 3164 messages over TCP, UDP or a Unix socket; unparsable lines dead-lettered",
            parse: parse_source::<SyslogConfig>,
        },
        ComponentSpec {
            kind: Source,
            type_name: "vector",
            aliases: &[],
            summary: "Events from Vector agents or sluice over Vector's protocol (v2); answered once delivered or stored",
            parse: parse_source::<VectorSourceConfig>,
        },
        ComponentSpec {
            kind: Transform,
            type_name: "filter",
            aliases: &[],
            summary: "Keep events matching a VRL condition",
            parse: parse_transform::<FilterConfig>,
        },
        ComponentSpec {
            kind: Transform,
            type_name: "log_to_metric",
            aliases: &[],
            summary: "Metric events made from log fields, carrying the log's acknowledgement",
            parse: parse_transform::<LogToMetricConfig>,
        },
        ComponentSpec {
            kind: Transform,
            type_name: "remap",
            aliases: &[],
            summary: "Change events with a VRL program",
            parse: parse_transform::<RemapConfig>,
        },
        ComponentSpec {
            kind: Transform,
            type_name: "route",
            aliases: &[],
            summary: "Send events to named outputs by VRL conditions",
            parse: parse_transform::<RouteConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "aws_s3",
            aliases: &[],
            summary: "Batches of events as objects in an S3 bucket",
            parse: parse_sink::<S3SinkConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "aws_sqs",
            aliases: &[],
            summary: "Events as messages in an SQS queue",
            parse: parse_sink::<SqsSinkConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "azure_blob",
            aliases: &[],
            summary: "Batches of events as blobs in an Azure Storage container",
            parse: parse_sink::<AzureBlobConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "blackhole",
            aliases: &[],
            summary: "Accept and forget events",
            parse: parse_sink::<BlackholeConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "clickhouse",
            aliases: &[],
            summary: "Rows into a ClickHouse table; rows it cannot parse are isolated and dead-lettered",
            parse: parse_sink::<ClickhouseConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "console",
            aliases: &[],
            summary: "Events to standard output or error",
            parse: parse_sink::<ConsoleConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "datadog_logs",
            aliases: &[],
            summary: "Logs to Datadog, partitioned by API key so one bad key fails only its events",
            parse: parse_sink::<DatadogLogsConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "datadog_metrics",
            aliases: &[],
            summary: "Metrics to Datadog, aggregated per series; distributions sent with every sample",
            parse: parse_sink::<DatadogMetricsConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "elasticsearch",
            aliases: &[],
            summary: "Documents to Elasticsearch or OpenSearch with the bulk API, read item by item",
            parse: parse_sink::<ElasticsearchConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "file",
            aliases: &[],
            summary: "Events to files named by a template",
            parse: parse_sink::<FileConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "gcp_cloud_storage",
            aliases: &[],
            summary: "Batches of events as objects in a Cloud Storage bucket",
            parse: parse_sink::<GcsSinkConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "http",
            aliases: &[],
            summary: "Batches of events to an HTTP endpoint",
            parse: parse_sink::<HttpSinkConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "kafka",
            aliases: &[],
            summary: "Messages to a Kafka topic (idempotent, acks=all); refused messages are dead-lettered one by one",
            parse: parse_sink::<KafkaSinkConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "loki",
            aliases: &[],
            summary: "Log lines to Loki streams; entries Loki refuses are dead-lettered one by one",
            parse: parse_sink::<LokiConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "prometheus_exporter",
            aliases: &[],
            summary: "Metric events for Prometheus to scrape (no metric source yet)",
            parse: parse_sink::<PrometheusExporterConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "socket",
            aliases: &[],
            summary: "Events written to a TCP, UDP or Unix socket (delivered = handed to the kernel)",
            parse: parse_sink::<SocketSinkConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "splunk_hec_logs",
            aliases: &[],
            summary: "Events to Splunk's HTTP Event Collector, delivered once Splunk says they are indexed",
            parse: parse_sink::<SplunkHecLogsConfig>,
        },
        ComponentSpec {
            kind: Sink,
            type_name: "vector",
            aliases: &[],
            summary: "Events to a Vector aggregator or sluice over Vector's protocol (v2)",
            parse: parse_sink::<VectorSinkConfig>,
        },
    ]
}
