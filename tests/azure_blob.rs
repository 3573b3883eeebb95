//! `azure_blob` through the binary against Azurite (Azure Storage's emulator on loopback):
//! blobs read back through the Blob API, a container deleted mid-run.

mod common;

use std::io::Read;
use std::time::Duration;

use common::azurite::Azurite;
use common::{Case, component};

fn sink(azurite: &Azurite, container: &str, extra: &str) -> String {
    format!(
        "[sinks.blob]\ntype = \"azure_blob\"\ninputs = [\"in\"]\ncontainer_name = \"{container}\"\nconnection_string = \"{}\"\nencoding.codec = \"json\"\n{extra}\n",
        azurite.connection_string()
    )
}

fn events(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("{{\"id\":{i},\"model\":\"m{}\"}}\n", i % 2)).collect()
}

/// Every event id in the container's blobs (gunzipped).
fn ids(azurite: &Azurite, container: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    for name in azurite.blobs(container) {
        let body = azurite.get(container, &name).body;
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        ids.extend(text.lines().map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v["id"].as_u64().unwrap_or(u64::MAX))
                .unwrap_or(u64::MAX)
        }));
    }
    ids.sort_unstable();
    ids
}

#[test]
fn blobs_are_gzip_batches_under_the_rendered_prefix() {
    let azurite = Azurite::start();
    azurite.create_container("logs");
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n{}",
        sink(&azurite, "logs", "blob_prefix = \"llm/{{ model }}/\"\nbatch.max_events = 400\nbatch.timeout_secs = 0.5")
    ));
    let output = case.run_with_stdin(&config, events(0, 1000).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let names = azurite.blobs("logs");
    assert!(names.len() >= 2, "{names:?}");
    assert!(
        names.iter().all(|n| (n.starts_with("llm/m0/") || n.starts_with("llm/m1/")) && n.ends_with(".log.gz")),
        "{names:?}"
    );
    assert_eq!(ids(&azurite, "logs"), (0..1000).collect::<Vec<u64>>(), "each event once");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "blob")["sent"], 1000);
}

#[test]
fn a_container_deleted_mid_run_dead_letters_each_batch_in_one_request() {
    let azurite = Azurite::start();
    azurite.create_container("llm");
    let case = Case::new();
    let port = common::free_port();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"http_server\"\naddress = \"127.0.0.1:{port}\"\ndecoding.codec = \"json\"\n{}",
        sink(&azurite, "llm", "batch.max_events = 100\nbatch.timeout_secs = 0.3\nrequest.concurrency = 1")
    ));
    let child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    assert_eq!(common::post(port, "/", events(0, 100).as_bytes()).0, 200);
    assert_eq!(ids(&azurite, "llm").len(), 100);
    azurite.delete_container("llm");
    for batch in 0..2 {
        assert_eq!(common::post(port, "/", events(100 + batch * 100, 100).as_bytes()).0, 200, "stored in the DLQ");
    }
    common::files::stop(child);
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    let blob = component(&ledger, "blob");
    assert_eq!(blob["sent"], 100);
    assert_eq!(blob["dead_lettered"], 200);
    assert_eq!(blob["errors"]["destination_error/sending"], 2, "one request per batch: {blob:#}");
    let dlq = common::files::dead_letters(&case.path("data"), "blob");
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ContainerNotFound") || message.contains("ContainerBeingDeleted"), "{message}");
}

#[test]
fn a_wrong_account_key_is_refused_and_dead_lettered_without_splitting() {
    let azurite = Azurite::start();
    azurite.create_container("logs");
    let case = Case::new();
    let wrong = azurite.connection_string().replace(common::azurite::KEY, "d3Jvbmcga2V5");
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"json\"\n[sinks.blob]\ntype = \"azure_blob\"\ninputs = [\"in\"]\ncontainer_name = \"logs\"\nconnection_string = \"{wrong}\"\nencoding.codec = \"json\"\nbatch.timeout_secs = 0.3\n"
    ));
    let output = case.run_with_stdin(&config, events(0, 50).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(azurite.blobs("logs").is_empty());
    let ledger = case.ledger();
    let blob = component(&ledger, "blob");
    assert_eq!(blob["dead_lettered"], 50);
    assert_eq!(blob["errors"]["destination_error/sending"], 1, "{blob:#}");
    let dlq = common::files::dead_letters(&case.path("data"), "blob");
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("403"), "{message}");
}

/// The healthcheck `HEAD`s the container, signed with the account key: a missing container
/// fails it, and `--require-healthy` then exits 78 before reading anything.
#[test]
fn the_healthcheck_heads_the_container() {
    let azurite = Azurite::start();
    azurite.create_container("present");
    for (container, expected) in [("present", 0), ("missing", 78)] {
        let case = Case::new();
        let config = case.config(&format!(
            "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\n{}",
            sink(&azurite, container, "")
        ));
        common::assert_healthcheck(&config, expected == 0, container);
    }
}
