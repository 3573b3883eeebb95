//! The command line Vector users already type: `validate --no-environment`, format flags,
//! `--threads`, `--log-format json`, `VECTOR_CONFIG`.

mod common;

use common::Case;

const PIPELINE: &str = "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n";

#[test]
fn validate_takes_vectors_ci_flags() {
    let case = Case::new();
    let config = case.config(PIPELINE);
    let output = common::sluice()
        .args(["validate", "--no-environment", "--skip-healthchecks", "--deny-warnings"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Validated"));
}

/// Vector users validate in CI, on machines without the certificates the config names:
/// `--no-environment` leaves out what is about the machine, and nothing else.
#[test]
fn validate_no_environment_leaves_out_missing_files_but_not_config_errors() {
    let case = Case::new();
    let config = case.config(
        r#"
[sources.in]
type = "http_server"
address = "127.0.0.1:9000"
tls.enabled = true
tls.crt_file = "/etc/sluice-tests/missing/server.pem"
tls.key_file = "/etc/sluice-tests/missing/server.key"
[sinks.out]
type = "blackhole"
inputs = ["in"]
"#,
    );
    let validate = |flags: &[&str]| {
        let output =
            common::sluice().arg("validate").args(flags).arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, report) = validate(&[]);
    assert_eq!(code, Some(78), "{report}");
    assert!(report.contains("cannot read `/etc/sluice-tests/missing/server.pem`"), "{report}");
    let (code, report) = validate(&["--no-environment"]);
    assert_eq!(code, Some(0), "{report}");
    assert!(report.contains("1 about this machine left out by --no-environment"), "{report}");
    // A mistake in the config itself is still one.
    std::fs::write(&config, std::fs::read_to_string(&config).unwrap_or_default().replace("blackhole", "blackhol"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, report) = validate(&["--no-environment"]);
    assert_eq!(code, Some(78), "{report}");
    assert!(report.contains("did you mean `blackhole`?"), "{report}");
}

/// Cloud credentials are the machine's too: a GCS sink whose key file is not here.
#[test]
fn validate_no_environment_leaves_out_missing_cloud_credentials() {
    let case = Case::new();
    let config = case.config(
        r#"
[sources.in]
type = "stdin"
[sinks.gcs]
type = "gcp_cloud_storage"
inputs = ["in"]
bucket = "logs"
credentials_path = "/etc/sluice-tests/missing/key.json"
encoding.codec = "json"
"#,
    );
    let validate = |flags: &[&str]| {
        let output = common::sluice()
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .arg("validate")
            .args(flags)
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (output.status.code(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (code, report) = validate(&[]);
    assert_eq!(code, Some(78), "{report}");
    assert!(report.contains("/etc/sluice-tests/missing/key.json"), "{report}");
    let (code, report) = validate(&["--no-environment"]);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn a_config_named_anything_is_read_in_the_format_its_flag_gives() {
    let case = Case::new();
    let toml = case.path("pipeline.conf");
    std::fs::write(&toml, PIPELINE).unwrap_or_else(|e| panic!("{e}"));
    let json = case.path("pipeline.cfg");
    std::fs::write(
        &json,
        r#"{"sources": {"in": {"type": "stdin"}}, "sinks": {"out": {"type": "blackhole", "inputs": ["in"]}}}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for (flag, path) in [("--config-toml", &toml), ("--config-json", &json)] {
        let output = common::sluice().arg("validate").arg(flag).arg(path).output().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(output.status.code(), Some(0), "{flag}: {}", String::from_utf8_lossy(&output.stdout));
    }
    // By extension it is YAML, which this is not.
    let output = common::sluice().arg("validate").arg(&toml).output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(78));
}

#[test]
fn run_takes_threads_log_format_and_vector_config() {
    let case = Case::new();
    let config = case.config(PIPELINE);
    let mut command = common::sluice();
    command.env("SLUICE_LOG", "info").env("VECTOR_CONFIG", &config).args(["--threads", "1", "--log-format", "json"]);
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, b"a\nb\nc\n").unwrap_or_else(|e| panic!("{e}"));
    }
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "Collected events." && l["fields"]["events"] == 3),
        "{stderr}"
    );
    assert!(lines.iter().all(|l| l["level"].is_string() && l["timestamp"].is_string()), "{stderr}");
}

fn vrl(args: &[&str], input: &str) -> std::process::Output {
    let mut child = common::sluice()
        .arg("vrl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn vrl_runs_a_fix_program_over_events_and_prints_each_result() {
    let case = Case::new();
    let fix = case.path("fix.vrl");
    std::fs::write(
        &fix,
        "if .tenant == \"gone\" { abort }\n.api_key = \"rotated\"\n.retries = to_int!(.retries) + 1\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let fix = fix.display().to_string();
    let input = "{\"tenant\":\"a\",\"retries\":\"2\"}\n{\"tenant\":\"gone\"}\n{\"tenant\":\"b\",\"retries\":\"many\"}\nnot json\n";
    let output = vrl(&["--program", &fix, "--print-object"], input);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0], r#"{"api_key":"rotated","retries":3,"tenant":"a"}"#);
    assert!(lines[1].starts_with("aborted"), "{stdout}");
    assert!(lines[2].starts_with("error: ") && lines[2].contains("many"), "{stdout}");
    assert_eq!(
        lines[3], r#"{"api_key":"rotated","message":"not json","retries":1}"#,
        "a line that is not JSON is a `message`"
    );
    assert_eq!(output.status.code(), Some(1), "an event failed");
    // Without --print-object: the value of the last expression.
    let output = vrl(&[".n = 1; .n + 41"], "{}\n");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "42\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn vrl_refuses_a_program_that_does_not_compile_with_vrls_diagnostics() {
    let output = vrl(&[".a = parse_json(.message)"], "{}\n");
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("E103"), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
}
