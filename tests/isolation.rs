//! Branch isolation (G4) through the binary: one sink whose destination never answers cannot
//! stall its siblings; its events go to its dead-letter queue and a replay delivers them.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::{Case, assert_ledger_balanced, component, free_port, post, wait_for_port};

#[test]
fn a_sink_that_never_answers_does_not_stall_its_siblings() {
    let healthy = Intake::start(|_, _, _| 200);
    // The broken destination accepts connections and never answers.
    let broken = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let broken_port = broken.local_addr().map(|a| a.port()).unwrap_or_default();
    let stop = Arc::new(AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = broken.set_nonblocking(true);
            let mut held = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok((conn, _)) = broken.accept() {
                    held.push(conn);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
ack_timeout_secs = 3

[sinks.archive]
type = "file"
inputs = ["in"]
path = "{{dir}}/archive.log"
encoding.codec = "text"

[sinks.good]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{}/bulk"
encoding.codec = "text"
batch.timeout_secs = 0.05

[sinks.bad]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{broken_port}/bulk"
encoding.codec = "text"
batch.max_events = 50
batch.timeout_secs = 0.05
request.concurrency = 2
request.timeout_secs = 600
buffer.max_events = 100
buffer.stall_timeout_secs = 1
"#,
        healthy.port
    ));
    let child = case.spawn_with(&config, &["--graceful-shutdown-limit-secs", "4"]);
    wait_for_port(port, Duration::from_secs(20));
    let started = Instant::now();
    let total = 200 * 100;
    // Four senders; a sender whose events were inside the stuck sink when it stalled is told
    // to send again (503 at ack_timeout_secs) and does.
    let retried = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let retried = retried.clone();
            std::thread::spawn(move || {
                for r in (t..200).step_by(4) {
                    let body: String = (0..100).map(|i| format!("r{r:03}-e{i:03}\n")).collect();
                    while post(port, "/", body.as_bytes()).0 != 200 {
                        retried.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for s in senders {
        let _ = s.join();
    }
    let elapsed = started.elapsed();
    let retried = retried.load(Ordering::Relaxed);
    println!("{total} events through the fan-out in {elapsed:?} with one sink stuck; {retried} requests sent again");
    assert!(elapsed < Duration::from_secs(60), "the healthy branches kept flowing");
    assert!(retried <= 8, "only requests whose events were inside the stuck sink at the stall: {retried}");
    let (code, stderr) = common::terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Sink stalled while its siblings accept"), "the stall is logged: {stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    let sent = total as u64 + retried as u64 * 100;
    assert_eq!(component(&ledger, "archive")["sent"], sent);
    assert_eq!(component(&ledger, "good")["sent"], sent);
    let bad = component(&ledger, "bad");
    assert_eq!(bad["dead_lettered"], sent, "every event meant for the stuck sink is in its DLQ: {bad:#}");
    assert!(bad["dead_lettered_by_reason"]["stalled"].as_u64().unwrap_or(0) > 0, "{bad:#}");
    let mut good = healthy.accepted_lines();
    good.sort();
    good.dedup();
    assert_eq!(good.len(), total);

    // The diversion wrote binary batches; `dlq list` reads them as events.
    let dlq_dir = case.path("data/dead_letter/bad");
    let forms: Vec<String> = std::fs::read_dir(&dlq_dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter_map(|e| e.path().extension().map(|x| x.to_string_lossy().into_owned()))
        .collect();
    assert!(forms.iter().any(|f| f == "bin"), "a stalled sink's diversion is stored in binary segments: {forms:?}");
    let listed = common::sluice()
        .args(["dlq", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_else(|e| panic!("{e}"));
    let events: u64 = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["sink_id"] == "bad")
        .filter_map(|s| s["events"].as_u64())
        .sum();
    assert_eq!(events, sent, "`dlq list` counts every diverted event: {listed:#}");

    // The destination recovers: a replay delivers every one of them.
    stop.store(true, Ordering::Relaxed);
    let _ = holder.join();
    let recovered = Intake::on_port(broken_port, |_, _, _| 200);
    let output = common::sluice()
        .args(["dlq", "replay", "--sink", "bad", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut lines = recovered.accepted_lines();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), total, "the replay delivered every event the stuck sink missed");
}
