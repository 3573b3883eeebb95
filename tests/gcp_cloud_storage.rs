//! `gcp_cloud_storage` through the binary against gcp-storage-emulator (the Cloud Storage
//! API on loopback), with service account tokens from a strict local token endpoint.

mod common;

use std::sync::atomic::Ordering;

use common::forward_proxy::ForwardProxy;
use common::gcp::{GcsEmulator, TokenServer};
use common::{Case, component};

fn events(n: usize) -> String {
    (0..n).map(|i| format!("{{\"id\":{i},\"model\":\"m{}\"}}\n", i % 2)).collect()
}

fn sink(endpoint: &str, bucket: &str, key_file: &std::path::Path, extra: &str) -> String {
    format!(
        "[sinks.gcs]\ntype = \"gcp_cloud_storage\"\ninputs = [\"in\"]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\ncredentials_path = \"{}\"\nencoding.codec = \"json\"\n{extra}\n",
        key_file.display()
    )
}

#[test]
fn objects_are_written_with_a_service_account_token() {
    let emulator = GcsEmulator::start();
    emulator.create_bucket("logs");
    let case = Case::new();
    let tokens = TokenServer::start(case.dir.path());
    // The proxy lets the test see the Authorization header of every upload. Compression stays
    // `none` (Vector's default here): the emulator, unlike Cloud Storage, takes a gzip
    // Content-Encoding as transport encoding and stores the object decompressed.
    let proxy = ForwardProxy::start();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        sink(
            &emulator.endpoint(),
            "logs",
            &tokens.key_file,
            &format!(
                "key_prefix = \"llm/{{{{ model }}}}/\"\nbatch.max_events = 300\nbatch.timeout_secs = 0.3\nproxy.http = \"http://127.0.0.1:{}\"",
                proxy.port
            )
        )
    ));
    let output = case.run_with_stdin(&config, events(1000).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let names = emulator.objects("logs");
    assert!(names.len() >= 4, "{names:?}");
    let mut ids = Vec::new();
    for name in &names {
        assert!(name.starts_with("llm/m0/") || name.starts_with("llm/m1/"), "{name}");
        assert!(name.ends_with(".log"), "{name}");
        let text = emulator.get("logs", name).text();
        ids.extend(
            text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["id"].as_u64()).ok().flatten()),
        );
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).map(Some).collect::<Vec<_>>(), "each event once");
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 1, "one token, cached");
    assert_eq!(tokens.refused.load(Ordering::SeqCst), 0, "the token endpoint accepted the signed assertion");
    let seen = proxy.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let puts: Vec<_> = seen.iter().filter(|(line, _, _)| line.starts_with("PUT ")).collect();
    assert_eq!(puts.len(), names.len());
    assert!(puts.iter().all(|(_, _, auth)| auth.as_deref() == Some("Bearer token-1")), "{puts:?}");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "gcs")["sent"], 1000);
}

#[test]
fn a_missing_bucket_dead_letters_each_batch_in_one_request() {
    let emulator = GcsEmulator::start();
    let case = Case::new();
    let tokens = TokenServer::start(case.dir.path());
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        sink(
            &emulator.endpoint(),
            "missing",
            &tokens.key_file,
            "batch.max_events = 50\nbatch.timeout_secs = 0.3\nrequest.concurrency = 1"
        )
    ));
    let output = case.run_with_stdin(&config, events(100).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ledger = case.ledger();
    let gcs = component(&ledger, "gcs");
    assert_eq!(gcs["dead_lettered"], 100);
    assert_eq!(gcs["errors"]["destination_error/sending"], 2, "two batches, one request each: {gcs:#}");
    let dlq = common::files::dead_letters(&case.path("data"), "gcs");
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("404"), "{message}");
}

#[test]
fn validate_rejects_a_credentials_file_that_is_not_a_service_account_key() {
    let case = Case::new();
    let bogus = case.path("key.json");
    std::fs::write(&bogus, "{\"type\":\"authorized_user\"}").unwrap_or_else(|e| panic!("{e}"));
    let config = case.config(&format!(
        "[sources.in]\ntype = \"stdin\"\n{}",
        sink("https://storage.googleapis.com", "logs", &bogus, "")
    ));
    let output = common::sluice().arg("validate").arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("credentials_path") && text.contains("not a service account key"), "{text}");
}
