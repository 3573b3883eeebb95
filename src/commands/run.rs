//! Running a pipeline: load and check the config (same path as `validate`), build, run until
//! a signal or the end of every source, drain, report the ledger, exit non-zero if any event
//! ended failed.

use std::time::Duration;

use sluice_core::ledger::LedgerSnapshot;
use std::path::Path;

use sluice_runtime::config::LoadOptions;
use sluice_runtime::topology::{self, RunOptions, RunReport, StartError};
use sluice_runtime::{Graph, config};

use super::{EXIT_CONFIG, load_options, report};
use crate::cli::RunArgs;

pub fn run(args: &RunArgs) -> u8 {
    let registry = sluice_components::registry();
    let graph = match config::load(&load_options(&args.config, &[]), &registry) {
        Ok((graph, warnings)) => {
            for w in &warnings {
                tracing::warn!("{w}");
            }
            graph
        }
        Err(diagnostics) => {
            report(&diagnostics);
            return EXIT_CONFIG;
        }
    };
    let options = load_options(&args.config, &[]);
    let watch = args.watch_config.then(|| match args.watch_config_method {
        crate::cli::WatchMethod::Poll => Duration::from_secs(args.watch_config_poll_interval_seconds.max(1)),
        crate::cli::WatchMethod::Recommended => Duration::from_secs(1),
    });
    let reloading = Reloading { options, watch };
    let limit = args.graceful_shutdown_limit_secs;
    run_graph(graph, limit, args.ledger_json.as_deref(), args.threads, Some(reloading), args.require_healthy)
}

/// How a running pipeline reloads its config (SIGHUP, `POST /reload`, `--watch-config`).
pub struct Reloading {
    /// Where the config was read from; read again on each reload.
    pub options: LoadOptions,
    /// `--watch-config`: how often to look at the files.
    pub watch: Option<Duration>,
}

/// Runs a checked graph to the end (a signal, or every source finished): the ledger is logged
/// and optionally written to `ledger_json`; the exit code says whether every event is safe.
pub fn run_graph(
    graph: Graph,
    graceful_shutdown_limit_secs: u64,
    ledger_json: Option<&Path>,
    threads: Option<u16>,
    reloading: Option<Reloading>,
    require_healthy: bool,
) -> u8 {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = threads {
        builder.worker_threads(usize::from(threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "Cannot start the async runtime.");
            return 1;
        }
    };
    let options =
        RunOptions { graceful_shutdown_limit: Duration::from_secs(graceful_shutdown_limit_secs), require_healthy };
    let api_address = graph.globals.api_address.clone();
    // The handlers are installed before anything is built: a SIGTERM that arrives while the
    // last components start (a source may already be answering) still drains, never kills.
    let (shutdown, reloads, requests) = {
        let _context = runtime.enter();
        let shutdown = shutdown_signal();
        let (reloads_tx, reloads) = tokio::sync::mpsc::channel(1);
        let mut requests = None;
        if let Some(reloading) = reloading {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            if let Err(err) = crate::reload::on_sighup(tx.clone()) {
                tracing::error!(error = %err, "Cannot listen for SIGHUP; reload by signal is off.");
            }
            if let Some(every) = reloading.watch {
                tracing::info!(every_secs = every.as_secs_f64(), "Watching the config files for changes.");
                crate::reload::watch(reloading.options.clone(), every, tx.clone());
            }
            tokio::spawn(crate::reload::serve(reloading.options, rx, reloads_tx));
            requests = Some(tx);
        }
        (shutdown, reloads, requests)
    };
    let result =
        runtime.block_on(topology::run(graph, options, shutdown, reloads, |ledger, taps| match &api_address {
            Some(address) => crate::api::start(address, ledger.clone(), taps.clone(), requests.clone())
                .map_err(|err| format!("the API (api.address = {address}): cannot listen: {err}")),
            None => Ok(()),
        }));
    let report = match result {
        Ok(report) => report,
        Err(StartError::Build(errors)) => {
            for e in errors {
                tracing::error!("Cannot start {e}");
            }
            return 1;
        }
        Err(StartError::Unhealthy(failures)) => {
            for e in &failures {
                tracing::error!("Not starting: {e}");
            }
            tracing::error!(
                failed = failures.len(),
                "Healthchecks failed and are required (--require-healthy); exiting."
            );
            return EXIT_CONFIG;
        }
    };
    log_ledger(&report.ledger);
    if let Some(path) = ledger_json
        && let Err(err) = write_ledger(path, &report.ledger)
    {
        tracing::error!(path = %path.display(), error = %err, "Cannot write the ledger file.");
        return 1;
    }
    // Do not wait for blocking reads (stdin) that will never finish.
    runtime.shutdown_timeout(Duration::from_millis(100));
    exit_code(&report)
}

fn exit_code(report: &RunReport) -> u8 {
    if report.is_clean() {
        return 0;
    }
    let failed = report.ledger.failed_events();
    let in_flight: i64 = report.ledger.components.iter().map(|c| c.in_flight).sum();
    tracing::error!(
        failed_events = failed,
        in_flight_at_exit = in_flight,
        timed_out = report.timed_out,
        failed_components = ?report.failed_components,
        balanced = report.ledger.balanced,
        "Pipeline ended with events that are not safe."
    );
    1
}

fn log_ledger(ledger: &LedgerSnapshot) {
    for c in &ledger.components {
        tracing::info!(
            component_id = c.id.as_str(),
            kind = c.kind.as_str(),
            received = c.received,
            sent = c.sent,
            discarded = c.discarded_total,
            dead_lettered = c.dead_lettered,
            errored = c.errored,
            in_flight = c.in_flight,
            balanced = c.balanced,
            "Ledger."
        );
    }
    for c in ledger.components.iter().filter(|c| c.in_flight > 0 && c.kept_on_disk() > 0) {
        tracing::warn!(
            component_id = c.id.as_str(),
            events = c.kept_on_disk(),
            "Events stay in this sink's disk buffer; they are delivered after the next start."
        );
    }
    if ledger.unresolved_drops > 0 {
        tracing::error!(unresolved = ledger.unresolved_drops, "Event copies were dropped without an outcome.");
    }
}

fn write_ledger(path: &std::path::Path, ledger: &LedgerSnapshot) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(ledger).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// Registers for SIGTERM and SIGINT now (inside the runtime's context); the future resolves
/// when either arrives.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = signal(SignalKind::terminate()).and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
    async move {
        let (mut term, mut int) = match handlers {
            Ok(handlers) => handlers,
            Err(err) => {
                tracing::error!(error = %err, "Cannot listen for SIGTERM and SIGINT.");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received."),
            _ = term.recv() => tracing::info!("SIGTERM received."),
        }
    }
}
