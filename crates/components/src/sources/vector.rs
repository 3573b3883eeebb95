//! `vector`: events from Vector agents (or sluice `vector` sinks) over Vector's native
//! protocol, version 2 (gRPC `vector.Vector/PushEvents` and `HealthCheck`, HTTP/2, optionally
//! TLS). See [`crate::vector_protocol`].
//!
//! With acknowledgements (the default), a `PushEvents` call is answered only once every event
//! of it is delivered or stored on this side; a failure answers `UNAVAILABLE`, so the sender
//! sends again. Metric and trace events are not supported yet: they are counted as discarded
//! (`unsupported_event_type`) and reported.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::ack::{BatchNotifier, EventFinalizer, Outcome};
use sluice_core::component::{BuildError, ConfigIssue, GlobalOptions, SourceConfig, SourceContext, SourceTask};
use sluice_core::event::{EventMetadata, resolve_all};
use sluice_core::ledger::ComponentLedger;
use sluice_core::{Chunk, LogEvent};
use sluice_net::TlsConfig;
use sluice_net::server::{Acceptor, TlsIncoming};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, UnaryService};
use vrl::value::Value;

use super::{TlsListener, count_rejected, forwarder, handshake_failed};
use crate::vector_protocol::{
    self as proto, Event, HealthCheckRequest, HealthCheckResponse, PushEventsRequest, PushEventsResponse, ServerCodec,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorSourceConfig {
    /// Required: `ip:port` to listen on.
    pub address: SocketAddr,
    /// `"2"` (the only version Vector still speaks). Default `"2"`.
    pub version: Option<String>,
    pub tls: Option<TlsConfig>,
    /// Accepted; connections are kept as long as the sender keeps them.
    pub keepalive: Option<serde_json::Value>,
}

/// How long a TLS client has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl SourceConfig for VectorSourceConfig {
    fn can_acknowledge(&self) -> bool {
        true
    }

    fn check(&self, _globals: &GlobalOptions) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Some(version) = self.version.as_deref().filter(|v| *v != "2") {
            issues.push(ConfigIssue::new("version", format!("`{version}` is not supported; only version \"2\" is")));
        }
        if let Some(tls) = self.tls.as_ref().filter(|t| t.is_enabled()) {
            issues.extend(tls.check("tls", true));
        }
        issues
    }

    fn warnings(&self) -> Vec<ConfigIssue> {
        self.tls.as_ref().map(|tls| tls.server_warnings("tls")).unwrap_or_default()
    }

    fn build(&self, cx: SourceContext) -> Result<SourceTask, BuildError> {
        let bind = |e: std::io::Error| BuildError(format!("cannot listen on {}: {e}", self.address));
        // Kept across a reload that replaces this source.
        let (listener, lease) = sluice_core::listeners::take(self.address).map_err(bind)?;
        let tls = match self.tls.as_ref().filter(|t| t.is_enabled()) {
            Some(tls) => {
                // gRPC is HTTP/2: offered by ALPN unless the config names protocols itself.
                let mut tls = tls.clone();
                tls.alpn_protocols.get_or_insert_with(|| vec!["h2".to_owned()]);
                Some(tls.server_config().map_err(|e| BuildError(format!("tls.{e}")))?)
            }
            None => None,
        };
        let SourceContext { id, out, mut shutdown, acknowledgements, .. } = cx;
        Ok(Box::pin(async move {
            let (tx, ledger, forward) = forwarder(out);
            let shared = Arc::new(Shared { id, tx, ledger: ledger.clone(), acknowledgements });
            let app = axum::Router::new()
                .route(proto::PUSH_EVENTS, axum::routing::post(push_events))
                .route(proto::HEALTH_CHECK, axum::routing::post(health_check))
                .with_state(shared);
            let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
                tracing::error!(error = %e, "Cannot register the listener.");
            })?;
            let stop = async move { shutdown.wait().await };
            let served = match tls {
                None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
                Some(tls) => {
                    let acceptor = Acceptor::new(tls, TLS_HANDSHAKE_TIMEOUT);
                    let incoming = TlsIncoming::new(listener, acceptor, handshake_failed(ledger)).map_err(|e| {
                        tracing::error!(error = %e, "Cannot register the listener.");
                    })?;
                    axum::serve(TlsListener(incoming), app).with_graceful_shutdown(stop).await
                }
            };
            if let Err(err) = &served {
                tracing::error!(error = %err, "gRPC server failed.");
            }
            let _ = forward.await;
            drop(lease);
            served.map_err(|_| ())
        }))
    }
}

struct Shared {
    id: Arc<str>,
    tx: mpsc::Sender<Chunk>,
    ledger: Arc<ComponentLedger>,
    acknowledgements: bool,
}

async fn push_events(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> axum::response::Response {
    let mut grpc = Grpc::new(ServerCodec::<PushEventsRequest, PushEventsResponse>::default())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    grpc.unary(Push(shared), request).await.map(axum::body::Body::new)
}

async fn health_check(State(shared): State<Arc<Shared>>, request: axum::extract::Request) -> axum::response::Response {
    let mut grpc = Grpc::new(ServerCodec::<HealthCheckRequest, HealthCheckResponse>::default());
    grpc.unary(Health(shared), request).await.map(axum::body::Body::new)
}

struct Health(Arc<Shared>);

impl UnaryService<HealthCheckRequest> for Health {
    type Response = HealthCheckResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<HealthCheckResponse>, Status>>;

    fn call(&mut self, _request: tonic::Request<HealthCheckRequest>) -> Self::Future {
        let status = if self.0.tx.is_closed() { proto::NOT_SERVING } else { proto::SERVING };
        Box::pin(async move { Ok(tonic::Response::new(HealthCheckResponse { status })) })
    }
}

struct Push(Arc<Shared>);

impl UnaryService<PushEventsRequest> for Push {
    type Response = PushEventsResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<PushEventsResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<PushEventsRequest>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move {
            shared.push(request.into_inner()).await.map(|()| tonic::Response::new(PushEventsResponse {}))
        })
    }
}

impl Shared {
    /// Hands the request's logs on and, with acknowledgements, waits for their outcome.
    async fn push(&self, request: PushEventsRequest) -> Result<(), Status> {
        self.ledger.received_bytes(prost::Message::encoded_len(&request));
        let (notifier, mut receiver) = BatchNotifier::with_receiver();
        let mut meta = EventMetadata::new(&self.id, chrono::Utc::now());
        if self.acknowledgements {
            meta.set_finalizer(EventFinalizer::new(notifier));
        } else {
            drop(notifier);
        }
        let mut chunk = Vec::with_capacity(request.events.len());
        let mut unsupported = 0;
        for wrapper in request.events {
            match wrapper.event {
                Some(Event::Log(log)) => {
                    let value = match log.value {
                        Some(value) => proto::from_proto(value),
                        None => Value::Object(proto::from_fields(log.fields)),
                    };
                    chunk.push(LogEvent::from_value(value, meta.clone()));
                }
                Some(Event::Metric(_) | Event::Trace(_)) => unsupported += 1,
                None => {}
            }
        }
        // The template's own reference never became an event.
        meta.set_finalizer(EventFinalizer::default());
        drop(meta);
        if unsupported > 0 {
            count_rejected(
                &self.ledger,
                unsupported,
                "unsupported_event_type",
                "metric and trace events are not supported by the vector source yet",
            );
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if let Err(err) = self.tx.send(chunk).await {
            count_rejected(&self.ledger, err.0.len(), "shutting_down", "events arrived while the source was stopping");
            resolve_all(err.0, Outcome::Failed);
            return Err(Status::unavailable("shutting down; send again"));
        }
        if !self.acknowledgements {
            return Ok(());
        }
        match receiver.wait().await {
            Outcome::Failed => Err(Status::unavailable("events were not delivered or stored; send again")),
            _ => Ok(()),
        }
    }
}
