//! `sluice buffer check [--repair]`: what each disk buffer under `data_dir/buffer/` holds, and
//! whether any of it is damaged. Reads only, unless `--repair`: then damaged bytes go to the
//! owning sink's disk DLQ (reason `buffer_corrupt`, as sluice does itself when it reads them)
//! and damaged segments are rewritten with their valid records only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice_buffers::disk::Fs;
use sluice_buffers::disk::inspect::{self, BufferReport};
use sluice_buffers::disk::repair::{self, Damaged, RepairReport};
use sluice_core::ack::{BatchNotifier, EventFinalizer};
use sluice_core::dead_letter::DeadLetterQueue;
use sluice_core::ledger::{ComponentKind, ComponentLedger};
use sluice_runtime::config;
use sluice_runtime::dead_letter::SinkDeadLetter;
use sluice_runtime::topology::disk::corrupt_event;
use sluice_runtime::topology::fanout::Fanout;

use super::{EXIT_CONFIG, load_options, report};
use crate::cli::{BufferCommand, DlqPlace};

/// The sink (id, type) that owns each buffer directory name, from the config when one is given.
type Owners = BTreeMap<String, (String, String)>;

fn locate(place: &DlqPlace) -> Result<(PathBuf, Owners), u8> {
    if let Some(dir) = &place.data_dir {
        return Ok((dir.clone(), Owners::new()));
    }
    if place.config.config.is_empty() && place.config.config_dir.is_empty() {
        return Ok((PathBuf::from("/var/lib/sluice"), Owners::new()));
    }
    let (graph, _) = config::load(&load_options(&place.config, &[]), &sluice_components::registry()).map_err(|d| {
        report(&d);
        EXIT_CONFIG
    })?;
    let owners = graph
        .components
        .iter()
        .filter(|c| c.kind == ComponentKind::Sink)
        .filter_map(|c| {
            let stage = c.buffer.disk_stage()?;
            let dir = stage.id.clone().unwrap_or_else(|| c.id.clone());
            Some((dir, (c.id.clone(), c.type_name.to_owned())))
        })
        .collect();
    Ok((graph.globals.options.data_dir.clone(), owners))
}

pub fn run(command: &BufferCommand) -> u8 {
    let BufferCommand::Check { place, id, json, repair } = command;
    let (data_dir, owners) = match locate(place) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let root = data_dir.join("buffer");
    let mut dirs: Vec<_> = match std::fs::read_dir(&root) {
        Ok(entries) => entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", root.display());
            return 1;
        }
    };
    dirs.sort();
    if let Some(id) = id {
        dirs.retain(|d| d.file_name().is_some_and(|n| n == id.as_str()));
    }
    let mut repairs = Vec::new();
    if *repair {
        for dir in &dirs {
            match repair_one(dir, &data_dir, &owners) {
                Ok(done) => repairs.push(done),
                Err(err) => {
                    eprintln!("error: cannot repair {}: {err}", dir.display());
                    return 1;
                }
            }
        }
    }
    let mut reports: Vec<BufferReport> = Vec::new();
    for dir in &dirs {
        match inspect::inspect(dir) {
            Ok(report) => reports.push(report),
            Err(err) => {
                eprintln!("error: cannot read {}: {err}", dir.display());
                return 1;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    if *json {
        let body = if *repair {
            serde_json::json!({ "repaired": repairs, "buffers": reports })
        } else {
            serde_json::to_value(&reports).unwrap_or_default()
        };
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&body).unwrap_or_default());
    } else {
        print_text(&mut out, &root, &reports, &repairs);
    }
    // Damage is not fatal (sluice moves it to the DLQ when it reads it), but say so.
    if reports.iter().all(BufferReport::is_healthy) { 0 } else { 1 }
}

fn print_text(out: &mut impl Write, root: &Path, reports: &[BufferReport], repairs: &[RepairReport]) {
    if reports.is_empty() {
        let _ = writeln!(out, "No disk buffer under {}.", root.display());
    }
    for r in repairs {
        let _ = writeln!(
            out,
            "{}: repaired: {} damaged ranges ({} bytes) moved to the DLQ, {} torn-tail bytes dropped, {} segments rewritten, {} removed, {} valid records kept",
            r.dir,
            r.quarantined_ranges,
            r.quarantined_bytes,
            r.torn_tail_bytes,
            r.segments_rewritten,
            r.segments_removed,
            r.records_kept
        );
    }
    for r in reports {
        let damaged: u64 = r.segments.iter().map(|s| s.damaged.len() as u64).sum();
        let torn: u64 = r.segments.iter().map(|s| s.torn_tail_bytes).sum();
        let _ = writeln!(
            out,
            "{}: {} segments, {} bytes, {} records ({} events) waiting, acknowledged below id {}, {} damaged ranges, {} torn-tail bytes{}",
            r.dir,
            r.segments.len(),
            r.bytes,
            r.pending_records,
            r.pending_events,
            r.acked_floor.map_or_else(|| "-".to_owned(), |f| f.to_string()),
            damaged,
            torn,
            if r.in_use { " (in use by a running sluice: its last segment may be mid-write)" } else { "" }
        );
        for s in &r.segments {
            for d in &s.damaged {
                let _ = writeln!(out, "  {} offset {}: {} bytes, {}", s.file, d.offset, d.bytes, d.reason);
            }
        }
    }
}

/// Repairs one buffer directory; damaged bytes go to its owner's disk DLQ (the directory's
/// name when no config says which sink owns it).
fn repair_one(dir: &Path, data_dir: &Path, owners: &Owners) -> std::io::Result<RepairReport> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (sink_id, sink_type) = owners.get(&name).cloned().unwrap_or_else(|| (name.clone(), "unknown".to_owned()));
    let ledger = Arc::new(ComponentLedger::new(sink_id.clone(), ComponentKind::Sink, sink_type.clone()));
    let dlq = SinkDeadLetter::new(&sink_id, &sink_type, ledger, Fanout::default(), data_dir);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut quarantine = |damaged: &[Damaged]| -> std::io::Result<()> {
        runtime.block_on(async {
            for d in damaged {
                let location = format!("{} offset {}", d.segment.display(), d.offset);
                let (event, failure) = corrupt_event(&sink_id, &d.bytes, &location, d.reason);
                let (notifier, mut outcome) = BatchNotifier::with_receiver();
                dlq.submit(vec![event.with_finalizer(EventFinalizer::new(notifier))], failure).await;
                if !outcome.wait().await.is_safe() {
                    return Err(std::io::Error::other(format!(
                        "cannot store the damaged bytes at {location} in the DLQ of sink \"{sink_id}\"; nothing was changed in that segment"
                    )));
                }
            }
            Ok(())
        })
    };
    repair::repair(dir, &Fs, &mut quarantine)
}
