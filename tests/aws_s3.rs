//! `aws_s3` through the binary against moto (a real S3 API on loopback): objects read back
//! through S3's own API, a bucket deleted mid-run, a kill -9 with a disk buffer.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::moto::Moto;
use common::{Case, component};

fn s3_sink(moto: &Moto, bucket: &str, extra: &str) -> String {
    format!(
        r#"
[sinks.s3]
type = "aws_s3"
inputs = ["in"]
bucket = "{bucket}"
endpoint = "{endpoint}"
region = "us-east-1"
auth.access_key_id = "testing"
auth.secret_access_key = "testing"
encoding.codec = "json"
{extra}
"#,
        endpoint = moto.endpoint()
    )
}

/// `n` JSON events with ids `from..from+n`, spread over three models.
fn events(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("{{\"id\":{i},\"model\":\"m{}\",\"latency_ms\":{}}}\n", i % 3, i * 7 % 9000))
        .collect()
}

/// How many times each id is in the bucket.
fn ids_in(moto: &Moto, bucket: &str) -> BTreeMap<u64, usize> {
    let mut ids = BTreeMap::new();
    for line in moto.lines(bucket) {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        *ids.entry(value["id"].as_u64().unwrap_or(u64::MAX)).or_insert(0) += 1;
    }
    ids
}

#[test]
fn objects_are_gzip_batches_under_the_rendered_prefix() {
    let moto = Moto::start();
    moto.create_bucket("logs");
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        s3_sink(&moto, "logs", "key_prefix = \"llm/{{ model }}/%Y/\"\nbatch.max_events = 1000\nbatch.timeout_secs = 1")
    ));
    let output = case.run_with_stdin(&config, events(0, 2500).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let keys = moto.keys("logs");
    let year = chrono::Utc::now().format("%Y").to_string();
    for key in &keys {
        let ok = ["m0", "m1", "m2"].iter().any(|m| key.starts_with(&format!("llm/{m}/{year}/")));
        assert!(ok && key.ends_with(".log.gz"), "key {key}");
        let object = moto.get("logs", key);
        assert!(object.body.starts_with(&[0x1f, 0x8b]), "gzip body");
    }
    // 2,500 events over three models: at least one object per model, none over 1,000 events.
    assert!(keys.len() >= 3, "{keys:?}");
    let ids = ids_in(&moto, "logs");
    assert_eq!(ids.len(), 2500);
    assert!(ids.values().all(|n| *n == 1), "each event once");
    for key in &keys {
        let model = key.split('/').nth(1).unwrap_or_default().to_owned();
        let lines = {
            let body = moto.get("logs", key).body;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
                .unwrap_or_else(|e| panic!("{e}"));
            text
        };
        assert!(lines.lines().count() <= 1000);
        assert!(lines.lines().all(|l| l.contains(&format!("\"model\":\"{model}\""))), "one model per object");
    }
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "s3")["sent"], 2500);
}

#[test]
fn a_bucket_deleted_mid_run_dead_letters_each_batch_in_one_request() {
    let moto = Moto::start();
    moto.create_bucket("llm");
    let case = Case::new();
    let port = common::free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"
{}
"#,
        s3_sink(&moto, "llm", "batch.max_events = 100\nbatch.timeout_secs = 0.5\nrequest.concurrency = 1")
    ));
    let api = common::enable_api(&config);
    let child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    assert_eq!(common::post(port, "/", events(0, 100).as_bytes()).0, 200);
    assert_eq!(ids_in(&moto, "llm").len(), 100, "delivered while the bucket exists");
    moto.delete_bucket("llm");
    for batch in 0..3 {
        let (status, body) = common::post(port, "/", events(100 + batch * 100, 100).as_bytes());
        assert_eq!(status, 200, "the events are stored in the DLQ, so the sender is done: {body}");
    }
    let metrics = common::get(api, "/metrics");
    let destination_errors = common::sample(
        &metrics,
        r#"component_errors_total{component_id="s3",component_kind="sink",component_type="aws_s3",error_type="destination_error",stage="sending"}"#,
    );
    assert_eq!(destination_errors, Some(3.0), "one request per batch, no splitting: {metrics}");
    assert!(!metrics.contains(r#"component_type="aws_s3",error_type="batch_split""#), "{metrics}");
    common::files::stop(child);
    let dlq = common::files::dead_letters(&case.path("data"), "s3");
    assert_eq!(dlq.len(), 300);
    assert!(dlq.iter().all(|r| r["reason"] == "permanent"));
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("NoSuchBucket"), "{message}");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "s3")["sent"], 100);
    assert_eq!(component(&ledger, "s3")["dead_lettered"], 300);
}

#[test]
fn a_kill_during_uploads_loses_no_acknowledged_event() {
    let moto = Moto::start();
    moto.create_bucket("crash");
    let case = Case::new();
    let port = common::free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"
{}
"#,
        s3_sink(
            &moto,
            "crash",
            "batch.max_events = 50\nbatch.timeout_secs = 0.2\nbuffer.type = \"disk\"\nbuffer.max_size = 268435488"
        )
    ));
    let mut child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    // Acknowledged means fsynced in the disk buffer; the kill comes while objects are going out.
    let mut acknowledged = Vec::new();
    for request in 0..40 {
        let from = request * 50;
        if common::post(port, "/", events(from, 50).as_bytes()).0 == 200 {
            acknowledged.extend(from..from + 50);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(acknowledged.len(), 2000);
    let restarted = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    let all_there = common::files::wait_until(Duration::from_secs(60), || {
        let ids = ids_in(&moto, "crash");
        acknowledged.iter().all(|id| ids.contains_key(&(*id as u64)))
    });
    common::files::stop(restarted);
    let ids = ids_in(&moto, "crash");
    assert!(all_there, "every acknowledged event is in the bucket after the restart ({} ids)", ids.len());
    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    println!("duplicates after kill -9: {duplicates}");
    assert!(duplicates <= 2000, "duplicates are bounded by what was in flight");
}

/// Runs sluice with no AWS credentials anywhere it looks (and the instance metadata service
/// switched off: nothing leaves loopback).
fn without_aws_environment(command: &mut std::process::Command, home: &std::path::Path) {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(var);
    }
    command
        .env("HOME", home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
}

#[test]
fn a_profile_in_a_credentials_file_is_used() {
    let moto = Moto::start();
    moto.create_bucket("profiled");
    let case = Case::new();
    let credentials = case.path("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = wrong\n\n[ci]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sink = s3_sink(&moto, "profiled", "batch.timeout_secs = 0.2")
        .replace("auth.access_key_id = \"testing\"\nauth.secret_access_key = \"testing\"\n", "");
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{sink}\nauth.credentials_file = \"{}\"\nauth.profile = \"ci\"\n",
        credentials.display()
    ));
    let mut command = common::sluice();
    without_aws_environment(&mut command, case.dir.path());
    let output = common::run_sluice(command, &config, None, events(0, 10).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(ids_in(&moto, "profiled").len(), 10);
}

#[test]
fn no_credentials_is_a_clear_error_at_start_not_a_stream_of_403s() {
    let moto = Moto::start();
    moto.create_bucket("nocreds");
    let case = Case::new();
    let sink = s3_sink(&moto, "nocreds", "request.retry_deadline_secs = 1\nrequest.retry_initial_backoff_secs = 0.1")
        .replace("auth.access_key_id = \"testing\"\nauth.secret_access_key = \"testing\"\n", "");
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{sink}"
    ));
    let mut command = common::sluice();
    without_aws_environment(&mut command, case.dir.path());
    let output = common::run_sluice(command, &config, Some(&case.path("ledger.json")), events(0, 10).as_bytes());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("No AWS credentials"), "said at start: {stderr}");
    assert!(moto.keys("nocreds").is_empty());
    let ledger = case.ledger();
    let s3 = component(&ledger, "s3");
    assert_eq!(s3["dead_lettered"], 10, "{s3:#}");
    assert!(s3["errors"]["credentials/sending"].as_u64().unwrap_or(0) >= 1, "{s3:#}");
    let dlq = common::files::dead_letters(&case.path("data"), "s3");
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("no AWS credentials"), "{message}");
}

/// The incident's pipeline, as written: 50 senders post batches of 100 LLM inference events
/// to http_server → remap → aws_s3 (gzip, 1,000-event objects, a prefix per model), and S3
/// answers 503 SlowDown to 1 PUT in 10 and has its answer cut mid-response on 1 in 25.
#[test]
fn the_incident_pipeline_delivers_every_event_through_slowdowns_and_cut_connections() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    const SENDERS: usize = 50;
    const POSTS: usize = 220;
    const PER_POST: usize = 100;
    let moto = Moto::start();
    moto.create_bucket("llm-logs");
    let proxy = common::fault_proxy::FaultProxy::start(moto.port, 10, 25);
    let case = Case::new();
    let port = common::free_port();
    let sink = s3_sink(
        &moto,
        "llm-logs",
        "key_prefix = \"llm/{{ model }}/\"\nbatch.max_events = 1000\nbatch.timeout_secs = 2\nrequest.retry_initial_backoff_secs = 0.2\nrequest.retry_max_duration_secs = 1",
    )
    .replace(&moto.endpoint(), &format!("http://127.0.0.1:{}", proxy.port))
    .replace("inputs = [\"in\"]", "inputs = [\"enrich\"]");
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"
[transforms.enrich]
type = "remap"
inputs = ["intake"]
source = '''
.total_tokens = int!(.prompt_tokens) + int!(.completion_tokens)
.is_high_latency = int!(.latency_ms) > 5000
'''
{sink}
"#
    ));
    let api = common::enable_api(&config);
    let child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));

    // Each post: its ids, when its answer came, and its status.
    type Ack = (std::ops::Range<u64>, Instant, u16);
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let acks = acks.clone();
            std::thread::spawn(move || {
                for post in (sender..POSTS).step_by(SENDERS) {
                    let from = post * PER_POST;
                    let body: String = (from..from + PER_POST)
                        .map(|i| {
                            format!(
                                "{{\"id\":{i},\"model\":\"m{}\",\"prompt_tokens\":{},\"completion_tokens\":{},\"latency_ms\":{}}}\n",
                                i % 4,
                                i % 700,
                                i % 300,
                                i * 37 % 9000
                            )
                        })
                        .collect();
                    let (status, _) = common::post(port, "/", body.as_bytes());
                    let range = from as u64..(from + PER_POST) as u64;
                    if let Ok(mut acks) = acks.lock() {
                        acks.push((range, Instant::now(), status));
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        let _ = sender.join();
    }
    let metrics = common::get(api, "/metrics");
    common::files::stop(child);

    let acks = acks.lock().map(|a| a.clone()).unwrap_or_default();
    assert_eq!(acks.len(), POSTS);
    let refused: Vec<u16> = acks.iter().map(|a| a.2).filter(|s| *s != 200).collect();
    assert!(refused.is_empty(), "every sender got 2xx: {refused:?}");
    // An acknowledgement only after S3 stored every event of the request.
    let stored_at = proxy.counts.stored_at.lock().map(|s| s.clone()).unwrap_or_default();
    for (range, acked, _) in &acks {
        for id in range.clone() {
            let stored = stored_at.get(&id).unwrap_or_else(|| panic!("id {id} acknowledged but never stored"));
            assert!(stored <= acked, "id {id} acknowledged before S3 stored it");
        }
    }
    let ids = ids_in(&moto, "llm-logs");
    assert_eq!(ids.len(), POSTS * PER_POST, "every event in the bucket");
    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    let cuts = proxy.counts.cuts.load(std::sync::atomic::Ordering::SeqCst);
    let slowdowns = proxy.counts.slowdowns.load(std::sync::atomic::Ordering::SeqCst);
    println!(
        "PUTs {}, SlowDown {slowdowns}, cut {cuts}, duplicates {duplicates}",
        proxy.counts.puts.load(std::sync::atomic::Ordering::SeqCst)
    );
    assert!(slowdowns > 0 && cuts > 0, "the faults happened");
    assert!(duplicates <= cuts * 1000, "duplicates only from objects whose answer was cut: {duplicates}");
    let retried = common::sample(
        &metrics,
        r#"component_errors_total{component_id="s3",component_kind="sink",component_type="aws_s3",error_type="http_status",stage="sending"}"#,
    );
    assert!(retried.is_some_and(|n| n >= 1.0), "SlowDowns are visible in /metrics: {metrics}");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "s3")["dead_lettered"], 0);
}

#[test]
fn a_large_object_is_a_multipart_upload() {
    let moto = Moto::start();
    moto.create_bucket("large");
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        s3_sink(&moto, "large", "compression = \"none\"\nbatch.max_bytes = 40000000\nbatch.timeout_secs = 30")
    ));
    // About 20 MiB of events (more once encoded), one batch, uploaded in 8 MiB parts.
    let padding = "x".repeat(150);
    let input: String =
        (0..100_000).map(|i| format!("{{\"id\":{i},\"model\":\"m{}\",\"pad\":\"{padding}\"}}\n", i % 3)).collect();
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let keys = moto.keys("large");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let object = moto.get("large", &keys[0]);
    assert!(object.body.len() > 16 * 1024 * 1024);
    let etag = object.headers.iter().find(|(n, _)| n == "etag").map(|(_, v)| v.clone()).unwrap_or_default();
    let parts = object.body.len().div_ceil(8 * 1024 * 1024);
    assert!(etag.trim_matches('"').ends_with(&format!("-{parts}")), "a multipart object of {parts} parts: {etag}");
    let ids = ids_in(&moto, "large");
    assert_eq!(ids.len(), 100_000);
    assert!(ids.values().all(|n| *n == 1));
}

#[test]
fn an_assumed_role_signs_the_uploads() {
    let moto = Moto::start();
    moto.create_bucket("assumed");
    let proxy = common::forward_proxy::ForwardProxy::start();
    let case = Case::new();
    let sink = s3_sink(&moto, "assumed", "batch.timeout_secs = 0.2")
        + &format!(
            "auth.assume_role = \"arn:aws:iam::123456789012:role/sluice-writer\"\nauth.session_name = \"sluice-test\"\nproxy.http = \"http://127.0.0.1:{}\"\n",
            proxy.port
        );
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{sink}"
    ));
    let mut command = common::sluice();
    // STS is moto's too; the SDK's variable points the role's session there.
    command.env("AWS_ENDPOINT_URL_STS", moto.endpoint()).env("AWS_EC2_METADATA_DISABLED", "true");
    let output = common::run_sluice(command, &config, None, events(0, 20).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(ids_in(&moto, "assumed").len(), 20);
    let seen = proxy.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let puts: Vec<_> = seen.iter().filter(|(line, _, _)| line.starts_with("PUT ")).collect();
    assert!(!puts.is_empty());
    for (_, _, auth) in puts {
        let auth = auth.as_deref().unwrap_or_default();
        // Temporary credentials from AssumeRole, not the configured "testing" key.
        assert!(auth.contains("Credential=ASIA") && !auth.contains("Credential=testing/"), "{auth}");
    }
}

#[test]
fn the_default_chain_takes_credentials_from_the_environment() {
    let moto = Moto::start();
    moto.create_bucket("envcreds");
    let proxy = common::forward_proxy::ForwardProxy::start();
    let case = Case::new();
    let sink = s3_sink(
        &moto,
        "envcreds",
        &format!("batch.timeout_secs = 0.2\nproxy.http = \"http://127.0.0.1:{}\"", proxy.port),
    )
    .replace("auth.access_key_id = \"testing\"\nauth.secret_access_key = \"testing\"\n", "");
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{sink}"
    ));
    let mut command = common::sluice();
    without_aws_environment(&mut command, case.dir.path());
    command.env("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT").env("AWS_SECRET_ACCESS_KEY", "secret");
    let output = common::run_sluice(command, &config, None, events(0, 10).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(ids_in(&moto, "envcreds").len(), 10);
    let seen = proxy.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        seen.iter()
            .filter(|(l, _, _)| l.starts_with("PUT "))
            .all(|(_, _, a)| a.as_deref().unwrap_or_default().contains("Credential=AKIAFROMENVIRONMENT/")),
        "{seen:?}"
    );
}

/// The healthcheck `HEAD`s the bucket with the sink's credentials: a missing bucket fails it,
/// and `--require-healthy` then exits 78 before reading anything.
#[test]
fn the_healthcheck_heads_the_bucket() {
    let moto = Moto::start();
    moto.create_bucket("present");
    for (bucket, expected) in [("present", 0), ("missing", 78)] {
        let case = Case::new();
        let config = case.config(&format!(
            "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\n{}",
            s3_sink(&moto, bucket, "")
        ));
        common::assert_healthcheck(&config, expected == 0, bucket);
    }
}
