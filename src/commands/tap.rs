//! `sluice tap`: prints a live sample of the events leaving components' outputs, read from a
//! running sluice's API (`GET /tap`). Tapping costs the pipeline nothing when nobody taps, and
//! a tap that cannot keep up loses samples (reported on stderr), never slows the pipeline.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::{TapArgs, TapFormat};

pub fn run(args: &TapArgs) -> u8 {
    match tap(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

fn query(args: &TapArgs) -> String {
    let mut outputs = args.outputs_of.clone();
    outputs.extend(args.patterns.iter().cloned());
    let encode = |list: &[String]| {
        list.join(",").replace('%', "%25").replace('&', "%26").replace(' ', "%20").replace('#', "%23")
    };
    let mut query = format!("limit={}&interval_ms={}", args.limit, args.interval);
    if !outputs.is_empty() {
        query.push_str(&format!("&outputs_of={}", encode(&outputs)));
    }
    if !args.inputs_of.is_empty() {
        query.push_str(&format!("&inputs_of={}", encode(&args.inputs_of)));
    }
    query
}

fn tap(args: &TapArgs) -> Result<(), String> {
    let mut answer = super::api_client::get(&args.url, &format!("/tap?{}", query(args)))?;
    let deadline = args.duration_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut out = std::io::stdout().lock();
    let mut pending = Vec::new();
    loop {
        // Without a deadline, wait for samples as long as it takes.
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(());
        }
        let _ = answer.reader.get_ref().set_read_timeout(left);
        let data = match answer.next_piece() {
            Ok(Some(data)) => data,
            Ok(None) => return Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Ok(());
            }
            Err(e) => return Err(format!("{}: {e}", args.url)),
        };
        pending.extend_from_slice(&data);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(value) = serde_json::from_slice::<Value>(&line) else { continue };
            if let Some(tapping) = value.get("tapping") {
                eprintln!("[tap] tapping {tapping}");
            } else if let Some(dropped) = value.get("tap_dropped") {
                eprintln!("[tap] {dropped} events not shown so far: this terminal read more slowly than they came");
            } else if writeln!(out, "{}", render(&value, args)).is_err() {
                return Ok(());
            }
        }
    }
}

fn render(line: &Value, args: &TapArgs) -> String {
    let shown = if args.meta { line.clone() } else { line.get("event").cloned().unwrap_or(Value::Null) };
    match args.format {
        TapFormat::Json => shown.to_string(),
        TapFormat::Yaml => format!("---\n{}", serde_yaml::to_string(&shown).unwrap_or_default().trim_end()),
        TapFormat::Logfmt => {
            let mut fields = Vec::new();
            flatten("", &shown, &mut fields);
            fields.join(" ")
        }
    }
}

/// `a.b=value` pairs, quoted when needed, as logfmt writes nested fields.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&key, value, out);
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), value, out);
            }
        }
        Value::String(s) if s.is_empty() || s.contains([' ', '"', '=']) => {
            out.push(format!("{prefix}={}", Value::String(s.clone())));
        }
        Value::String(s) => out.push(format!("{prefix}={s}")),
        other => out.push(format!("{prefix}={other}")),
    }
}
