//! Live reload of a running pipeline: SIGHUP, `--watch-config` and the API's `POST /reload`
//! all ask the reloader, which reads and checks the config the pipeline was started with
//! (same files, same environment variables, read again) and hands a good one to the
//! topology. A config with errors is refused with every error logged; the running pipeline
//! stays as it is.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use sluice_runtime::config::{self, LoadOptions};
use sluice_runtime::{Reload, ReloadSummary};
use tokio::sync::{mpsc, oneshot};

/// What a reload answers: what changed, or why nothing did.
pub type Outcome = Result<ReloadSummary, Vec<String>>;

/// One request to reload, with where to send the outcome.
pub struct Request {
    pub cause: &'static str,
    pub reply: Option<oneshot::Sender<Outcome>>,
}

/// Asks for reloads; cheap to clone.
pub type Requests = mpsc::UnboundedSender<Request>;

/// Serves reload requests until every sender is gone or the topology stops taking reloads.
pub async fn serve(
    options: LoadOptions,
    mut requests: mpsc::UnboundedReceiver<Request>,
    topology: mpsc::Sender<Reload>,
) {
    let registry = sluice_components::registry();
    while let Some(request) = requests.recv().await {
        tracing::info!(cause = request.cause, "Reloading the config.");
        let outcome = match config::load(&options, &registry) {
            Err(diagnostics) => {
                let errors: Vec<String> =
                    diagnostics.iter().filter(|d| d.is_error()).map(|d| d.to_string().trim().to_owned()).collect();
                for error in &errors {
                    tracing::error!("{error}");
                }
                tracing::error!(
                    errors = errors.len(),
                    "Reload refused: the config has errors; the pipeline runs on unchanged."
                );
                Err(errors)
            }
            Ok((graph, warnings)) => {
                for w in &warnings {
                    tracing::warn!("{w}");
                }
                let (reply, outcome) = oneshot::channel();
                if topology.send(Reload { graph, reply }).await.is_err() {
                    return;
                }
                match outcome.await {
                    Ok(outcome) => {
                        log(&outcome);
                        outcome
                    }
                    Err(_) => return,
                }
            }
        };
        if let Some(reply) = request.reply {
            let _ = reply.send(outcome);
        }
    }
}

fn log(outcome: &Outcome) {
    match outcome {
        Ok(summary) if summary.is_empty() => tracing::info!("Reload: the config did not change."),
        Ok(summary) => {
            tracing::info!(
                added = ?summary.added,
                changed = ?summary.changed,
                removed = ?summary.removed,
                rewired = ?summary.rewired,
                "Reload applied."
            );
            if !summary.failed.is_empty() {
                tracing::error!(failed = ?summary.failed, "Reload: some components could not start; the rest runs.");
            }
            if !summary.slow.is_empty() {
                tracing::warn!(
                    components = ?summary.slow,
                    "Reload: these did not finish draining within the graceful limit; what they hold shows as in flight."
                );
            }
        }
        Err(errors) => {
            for error in errors {
                tracing::error!("Reload refused: {error}");
            }
        }
    }
}

/// Reloads on SIGHUP. Registered at once, so a SIGHUP never kills the process.
pub fn on_sighup(requests: Requests) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if requests.send(Request { cause: "SIGHUP", reply: None }).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Every config file `options` names (directories walked two levels deep), with its
/// modification time and size: a change in any of them is a config change.
fn signature(options: &LoadOptions) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    fn stat(path: PathBuf, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
        let meta = std::fs::metadata(&path).ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        out.push((path, modified, meta.map_or(0, |m| m.len())));
    }
    fn walk(dir: &std::path::Path, depth: usize, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                if depth > 0 {
                    walk(&path, depth - 1, out);
                }
            } else {
                stat(path, out);
            }
        }
    }
    let mut out = Vec::new();
    for path in options.config_paths.iter().chain(options.typed_paths.iter().map(|(p, _)| p)) {
        stat(path.clone(), &mut out);
    }
    for dir in &options.config_dirs {
        walk(dir, 2, &mut out);
    }
    out
}

/// `--watch-config`: looks at the config files every `every` and asks for a reload when one
/// changed (once the change has stayed for one more look, so a file half written by an
/// editor is not read).
pub fn watch(options: LoadOptions, every: Duration, requests: Requests) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = signature(&options);
        let mut pending: Option<Vec<_>> = None;
        loop {
            ticks.tick().await;
            let now = signature(&options);
            if now == seen {
                pending = None;
                continue;
            }
            if pending.as_ref() == Some(&now) {
                seen = now;
                pending = None;
                if requests.send(Request { cause: "config file changed", reply: None }).is_err() {
                    return;
                }
            } else {
                pending = Some(now);
            }
        }
    });
}
