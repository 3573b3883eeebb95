//! `sluice checkpoints`: the file checkpoint store of a data directory. `list` and `show`
//! read without the store's lock (safe while sluice runs); `forget` and `import` take it and
//! are refused while a sluice uses the store.

use std::io::Write;
use std::path::{Path, PathBuf};

use sluice_file_tail::checkpoint::{self, Checkpoint, Store};
use sluice_file_tail::fingerprint::{self, Fingerprint, Strategy};

use super::dlq::data_dir;
use super::{EXIT_CONFIG, load_options, report};
use crate::cli::{CheckpointsCommand, DlqPlace};

pub fn run(command: &CheckpointsCommand) -> u8 {
    match execute(command) {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn fail(message: impl std::fmt::Display) -> u8 {
    eprintln!("error: {message}");
    1
}

fn print(checkpoints: &[Checkpoint], json: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(checkpoints).unwrap_or_default());
        return;
    }
    if checkpoints.is_empty() {
        let _ = writeln!(out, "No checkpoints.");
    }
    for c in checkpoints {
        let path = if c.path.is_empty() { "(path not known yet)" } else { c.path.as_str() };
        let _ = writeln!(
            out,
            "{}  position {}  {}  source {}  changed {}",
            c.fingerprint,
            c.position,
            path,
            c.source,
            c.modified.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
}

/// Every checkpoint store the place names: with `--config`, the global `data_dir` and each
/// source's own `data_dir`, so no store of the config is missed (and `true`: the stores read
/// are then said on stderr).
fn store_dirs(place: &DlqPlace) -> Result<(Vec<PathBuf>, bool), u8> {
    if place.data_dir.is_some() || (place.config.config.is_empty() && place.config.config_dir.is_empty()) {
        return Ok((vec![checkpoint::store_dir(&data_dir(place)?)], false));
    }
    let registry = sluice_components::registry();
    let (graph, _) =
        sluice_runtime::config::load(&load_options(&place.config, &[]), &registry).map_err(|diagnostics| {
            report(&diagnostics);
            EXIT_CONFIG
        })?;
    let mut dirs = vec![graph.globals.options.data_dir.clone()];
    for component in &graph.components {
        if let sluice_core::component::AnyConfig::Source(source) = &component.config
            && let Some(dir) = source.data_dir()
        {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs.sort();
    dirs.dedup();
    Ok((dirs.iter().map(|d| checkpoint::store_dir(d)).collect(), true))
}

/// The entries of every store; with `say`, which stores were read goes to stderr.
fn read_all((dirs, say): &(Vec<PathBuf>, bool)) -> Result<Vec<Checkpoint>, u8> {
    let mut all = Vec::new();
    for dir in dirs {
        let entries = checkpoint::read_only(dir).map_err(fail)?;
        if *say {
            eprintln!("{}: {} checkpoints", dir.display(), entries.len());
        }
        all.extend(entries);
    }
    Ok(all)
}

fn open(dir: &Path) -> Result<Store, u8> {
    Store::open(dir).map_err(fail)
}

fn execute(command: &CheckpointsCommand) -> Result<(), u8> {
    match command {
        CheckpointsCommand::List { place, json } => {
            let entries = read_all(&store_dirs(place)?)?;
            print(&entries, *json);
        }
        CheckpointsCommand::Show { place, target, json } => {
            let dirs = store_dirs(place)?;
            let wanted = match target.parse::<Fingerprint>() {
                Ok(fp) => fp,
                Err(_) => {
                    let file = std::fs::File::open(target).map_err(|e| fail(format!("cannot open {target}: {e}")))?;
                    let strategy = Strategy::Checksum { lines: 1, ignored_header_bytes: 0 };
                    match fingerprint::fingerprint(&file, strategy, 102_400).map_err(fail)? {
                        Some(fp) => fp,
                        None => return Err(fail(format!("{target} has no whole first line yet: no fingerprint"))),
                    }
                }
            };
            let entries = read_all(&dirs)?;
            let found: Vec<Checkpoint> = entries.into_iter().filter(|c| c.fingerprint == wanted).collect();
            if found.is_empty() {
                return Err(fail(format!("no checkpoint for {wanted}")));
            }
            print(&found, *json);
        }
        CheckpointsCommand::Forget { place, fingerprints, source, path } => {
            if fingerprints.is_empty() && source.is_none() && path.is_none() {
                return Err(fail("say what to forget: fingerprints, --source ID or --path GLOB"));
            }
            let mut wanted = Vec::new();
            for text in fingerprints {
                wanted.push(text.parse::<Fingerprint>().map_err(fail)?);
            }
            let pattern =
                path.as_deref().map(glob::Pattern::new).transpose().map_err(|e| fail(format!("--path: {e}")))?;
            let mut forgotten = 0;
            let (dirs, say) = store_dirs(place)?;
            for dir in dirs {
                let mut store = open(&dir)?;
                let doomed: Vec<Fingerprint> = store
                    .entries()
                    .filter(|c| {
                        wanted.contains(&c.fingerprint)
                            || source.as_deref() == Some(c.source.as_str())
                            || pattern.as_ref().is_some_and(|p| p.matches(&c.path))
                    })
                    .map(|c| c.fingerprint)
                    .collect();
                for fp in &doomed {
                    store.remove(fp);
                }
                store.flush().map_err(fail)?;
                if say {
                    eprintln!("{}: forgot {}", dir.display(), doomed.len());
                }
                forgotten += doomed.len();
            }
            println!("Forgot {forgotten} checkpoints.");
        }
        CheckpointsCommand::Import { place, vector_data_dir, source } => {
            let found = sluice_file_tail::vector::read_all(vector_data_dir).map_err(fail)?;
            let mut store = open(&checkpoint::store_dir(&data_dir(place)?))?;
            let (mut seen, mut adopted, mut skipped) = (0, 0, 0);
            for vector in found.into_iter().filter(|v| source.is_empty() || source.contains(&v.source_id)) {
                seen += vector.checkpoints.len();
                skipped += vector.skipped;
                adopted += vector.checkpoints.into_iter().filter(|c| store.adopt(c.clone())).count();
                store.record_import(vector.import);
            }
            store.flush().map_err(fail)?;
            println!(
                "Vector checkpoints: {seen} read, {adopted} adopted, {} already newer here, {skipped} unreadable entries left out.",
                seen - adopted
            );
        }
    }
    Ok(())
}
