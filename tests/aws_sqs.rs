//! `aws_sqs` through the binary against moto: messages read back with SQS's own
//! ReceiveMessage, FIFO group ids, and the incident's "failed batches go to a queue":
//! `s3.dead_letter` → `aws_sqs`, each message carrying its failure.

mod common;

use std::time::Duration;

use common::moto::Moto;
use common::{Case, component};

fn sqs_sink(id: &str, input: &str, moto: &Moto, queue_url: &str, extra: &str) -> String {
    format!(
        r#"
[sinks.{id}]
type = "aws_sqs"
inputs = ["{input}"]
queue_url = "{queue_url}"
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

fn events(n: usize) -> String {
    (0..n).map(|i| format!("{{\"id\":{i},\"model\":\"m{}\"}}\n", i % 2)).collect()
}

#[test]
fn messages_arrive_in_batches_of_ten_each_once() {
    let moto = Moto::start();
    let queue = moto.create_queue("events");
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        sqs_sink("out", "in", &moto, &queue, "batch.timeout_secs = 0.2")
    ));
    let output = case.run_with_stdin(&config, events(25).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let messages = moto.receive_all(&queue);
    let mut ids: Vec<u64> = messages
        .iter()
        .map(|m| {
            let body: serde_json::Value =
                serde_json::from_str(m["Body"].as_str().unwrap_or_default()).unwrap_or_default();
            body["id"].as_u64().unwrap_or(u64::MAX)
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..25).collect::<Vec<u64>>());
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 25);
}

#[test]
fn a_fifo_queue_gets_each_events_group_id() {
    let moto = Moto::start();
    let queue = moto.create_queue("events.fifo");
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        sqs_sink("out", "in", &moto, &queue, "batch.timeout_secs = 0.2\nmessage_group_id = \"{{ model }}\"")
    ));
    let output = case.run_with_stdin(&config, events(6).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let messages = moto.receive_all(&queue);
    assert_eq!(messages.len(), 6);
    for message in &messages {
        let body: serde_json::Value =
            serde_json::from_str(message["Body"].as_str().unwrap_or_default()).unwrap_or_default();
        assert_eq!(message["Attributes"]["MessageGroupId"], body["model"], "{message}");
    }
}

#[test]
fn the_dead_letter_output_of_s3_reaches_a_queue_with_each_failure() {
    let moto = Moto::start();
    let queue = moto.create_queue("failed-batches");
    let case = Case::new();
    let port = common::free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"
[sinks.s3]
type = "aws_s3"
inputs = ["in"]
bucket = "no-such-bucket"
endpoint = "{endpoint}"
region = "us-east-1"
auth.access_key_id = "testing"
auth.secret_access_key = "testing"
encoding.codec = "json"
batch.timeout_secs = 0.2
{sqs}
"#,
        endpoint = moto.endpoint(),
        sqs = sqs_sink("failed", "s3.dead_letter", &moto, &queue, "batch.timeout_secs = 0.2")
    ));
    let child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    let (status, body) = common::post(port, "/", events(30).as_bytes());
    assert_eq!(status, 200, "the events are safe in the queue: {body}");
    common::files::stop(child);
    let messages = moto.receive_all(&queue);
    assert_eq!(messages.len(), 30);
    for message in &messages {
        let attributes = &message["MessageAttributes"];
        assert_eq!(attributes["dead_letter_reason"]["StringValue"], "permanent", "{message}");
        assert_eq!(attributes["dead_letter_sink"]["StringValue"], "s3");
        let why = attributes["dead_letter_message"]["StringValue"].as_str().unwrap_or_default();
        assert!(why.contains("NoSuchBucket"), "{why}");
    }
    assert!(common::files::dead_letters(&case.path("data"), "s3").is_empty(), "nothing in the disk DLQ");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "s3")["dead_lettered"], 30);
    assert_eq!(component(&ledger, "failed")["sent"], 30);
}

#[test]
fn a_missing_queue_dead_letters_each_batch_in_one_request() {
    let moto = Moto::start();
    let case = Case::new();
    let queue = format!("{}/123456789012/missing", moto.endpoint());
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        sqs_sink("out", "in", &moto, &queue, "batch.timeout_secs = 0.2\nrequest.concurrency = 1")
    ));
    let output = case.run_with_stdin(&config, events(20).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ledger = case.ledger();
    let out = component(&ledger, "out");
    assert_eq!(out["dead_lettered"], 20);
    assert_eq!(out["errors"]["destination_error/sending"], 2, "two batches of ten, one request each: {out:#}");
    let dlq = common::files::dead_letters(&case.path("data"), "out");
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("QueueDoesNotExist") || message.contains("NonExistentQueue"), "{message}");
}
