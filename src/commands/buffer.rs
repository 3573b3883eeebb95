//! `sluice buffer check`: what each disk buffer under `data_dir/buffer/` holds, and whether
//! any of it is damaged. Reads only; sluice itself quarantines damage while it runs.

use std::io::Write;

use sluice_buffers::disk::inspect::{self, BufferReport};

use super::dlq::data_dir;
use crate::cli::BufferCommand;

pub fn run(command: &BufferCommand) -> u8 {
    let BufferCommand::Check { place, id, json } = command;
    let root = match data_dir(place) {
        Ok(dir) => dir.join("buffer"),
        Err(code) => return code,
    };
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
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
    } else if reports.is_empty() {
        let _ = writeln!(out, "No disk buffer under {}.", root.display());
    }
    if !*json {
        for r in &reports {
            let damaged: u64 = r.segments.iter().map(|s| s.damaged.len() as u64).sum();
            let torn: u64 = r.segments.iter().map(|s| s.torn_tail_bytes).sum();
            let _ = writeln!(
                out,
                "{}: {} segments, {} bytes, {} records ({} events) waiting, acknowledged below id {}, {} damaged ranges, {} torn-tail bytes",
                r.dir,
                r.segments.len(),
                r.bytes,
                r.pending_records,
                r.pending_events,
                r.acked_floor.map_or_else(|| "-".to_owned(), |f| f.to_string()),
                damaged,
                torn
            );
            for s in &r.segments {
                for d in &s.damaged {
                    let _ = writeln!(out, "  {} offset {}: {} bytes, {}", s.file, d.offset, d.bytes, d.reason);
                }
            }
        }
    }
    // Damage is not fatal (sluice moves it to the DLQ when it reads it), but say so.
    if reports.iter().all(BufferReport::is_healthy) { 0 } else { 1 }
}
