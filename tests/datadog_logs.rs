//! `datadog_logs` through the binary against the strict local intake (`common::datadog`):
//! the poison tenant (one tenant's bad key, carried in its events, fails only that tenant's
//! events, and a replay with the right key delivers them), Datadog's size limits, and the
//! shape of each log.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::datadog::Datadog;
use common::{Case, component, free_port, post, terminate, wait_for_port};

const TENANTS: usize = 20;
const BAD_TENANT: usize = 7;

fn dlq_total(config: &Path) -> u64 {
    let output = common::sluice().args(["dlq", "list", "--json", "--config"]).arg(config).output();
    let output = output.unwrap_or_else(|e| panic!("{e}"));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    list.as_array().map_or(0, |sinks| sinks.iter().map(|s| s["events"].as_u64().unwrap_or(0)).sum())
}

/// Seed story two. 20 tenants send through one pipeline; a remap sets each event's Datadog
/// key from its tenant, and tenant 7's key is refused (Datadog answers an invalid key with
/// 403). At 10,000 events/s for 30 s: every sender gets 2xx and no request waits long
/// (nothing stalls); every other tenant's events arrive exactly once; tenant 7's are in the
/// DLQ with the 403. Then `sluice dlq replay --fix` with the corrected key delivers them and
/// empties the DLQ.
#[test]
fn one_tenants_bad_key_fails_only_its_events_and_a_replay_with_the_right_key_delivers_them() {
    let good: Vec<String> = (0..TENANTS).filter(|&t| t != BAD_TENANT).map(|t| format!("key-t{t}")).collect();
    let dd = Datadog::start(&good.iter().map(String::as_str).collect::<Vec<_>>());
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"

[transforms.tenant_key]
type = "remap"
inputs = ["intake"]
source = 'set_secret("datadog_api_key", "key-t" + to_string!(.tenant))'

[sinks.dd]
type = "datadog_logs"
inputs = ["tenant_key"]
endpoint = "{url}"
batch.timeout_secs = 0.5
request.retry_initial_backoff_secs = 0.1
"#,
        url = dd.url()
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));

    // 100 requests of 100 events a second, each on its own thread (a request is answered
    // once its events are delivered or stored), for 30 s.
    let started = Instant::now();
    let mut senders = Vec::new();
    for r in 0..3000usize {
        let due = started + Duration::from_millis(10 * r as u64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let body: String = (0..100)
            .map(|i| {
                let n = r * 100 + i;
                format!("{{\"n\":{n},\"tenant\":{},\"message\":\"inference {n}\"}}\n", n % TENANTS)
            })
            .collect();
        senders.push(std::thread::spawn(move || {
            let sent = Instant::now();
            let (status, _) = post(port, "/", body.as_bytes());
            (status, sent.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for sender in senders {
        let (status, took) = sender.join().unwrap_or((0, Duration::MAX));
        assert!((200..300).contains(&status), "a sender got {status}");
        slowest = slowest.max(took);
    }
    let sending = started.elapsed();
    assert!(sending < Duration::from_secs(40), "the 30 s of traffic took {sending:?}");
    assert!(slowest < Duration::from_secs(10), "a request waited {slowest:?}: the bad tenant stalled the pipeline");
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");

    for t in (0..TENANTS).filter(|&t| t != BAD_TENANT) {
        let logs = dd.logs(&format!("key-t{t}"));
        let ns: BTreeSet<u64> = logs.iter().filter_map(|l| l["n"].as_u64()).collect();
        assert_eq!(logs.len(), 15_000, "tenant {t}: every event once");
        assert_eq!(ns.len(), 15_000, "tenant {t}: no duplicates");
        assert!(ns.iter().all(|n| *n as usize % TENANTS == t));
    }
    let forbidden = dd.state.lock().map(|s| s.forbidden.clone()).unwrap_or_default();
    assert!(forbidden.get("key-t7").is_some_and(|&n| n > 0), "{forbidden:?}");
    let dlq = common::files::dead_letters(&case.path("data"), "dd");
    assert_eq!(dlq.len(), 15_000, "the bad tenant's events are in the DLQ");
    assert!(dlq.iter().all(|r| r["status"] == 403 && r["event"]["tenant"] == BAD_TENANT), "{}", dlq[0]);
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "dd")["sent"], 285_000);
    assert_eq!(component(&ledger, "dd")["dead_lettered"], 15_000);

    // The tenant's key is rotated; a replay sets the new one.
    dd.allow("key-t7-rotated");
    let fix = case.path("fix.vrl");
    std::fs::write(&fix, "set_secret(\"datadog_api_key\", \"key-t7-rotated\")\n").unwrap_or_default();
    let output = common::sluice()
        .args(["dlq", "replay", "--fix"])
        .arg(&fix)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let replayed = dd.logs("key-t7-rotated");
    assert_eq!(replayed.len(), 15_000);
    assert_eq!(replayed.iter().filter_map(|l| l["n"].as_u64()).collect::<BTreeSet<_>>().len(), 15_000);
    assert_eq!(dlq_total(&config), 0, "the DLQ is empty after the replay");
}

#[test]
fn requests_keep_to_datadogs_limits_and_logs_take_datadogs_shape() {
    let dd = Datadog::start(&["k1"]);
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"
max_length = 2000000

[transforms.shape]
type = "remap"
inputs = ["in"]
source = '''
.timestamp = t'2026-12-02T08:00:00.250Z'
.host = "web-1"
'''

[sinks.dd]
type = "datadog_logs"
inputs = ["shape"]
endpoint = "{url}"
default_api_key = "k1"
compression = "gzip"
batch.timeout_secs = 0.2
"#,
        url = dd.url()
    ));
    let big = "x".repeat(1_100_000);
    let mut input: String = (0..2500).map(|n| format!("{{\"n\":{n},\"message\":\"m{n}\"}}\n")).collect();
    input.push_str(&format!("{{\"n\":-1,\"message\":\"{big}\"}}\n"));
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let logs = dd.logs("k1");
    assert_eq!(logs.len(), 2500);
    let log = logs.iter().find(|l| l["n"] == 3).unwrap_or_else(|| panic!("no log 3"));
    assert_eq!(log["hostname"], "web-1");
    assert!(log.get("host").is_none());
    assert_eq!(log["timestamp"], 1_796_198_400_250_i64, "milliseconds since the epoch");
    let requests = dd.state.lock().map(|s| s.requests.clone()).unwrap_or_default();
    // (The healthcheck's `GET /api/v1/validate` came first.)
    let intake = requests.iter().filter(|(path, ..)| path == "/api/v2/logs");
    assert!(
        intake.clone().count() >= 3 && intake.clone().all(|(_, _, status, n)| *status == 202 && *n <= 1000),
        "{requests:?}"
    );
    let dlq = common::files::dead_letters(&case.path("data"), "dd");
    assert_eq!(dlq.len(), 1, "the log over 1 MB");
    assert_eq!(dlq[0]["reason"], "encode_error");
    assert!(dlq[0]["message"].as_str().unwrap_or_default().contains("1,000,000 bytes"), "{}", dlq[0]["message"]);
    common::assert_ledger_balanced(&case.ledger());
}
