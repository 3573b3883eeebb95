//! `loki` through the binary against the strict local push API (`common::loki`): entries
//! Loki refuses are isolated into the DLQ with Loki's reason while the rest are stored once,
//! in both push formats; labels (with `*` expansion), structured metadata and tenants; and
//! `out_of_order_action = "drop"`.

mod common;

use std::collections::BTreeMap;

use common::loki::{Loki, LokiOptions};
use common::{Case, component};

const BASE: i64 = 1_796_198_400; // 2026-12-02T08:00:00Z

fn loki_config(loki: &Loki, extra: &str) -> String {
    format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"

[transforms.time]
type = "remap"
inputs = ["in"]
source = '.timestamp = from_unix_timestamp!(.t)'

[sinks.loki]
type = "loki"
inputs = ["time"]
endpoint = "{url}"
encoding.codec = "json"
batch.timeout_secs = 0.3
request.retry_initial_backoff_secs = 0.05
{extra}
"#,
        url = loki.url()
    )
}

/// Events `n` at second `BASE + n`, except those in `late`, an hour and a minute older.
fn events(n: usize, late: &[usize], app: impl Fn(usize) -> &'static str) -> String {
    (0..n)
        .map(|i| {
            let t = if late.contains(&i) { BASE - 3660 } else { BASE + i as i64 };
            format!("{{\"n\":{i},\"t\":{t},\"app\":\"{}\"}}\n", app(i))
        })
        .collect()
}

fn stored_ns(loki: &Loki) -> Vec<u64> {
    let mut ns: Vec<u64> = loki
        .entries()
        .iter()
        .map(|(_, _, e)| {
            serde_json::from_str::<serde_json::Value>(&e.line).unwrap_or_default()["n"].as_u64().unwrap_or(u64::MAX)
        })
        .collect();
    ns.sort_unstable();
    ns
}

#[test]
fn entries_loki_refuses_as_out_of_order_are_dead_lettered_alone_in_protobuf_pushes() {
    // Ordered mode: an entry older than its stream's newest is refused; the rest of the push
    // is stored and the 400 lists the refused entries.
    let loki = Loki::start(LokiOptions { ordered: true, multi_tenant: false });
    let case = Case::new();
    let config = case.config(&loki_config(&loki, "labels.app = \"{{ app }}\""));
    let late = [10, 50, 90];
    let output = case.run_with_stdin(&config, events(100, &late, |_| "web").as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected: Vec<u64> = (0..100).filter(|i| !late.contains(&(*i as usize))).collect();
    assert_eq!(stored_ns(&loki), expected, "every other entry stored, once");
    let pushes = loki.state.lock().map(|s| s.pushes.clone()).unwrap_or_default();
    assert!(pushes.iter().all(|(kind, _)| kind == "application/x-protobuf"), "{pushes:?}");
    let dlq = common::files::dead_letters(&case.path("data"), "loki");
    let mut dead: Vec<u64> = dlq.iter().filter_map(|r| r["event"]["n"].as_u64()).collect();
    dead.sort_unstable();
    assert_eq!(dead, vec![10, 50, 90]);
    assert!(dlq.iter().all(|r| r["message"] == "Loki: entry out of order" && r["status"] == 400), "{}", dlq[0]);
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "loki")["sent"], 97);
    assert_eq!(pushes.len(), 1, "one push: the answer was read entry by entry, not by splitting: {pushes:?}");
}

#[test]
fn refusals_in_two_streams_of_one_json_push_are_each_found() {
    // Unordered mode (Loki's default): entries over an hour behind are refused. Loki names one
    // stream's refusals per answer; the other stream's entries are sent again and Loki
    // ignores the ones it has.
    let loki = Loki::start(LokiOptions { ordered: false, multi_tenant: false });
    let case = Case::new();
    let config = case.config(&loki_config(&loki, "labels.app = \"{{ app }}\"\ncompression = \"gzip\""));
    let late = [5, 6, 40, 41];
    let output = case.run_with_stdin(&config, events(60, &late, |i| if i % 2 == 0 { "a" } else { "b" }).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let expected: Vec<u64> = (0..60).filter(|i| !late.contains(&(*i as usize))).collect();
    assert_eq!(stored_ns(&loki), expected, "every other entry stored, once");
    let dlq = common::files::dead_letters(&case.path("data"), "loki");
    let mut dead: Vec<u64> = dlq.iter().filter_map(|r| r["event"]["n"].as_u64()).collect();
    dead.sort_unstable();
    assert_eq!(dead, vec![5, 6, 40, 41]);
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("Loki: entry too far behind"), "{message}");
    let pushes = loki.state.lock().map(|s| s.pushes.clone()).unwrap_or_default();
    assert!(pushes.iter().all(|(kind, _)| kind == "application/json"), "{pushes:?}");
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn labels_expand_maps_and_tenants_metadata_and_removed_fields_arrive() {
    let loki = Loki::start(LokiOptions { ordered: false, multi_tenant: true });
    let case = Case::new();
    let extra = r#"
compression = "none"
tenant_id = "{{ team }}"
labels.app = "{{ app }}"
labels."pod_labels_*" = "{{ kubernetes.pod_labels }}"
structured_metadata.trace_id = "{{ trace }}"
remove_label_fields = true
request.headers.X-Note = "from-config"
"#;
    let config = case.config(&loki_config(&loki, extra));
    let input = format!(
        "{{\"n\":1,\"t\":{BASE},\"app\":\"web\",\"team\":\"red\",\"trace\":\"abc\",\"kubernetes\":{{\"pod_labels\":{{\"tier\":\"front\",\"app.kubernetes.io/name\":\"shop\"}},\"ns\":\"prod\"}}}}\n\
         {{\"n\":2,\"t\":{BASE},\"app\":\"db\",\"team\":\"blue\",\"trace\":\"def\"}}\n"
    );
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let entries = loki.entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let (tenant, labels, entry) =
        entries.iter().find(|(t, _, _)| t == "red").cloned().unwrap_or_else(|| panic!("{entries:?}"));
    assert_eq!(tenant, "red");
    let expected: BTreeMap<String, String> =
        [("app", "web"), ("pod_labels_tier", "front"), ("pod_labels_app_kubernetes_io_name", "shop")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(labels, expected);
    assert_eq!(entry.metadata.get("trace_id").map(String::as_str), Some("abc"));
    assert_eq!(entry.time, BASE * 1_000_000_000);
    let line: serde_json::Value = serde_json::from_str(&entry.line).unwrap_or_default();
    assert!(line.get("app").is_none() && line.get("timestamp").is_none(), "{line}");
    assert!(line["kubernetes"].get("pod_labels").is_none() && line["kubernetes"]["ns"] == "prod", "{line}");
    assert_eq!(line["trace"], "abc", "metadata fields stay unless removed");
    let notes = loki.state.lock().map(|s| s.notes.clone()).unwrap_or_default();
    assert!(!notes.is_empty() && notes.iter().all(|n| n == "from-config"), "request.headers: {notes:?}");
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn out_of_order_action_drop_discards_late_entries_and_counts_them() {
    let loki = Loki::start(LokiOptions { ordered: true, multi_tenant: false });
    let case = Case::new();
    let config = case.config(&loki_config(&loki, "labels.app = \"{{ app }}\"\nout_of_order_action = \"drop\""));
    let output = case.run_with_stdin(&config, events(30, &[7, 8], |_| "web").as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stored_ns(&loki).len(), 28);
    assert!(common::files::dead_letters(&case.path("data"), "loki").is_empty());
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "loki")["discarded"]["out_of_order"], 2);
}
