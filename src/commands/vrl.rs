//! `sluice vrl`: runs a VRL program over events from a file or stdin and prints what it made,
//! with the function set remap and `dlq replay --fix` use. How a fix is tried before it is
//! used: `sluice dlq show --json | jq -c .event | sluice vrl -p fix.vrl -o`.
//!
//! Each input line is one event: a JSON object as it is, anything else as `{"message": line}`.
//! Per event it prints the value of the program's last expression (or, with
//! `--print-object`, the event after the program), `abort` as `aborted: …` and runtime errors
//! as `error: …`. Exit 0 when every event ran, 1 when one failed, 78 when the program does
//! not compile.

use std::io::{BufRead, Write};

use sluice_components::transforms::vrl::{Ran, Standalone};
use sluice_core::LogEvent;
use sluice_core::event::EventMetadata;

use super::EXIT_CONFIG;
use crate::cli::VrlArgs;

pub fn run(args: &VrlArgs) -> u8 {
    let source = match (&args.program, &args.source) {
        (Some(path), None) => match std::fs::read_to_string(path) {
            Ok(source) => source,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return EXIT_CONFIG;
            }
        },
        (None, Some(source)) => source.clone(),
        _ => {
            eprintln!("error: give the program either inline or with --program FILE");
            return EXIT_CONFIG;
        }
    };
    let mut program = match Standalone::compile(&source) {
        Ok(program) => program,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return EXIT_CONFIG;
        }
    };
    if args.print_warnings && !program.warnings.is_empty() {
        eprintln!("{}", program.warnings);
    }
    let input: Box<dyn BufRead> = match &args.input {
        Some(path) => match std::fs::File::open(path) {
            Ok(file) => Box::new(std::io::BufReader::new(file)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return 1;
            }
        },
        None => Box::new(std::io::stdin().lock()),
    };
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    let mut buf = Vec::new();
    for line in input.lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: cannot read the input: {e}");
                return 1;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let mut event = event_of(&line);
        buf.clear();
        match program.run(&mut event) {
            Ran::Value(value) => {
                let shown = if args.print_object { event.value() } else { &value };
                sluice_core::json::write_value(&mut buf, shown);
            }
            Ran::Aborted(reason) => buf.extend_from_slice(format!("aborted: {reason}").as_bytes()),
            Ran::Failed(reason) => {
                failed = true;
                buf.extend_from_slice(format!("error: {reason}").as_bytes());
            }
        }
        buf.push(b'\n');
        if out.write_all(&buf).is_err() {
            return 1;
        }
    }
    u8::from(failed)
}

fn event_of(line: &str) -> LogEvent {
    let metadata = EventMetadata::new("vrl", chrono::Utc::now());
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(json @ serde_json::Value::Object(_)) => LogEvent::from_value(json.into(), metadata),
        _ => LogEvent::from_value(serde_json::json!({ "message": line }).into(), metadata),
    }
}
