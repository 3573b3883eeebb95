//! Sinks' healthchecks at start, as Vector's: a failing one is logged and the pipeline runs;
//! with `--require-healthy` (or `healthchecks.require_healthy`) sluice exits 78 instead;
//! `healthcheck.enabled = false` and `healthchecks.enabled = false` skip them.

mod common;

use common::datadog::Datadog;
use common::elastic::{Elastic, EsOptions};
use common::intake::Intake;
use common::loki::{Loki, LokiOptions};
use common::splunk::{HecOptions, Splunk};
use common::{Case, free_port, sluice};

fn run(case: &Case, config: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut command = sluice();
    command.env("SLUICE_LOG", "info").args(args);
    let output = common::run_sluice(command, config, Some(&case.path("ledger.json")), b"");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn http_sink(health_uri: &str, extra: &str) -> String {
    format!(
        r#"
{extra}
data_dir = "{{dir}}/data"

[sources.in]
type = "stdin"

[sinks.out]
type = "http"
inputs = ["in"]
uri = "{health_uri}/ingest"
encoding.codec = "json"
healthcheck.uri = "{health_uri}/health"
"#
    )
}

#[test]
fn an_unreachable_sink_fails_its_healthcheck_and_require_healthy_exits_78() {
    let case = Case::new();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = case.config(&http_sink(&dead, ""));
    let (code, stderr) = run(&case, &config, &["--require-healthy"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("Healthcheck failed"), "{stderr}");
    assert!(stderr.contains("component_id=out") || stderr.contains("sink \"out\""), "names the sink: {stderr}");

    // Without the flag, the failure is logged and the pipeline runs (stdin ends at once).
    let (code, stderr) = run(&case, &config, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Healthcheck failed"), "{stderr}");

    // The global option does what the flag does.
    let config = case.config(&http_sink(&dead, "healthchecks.require_healthy = true"));
    let (code, stderr) = run(&case, &config, &[]);
    assert_eq!(code, Some(78), "{stderr}");
}

#[test]
fn a_disabled_healthcheck_is_not_run() {
    let case = Case::new();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = case.config(&format!("{}healthcheck.enabled = false\n", http_sink(&dead, "")));
    let (code, stderr) = run(&case, &config, &["--require-healthy"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("Healthcheck"), "{stderr}");
    let config = case.config(&http_sink(&dead, "healthchecks.enabled = false"));
    let (code, stderr) = run(&case, &config, &["--require-healthy"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_reachable_sink_passes_and_the_pipeline_runs() {
    let case = Case::new();
    let intake = Intake::start(|head, _, _| if head.starts_with("GET /health ") { 200 } else { 404 });
    let config = case.config(&http_sink(&format!("http://127.0.0.1:{}", intake.port), ""));
    let (code, stderr) = run(&case, &config, &["--require-healthy"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Healthcheck passed"), "{stderr}");

    // A server that answers, but not 2xx, is unhealthy.
    let failing = Intake::start(|_, _, _| 503);
    let config = case.config(&http_sink(&format!("http://127.0.0.1:{}", failing.port), ""));
    let (code, stderr) = run(&case, &config, &["--require-healthy"]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");
}

/// Each API sink asks what Vector's asks (Elasticsearch `GET /_cluster/health`, Loki
/// `GET /ready`, Splunk `GET /services/collector/health/1.0` with the token, Datadog
/// `GET /api/v1/validate` with the key) of a server that follows the published API.
#[test]
fn the_api_sinks_check_their_servers_as_vector_does() {
    let es = Elastic::start(EsOptions::default(), |_, _| None);
    let loki = Loki::start(LokiOptions { ordered: false, multi_tenant: false });
    let hec = Splunk::start(HecOptions { tokens: vec!["tok"], indexer_ack: false, indexes: vec!["main"] }, |_| None);
    let dd = Datadog::start(&["good-key"]);
    let sinks = [
        ("elasticsearch", format!("endpoints = [\"{}\"]", es.url()), 0),
        ("loki", format!("endpoint = \"{}\"\nencoding.codec = \"json\"\nlabels.app = \"x\"", loki.url()), 0),
        (
            "splunk_hec_logs",
            format!("endpoint = \"{}\"\ndefault_token = \"tok\"\nencoding.codec = \"json\"", hec.url()),
            0,
        ),
        (
            "splunk_hec_logs",
            format!("endpoint = \"{}\"\ndefault_token = \"bad\"\nencoding.codec = \"json\"", hec.url()),
            78,
        ),
        ("datadog_logs", format!("endpoint = \"{}\"\ndefault_api_key = \"good-key\"", dd.url()), 0),
        ("datadog_logs", format!("endpoint = \"{}\"\ndefault_api_key = \"bad-key\"", dd.url()), 78),
    ];
    for (kind, fields, expected) in sinks {
        let case = Case::new();
        let config = case.config(&format!(
            "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"{kind}\"\ninputs = [\"in\"]\n{fields}\n"
        ));
        common::assert_healthcheck(&config, expected == 0, &format!("{kind} ({fields})"));
    }
}
