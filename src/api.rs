//! The built-in HTTP API (`api.enabled = true`, `api.address`, default `127.0.0.1:8686`):
//! `/metrics` (the ledger as Prometheus text), `/ledger` (the same as JSON, what `sluice top`
//! reads) and `/health`.

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use sluice_core::ledger::Ledger;

/// Binds `address` now (so a bad address fails start-up) and serves until the process ends.
pub fn start(address: &str, ledger: Ledger) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get({
                let ledger = ledger.clone();
                move || {
                    let text = sluice_runtime::metrics::render(&ledger.snapshot());
                    async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], text) }
                }
            }),
        )
        .route(
            "/ledger",
            get({
                let ledger = ledger.clone();
                move || {
                    let json = serde_json::to_vec(&ledger.snapshot()).unwrap_or_default();
                    async move { ([(CONTENT_TYPE, "application/json")], json) }
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "The API server stopped.");
        }
    });
    tracing::info!(address, "API listening (/metrics, /ledger, /health).");
    Ok(())
}
