//! The built-in HTTP API (`api.enabled = true`, `api.address`, default `127.0.0.1:8686`):
//! `/metrics` (the ledger as Prometheus text), `/ledger` (the same as JSON, what `sluice top`
//! reads), `/tap` (a live sample of events, what `sluice tap` reads), `/health`, and
//! `POST /reload` (read the config again and apply it; see `crate::reload`).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use sluice_core::ledger::Ledger;
use sluice_runtime::tap::{Subscription, Taps};

/// Binds `address` now (so a bad address fails start-up) and serves until the process ends.
pub fn start(
    address: &str,
    ledger: Ledger,
    taps: Taps,
    reloads: Option<crate::reload::Requests>,
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let metrics = ledger.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let text = sluice_runtime::metrics::render(&metrics.snapshot());
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
            }),
        )
        .route(
            "/ledger",
            get(move || {
                let json = serde_json::to_vec(&ledger.snapshot()).unwrap_or_default();
                async move { ([(CONTENT_TYPE, "application/json")], json) }
            }),
        )
        .route("/tap", get(move |query: Query<TapQuery>| tap(taps.clone(), query.0)))
        .route("/reload", post(move || reload(reloads.clone())))
        .route("/health", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "The API server stopped.");
        }
    });
    tracing::info!(address, "API listening (/metrics, /ledger, /tap, /health, POST /reload).");
    Ok(())
}

/// `POST /reload`: 200 with what changed (`added`, `changed`, `removed`, `rewired`); 400 with
/// `errors` when the config is refused (the pipeline runs on unchanged); 500 with the same
/// summary when some component could not start (`failed`).
async fn reload(requests: Option<crate::reload::Requests>) -> Response {
    let json = |status: StatusCode, body: serde_json::Value| {
        (status, [(CONTENT_TYPE, "application/json")], body.to_string() + "\n").into_response()
    };
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let asked =
        requests.is_some_and(|r| r.send(crate::reload::Request { cause: "POST /reload", reply: Some(reply) }).is_ok());
    if !asked {
        return json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "errors": ["this sluice does not reload"] }));
    }
    match outcome.await {
        Ok(Ok(summary)) => {
            let status = if summary.failed.is_empty() { StatusCode::OK } else { StatusCode::INTERNAL_SERVER_ERROR };
            json(status, serde_json::to_value(&summary).unwrap_or_default())
        }
        Ok(Err(errors)) => json(StatusCode::BAD_REQUEST, serde_json::json!({ "errors": errors })),
        Err(_) => {
            json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({ "errors": ["the pipeline is shutting down"] }))
        }
    }
}

/// `/tap?outputs_of=a,b*&inputs_of=c&limit=100&interval_ms=500`.
#[derive(Debug, serde::Deserialize)]
struct TapQuery {
    outputs_of: Option<String>,
    inputs_of: Option<String>,
    /// Events per interval. Default 100.
    limit: Option<u64>,
    /// Default 500.
    interval_ms: Option<u64>,
}

fn globs(list: Option<&str>) -> Vec<String> {
    list.unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect()
}

/// Streams JSON lines: first `{"tapping": [outputs]}`, then one line per sampled event
/// (`component_id`, `component_kind`, `component_type`, `port`, `event`), and
/// `{"tap_dropped": n}` whenever samples were lost because this client read too slowly.
async fn tap(taps: Taps, query: TapQuery) -> Response {
    let (outputs_of, inputs_of) = (globs(query.outputs_of.as_deref()), globs(query.inputs_of.as_deref()));
    let (outputs_of, inputs_of) = if outputs_of.is_empty() && inputs_of.is_empty() {
        (vec!["*".to_owned()], inputs_of)
    } else {
        (outputs_of, inputs_of)
    };
    let limit = query.limit.unwrap_or(100).max(1);
    let interval = Duration::from_millis(query.interval_ms.unwrap_or(500));
    let Some(subscription) = taps.subscribe(&outputs_of, &inputs_of, limit, interval) else {
        let message = format!("no component output matches outputs_of={outputs_of:?} inputs_of={inputs_of:?}\n");
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    let header = serde_json::json!({ "tapping": subscription.tapped }).to_string() + "\n";
    let first = futures::stream::once(async move { Ok::<Bytes, Infallible>(Bytes::from(header)) });
    let rest = futures::stream::unfold((subscription, 0u64), |(mut sub, reported): (Subscription, u64)| async move {
        let sample = sub.samples.recv().await?;
        let mut out = Vec::with_capacity(256 * sample.events.len());
        let meta = serde_json::json!({
            "component_id": sample.point.component,
            "component_kind": sample.point.kind,
            "component_type": sample.point.component_type,
            "port": sample.point.port,
        })
        .to_string();
        for event in &sample.events {
            // `{...meta, "event": <event>}`
            out.extend_from_slice(&meta.as_bytes()[..meta.len() - 1]);
            out.extend_from_slice(b",\"event\":");
            sluice_core::json::write_value(&mut out, event.value());
            out.extend_from_slice(b"}\n");
        }
        let dropped = sub.dropped.load(Ordering::Relaxed);
        if dropped > reported {
            out.extend_from_slice(format!("{{\"tap_dropped\":{dropped}}}\n").as_bytes());
        }
        Some((Ok::<Bytes, Infallible>(Bytes::from(out)), (sub, dropped)))
    });
    ([(CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(futures::StreamExt::chain(first, rest)))
        .into_response()
}
