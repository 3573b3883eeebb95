//! `sluice dlq replay`: a pipeline derived from the user's config. For each replayed sink:
//! a `dead_letter` source reading its DLQ → an optional `remap` with the `--fix` program →
//! that sink (or `--to`) with its settings from the config. Re-failures go back to the disk
//! DLQ (the replay graph has no `.dead_letter` consumers); confirmed records move to the
//! archive. `--dry-run` swaps the sink for JSON lines on stdout and the source changes nothing.

use std::path::PathBuf;

use serde_json::{Map, Value, json};
use sluice_buffers::dlq::store;
use sluice_runtime::config::{self, LoadOptions};

use super::dlq::data_dir;
use super::{EXIT_CONFIG, load_options, report};
use crate::cli::ReplayArgs;

const TABLES: [&str; 3] = ["sources", "transforms", "sinks"];

pub fn run(args: &ReplayArgs) -> Result<(), u8> {
    if args.place.config.config.is_empty() && args.place.config.config_dir.is_empty() {
        eprintln!("error: replay needs --config: the sink's settings come from it");
        return Err(2);
    }
    if let Some(rate) = args.rate
        && !(rate > 0.0 && rate.is_finite())
    {
        eprintln!("error: --rate must be a positive number of events per second");
        return Err(2);
    }
    let data_dir = data_dir(&args.place)?;
    let fix = match &args.fix {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|err| {
            eprintln!("error: cannot read {}: {err}", path.display());
            2u8
        })?),
        None => None,
    };
    let documents = config::read_documents(&load_options(&args.place.config, &[])).map_err(|d| {
        report(&d);
        EXIT_CONFIG
    })?;
    let selected = if args.sink.is_empty() {
        let summaries = store::summarize(&data_dir).map_err(|err| {
            eprintln!("error: cannot read the DLQ under {}: {err}", data_dir.display());
            1u8
        })?;
        summaries.into_iter().filter(|s| s.events > 0).map(|s| s.sink_id).collect()
    } else {
        args.sink.clone()
    };
    if selected.is_empty() {
        println!("The DLQ under {} is empty: nothing to replay.", data_dir.display());
        return Ok(());
    }
    let document = replay_document(args, &documents, &data_dir, &selected, fix.as_deref())?;
    let options = LoadOptions { documents: vec![(PathBuf::from("<dlq replay>"), document)], ..LoadOptions::default() };
    let graph = match config::load(&options, &sluice_components::registry()) {
        Ok((graph, _)) => graph,
        Err(diagnostics) => {
            eprintln!("error: the replay pipeline derived from the config is not valid:");
            report(&diagnostics);
            return Err(EXIT_CONFIG);
        }
    };
    let code =
        super::run::run_graph(graph, args.graceful_shutdown_limit_secs, args.ledger_json.as_deref(), None, None, false);
    if !args.dry_run {
        for sink in &selected {
            let left = store::summarize(&data_dir)
                .ok()
                .and_then(|all| all.into_iter().find(|s| &s.sink_id == sink))
                .map_or(0, |s| s.events);
            println!("{sink}: {left} events left in the DLQ.");
        }
    }
    if code == 0 { Ok(()) } else { Err(code) }
}

/// The replay pipeline as a config document.
fn replay_document(
    args: &ReplayArgs,
    documents: &[(PathBuf, Value)],
    data_dir: &std::path::Path,
    selected: &[String],
    fix: Option<&str>,
) -> Result<Value, u8> {
    let mut globals = Map::new();
    let mut sink_bodies = Map::new();
    for (_, doc) in documents {
        let Value::Object(doc) = doc else { continue };
        for (key, value) in doc {
            if key == "sinks" {
                if let Value::Object(sinks) = value {
                    sink_bodies.extend(sinks.clone());
                }
            } else if !TABLES.contains(&key.as_str()) && key != "api" && key != "tests" {
                globals.insert(key.clone(), value.clone());
            }
        }
    }
    let chains: Vec<(String, Vec<String>)> = match &args.to {
        Some(to) => vec![(to.clone(), selected.to_vec())],
        None => selected.iter().map(|s| (s.clone(), vec![s.clone()])).collect(),
    };
    let (mut sources, mut transforms, mut sinks) = (Map::new(), Map::new(), Map::new());
    for (target, from) in chains {
        let Some(mut body) = sink_bodies.get(&target).cloned() else {
            eprintln!(
                "error: the config has no sink `{target}`{}",
                if args.to.is_some() { "" } else { "; use --to SINK to replay its DLQ into another sink" }
            );
            return Err(2);
        };
        let source_id = format!("dlq_replay_{target}");
        sources.insert(
            source_id.clone(),
            json!({
                "type": "dead_letter",
                "sinks": from,
                "reasons": args.reason,
                "data_dir": data_dir,
                "max_events_per_sec": args.rate,
                "dry_run": args.dry_run,
            }),
        );
        let mut last = source_id;
        if let Some(program) = fix {
            let fix_id = format!("dlq_fix_{target}");
            transforms.insert(
                fix_id.clone(),
                json!({
                    "type": "remap",
                    "inputs": [last],
                    "source": program,
                    // A failed fix leaves the event in the DLQ: `.dropped` has no consumer, so
                    // the event resolves as failed and is not confirmed.
                    "drop_on_error": true,
                    "reroute_dropped": true,
                }),
            );
            last = fix_id;
        }
        if args.dry_run {
            body = json!({ "type": "console", "encoding": { "codec": "json" } });
        }
        if let Value::Object(body) = &mut body {
            body.insert("inputs".into(), json!([last]));
        }
        sinks.insert(target, body);
    }
    globals.insert("sources".into(), Value::Object(sources));
    globals.insert("transforms".into(), Value::Object(transforms));
    globals.insert("sinks".into(), Value::Object(sinks));
    Ok(Value::Object(globals))
}
