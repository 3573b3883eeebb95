//! `elasticsearch` through the binary against the strict local `_bulk` server
//! (`common::elastic`): partial failures read item by item (retried, dead-lettered or
//! delivered, each exactly as often as it should be), pretty-printed answers, both
//! `request_retry_partial` settings, version detection, data streams, authentication and
//! several endpoints.

mod common;

use std::collections::BTreeMap;

use common::elastic::{Elastic, EsOptions};
use common::{Case, component};
use serde_json::Value;

fn es_config(endpoints: &[String], extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"

[sinks.es]
type = "elasticsearch"
inputs = ["in"]
endpoints = [{}]
bulk.index = "logs"
request.retry_initial_backoff_secs = 0.05
{extra}
"#,
        endpoints.join(", ")
    )
}

fn events(n: usize) -> String {
    (0..n).map(|i| format!("{{\"n\":{i},\"message\":\"event {i}\"}}\n")).collect()
}

/// The `n` of every document the server received, with how many times.
fn received_counts(es: &Elastic) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for (_, _, doc) in &es.state.lock().map(|s| s.received.clone()).unwrap_or_default() {
        let doc: Value = serde_json::from_str(doc).unwrap_or_default();
        *counts.entry(doc["n"].as_u64().unwrap_or(u64::MAX)).or_default() += 1;
    }
    counts
}

/// Items by `n % 10`: 1 → 429 and 3 → 503 on their first try only; 2 → 400 (a mapping error)
/// always; the rest → 201. (Elasticsearch documents per-item `status` and `error.type`/
/// `error.reason` in bulk answers, with `errors: true` when any item failed.)
fn mixed(doc: &Value, seen: usize) -> Option<common::elastic::Failure> {
    let n = doc["n"].as_u64().unwrap_or_default();
    match n % 10 {
        1 if seen == 0 => {
            Some((429, "es_rejected_execution_exception", "rejected execution of coordinating operation".into()))
        }
        3 if seen == 0 => Some((503, "unavailable_shards_exception", "primary shard is not active".into())),
        2 => {
            Some((400, "mapper_parsing_exception", format!("failed to parse field [n] of type [long] in document {n}")))
        }
        _ => None,
    }
}

#[test]
fn a_partially_failed_bulk_retries_only_the_429_and_503_items() {
    // Pretty-printed answers (`"errors" : true`) must be read as errors.
    let es = Elastic::start(EsOptions { pretty: true, ..EsOptions::default() }, mixed);
    let case = Case::new();
    let config = case.config(&es_config(&[es.url()], "request_retry_partial = true\nbatch.max_events = 1000"));
    let output = case.run_with_stdin(&config, events(1000).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let counts = received_counts(&es);
    for n in 0..1000u64 {
        let expected = match n % 10 {
            1 | 3 => 2,
            _ => 1,
        };
        assert_eq!(counts.get(&n), Some(&expected), "document {n} was received {:?} times", counts.get(&n));
    }
    assert_eq!(es.count("logs"), 900, "every document but the 100 rejected ones is indexed");
    let dlq = common::files::dead_letters(&case.path("data"), "es");
    assert_eq!(dlq.len(), 100, "the rejected items, one by one");
    for record in &dlq {
        let n = record["event"]["n"].as_u64().unwrap_or_default();
        assert_eq!(n % 10, 2, "{record}");
        assert_eq!(record["status"], 400);
        let message = record["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("mapper_parsing_exception: failed to parse field [n]"), "{message}");
    }
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    let es_ledger = component(&ledger, "es");
    assert_eq!(es_ledger["sent"], 900);
    assert_eq!(es_ledger["dead_lettered"], 100);
}

#[test]
fn without_request_retry_partial_failed_items_are_not_sent_again_but_kept() {
    let es = Elastic::start(EsOptions::default(), mixed);
    let case = Case::new();
    let config = case.config(&es_config(&[es.url()], "batch.max_events = 1000"));
    let output = case.run_with_stdin(&config, events(1000).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let counts = received_counts(&es);
    assert!(counts.values().all(|&c| c == 1), "nothing is sent twice (Vector's documented behaviour)");
    assert_eq!(es.count("logs"), 700);
    let dlq = common::files::dead_letters(&case.path("data"), "es");
    assert_eq!(dlq.len(), 300);
    let not_retried = dlq
        .iter()
        .filter(|r| r["message"].as_str().is_some_and(|m| m.contains("not retried: request_retry_partial is false")))
        .count();
    assert_eq!(not_retried, 200, "the 429 and 503 items say why they were not retried");
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn the_version_is_read_at_start_and_6_gets_a_document_type() {
    // The local server, like Elasticsearch, rejects a bulk without `_type` on 6.x and one with
    // `_type` on 8.x: every document indexed means the right format was chosen.
    for version in ["6.8.23", "7.17.0", "8.15.0"] {
        let es = Elastic::start(EsOptions { version, ..EsOptions::default() }, |_, _| None);
        let case = Case::new();
        let config = case.config(&es_config(&[es.url()], ""));
        let output = case.run_with_stdin(&config, events(10).as_bytes());
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(es.count("logs"), 10, "version {version}: every document indexed");
        let requests = es.state.lock().map(|s| s.requests.clone()).unwrap_or_default();
        assert_eq!(requests[0].0, "GET", "the version is asked first");
    }
}

#[test]
fn a_server_of_version_8_rejects_a_forced_v6_format_and_nothing_is_lost() {
    let es = Elastic::start(EsOptions::default(), |_, _| None);
    let case = Case::new();
    let config = case.config(&es_config(&[es.url()], "api_version = \"v6\""));
    let output = case.run_with_stdin(&config, events(4).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(es.count("logs"), 0);
    let dlq = common::files::dead_letters(&case.path("data"), "es");
    assert_eq!(dlq.len(), 4);
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unknown parameter [_type]"), "{message}");
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn data_stream_mode_creates_documents_with_a_timestamp_and_id_key_sets_the_id() {
    let es = Elastic::start(EsOptions::default(), |_, _| None);
    let case = Case::new();
    let extra = "mode = \"data_stream\"\ndata_stream.dataset = \"app\"\nid_key = \"id\"\ncompression = \"gzip\"";
    let config = case.config(&es_config(&[es.url()], extra).replace("bulk.index = \"logs\"\n", ""));
    let input: String = (0..20)
        .map(|i| format!("{{\"id\":\"doc-{i}\",\"timestamp\":\"2026-12-02T08:00:00Z\",\"message\":\"m{i}\"}}\n"))
        .collect();
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(es.count("logs-app-default"), 20);
    let state = es.state.lock().map(|s| (s.indices.clone(), s.received.clone(), s.requests.clone()));
    let (indices, received, requests) = state.unwrap_or_default();
    let docs = &indices["logs-app-default"];
    let doc = &docs["doc-3"];
    assert_eq!(doc["@timestamp"], "2026-12-02T08:00:00Z");
    assert!(doc.get("id").is_none() && doc.get("timestamp").is_none(), "{doc}");
    assert_eq!(doc["data_stream"]["dataset"], "app");
    assert!(received.iter().all(|(action, _, _)| action == "create"));
    assert!(requests.iter().filter(|r| r.0 == "POST").all(|r| r.3.as_deref() == Some("gzip")));
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn a_wrong_password_dead_letters_each_batch_whole_without_splitting() {
    let es = Elastic::start(EsOptions { basic_auth: Some(("elastic", "right")), ..EsOptions::default() }, |_, _| None);
    let case = Case::new();
    let extra = "auth.strategy = \"basic\"\nauth.user = \"elastic\"\nauth.password = \"wrong\"\napi_version = \"v8\"";
    let config = case.config(&es_config(&[es.url()], extra));
    let output = case.run_with_stdin(&config, events(50).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Bulk requests only (the healthcheck's `GET /_cluster/health` was refused too).
    let requests = es.state.lock().map(|s| s.requests.iter().filter(|r| r.0 == "POST").count()).unwrap_or_default();
    assert_eq!(requests, 1, "one request, no split");
    let dlq = common::files::dead_letters(&case.path("data"), "es");
    assert_eq!(dlq.len(), 50);
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("401") && message.contains("security_exception"), "{message}");
    common::assert_ledger_balanced(&case.ledger());

    // The right password, and the query parameters and pipeline on the URL.
    let case = Case::new();
    let extra = "auth.strategy = \"basic\"\nauth.user = \"elastic\"\nauth.password = \"right\"\npipeline = \"p1\"\nquery.refresh = \"true\"";
    let config = case.config(&es_config(&[es.url()], extra));
    let output = case.run_with_stdin(&config, events(50).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(es.count("logs"), 50);
    let requests = es.state.lock().map(|s| s.requests.clone()).unwrap_or_default();
    let bulk = requests.iter().rfind(|r| r.1 == "/_bulk").unwrap_or_else(|| panic!("no bulk request"));
    assert!(bulk.2.contains(&("pipeline".to_owned(), "p1".to_owned())), "{:?}", bulk.2);
    assert!(bulk.2.contains(&("refresh".to_owned(), "true".to_owned())), "{:?}", bulk.2);
}

#[test]
fn requests_take_turns_over_endpoints_and_skip_a_dead_one() {
    let a = Elastic::start(EsOptions::default(), |_, _| None);
    let b = Elastic::start(EsOptions::default(), |_, _| None);
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let case = Case::new();
    let extra = "batch.max_events = 10\nrequest.concurrency = 1";
    let config = case.config(&es_config(&[a.url(), b.url(), dead], extra));
    let output = case.run_with_stdin(&config, events(200).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(a.count("logs") + b.count("logs"), 200, "every document indexed once");
    assert!(a.count("logs") >= 50 && b.count("logs") >= 50, "both live endpoints took requests");
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn opensearch_service_requests_are_signed_for_es_in_the_region() {
    let es = Elastic::start(
        EsOptions {
            sigv4_region: Some("eu-west-1"),
            distribution: Some("opensearch"),
            version: "2.11.0",
            ..EsOptions::default()
        },
        |_, _| None,
    );
    let case = Case::new();
    let extra = "auth.strategy = \"aws\"\nauth.access_key_id = \"AKIDEXAMPLE\"\nauth.secret_access_key = \"secret\"\naws.region = \"eu-west-1\"";
    let config = case.config(&es_config(&[es.url()], extra));
    let output = case.run_with_stdin(&config, events(20).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let dlq = common::files::dead_letters(&case.path("data"), "es");
    assert_eq!(es.count("logs"), 20, "signed requests are accepted: {:?}", dlq.first());
    let requests = es.state.lock().map(|s| s.requests.clone()).unwrap_or_default();
    assert_eq!(requests[0].1, "/", "the version was read with a signed GET");
    common::assert_ledger_balanced(&case.ledger());
}
