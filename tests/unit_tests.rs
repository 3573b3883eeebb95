//! `sluice test`: the config unit tests of `tests/behavior/` (discovered, not listed) pass;
//! a changed expectation fails by name with exit 78; tests split over files, namespaced
//! config directories and format flags load as Vector loads them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::Case;

fn sluice_test(args: &[&std::ffi::OsStr]) -> Output {
    common::sluice().arg("test").args(args).output().unwrap_or_else(|e| panic!("run sluice test: {e}"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn behavior() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/behavior")
}

#[test]
fn every_behavior_config_passes_its_unit_tests() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(behavior())
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let output = sluice_test(&[file.as_os_str()]);
        let out = String::from_utf8_lossy(&output.stdout).into_owned();
        assert_eq!(output.status.code(), Some(0), "{}:\n{}", file.display(), text(&output));
        let passed = out.lines().filter(|l| l.starts_with("test ") && l.ends_with(" ... passed")).count();
        let declared = std::fs::read_to_string(&file).unwrap_or_default().matches("name").count();
        assert!(passed >= 2 && !out.contains("failed"), "{}:\n{out}", file.display());
        assert!(passed <= declared, "{}", file.display());
    }
}

#[test]
fn a_changed_expectation_fails_by_name_with_the_condition_and_the_event() {
    let case = Case::new();
    let original = std::fs::read_to_string(behavior().join("remap.toml")).unwrap_or_default();
    let changed = original.replace(r#"assert_eq!(.user.name, "ADA")"#, r#"assert_eq!(.user.name, "ADB")"#);
    assert_ne!(original, changed);
    let path = case.path("remap.toml");
    std::fs::write(&path, changed).unwrap_or_else(|e| panic!("{e}"));
    let output = sluice_test(&[path.as_os_str()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(78), "{out}");
    assert!(out.contains("test json lines are parsed ... failed"), "{out}");
    assert!(out.contains("test nested log_fields and a vrl input ... passed"), "{out}");
    assert!(out.contains("check[0] for transforms [\"parse\"] failed conditions:"), "{out}");
    assert!(out.contains("condition[0]: source execution failed"), "{out}");
    assert!(out.contains(r#"{"status":200,"timestamp":"#) && out.contains(r#""user":{"name":"ADA"}"#), "{out}");
}

#[test]
fn an_unmet_no_outputs_from_and_a_missing_output_fail() {
    let case = Case::new();
    let config = case.config(
        r#"
[transforms.keep]
inputs = []
type = "filter"
condition = '.keep == true'

[[tests]]
name = "dropped"
no_outputs_from = ["keep"]
[[tests.inputs]]
insert_at = "keep"
type = "log"
log_fields.keep = true

[[tests]]
name = "kept"
[[tests.inputs]]
insert_at = "keep"
type = "log"
log_fields.keep = false
[[tests.outputs]]
extract_from = "keep"
[[tests.outputs.conditions]]
type = "vrl"
source = ".keep == true"
"#,
    );
    let output = sluice_test(&[config.as_os_str()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(78), "{out}");
    assert!(out.contains("test dropped ... failed") && out.contains("test kept ... failed"), "{out}");
    assert!(out.contains(r#"check for transforms ["keep"] failed: expected no outputs"#), "{out}");
    assert!(out.contains(r#"checks for transforms ["keep"] failed: no events received"#), "{out}");
}

#[test]
fn a_test_that_cannot_be_built_is_named_and_nothing_runs() {
    let case = Case::new();
    let config = case.config(
        r#"
[transforms.a]
inputs = []
type = "remap"
source = "."

[transforms.b]
inputs = []
type = "remap"
source = "."

[[tests]]
name = "fine"
[[tests.inputs]]
insert_at = "a"
value = "x"
[[tests.outputs]]
extract_from = "a"

[[tests]]
name = "broken"
[[tests.inputs]]
insert_at = "nope"
value = "x"
[[tests.inputs]]
insert_at = "b"
type = "raw"
[[tests.outputs]]
extract_from = "a.missing"
[[tests.outputs.conditions]]
type = "vrl"
source = ".x =="

[[tests]]
name = "unreachable"
[[tests.inputs]]
insert_at = "b"
value = "x"
[[tests.outputs]]
extract_from = "a"
"#,
    );
    let output = sluice_test(&[config.as_os_str()]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(78), "{out}");
    assert!(!out.contains("... passed"), "no test runs: {out}");
    for expected in [
        "Failed to build test 'broken':",
        "inputs[0]: unable to locate target transform 'nope'",
        "inputs[1]: input type 'raw' requires the field 'value'",
        "unable to locate output 'a.missing'",
        "failed to create test condition '0'",
        "Failed to build test 'unreachable':",
        "Unable to complete topology between input target 'b' and output target(s)",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }
    assert!(!out.contains("'fine'"), "{out}");
}

#[test]
fn tests_in_their_own_file_run_against_the_pipeline_in_another() {
    let case = Case::new();
    let pipeline = case.path("pipeline.toml");
    std::fs::write(
        &pipeline,
        "[sources.in]\ntype = \"stdin\"\n[transforms.up]\ntype = \"remap\"\ninputs = [\"in\"]\nsource = '.message = upcase!(.message)'\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"up\"]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let tests = case.path("tests.yaml.conf");
    std::fs::write(
        &tests,
        "tests:\n  - name: shouted\n    inputs:\n      - insert_at: up\n        value: hi\n    outputs:\n      - extract_from: up\n        conditions:\n          - '.message == \"HI\"'\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let output = common::sluice()
        .arg("test")
        .arg(&pipeline)
        .arg("--config-yaml")
        .arg(&tests)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("test shouted ... passed"), "{out}");
    // The same pair validates as a pipeline (the tests are not components).
    let output = common::sluice()
        .arg("validate")
        .arg(&pipeline)
        .arg("--config-yaml")
        .arg(&tests)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn a_namespaced_config_directory_is_read_as_vector_reads_it() {
    let dir = behavior().join("namespaced");
    let output = common::sluice().args(["test", "-C"]).arg(&dir).output().unwrap_or_else(|e| panic!("{e}"));
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("test card numbers are redacted ... passed"), "{out}");
    let output = common::sluice().args(["validate", "-C"]).arg(&dir).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    // VECTOR_CONFIG_DIR stands in for the flag.
    let output =
        common::sluice().arg("validate").env("VECTOR_CONFIG_DIR", &dir).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn a_config_without_tests_says_so() {
    let case = Case::new();
    let config = case.config("[transforms.a]\ninputs = []\ntype = \"remap\"\nsource = \".\"\n");
    let output = sluice_test(&[config.as_os_str()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output).contains("No tests found."), "{}", text(&output));
}
