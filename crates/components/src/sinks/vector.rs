//! `vector`: events to a Vector aggregator (or a sluice `vector` source) over Vector's native
//! protocol, version 2 (gRPC `PushEvents` over HTTP/2, optionally TLS), on the shared sink
//! driver.
//!
//! Each event is encoded once, straight into its place in the request (a batch's encodings,
//! one after the other, are a whole `PushEventsRequest`). A batch is delivered when the
//! receiver answers `OK`; a receiver with acknowledgements answers only once the events are
//! delivered or stored on its side, so the acknowledgement crosses the hop.

use bytes::Bytes;
use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use serde::Deserialize;
use sluice_core::LogEvent;
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, Sink, SinkConfig, SinkContext, SinkInput};
use sluice_net::TlsConfig;
use sluice_net::server::Connector;
use tonic::Code;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use super::driver::{
    self, BatchConfig, CallResult, DriverSettings, EncodedBatch, PartitionKey, RequestConfig, Service,
};
use crate::vector_protocol::{self as proto, PushEventsResponse, RawCodec};

/// Vector's defaults: 1,000 events, 10 MB, 1 s.
const DEFAULT_BATCH_EVENTS: usize = 1_000;
const DEFAULT_BATCH_BYTES: usize = 10_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorSinkConfig {
    /// Required: `host:port` of the receiving Vector or sluice (`http://` or `https://` may
    /// be given).
    pub address: String,
    /// `"2"`. Default `"2"`.
    pub version: Option<String>,
    /// gzip the requests. Default false.
    #[serde(default)]
    pub compression: bool,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub request: RequestConfig,
    pub tls: Option<TlsConfig>,
}

impl VectorSinkConfig {
    /// TLS when `tls.enabled`, or when the address says `https://`.
    fn tls(&self) -> Option<TlsConfig> {
        match &self.tls {
            Some(tls) if tls.is_enabled() => Some(tls.clone()),
            tls if self.address.starts_with("https://") => Some(tls.clone().unwrap_or_default()),
            _ => None,
        }
    }

    /// `host:port` without a scheme.
    fn authority(&self) -> &str {
        self.address.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/')
    }

    fn uri(&self) -> String {
        let scheme = if self.tls().is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.authority())
    }
}

impl SinkConfig for VectorSinkConfig {
    fn batch_timeout_secs(&self) -> Option<f64> {
        Some(self.batch.timeout_secs.unwrap_or(1.0))
    }

    fn remote_batch_bytes(&self) -> Option<u64> {
        Some(self.batch.max_bytes.unwrap_or(DEFAULT_BATCH_BYTES) as u64)
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.authority().rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
            issues.push(ConfigIssue::new("address", format!("`{}` is not `host:port`", self.address)));
        } else if Endpoint::from_shared(self.uri()).is_err() {
            issues.push(ConfigIssue::new("address", format!("`{}` is not an address", self.address)));
        }
        if let Some(version) = self.version.as_deref().filter(|v| *v != "2") {
            issues.push(ConfigIssue::new("version", format!("`{version}` is not supported; only version \"2\" is")));
        }
        issues.extend(super::http_api::configured_headers(&self.request).err());
        if let Some(tls) = self.tls() {
            issues.extend(tls.check("tls", false));
        }
        issues
    }

    fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BuildError> {
        let endpoint = Endpoint::from_shared(self.uri()).map_err(|e| BuildError(format!("address: {e}")))?;
        let channel = match self.tls() {
            None => endpoint.connect_lazy(),
            Some(mut tls) => {
                tls.alpn_protocols.get_or_insert_with(|| vec!["h2".to_owned()]);
                let host = self.authority().rsplit_once(':').map_or(self.authority(), |(h, _)| h);
                let connector = std::sync::Arc::new(Connector::new(&tls, host).map_err(BuildError)?);
                let authority = self.authority().to_owned();
                endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri: http::Uri| {
                    let (connector, authority) = (connector.clone(), authority.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect(authority.as_str()).await?;
                        let _ = tcp.set_nodelay(true);
                        let stream = connector.connect(tcp).await.map_err(std::io::Error::other)?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
            }
        };
        let service = VectorService { channel, compression: self.compression };
        let settings =
            DriverSettings::new(&self.batch, &self.request, (Some(DEFAULT_BATCH_EVENTS), DEFAULT_BATCH_BYTES, 1.0));
        Ok(Box::new(VectorSink { settings, service, cx }))
    }
}

struct VectorSink {
    settings: DriverSettings,
    service: VectorService,
    cx: SinkContext,
}

impl Sink for VectorSink {
    fn run(self: Box<Self>, input: SinkInput) -> BoxFuture<'static, Result<(), ()>> {
        Box::pin(async move {
            let VectorSink { settings, service, cx } = *self;
            driver::run(service, settings, cx, input).await;
            Ok(())
        })
    }
}

struct VectorService {
    channel: Channel,
    compression: bool,
}

impl Service for VectorService {
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        proto::encode_request_item(event.value(), buf);
        Ok(())
    }

    fn call<'a>(&'a self, _key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        Box::pin(async move {
            let mut grpc = tonic::client::Grpc::new(self.channel.clone());
            if self.compression {
                grpc = grpc.send_compressed(CompressionEncoding::Gzip);
            }
            if let Err(e) = grpc.ready().await {
                return CallResult::no_answer(&e, "connection_failed");
            }
            let request = tonic::Request::new(Bytes::copy_from_slice(batch.as_bytes()));
            let path = PathAndQuery::from_static(proto::PUSH_EVENTS);
            let answer = grpc
                .unary::<Bytes, PushEventsResponse, _>(request, path, RawCodec::<PushEventsResponse>::default())
                .await;
            match answer {
                Ok(_) => CallResult::Delivered,
                Err(status) => classify(&status),
            }
        })
    }
}

/// How a gRPC status is read: the receiver's own errors are retried, errors about the
/// destination dead-letter the batch whole, a refused request is split.
fn classify(status: &tonic::Status) -> CallResult {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Ok => CallResult::Delivered,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            CallResult::Permanent { status: None, message }
        }
        Code::Unimplemented | Code::PermissionDenied | Code::Unauthenticated | Code::NotFound => {
            CallResult::DestinationError { status: None, message }
        }
        code => {
            let error_type = if code == Code::Unavailable && status.message().contains("connect") {
                "connection_failed"
            } else {
                "grpc_status"
            };
            CallResult::Retriable { status: None, message, retry_after: None, error_type }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_as_retriable_permanent_or_about_the_destination() {
        let retriable = classify(&tonic::Status::unavailable("events were not delivered or stored; send again"));
        assert!(matches!(retriable, CallResult::Retriable { .. }));
        assert!(matches!(classify(&tonic::Status::invalid_argument("bad")), CallResult::Permanent { .. }));
        assert!(matches!(
            classify(&tonic::Status::unimplemented("no such service")),
            CallResult::DestinationError { .. }
        ));
        assert!(matches!(classify(&tonic::Status::resource_exhausted("slow down")), CallResult::Retriable { .. }));
    }

    #[test]
    fn addresses_take_a_scheme_or_none() {
        let config = |address: &str, tls: bool| VectorSinkConfig {
            address: address.to_owned(),
            version: None,
            compression: false,
            batch: BatchConfig::default(),
            request: RequestConfig::default(),
            tls: tls.then(|| TlsConfig { enabled: Some(true), ..TlsConfig::default() }),
        };
        assert_eq!(config("agg:6000", false).uri(), "http://agg:6000");
        assert_eq!(config("agg:6000", true).uri(), "https://agg:6000");
        assert_eq!(config("https://agg:6000/", false).uri(), "https://agg:6000");
        assert!(!config("agg", false).check(&GlobalOptions::default()).is_empty());
    }
}
