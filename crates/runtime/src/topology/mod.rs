//! Topology: one task per component, bounded channels carrying chunks, fan-out, drain.
//!
//! Shutdown: when the external signal fires or every source has finished, sources are told to
//! stop; as each source's sender drops, the channels downstream close in turn, transforms
//! finish, and sinks flush and settle what they hold. Everything must settle within the
//! graceful limit; past it the remaining tasks are aborted and whatever they held shows as
//! `in_flight` (and unresolved) in the ledger, which makes the exit code non-zero.
//!
//! Reload: a checked graph sent on the reload channel is diffed against the running one and
//! applied between the run loop's other work (see [`reload`]).

mod build;
pub mod disk;
pub mod fanout;
mod reload;
mod transform;
pub mod watchdog;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_buffers::MemoryReceiver;
use sluice_core::Chunk;
use sluice_core::ack::Outcome;
use sluice_core::component::ChunkReceiver;
use sluice_core::ledger::{ComponentLedger, Ledger, LedgerSnapshot};
use tokio::sync::{mpsc, oneshot};

use crate::config::Graph;
use crate::tap::Taps;
use build::Topology;
use fanout::Diversions;

pub use reload::ReloadSummary;

/// A checked config to switch the running pipeline to; the outcome comes back on `reply`.
pub struct Reload {
    pub graph: Graph,
    pub reply: oneshot::Sender<Result<ReloadSummary, Vec<String>>>,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How long in-flight events may take to drain after shutdown starts.
    pub graceful_shutdown_limit: Duration,
    /// `--require-healthy`: sinks' healthchecks must pass before any source starts.
    pub require_healthy: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { graceful_shutdown_limit: Duration::from_secs(60), require_healthy: false }
    }
}

/// Why a pipeline did not start.
#[derive(Debug)]
pub enum StartError {
    /// A component could not be built (a port in use, a disk buffer that cannot be opened...).
    Build(Vec<String>),
    /// Healthchecks failed while they were required.
    Unhealthy(Vec<String>),
}

/// Runs `checks` at once, each within its limit, logging each outcome; returns the failures.
async fn check_health(checks: Vec<(String, Duration, sluice_core::component::Healthcheck)>) -> Vec<String> {
    let outcomes = futures::future::join_all(checks.into_iter().map(|(id, limit, check)| async move {
        let outcome = match tokio::time::timeout(limit, check).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {}s (healthcheck.timeout)", limit.as_secs_f64())),
        };
        match outcome {
            Ok(()) => {
                tracing::info!(component_id = id.as_str(), "Healthcheck passed.");
                None
            }
            Err(reason) => {
                tracing::error!(component_id = id.as_str(), error = reason.as_str(), "Healthcheck failed.");
                Some(format!("sink \"{id}\": healthcheck failed: {reason}"))
            }
        }
    }))
    .await;
    outcomes.into_iter().flatten().collect()
}

/// What a run ended with.
#[derive(Debug)]
pub struct RunReport {
    pub ledger: LedgerSnapshot,
    /// The drain did not finish within the graceful limit.
    pub timed_out: bool,
    /// Components whose task ended with an error.
    pub failed_components: Vec<String>,
}

impl RunReport {
    /// True when every event ended safe and every component ended cleanly.
    pub fn is_clean(&self) -> bool {
        !self.timed_out
            && self.failed_components.is_empty()
            && self.ledger.failed_events() == 0
            && self.ledger.balanced
            && self.ledger.components.iter().all(|c| c.in_flight == 0 || c.in_flight as u64 <= c.kept_on_disk())
    }
}

struct BufferInput {
    rx: MemoryReceiver<Chunk>,
    ack_on_arrival: bool,
}

impl ChunkReceiver for BufferInput {
    fn recv(&mut self) -> BoxFuture<'_, Option<Chunk>> {
        Box::pin(async move {
            let mut chunk = self.rx.recv().await?;
            if self.ack_on_arrival {
                for event in &mut chunk {
                    event.take_finalizer().resolve(Outcome::Delivered);
                }
            }
            Some(chunk)
        })
    }
}

/// Builds every component and runs the pipeline until `shutdown` fires or every source ends,
/// then drains. Build errors (a port in use...) are returned before anything runs. Reloads
/// arriving on `reloads` are applied in between.
///
/// `observe` is called once with the ledger before anything runs (the API serves it); an
/// error from it stops start-up.
pub async fn run(
    graph: Graph,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<Reload>,
    observe: impl FnOnce(&Ledger, &Taps) -> Result<(), String>,
) -> Result<RunReport, StartError> {
    let Graph { globals, components } = graph;
    let ledger = Ledger::default();
    // The ledger lists components in graph order.
    for c in &components {
        ledger.register(Arc::new(ComponentLedger::new(c.id.clone(), c.kind, c.type_name)));
    }
    let taps = Taps::new(
        components.iter().map(|c| (c.id.clone(), c.inputs.iter().map(ToString::to_string).collect())).collect(),
    );
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let mut topology = Topology {
        globals,
        options: options.clone(),
        ledger,
        taps,
        diversions: Diversions::default(),
        ready,
        interrupted: false,
        live: BTreeMap::new(),
        ports: BTreeMap::new(),
        sources: tokio::task::JoinSet::new(),
        others: tokio::task::JoinSet::new(),
        names: BTreeMap::new(),
        healthchecks: Vec::new(),
    };
    observe(&topology.ledger, &topology.taps).map_err(|e| StartError::Build(vec![e]))?;
    // Downstream first: each fan-out is made with the consumers of its readers. Sources
    // last, once the sinks' healthchecks passed if they must.
    let ranks = reload::ranks(components.iter().map(|c| (c.id.as_str(), &c.inputs)));
    let (sources, mut others): (Vec<_>, Vec<_>) =
        components.into_iter().partition(|c| c.kind == sluice_core::ledger::ComponentKind::Source);
    others.sort_by_key(|c| std::cmp::Reverse(ranks.get(c.id.as_str()).copied().unwrap_or(0)));
    let mut errors: Vec<String> = others.into_iter().filter_map(|c| topology.start(c).err()).collect();
    let checks = std::mem::take(&mut topology.healthchecks);
    let mut unhealthy = Vec::new();
    if errors.is_empty() && (options.require_healthy || topology.globals.require_healthy) {
        unhealthy = check_health(checks).await;
    } else {
        tokio::spawn(check_health(checks));
    }
    if errors.is_empty() && unhealthy.is_empty() {
        errors = sources.into_iter().filter_map(|c| topology.start(c).err()).collect();
    }
    if !errors.is_empty() || !unhealthy.is_empty() {
        topology.shut_down(false);
        topology.stop_housekeeping();
        topology.sources.abort_all();
        topology.others.abort_all();
        return Err(if errors.is_empty() { StartError::Unhealthy(unhealthy) } else { StartError::Build(errors) });
    }
    let _ = ready_tx.send(true);
    tracing::info!(components = topology.names.len(), "Pipeline started.");
    let watchdog = tokio::spawn(watchdog::run(topology.ledger.clone(), watchdog::EVERY, watchdog::THRESHOLD));

    let mut failed_components = Vec::new();
    let mut interrupted = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("Shutdown requested; stopping sources and draining (disk buffers keep their backlog).");
                interrupted = true;
                break;
            }
            next = topology.sources.join_next_with_id() => match next {
                Some(result) => record(&topology.names, &mut failed_components, result),
                None => {
                    tracing::info!("Every source has finished; draining.");
                    break;
                }
            },
            Some(request) = reloads.recv() => {
                // A shutdown asked for during a reload (one waiting on a sink that cannot
                // drain) is not kept waiting: the reload stops where it is, and the drain
                // below takes every component, old or new, that is still running.
                tokio::select! {
                    outcome = reload::apply(&mut topology, request.graph) => {
                        let _ = request.reply.send(outcome);
                        tokio::spawn(check_health(std::mem::take(&mut topology.healthchecks)));
                    }
                    () = &mut shutdown => {
                        tracing::info!("Shutdown requested during a reload; stopping it and draining.");
                        let _ = request.reply.send(Err(vec!["shutdown started during the reload".to_owned()]));
                        interrupted = true;
                        break;
                    }
                }
            }
        }
    }
    topology.shut_down(interrupted);
    let limit = options.graceful_shutdown_limit;
    let diversions = topology.diversions.clone();
    // When the sources' end started the drain, disk buffers are drained like memory ones, but
    // only for the sinks' drain time (half the limit): past it, what a disk buffer still holds
    // stays there for the next start, as after a signal, instead of being cut short untried.
    let mut keep_backlogs = std::pin::pin!(tokio::time::sleep(limit / 2));
    let mut backlogs_kept = interrupted;
    let drained = tokio::time::timeout(limit, async {
        while let Some(result) = topology.sources.join_next_with_id().await {
            record(&topology.names, &mut failed_components, result);
        }
        loop {
            tokio::select! {
                next = topology.others.join_next_with_id() => match next {
                    Some(result) => record(&topology.names, &mut failed_components, result),
                    None => break,
                },
                () = &mut keep_backlogs, if !backlogs_kept => {
                    topology.keep_disk_backlogs();
                    backlogs_kept = true;
                }
            }
        }
        // Stalled sinks' copies still on their way to the dead-letter queue.
        diversions.join().await;
    })
    .await;
    let timed_out = drained.is_err();
    if timed_out {
        tracing::error!(
            limit_secs = limit.as_secs_f64(),
            "Graceful shutdown limit reached; stopping components that still hold events."
        );
        sluice_core::ack::mark_aborting();
        topology.sources.abort_all();
        topology.others.abort_all();
        diversions.abort();
        while topology.sources.join_next().await.is_some() {}
        while topology.others.join_next().await.is_some() {}
    }
    topology.stop_housekeeping();
    watchdog.abort();
    Ok(RunReport { ledger: topology.ledger.snapshot(), timed_out, failed_components })
}

/// Notes a component whose task ended with an error (or panicked).
fn record(
    names: &BTreeMap<tokio::task::Id, String>,
    failed: &mut Vec<String>,
    result: Result<(tokio::task::Id, Result<(), ()>), tokio::task::JoinError>,
) {
    let (id, ok) = match result {
        Ok((id, r)) => (id, r.is_ok()),
        Err(err) => (err.id(), err.is_cancelled()),
    };
    if !ok {
        failed.push(names.get(&id).cloned().unwrap_or_default());
    }
}
