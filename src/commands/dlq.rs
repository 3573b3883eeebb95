//! `sluice dlq`: look into and clean up the disk dead-letter queue.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use sluice_buffers::dlq::store as dlq_files;
use sluice_runtime::config;

use super::{EXIT_CONFIG, load_options, report};
use crate::cli::{DlqCommand, DlqPlace};

pub(super) fn data_dir(place: &DlqPlace) -> Result<PathBuf, u8> {
    if let Some(dir) = &place.data_dir {
        return Ok(dir.clone());
    }
    if place.config.config.is_empty() && place.config.config_dir.is_empty() {
        return Ok(PathBuf::from("/var/lib/sluice"));
    }
    let registry = sluice_components::registry();
    match config::load(&load_options(&place.config, &[]), &registry) {
        Ok((graph, _)) => Ok(graph.globals.options.data_dir.clone()),
        Err(diagnostics) => {
            report(&diagnostics);
            Err(EXIT_CONFIG)
        }
    }
}

fn time(text: &Option<String>) -> Result<Option<DateTime<Utc>>, u8> {
    match text {
        None => Ok(None),
        Some(t) => DateTime::parse_from_rfc3339(t).map(|t| Some(t.to_utc())).map_err(|e| {
            eprintln!("error: `{t}` is not an RFC 3339 time: {e}");
            2
        }),
    }
}

pub fn run(command: &DlqCommand) -> u8 {
    match execute(command) {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn execute(command: &DlqCommand) -> Result<(), u8> {
    let io = |err: std::io::Error| {
        eprintln!("error: {err}");
        1u8
    };
    if let DlqCommand::Replay(args) = command {
        // Runs a pipeline that may write to stdout itself: do not hold the lock.
        return super::replay::run(args);
    }
    let mut out = std::io::stdout().lock();
    match command {
        DlqCommand::List { place, json } => {
            let dir = data_dir(place)?;
            let summaries = dlq_files::summarize(&dir).map_err(io)?;
            if *json {
                let text = serde_json::to_string_pretty(&summaries).map_err(|e| io(std::io::Error::other(e)))?;
                let _ = writeln!(out, "{text}");
                return Ok(());
            }
            // Which directory was read: an empty list of the wrong one must not pass for none.
            let _ = writeln!(
                out,
                "{}: {} sinks with dead letters",
                sluice_buffers::dlq::root(&dir).display(),
                summaries.len()
            );
            let _ = writeln!(
                out,
                "{:<24} {:>10} {:>12}  {:<24} {:<24} reasons",
                "sink", "events", "bytes", "oldest", "newest"
            );
            for s in summaries {
                let reasons: Vec<String> = s.by_reason.iter().map(|(r, n)| format!("{r}={n}")).collect();
                let when = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    out,
                    "{:<24} {:>10} {:>12}  {:<24} {:<24} {}{}",
                    s.sink_id,
                    s.events,
                    s.bytes,
                    when(s.oldest),
                    when(s.newest),
                    reasons.join(" "),
                    if s.unreadable > 0 { format!(" (unreadable lines: {})", s.unreadable) } else { String::new() }
                );
            }
        }
        DlqCommand::Show { place, sink, reason, since, until, limit, json } => {
            let dir = data_dir(place)?;
            let (since, until) = (time(since)?, time(until)?);
            let mut shown = 0usize;
            let ids = match sink {
                Some(id) => vec![id.clone()],
                None => dlq_files::sinks(&dir).map_err(io)?,
            };
            'sinks: for id in ids {
                for segment in dlq_files::segments(&dir, &id).map_err(io)? {
                    let (events, _) = dlq_files::read_segment(&segment).map_err(io)?;
                    for event in events {
                        if reason.as_deref().is_some_and(|r| r != event.reason()) {
                            continue;
                        }
                        let t = event.time();
                        if since.is_some_and(|s| t.is_none_or(|t| t < s))
                            || until.is_some_and(|u| t.is_none_or(|t| t >= u))
                        {
                            continue;
                        }
                        if limit.is_some_and(|l| shown >= l) {
                            break 'sinks;
                        }
                        shown += 1;
                        let e = &event.envelope;
                        if *json {
                            let _ = writeln!(out, "{e}");
                        } else {
                            let _ = writeln!(
                                out,
                                "{} {} {} status={} attempts={} error={:?}\n  {}",
                                e["dead_lettered_at"].as_str().unwrap_or("-"),
                                event.sink_id(),
                                event.reason(),
                                e["status"],
                                e["attempts"],
                                e["message"].as_str().unwrap_or_default(),
                                e["event"]
                            );
                        }
                    }
                }
            }
        }
        DlqCommand::Replay(_) => {}
        DlqCommand::Purge { place, sink, older_than } => {
            let cutoff = match older_than {
                None => None,
                Some(age) => match dlq_files::parse_age(age) {
                    Some(age) => Some(Utc::now() - chrono::Duration::from_std(age).unwrap_or_default()),
                    None => {
                        eprintln!("error: `{age}` is not an age such as 30m, 24h or 7d");
                        return Err(2);
                    }
                },
            };
            let report = dlq_files::purge(&data_dir(place)?, sink.as_deref(), cutoff).map_err(io)?;
            let _ = writeln!(out, "Purged {} events; kept {}.", report.removed, report.kept);
            if report.skipped_active > 0 {
                let _ =
                    writeln!(out, "Left {} segment(s) alone: a running sluice is writing them.", report.skipped_active);
            }
        }
    }
    Ok(())
}
