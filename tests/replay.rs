//! `sluice dlq replay` and the `dead_letter` source through the binary: repairs with `--fix`,
//! `--dry-run`, `--to`, a replay killed with `kill -9` and run again, and the poison stream
//! of the delivery-guarantees issue (30 s at ≥ 10,000 events/s, then a replay empties the DLQ).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::{Case, assert_ledger_balanced, component, free_port, post, terminate, wait_for_port};

/// Writes DLQ segments for sink `out` the way a sink that rejected them would have: one
/// envelope per event, `per_segment` events per segment file. Returns the segment paths.
fn dead_lettered(case: &Case, messages: &[String], per_segment: usize) -> Vec<PathBuf> {
    let dir = case.path("data/dead_letter/out");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut paths = Vec::new();
    for (n, chunk) in messages.chunks(per_segment).enumerate() {
        let path = dir.join(format!("segment-20261122T000000.{n:06}Z.jsonl"));
        let mut text = String::new();
        for message in chunk {
            let envelope = serde_json::json!({
                "version": 1, "sink_id": "out", "sink_type": "http", "reason": "permanent",
                "message": "HTTP 403 Forbidden", "status": 403, "attempts": 1,
                "first_failure": "2026-11-22T00:00:00Z", "last_failure": "2026-11-22T00:00:00Z",
                "dead_lettered_at": "2026-11-22T00:00:01Z", "source_id": "in",
                "event": { "message": message, "timestamp": "2026-11-21T23:59:59Z" },
            });
            text.push_str(&envelope.to_string());
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        paths.push(path);
    }
    paths
}

fn sink_config(case: &Case, intake: u16) -> PathBuf {
    case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.in]
type = "http_server"
address = "127.0.0.1:{}"

[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{intake}/bulk"
encoding.codec = "text"
batch.max_events = 100
batch.timeout_secs = 0.05
request.retry_initial_backoff_secs = 0.01

[sinks.other]
type = "file"
inputs = ["in"]
path = "{{dir}}/other.log"
encoding.codec = "text"
"#,
        free_port()
    ))
}

fn dlq(case: &Case, config: &Path, args: &[&str]) -> Output {
    common::sluice()
        .arg("dlq")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--ledger-json")
        .arg(case.path("replay-ledger.json"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn dlq_events(case: &Case, config: &Path) -> u64 {
    let output = common::sluice().args(["dlq", "list", "--json", "--config"]).arg(config).output();
    let output = output.unwrap_or_else(|e| panic!("{e}"));
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let _ = case;
    list.as_array().map_or(0, |sinks| sinks.iter().map(|s| s["events"].as_u64().unwrap_or(0)).sum())
}

fn archived_lines(case: &Case) -> usize {
    std::fs::read_dir(case.path("data/dead_letter/out/archive"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default().lines().count())
        .sum()
}

#[test]
fn replay_with_a_fix_delivers_what_the_sink_rejected() {
    let intake = Intake::start(|_, body, _| if body.contains("poison") { 403 } else { 200 });
    let case = Case::new();
    let config = sink_config(&case, intake.port);
    let messages: Vec<String> = (0..50).map(|i| format!("poison {i}")).collect();
    dead_lettered(&case, &messages, 20);
    std::fs::write(case.path("fix.vrl"), ".message = replace(string!(.message), \"poison\", \"fixed\")\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let fix = case.path("fix.vrl").display().to_string();

    // A dry run prints what would be sent and changes nothing.
    let output = dlq(&case, &config, &["replay", "--dry-run", "--fix", &fix]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(printed.lines().filter(|l| l.contains("\"fixed ")).count(), 50, "{printed}");
    assert_eq!(dlq_events(&case, &config), 50);
    assert_eq!(intake.requests.load(Ordering::SeqCst), 0);

    // Without the fix the sink rejects them again: they go back to the DLQ with both failures.
    let output = dlq(&case, &config, &["replay"]);
    assert!(output.status.success(), "stored again is safe: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(dlq_events(&case, &config), 50);
    assert_eq!(archived_lines(&case), 50, "the replayed copies are archived");
    let shown = common::sluice().args(["dlq", "show", "--json", "--config"]).arg(&config).output();
    let shown = String::from_utf8_lossy(&shown.unwrap_or_else(|e| panic!("{e}")).stdout).into_owned();
    let first: serde_json::Value = serde_json::from_str(shown.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(first["history"].as_array().map(Vec::len), Some(1), "the earlier failure is kept: {first}");
    assert_eq!(first["event"]["timestamp"], "2026-11-21T23:59:59Z", "the body is unchanged");

    // With the fix they are delivered and the DLQ is empty.
    let output = dlq(&case, &config, &["replay", "--fix", &fix, "--rate", "200"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("out: 0 events left"));
    let delivered: BTreeSet<String> = intake.accepted_lines().into_iter().collect();
    assert_eq!(delivered, (0..50).map(|i| format!("fixed {i}")).collect());
    assert_eq!(intake.accepted_lines().len(), 50, "each exactly once");
    assert_eq!(dlq_events(&case, &config), 0);
    let ledger: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case.path("replay-ledger.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 50);
}

#[test]
fn replay_to_another_sink_and_by_reason() {
    let case = Case::new();
    let config = sink_config(&case, free_port());
    let messages: Vec<String> = (0..30).map(|i| format!("event {i}")).collect();
    dead_lettered(&case, &messages, 30);
    let output = dlq(&case, &config, &["replay", "--reason", "retries_exhausted", "--to", "other"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(dlq_events(&case, &config), 30, "no record has that reason");
    let output = dlq(&case, &config, &["replay", "--to", "other"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let written = std::fs::read_to_string(case.path("other.log")).unwrap_or_default();
    assert_eq!(written.lines().count(), 30);
    assert_eq!(dlq_events(&case, &config), 0);

    let output = dlq(&case, &config, &["replay", "--sink", "gone"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no sink `gone`"));
}

/// Confirmed record indices per segment, from the progress files a killed replay left.
fn confirmed_after_kill(segments: &[PathBuf]) -> BTreeMap<PathBuf, BTreeSet<usize>> {
    let mut out = BTreeMap::new();
    for segment in segments {
        let mut progress = segment.as_os_str().to_owned();
        progress.push(".progress");
        let text = std::fs::read_to_string(PathBuf::from(progress)).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let indices: BTreeSet<usize> = complete.lines().skip(1).filter_map(|l| l.parse().ok()).collect();
        out.insert(segment.clone(), indices);
    }
    out
}

#[test]
fn a_replay_killed_half_way_never_resends_confirmed_events() {
    let intake = Intake::start(|_, _, _| 200);
    let case = Case::new();
    let config = sink_config(&case, intake.port);
    let total = 20_000;
    let messages: Vec<String> = (0..total).map(|i| format!("event {i:05}")).collect();
    let segments = dead_lettered(&case, &messages, 7_000);

    let mut child = common::sluice()
        .args(["dlq", "replay", "--rate", "4000", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    while intake.accepted_lines().len() < 6_000 {
        assert!(start.elapsed() < Duration::from_secs(60), "the replay does not progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(200));
    let first_run = intake.accepted_lines();
    let confirmed = confirmed_after_kill(&segments);
    let confirmed_ids: BTreeSet<String> = confirmed
        .iter()
        .enumerate()
        .flat_map(|(s, (_, indices))| indices.iter().map(move |i| format!("event {:05}", s * 7_000 + i)))
        .collect();
    println!("first run: {} delivered, {} confirmed when killed", first_run.len(), confirmed_ids.len());
    assert!(!confirmed_ids.is_empty() && confirmed_ids.len() < total, "killed half-way");

    let output = dlq(&case, &config, &["replay"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let all = intake.accepted_lines();
    let second_run = &all[first_run.len()..];
    let resent: Vec<_> = second_run.iter().filter(|l| confirmed_ids.contains(*l)).collect();
    assert!(resent.is_empty(), "confirmed events were sent again: {resent:?}");
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), total, "every event delivered");
    let duplicates = all.len() - total;
    println!("duplicates (delivered but not yet confirmed when killed): {duplicates}");
    assert!(duplicates <= first_run.len() - confirmed_ids.len(), "only unconfirmed events are sent twice");
    assert_eq!(dlq_events(&case, &config), 0);
    assert_eq!(archived_lines(&case), total);
}

/// The poison stream: per-tenant keys set by remap from the event, one tenant in 1,000 with a
/// key the intake rejects, ≥ 10,000 events/s for 30 s through `http_server`. Every sender gets
/// 2xx, the rest is delivered, nothing blocks; after the intake accepts the key, a replay
/// delivers every dead-lettered event and the DLQ is empty.
#[test]
fn poison_stream_for_30_seconds_then_replay_empties_the_dlq() {
    let accept_all = Arc::new(AtomicBool::new(false));
    let gate = accept_all.clone();
    let intake =
        Intake::start(
            move |head, _, _| {
                if head.contains("Bearer key-bad") && !gate.load(Ordering::Relaxed) { 403 } else { 200 }
            },
        );
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
decoding.codec = "json"

[transforms.keys]
type = "remap"
inputs = ["in"]
source = '''
set_secret("api_key", "key-" + string!(.tenant))
'''

[sinks.out]
type = "http"
inputs = ["keys"]
uri = "http://127.0.0.1:{}/bulk"
encoding.codec = "json"
framing.method = "newline_delimited"
batch.max_events = 1000
batch.timeout_secs = 0.05
request.headers.Authorization = "Bearer {{{{ secret.api_key }}}}"
"#,
        intake.port
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    // Eight senders of 100-event requests, each paced to 1,500 events/s: 12,000 events/s.
    let duration = Duration::from_secs(30);
    let (sent, poison) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let start = Instant::now();
    let senders: Vec<_> = (0..8u64)
        .map(|t| {
            let (sent, poison) = (sent.clone(), poison.clone());
            std::thread::spawn(move || {
                let mut r = 0u32;
                while start.elapsed() < duration {
                    let due = start + Duration::from_secs_f64(f64::from(r) * 100.0 / 1_500.0);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let body: String = (0..100)
                        .map(|i| {
                            let n = t * 10_000_000 + u64::from(r) * 100 + i;
                            let tenant = if n % 1000 == 999 { "bad" } else { "good" };
                            format!("{{\"tenant\":\"{tenant}\",\"n\":{n}}}\n")
                        })
                        .collect();
                    let (status, text) = post(port, "/", body.as_bytes());
                    assert_eq!(status, 200, "every sender gets 2xx: {text}");
                    sent.fetch_add(100, Ordering::Relaxed);
                    poison.fetch_add(body.matches("\"bad\"").count(), Ordering::Relaxed);
                    r += 1;
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap_or_else(|_| panic!("a sender failed"));
    }
    let elapsed = start.elapsed();
    let (sent, poison) = (sent.load(Ordering::Relaxed), poison.load(Ordering::Relaxed));
    let rate = sent as f64 / elapsed.as_secs_f64();
    println!("sent {sent} events in {elapsed:?}: {rate:.0} events/s");
    assert!(rate >= 10_000.0, "the stream must run at ≥ 10,000 events/s, ran at {rate:.0}");
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_ledger_balanced(&case.ledger());

    let delivered = intake.accepted_lines();
    println!("{poison} poison events, {} requests to the intake", intake.requests.load(Ordering::SeqCst));
    assert!(poison >= 300, "one tenant in 1,000 over at least 300,000 events");
    assert_eq!(delivered.len(), sent - poison, "every good event delivered");
    assert!(delivered.iter().all(|l| l.contains("\"good\"")));
    assert_eq!(dlq_events(&case, &config), poison as u64, "every poison event in the DLQ");
    let shown = common::sluice().args(["dlq", "show", "--json", "--limit", "1", "--config"]).arg(&config).output();
    let shown = String::from_utf8_lossy(&shown.unwrap_or_else(|e| panic!("{e}")).stdout).into_owned();
    assert!(shown.contains("\"status\":403"), "{shown}");

    // The key is fixed at the intake; the replay sets the secret again from the tenant field.
    accept_all.store(true, Ordering::Relaxed);
    let fix = case.path("keys.vrl");
    std::fs::write(&fix, "set_secret(\"api_key\", \"key-\" + string!(.tenant))\n").unwrap_or_else(|e| panic!("{e}"));
    let output = dlq(&case, &config, &["replay", "--fix", &fix.display().to_string()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(dlq_events(&case, &config), 0, "the DLQ is empty");
    let delivered = intake.accepted_lines();
    assert_eq!(delivered.len(), sent, "every event delivered once");
    let distinct: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(distinct.len(), sent, "no duplicates");
}
