//! `http_server` with acknowledgements (G2): a sender gets `response_code` only once its
//! events are delivered, an error when they failed, and 503 when the outcome takes too long.

mod common;

use std::time::Duration;

use common::{Case, assert_ledger_balanced, component, free_port, post, silent_intake, terminate, wait_for_port};

#[test]
fn client_gets_response_code_only_after_event_is_in_the_file() {
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
path = "/logs"
response_code = 202
headers = ["X-Tenant"]
query_parameters = ["env"]

[sinks.out]
type = "file"
inputs = ["intake"]
path = "{{dir}}/out.jsonl"
encoding.codec = "json"
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    for i in 0..100 {
        let body = format!("request {i} line a\nrequest {i} line b\n");
        let (status, _) = post(port, "/logs?env=prod", body.as_bytes());
        assert_eq!(status, 202);
        // The acknowledgement came back: both lines must already be in the file.
        let written = std::fs::read_to_string(case.path("out.jsonl")).unwrap_or_default();
        assert!(written.contains(&format!("request {i} line b")), "acknowledged before written: request {i}");
    }
    let (status, _) = post(port, "/elsewhere", b"x\n");
    assert_eq!(status, 404);
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let first = std::fs::read_to_string(case.path("out.jsonl")).unwrap_or_default();
    let event: serde_json::Value = serde_json::from_str(first.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(event["message"], "request 0 line a");
    assert_eq!(event["env"], "prod");
    assert_eq!(event["path"], "/logs");
    assert_eq!(event["source_type"], "http_server");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 200);
}

#[test]
fn client_never_gets_2xx_when_delivery_fails_and_nothing_durable_can_hold_the_events() {
    let case = Case::new();
    let port = free_port();
    let dead = free_port();
    // data_dir is a file, so the disk dead-letter queue cannot be written either.
    std::fs::write(case.path("not-a-dir"), b"").unwrap_or_default();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/not-a-dir"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"

[sinks.remote]
type = "http"
inputs = ["intake"]
uri = "http://127.0.0.1:{dead}/ingest"
encoding.codec = "json"
batch.timeout_secs = 0.05
request.retry_initial_backoff_secs = 0.05
request.retry_deadline_secs = 0.3
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    for i in 0..5 {
        let (status, body) = post(port, "/", format!("{{\"n\":{i}}}\n").as_bytes());
        assert_eq!(status, 500, "request {i}: {body}");
        assert!(body.contains("delivery failed"), "{body}");
    }
    // One good frame and one bad one: the whole request is rejected, and both are counted.
    let (status, body) = post(port, "/", b"{\"n\":9}\n{not json\n");
    assert_eq!(status, 400, "{body}");
    let (code, _) = terminate(child);
    assert_eq!(code, Some(1), "failed events make the exit code non-zero");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "remote")["errored"], 5);
    assert_eq!(component(&ledger, "intake")["discarded"]["decode_error"], 1);
    assert_eq!(component(&ledger, "intake")["discarded"]["request_rejected"], 1);
}

#[test]
fn client_gets_503_when_the_outcome_takes_longer_than_the_ack_timeout() {
    let case = Case::new();
    let port = free_port();
    let silent_port = silent_intake();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
ack_timeout_secs = 1

[sinks.stuck]
type = "http"
inputs = ["intake"]
uri = "http://127.0.0.1:{silent_port}/"
encoding.codec = "text"
batch.timeout_secs = 0.01
request.timeout_secs = 2
request.retry_initial_backoff_secs = 0.1
request.retry_deadline_secs = 2.5
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    let started = std::time::Instant::now();
    let (status, body) = post(port, "/", b"hello\n");
    assert_eq!(status, 503, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at the ack timeout, not the request timeout");
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "the event ended in the dead-letter queue, not failed: {stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "stuck")["dead_lettered"], 1);
}

#[test]
fn acknowledgements_off_answers_at_once_as_an_explicit_choice() {
    let case = Case::new();
    let port = free_port();
    let dead = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http"
address = "127.0.0.1:{port}"
acknowledgements = false
auth.strategy = "basic"
auth.username = "u"
auth.password = "p"

[sinks.remote]
type = "http"
inputs = ["intake"]
uri = "http://127.0.0.1:{dead}/"
encoding.codec = "text"
batch.timeout_secs = 0.01
request.retry_initial_backoff_secs = 0.05
request.retry_deadline_secs = 0.2
"#
    ));
    let validate = common::sluice().arg("validate").arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&validate.stdout).contains("acknowledgements are off for this source"));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    let (status, _) = post(port, "/", b"x\n");
    assert_eq!(status, 401, "basic auth is enforced");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(
        &mut stream,
        b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\nContent-Length: 2\r\nConnection: close\r\n\r\nx\n",
    )
    .unwrap_or_default();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap_or_default();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "remote")["dead_lettered"], 1, "undeliverable, so dead-lettered");
}

#[test]
fn api_serves_the_ledger_as_prometheus_metrics_and_health() {
    let case = Case::new();
    let port = free_port();
    let api = free_port();
    let config = case.config(&format!(
        r#"
api.enabled = true
api.address = "127.0.0.1:{api}"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[transforms.keep]
type = "filter"
inputs = ["intake"]
condition = '!contains(string!(.message), "debug")'

[sinks.out]
type = "blackhole"
inputs = ["keep"]
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    wait_for_port(api, Duration::from_secs(20));
    let (status, _) = post(port, "/", b"info a\ndebug b\ninfo c\n");
    assert_eq!(status, 200);
    let get = |path: &str| common::get(api, path);
    assert!(get("/health").starts_with("HTTP/1.1 200"));
    let metrics = get("/metrics");
    let labels = |id: &str, kind: &str, ty: &str| {
        format!("component_id=\"{id}\",component_kind=\"{kind}\",component_type=\"{ty}\"")
    };
    assert!(
        metrics
            .contains(&format!("component_received_events_total{{{}}} 3", labels("intake", "source", "http_server"))),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("component_sent_events_total{{{}}} 2", labels("out", "sink", "blackhole"))),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "component_discarded_events_total{{{},intentional=\"true\",reason=\"filter\"}} 1",
        labels("keep", "transform", "filter")
    )));
    let (code, _) = terminate(child);
    assert_eq!(code, Some(0));
    assert_ledger_balanced(&case.ledger());
}

#[test]
fn shutdown_dead_letters_what_cannot_be_delivered_within_the_drain_time() {
    let case = Case::new();
    let port = free_port();
    let silent_port = silent_intake();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
ack_timeout_secs = 0.5

[sinks.stuck]
type = "http"
inputs = ["intake"]
uri = "http://127.0.0.1:{silent_port}/"
encoding.codec = "text"
batch.timeout_secs = 0.01
request.timeout_secs = 60
"#
    ));
    let child = case.spawn_with(&config, &["--graceful-shutdown-limit-secs", "1"]);
    wait_for_port(port, Duration::from_secs(20));
    let (status, _) = post(port, "/", b"stuck\n");
    assert_eq!(status, 503);
    let started = std::time::Instant::now();
    let (code, stderr) = terminate(child);
    assert!(started.elapsed() < Duration::from_secs(10), "stopped within the limit");
    assert_eq!(code, Some(0), "the hanging request was cut short and its event stored: {stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "stuck")["dead_lettered_by_reason"]["retries_exhausted"], 1);
    let stored = std::fs::read_dir(case.path("data/dead_letter/stuck")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(stored, 1, "one DLQ segment");
}

#[test]
fn internal_metrics_reach_a_prometheus_exporter() {
    let case = Case::new();
    let port = free_port();
    let exporter = free_port();
    let config = case.config(&format!(
        r#"
[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[sinks.out]
type = "blackhole"
inputs = ["intake"]

[sources.self]
type = "internal_metrics"
scrape_interval_secs = 0.1
tags.host_key = "host"

[sinks.prom]
type = "prometheus_exporter"
inputs = ["self"]
address = "127.0.0.1:{exporter}"
suppress_timestamp = true
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    wait_for_port(exporter, Duration::from_secs(20));
    let (status, _) = post(port, "/", b"a\nb\nc\n");
    assert_eq!(status, 200);
    let series = "vector_component_sent_events_total{component_id=\"out\",component_kind=\"sink\",component_type=\"blackhole\",host=\"";
    let start = std::time::Instant::now();
    let scraped = loop {
        let text = common::get(exporter, "/metrics");
        if text.lines().any(|l| l.starts_with(series) && l.ends_with(" 3")) {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no up-to-date sample: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(scraped.contains("# TYPE vector_component_sent_events_total counter"));
    assert!(scraped.contains("# TYPE vector_component_in_flight_events gauge"));
    assert!(scraped.contains("vector_buffer_max_size_events{component_id=\"out\""));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert!(component(&ledger, "prom")["sent"].as_u64().unwrap_or(0) > 0, "the exporter took the metric events");
}

/// The incident's own config wrote Vector's deprecated `encoding = "json"`: it is accepted
/// with a warning naming `decoding`, and a JSON array body becomes one event per object.
#[test]
fn the_deprecated_encoding_json_is_accepted_with_a_warning_and_decodes_arrays() {
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
encoding = "json"

[sinks.out]
type = "file"
inputs = ["intake"]
path = "{{dir}}/out.jsonl"
encoding.codec = "json"
"#
    ));
    let validate = common::sluice().arg("validate").arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
    let report = String::from_utf8_lossy(&validate.stdout);
    assert_eq!(validate.status.code(), Some(0), "{report}");
    assert!(report.contains("`encoding` is deprecated") && report.contains("decoding.codec = \"json\""), "{report}");
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    let (status, _) = post(port, "/", br#"[{"model": "a", "tokens": 3}, {"model": "b", "tokens": 5}]"#);
    assert_eq!(status, 200);
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let written = std::fs::read_to_string(case.path("out.jsonl")).unwrap_or_default();
    let events: Vec<serde_json::Value> = written.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(events.len(), 2, "{written}");
    assert_eq!(events[1]["tokens"], 5);
}

/// A body over `max_body_bytes` is answered 413 in a way every client sees: at once when the
/// client waits for `100 Continue` (it never sends the body), else after the rest was read and
/// thrown away (a client that reads only once it has sent everything gets the 413, not a
/// broken pipe); a compressed body past 4 x the limit once decompressed too. Nothing of it
/// becomes an event; an empty body is 200 with no events.
#[test]
fn an_oversized_body_gets_a_413_the_client_can_read() {
    use std::io::{Read, Write};
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
max_body_bytes = 1048576

[sinks.out]
type = "file"
inputs = ["intake"]
path = "{{dir}}/out.jsonl"
encoding.codec = "json"
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    let answer = |stream: &mut std::net::TcpStream| {
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    };
    // A client that sends all 16 MiB before it reads.
    let body = vec![b'x'; 16 << 20];
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(&body).unwrap_or_else(|e| panic!("the body could not be sent whole: {e}"));
    let response = answer(&mut stream);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("max_body_bytes"), "{response}");
    // A client that waits for `100 Continue`: the 413 comes at once, no body sent.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let head = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let response = answer(&mut stream);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    // Chunked, with no length given.
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..4 {
        let chunk = vec![b'y'; 512 * 1024];
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(&chunk).unwrap_or_else(|e| panic!("{e}"));
        stream.write_all(b"\r\n").unwrap_or_else(|e| panic!("{e}"));
    }
    stream.write_all(b"0\r\n\r\n").unwrap_or_else(|e| panic!("{e}"));
    let response = answer(&mut stream);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    // Small compressed, too large once decompressed (past 4 x max_body_bytes): refused
    // whole, not cut at the limit with its tail lost.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n".repeat(128 * 1024)).unwrap_or_else(|e| panic!("{e}"));
    let body = gz.finish().unwrap_or_else(|e| panic!("{e}"));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(&body).unwrap_or_else(|e| panic!("{e}"));
    let response = answer(&mut stream);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("once decompressed"), "{response}");
    // Under the limit, and empty.
    assert_eq!(post(port, "/", b"small\n").0, 200);
    assert_eq!(post(port, "/", b"").0, 200);
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 1, "only the small body became an event");
}
