//! `sluice list`: every component type, by kind.

use std::io::Write;

use sluice_core::ledger::ComponentKind;

pub fn run() -> u8 {
    let registry = sluice_components::registry();
    let mut out = std::io::stdout().lock();
    for (kind, title) in
        [(ComponentKind::Source, "Sources"), (ComponentKind::Transform, "Transforms"), (ComponentKind::Sink, "Sinks")]
    {
        let _ = writeln!(out, "{title}:");
        for spec in registry.iter().filter(|s| s.kind == kind) {
            let aliases =
                if spec.aliases.is_empty() { String::new() } else { format!(" (also: {})", spec.aliases.join(", ")) };
            let _ = writeln!(out, "  {:<20} {}{aliases}", spec.type_name, spec.summary);
        }
        let _ = writeln!(out);
    }
    0
}
