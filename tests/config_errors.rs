//! Golden config-error cases: every directory under `tests/config_errors/` holds a config and
//! the exact `sluice validate` output expected for it (`expected.txt`, exit code first).
//! Cases are discovered, not listed. `SLUICE_BLESS=1` rewrites the expected files.

mod common;

use std::path::Path;

fn run_case(dir: &Path) -> Result<(), String> {
    let mut configs: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("config"))
        .collect();
    configs.sort();
    let mut cmd = common::sluice();
    cmd.current_dir(dir).arg("validate").args(&configs);
    if dir.join("deny-warnings").exists() {
        cmd.arg("--deny-warnings");
    }
    let output = cmd.output().map_err(|e| e.to_string())?;
    let actual = format!("exit: {}\n{}", output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout));
    let expected_path = dir.join("expected.txt");
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&expected_path).map_err(|e| format!("{}: {e}", expected_path.display()))?;
    if expected != actual {
        return Err(format!("--- expected\n{expected}--- actual\n{actual}"));
    }
    Ok(())
}

#[test]
fn config_error_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_errors");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "expected golden cases under {}", root.display());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| run_case(case).err().map(|e| format!("case {}:\n{e}", case.display())))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
