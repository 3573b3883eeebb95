//! `sluice test`: runs the config's unit tests (`[[tests]]`) through its transforms and prints
//! the results as `vector test` does. Exit 0 when every test passed, 78 when one failed or
//! could not be built (as Vector).

use std::io::Write;

use sluice_components::transforms::vrl::{self as components_vrl, Condition, ConditionConfig};
use sluice_core::LogEvent;
use sluice_runtime::config;
use sluice_runtime::unit_test::{self, Check, Vrl};

use super::{EXIT_CONFIG, load_options, report};
use crate::cli::TestArgs;

pub fn run(args: &TestArgs) -> u8 {
    let options = load_options(&args.config, &args.paths);
    let registry = sluice_components::registry();
    let loaded = match config::load_for_tests(&options, &registry) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            report(&diagnostics);
            return EXIT_CONFIG;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "Running tests");
    let outcomes = match unit_test::run_all(&loaded, &ComponentsVrl) {
        Ok(outcomes) => outcomes,
        Err(errors) => {
            let _ = out.flush();
            eprintln!("Failed to execute tests:\n{}.", errors.join("\n"));
            return EXIT_CONFIG;
        }
    };
    if outcomes.is_empty() {
        let _ = writeln!(out, "No tests found.");
        return 0;
    }
    for outcome in &outcomes {
        let verdict = if outcome.errors.is_empty() { "passed" } else { "failed" };
        let _ = writeln!(out, "test {} ... {verdict}", outcome.name);
    }
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.errors.is_empty()).collect();
    if failed.is_empty() {
        return 0;
    }
    let _ = writeln!(out, "\nfailures:");
    for outcome in failed {
        let _ = writeln!(out, "\ntest {}:\n", outcome.name);
        for error in &outcome.errors {
            let _ = writeln!(out, "{error}\n");
        }
    }
    EXIT_CONFIG
}

/// VRL with the components' function set (the one remap and filter use).
struct ComponentsVrl;

struct VrlCheck(Condition);

impl Check for VrlCheck {
    fn check(&mut self, event: &mut LogEvent) -> Result<bool, String> {
        self.0.check(event)
    }
}

impl Vrl for ComponentsVrl {
    fn condition(&self, source: &str) -> Result<Box<dyn Check>, String> {
        let condition = ConditionConfig::Source(source.to_owned()).build()?;
        Ok(Box::new(VrlCheck(condition)))
    }

    fn event(&self, source: &str) -> Result<LogEvent, String> {
        components_vrl::event_from(source)
    }
}
