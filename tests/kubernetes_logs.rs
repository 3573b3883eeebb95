//! `kubernetes_logs` through the binary: CRI and Docker json-file pod logs, partial lines
//! merged, pod fields from the path; two sources on the same pods share one reader.

mod common;

use std::time::Duration;

use common::files::{append_bytes, wait_until};
use common::{Case, assert_ledger_balanced, terminate};

const WAIT: Duration = Duration::from_secs(30);

fn pods(case: &Case) {
    let cri = case.path("pods/shop_checkout-7d9f_1111-2222/api/0.log");
    std::fs::create_dir_all(cri.parent().unwrap_or(&case.path("pods"))).unwrap_or_else(|e| panic!("{e}"));
    append_bytes(
        &cri,
        b"2026-11-30T10:00:00.000000001Z stdout F order 1 placed\n\
2026-11-30T10:00:01.000000000Z stderr P a long line that the runtime \n\
2026-11-30T10:00:01.100000000Z stdout F order 2 placed\n\
2026-11-30T10:00:01.200000000Z stderr F split in two\n",
    );
    let docker = case.path("pods/kube-system_dns-1_3333-4444/dns/0.log");
    std::fs::create_dir_all(docker.parent().unwrap_or(&case.path("pods"))).unwrap_or_else(|e| panic!("{e}"));
    append_bytes(
        &docker,
        br#"{"log":"query a\n","stream":"stdout","time":"2026-11-30T10:00:02Z"}
{"log":"partial ","stream":"stdout","time":"2026-11-30T10:00:03Z"}
{"log":"answer\n","stream":"stdout","time":"2026-11-30T10:00:03.5Z"}
"#,
    );
    // Compressed rotations and files outside `<pod>/<container>/` are not read.
    append_bytes(&case.path("pods/kube-system_dns-1_3333-4444/dns/0.log.20261130.gz"), b"\x1f\x8bjunk");
    append_bytes(&case.path("pods/stray.log"), b"2026-11-30T10:00:00Z stdout F stray\n");
}

fn events(case: &Case, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(case.path(name))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect()
}

#[test]
fn pod_logs_become_events_with_pod_fields_and_merged_partial_lines() {
    let case = Case::new();
    pods(&case);
    let config = case.config(
        r#"
data_dir = "{dir}/data"
[sources.k8s]
type = "kubernetes_logs"
pod_logs_root = "{dir}/pods"
glob_minimum_cooldown_ms = 50
self_node_name = "node-1"
[sinks.out]
type = "file"
inputs = ["k8s"]
path = "{dir}/out.jsonl"
encoding.codec = "json"
"#,
    );
    let child = case.spawn(&config);
    assert!(wait_until(WAIT, || events(&case, "out.jsonl").len() >= 5));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("needs the Kubernetes API"), "the API-only setting is called out: {stderr}");
    let got = events(&case, "out.jsonl");
    let by_message = |m: &str| got.iter().find(|e| e["message"] == m).cloned().unwrap_or_default();
    let mut messages: Vec<&str> = got.iter().map(|e| e["message"].as_str().unwrap_or_default()).collect();
    messages.sort_unstable();
    assert_eq!(
        messages,
        vec![
            "a long line that the runtime split in two",
            "order 1 placed",
            "order 2 placed",
            "partial answer",
            "query a"
        ]
    );
    let first = by_message("order 1 placed");
    assert_eq!(first["kubernetes"]["pod_namespace"], "shop");
    assert_eq!(first["kubernetes"]["pod_name"], "checkout-7d9f");
    assert_eq!(first["kubernetes"]["pod_uid"], "1111-2222");
    assert_eq!(first["kubernetes"]["container_name"], "api");
    assert_eq!(first["stream"], "stdout");
    assert_eq!(first["source_type"], "kubernetes_logs");
    assert_eq!(first["timestamp"], "2026-11-30T10:00:00.000000001Z", "the runtime's time");
    let merged = by_message("a long line that the runtime split in two");
    assert_eq!(merged["stream"], "stderr");
    assert_eq!(merged["timestamp"], "2026-11-30T10:00:01Z", "a merged line keeps its first part's time");
    assert_eq!(by_message("partial answer")["kubernetes"]["container_name"], "dns");
    assert_ledger_balanced(&case.ledger());
}

/// Two `kubernetes_logs` sources on the same pods (two pipelines): each file is opened and
/// read once, and both get every line.
#[test]
fn two_sources_on_the_same_pods_share_one_reader() {
    let case = Case::new();
    pods(&case);
    let config = case.config(
        r#"
data_dir = "{dir}/data"
[sources.team_a]
type = "kubernetes_logs"
pod_logs_root = "{dir}/pods"
glob_minimum_cooldown_ms = 50
[sources.team_b]
type = "kubernetes_logs"
pod_logs_root = "{dir}/pods"
glob_minimum_cooldown_ms = 50
[sinks.a]
type = "file"
inputs = ["team_a"]
path = "{dir}/a.jsonl"
encoding.codec = "json"
[sinks.b]
type = "file"
inputs = ["team_b"]
path = "{dir}/b.jsonl"
encoding.codec = "json"
"#,
    );
    let child = common::background(
        common::sluice()
            .env("SLUICE_LOG", "info")
            .arg("--config")
            .arg(&config)
            .arg("--ledger-json")
            .arg(case.path("ledger.json")),
    );
    assert!(wait_until(WAIT, || events(&case, "a.jsonl").len() >= 5 && events(&case, "b.jsonl").len() >= 5));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(events(&case, "a.jsonl").len(), 5);
    assert_eq!(events(&case, "b.jsonl").len(), 5);
    let opened = stderr.lines().filter(|l| l.contains("Reading file.")).count();
    assert_eq!(opened, 2, "two pod log files, each opened once for both sources: {stderr}");
    assert_ledger_balanced(&case.ledger());
}

/// A partial line whose continuation never comes (a runtime that died mid-line, a Docker
/// record without `time` or newline) goes on as it is after a short wait; it used to be held
/// forever, and the file's checkpoint with it.
#[test]
fn a_partial_line_whose_continuation_never_comes_is_not_held_forever() {
    let case = Case::new();
    let docker = case.path("pods/web_front-1_5555-6666/nginx/0.log");
    std::fs::create_dir_all(docker.parent().unwrap_or(&case.path("pods"))).unwrap_or_else(|e| panic!("{e}"));
    append_bytes(&docker, b"{\"log\":\"GET / 200\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-30T10:00:00Z\"}\n{\"log\":\"cut off mid\",\"stream\":\"stdout\"}\n");
    let cri = case.path("pods/web_front-1_5555-6666/php/0.log");
    std::fs::create_dir_all(cri.parent().unwrap_or(&case.path("pods"))).unwrap_or_else(|e| panic!("{e}"));
    append_bytes(&cri, b"2026-11-30T10:00:01Z stderr P fatal: out of mem\n");
    let config = case.config(
        r#"
data_dir = "{dir}/data"
[sources.k8s]
type = "kubernetes_logs"
pod_logs_root = "{dir}/pods"
glob_minimum_cooldown_ms = 50
[sinks.out]
type = "file"
inputs = ["k8s"]
path = "{dir}/out.jsonl"
encoding.codec = "json"
"#,
    );
    let child = case.spawn(&config);
    assert!(wait_until(WAIT, || events(&case, "out.jsonl").len() >= 3), "{:?}", events(&case, "out.jsonl"));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let mut messages: Vec<String> =
        events(&case, "out.jsonl").iter().map(|e| e["message"].as_str().unwrap_or_default().to_owned()).collect();
    messages.sort();
    assert_eq!(messages, ["GET / 200", "cut off mid", "fatal: out of mem"]);
    assert_ledger_balanced(&case.ledger());
    // Their positions were committed: a restart reads nothing again.
    let child = case.spawn(&config);
    append_bytes(&docker, b"{\"log\":\"next\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-30T10:00:05Z\"}\n");
    assert!(wait_until(WAIT, || events(&case, "out.jsonl").len() >= 4));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(events(&case, "out.jsonl").len(), 4, "{:?}", events(&case, "out.jsonl"));
}
