//! `sluice validate`: the same load-and-check path as `run`, reporting every problem at once.

use std::io::Write;

use sluice_runtime::config;

use super::{EXIT_CONFIG, load_options};
use crate::cli::ValidateArgs;

pub fn run(args: &ValidateArgs) -> u8 {
    let options = load_options(&args.config, &args.paths);
    let registry = sluice_components::registry();
    let (mut diagnostics, loaded) = match config::load(&options, &registry) {
        Ok((_graph, warnings)) => (warnings, true),
        Err(diagnostics) => (diagnostics, false),
    };
    // `--no-environment`: what is about this machine (a certificate file it lacks) is left out.
    let before = diagnostics.len();
    if args.no_environment {
        diagnostics.retain(|d| !d.environment);
    }
    let left_out = before - diagnostics.len();
    let ok = (loaded || !diagnostics.iter().any(|d| d.is_error())) && (!args.deny_warnings || diagnostics.is_empty());
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    let mut out = std::io::stdout().lock();
    for d in &diagnostics {
        let _ = writeln!(out, "{d}");
    }
    let mut summary = summary(errors, warnings);
    if left_out > 0 {
        summary.push_str(&format!(" ({left_out} about this machine left out by --no-environment)"));
    }
    if ok {
        let _ = writeln!(out, "Validated: {summary}.");
        0
    } else {
        let _ = writeln!(out, "Invalid: {summary}.");
        EXIT_CONFIG
    }
}

fn summary(errors: usize, warnings: usize) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!("{}, {}", plural(errors, "error"), plural(warnings, "warning"))
}
