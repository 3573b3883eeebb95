//! The config loader fuzzed (a property test, see `sluice-fuzz`): real configs (the quickstart,
//! the examples, every config of `tests/config_errors/`, the reference pages' examples), in
//! TOML, YAML and JSON, with random edits. Loading never panics or hangs: it gives a pipeline, or errors that each say what is
//! wrong.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use sluice_runtime::config::{self, LoadOptions};

fn ok<T, E: std::fmt::Debug>(result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| panic!("{e:?}"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The TOML examples of the component reference pages that are whole configs.
fn documented(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for entry in ok(std::fs::read_dir(root().join("docs/components"))).flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for (i, block) in text.split("```toml\n").skip(1).enumerate() {
            let block = block.split("```").next().unwrap_or_default();
            if block.contains("[sinks.") && block.contains("type = ") {
                let name = entry.path().file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
                let path = dir.join(format!("{name}-{i}.toml"));
                ok(std::fs::write(&path, whole(block)));
                paths.push(path);
            }
        }
    }
    paths
}

/// A reference page's example made a config that loads: a `stdin` source for each input it
/// names that it does not define, and `${VAR}`s replaced by a value.
fn whole(block: &str) -> String {
    let mut text = String::new();
    let mut rest = block;
    while let Some(at) = rest.find("${") {
        text.push_str(&rest[..at]);
        match rest[at..].find('}') {
            Some(end) => {
                text.push_str("secret-value");
                rest = &rest[at + end + 1..];
            }
            None => {
                rest = &rest[at..];
                break;
            }
        }
    }
    text.push_str(rest);
    let mut sources = String::new();
    for line in block.lines().filter(|l| l.trim_start().starts_with("inputs = [")) {
        for id in line.split('"').skip(1).step_by(2) {
            let defined = [format!("[sources.{id}]"), format!("[transforms.{id}]")];
            if !defined.iter().any(|d| block.contains(d.as_str())) && !sources.contains(&format!("[sources.{id}]")) {
                sources.push_str(&format!("[sources.{id}]\ntype = \"stdin\"\n\n"));
            }
        }
    }
    sources + &text
}

/// Every real config in the repository (the quickstart, the examples, the config error
/// cases, the reference pages' examples), as TOML, YAML and JSON (by extension).
fn seeds() -> Vec<(Vec<u8>, &'static str)> {
    let docs = ok(tempfile::tempdir());
    let mut paths = vec![root().join("config/quickstart.toml"), root().join("config/examples/incident.toml")];
    for entry in ok(std::fs::read_dir(root().join("tests/config_errors"))).flatten() {
        let path = entry.path().join("config.toml");
        if path.exists() {
            paths.push(path);
        }
    }
    paths.extend(documented(docs.path()));
    let mut seeds = Vec::new();
    for path in paths {
        let text = ok(std::fs::read(&path));
        let options = LoadOptions { config_paths: vec![path.clone()], ..LoadOptions::default() };
        if let Ok(documents) = config::read_documents(&options) {
            for (_, value) in documents {
                seeds.push((ok(serde_yaml::to_string(&value)).into_bytes(), "yaml"));
                seeds.push((ok(serde_json::to_vec_pretty(&value)), "json"));
            }
        }
        seeds.push((text, "toml"));
    }
    seeds
}

fn load(dir: &Path, data: &[u8], extension: &str) -> Result<(), Vec<config::Diagnostic>> {
    let path = dir.join(format!("sluice.{extension}"));
    ok(std::fs::write(&path, data));
    let options = LoadOptions { config_paths: vec![path], ..LoadOptions::default() };
    config::load(&options, &sluice_components::registry()).map(|_| ())
}

#[test]
fn every_seed_loads_or_fails_as_it_does_in_its_own_format() {
    let dir = ok(tempfile::tempdir());
    let seeds = seeds();
    assert!(seeds.len() >= 100, "the corpus holds the repository's configs: {}", seeds.len());
    for (data, extension) in &seeds {
        // Seeds are configs that load, or the error cases: either way, no panic.
        let _ = load(dir.path(), data, extension);
    }
}

proptest! {
    #![proptest_config(sluice_fuzz::config(300))]

    #[test]
    fn a_damaged_config_loads_or_every_error_says_what_is_wrong(
        (extension, data) in {
            let seeds = seeds();
            (0..seeds.len()).prop_flat_map(move |i| {
                let (seed, extension) = seeds[i].clone();
                (Just(extension), sluice_fuzz::mutated(vec![seed], 3))
            })
        },
    ) {
        let dir = ok(tempfile::tempdir());
        if let Err(diagnostics) = load(dir.path(), &data, extension) {
            prop_assert!(!diagnostics.is_empty(), "a refusal says why");
            for d in &diagnostics {
                prop_assert!(!d.message.trim().is_empty(), "every error has a message: {:?}", d);
                prop_assert!(!d.to_string().trim().is_empty());
            }
        }
    }
}
