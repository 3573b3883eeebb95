//! `splunk_hec_logs` through the binary against the strict local HEC (`common::splunk`):
//! indexer acknowledgements (a sender is answered only after Splunk confirms its events are
//! indexed; an id never confirmed ends in the DLQ), HEC event fields, the raw endpoint, and
//! token errors.

mod common;

use std::time::{Duration, Instant};

use common::splunk::{HecOptions, Splunk};
use common::{Case, component, free_port, post, terminate, wait_for_port};
use serde_json::Value;

fn hec_sink(url: &str, input: &str, extra: &str) -> String {
    format!(
        r#"
[sinks.splunk]
type = "splunk_hec_logs"
inputs = ["{input}"]
endpoint = "{url}"
default_token = "tok-1"
batch.timeout_secs = 0.2
request.retry_initial_backoff_secs = 0.1
acknowledgements.query_interval = 0.1
{extra}
"#
    )
}

#[test]
fn a_sender_is_answered_only_after_splunk_confirms_its_events_indexed() {
    // Each ack id is reported indexed on the third query that asks for it.
    let splunk =
        Splunk::start(HecOptions { tokens: vec!["tok-1"], indexer_ack: true, indexes: vec!["main", "web"] }, |_| {
            Some(3)
        });
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.intake]\ntype = \"http_server\"\naddress = \"127.0.0.1:{port}\"\ndecoding.codec = \"json\"\n{}",
        hec_sink(&splunk.url(), "intake", "encoding.codec = \"json\"\nindex = \"{{ app }}\"\nsourcetype = \"_json\"\nindexed_fields = [\"app\"]")
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    let body: String = (0..50).map(|n| format!("{{\"n\":{n},\"app\":\"web\",\"host\":\"h1\"}}\n")).collect();
    let (status, text) = post(port, "/", body.as_bytes());
    let answered = Instant::now();
    assert_eq!(status, 200, "{text}");
    let indexed = splunk.indexed();
    assert_eq!(indexed.len(), 50, "all indexed by the time the sender is answered");
    assert!(indexed.iter().all(|(_, at)| *at <= answered), "answered before Splunk confirmed");
    assert!(splunk.state.lock().map(|s| s.ack_queries).unwrap_or_default() >= 3);
    let (event, _) = &indexed[0];
    assert_eq!(event["index"], "web");
    assert_eq!(event["sourcetype"], "_json");
    assert_eq!(event["host"], "h1");
    assert_eq!(event["fields"]["app"], "web");
    assert!(event["time"].as_f64().is_some_and(|t| t > 1.7e9), "{event}");
    assert!(event["event"]["n"].is_u64() && event["event"].get("timestamp").is_none(), "{event}");
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "splunk")["sent"], 50);
}

#[test]
fn an_ack_id_never_confirmed_is_retried_then_dead_lettered() {
    // Requests holding an event marked `hold` are accepted but never reported indexed.
    let rule = |events: &[Value]| if events.iter().any(|e| e["event"]["hold"] == true) { None } else { Some(1) };
    let splunk = Splunk::start(HecOptions { tokens: vec!["tok-1"], indexer_ack: true, indexes: vec!["main"] }, rule);
    let case = Case::new();
    let extra = "encoding.codec = \"json\"\nbatch.max_events = 10\nrequest.retry_attempts = 1\nacknowledgements.retry_limit = 5";
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        hec_sink(&splunk.url(), "in", extra)
    ));
    let input: String = (0..30).map(|n| format!("{{\"n\":{n},\"hold\":{}}}\n", (20..30).contains(&n))).collect();
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(splunk.indexed().len(), 20);
    let dlq = common::files::dead_letters(&case.path("data"), "splunk");
    let mut dead: Vec<u64> = dlq.iter().filter_map(|r| r["event"]["n"].as_u64()).collect();
    dead.sort_unstable();
    assert_eq!(dead, (20..30).collect::<Vec<u64>>());
    assert_eq!(dlq[0]["reason"], "retries_exhausted");
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not confirm ack id"), "{message}");
    assert_eq!(dlq[0]["attempts"], 2, "sent, then retried once");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "splunk")["errors"]["indexer_ack_timeout/sending"], 2);
}

#[test]
fn a_bad_token_dead_letters_only_its_events_and_raw_lines_carry_their_metadata() {
    let splunk =
        Splunk::start(HecOptions { tokens: vec!["tok-1"], indexer_ack: false, indexes: vec!["main"] }, |_| Some(0));
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"

[transforms.token]
type = "remap"
inputs = ["in"]
source = 'if starts_with(string!(.message), "bad") {{ set_secret("splunk_hec_token", "revoked") }}'
{}"#,
        hec_sink(
            &splunk.url(),
            "token",
            "endpoint_target = \"raw\"\nencoding.codec = \"text\"\nindex = \"main\"\nsourcetype = \"syslog\"\ncompression = \"gzip\"\nacknowledgements.indexer_acknowledgements_enabled = false"
        )
    ));
    let input: String =
        (0..20).map(|n| if n % 4 == 0 { format!("bad {n}\n") } else { format!("good {n}\n") }).collect();
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let indexed = splunk.indexed();
    assert_eq!(indexed.len(), 15);
    assert!(indexed.iter().all(|(e, _)| e["event"].as_str().is_some_and(|l| l.starts_with("good"))));
    assert!(indexed.iter().all(|(e, _)| e["index"] == "main" && e["sourcetype"] == "syslog"));
    let dlq = common::files::dead_letters(&case.path("data"), "splunk");
    assert_eq!(dlq.len(), 5);
    assert!(dlq.iter().all(|r| r["status"] == 403), "{}", dlq[0]);
    common::assert_ledger_balanced(&case.ledger());
}
