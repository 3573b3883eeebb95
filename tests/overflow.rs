//! `when_full = "overflow"` through the binary: a memory stage that spills to a disk stage.
//! While the destination is down, what memory has no room for is stored on disk and
//! acknowledged to its senders; it survives `kill -9` and is delivered once the destination is
//! back.

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::{Case, assert_ledger_balanced, component, free_port, post_within, terminate, wait_for_port};

fn start(config: &std::path::Path, ledger: Option<&std::path::Path>, port: u16) -> Child {
    let mut command = common::sluice();
    if let Some(ledger) = ledger {
        command.arg("--ledger-json").arg(ledger);
    }
    let child = common::background(command.arg("--config").arg(config));
    wait_for_port(port, Duration::from_secs(30));
    child
}

#[test]
fn overflow_stores_what_memory_cannot_hold_and_it_survives_kill_9() {
    let case = Case::new();
    let port = free_port();
    // Nothing listens here until the destination "recovers".
    let destination = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
ack_timeout_secs = 60

[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{destination}/bulk"
encoding.codec = "text"
batch.max_events = 50
batch.timeout_secs = 0.05
request.concurrency = 2
request.retry_max_duration_secs = 1

[[sinks.out.buffer]]
type = "memory"
max_events = 100
when_full = "overflow"

[[sinks.out.buffer]]
type = "disk"
max_size = 67108864
"#
    ));
    let api = common::enable_api(&config);
    let child = start(&config, None, port);
    // Eight senders, 25 requests of 20 events each. Requests whose events stay in memory (or in
    // the sink's retrying requests) get no answer while the destination is down; the rest
    // overflow to disk and are acknowledged once fsynced.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for r in 0..25 {
                    let ids: Vec<String> = (0..20).map(|i| format!("t{t}-r{r:02}-e{i:02}")).collect();
                    let body: String = ids.iter().map(|id| format!("{id}\n")).collect();
                    if post_within(port, "/", body.as_bytes(), Duration::from_secs(2)) == Some(200)
                        && let Ok(mut acked) = acked.lock()
                    {
                        acked.extend(ids);
                    }
                }
            })
        })
        .collect();
    for s in senders {
        let _ = s.join();
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    println!("{} of 4000 events acknowledged while the destination was down", acked.len());
    assert!(acked.len() >= 3000, "what memory could not hold was stored on disk and acknowledged: {}", acked.len());
    // The buffer gauges show both stages: events in memory and on disk, bytes on disk.
    let metrics = common::get(api, "/metrics");
    let labels = r#"{component_id="out",component_kind="sink",component_type="http"}"#;
    let gauge = |name: &str| common::sample(&metrics, &format!("{name}{labels}")).unwrap_or(-1.0);
    assert!(gauge("buffer_size_events") >= acked.len() as f64, "{metrics}");
    assert_eq!(gauge("buffer_max_size_events"), 100.0, "the memory stage's capacity");
    assert!(gauge("buffer_size_bytes") > acked.len() as f64 * 20.0, "{metrics}");
    assert_eq!(gauge("buffer_max_size_bytes"), 67108864.0);

    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    let intake = Intake::on_port(destination, |_, _, _| 200);
    let child = start(&config, Some(&case.path("ledger.json")), port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered: BTreeSet<String> = intake.accepted_lines().into_iter().collect();
        let missing = acked.difference(&delivered).count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} acknowledged events never reached the destination");
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = intake.accepted_lines();
    let unique: BTreeSet<&String> = lines.iter().collect();
    println!("{} delivered after the restart, {} duplicates", lines.len(), lines.len() - unique.len());
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert!(component(&ledger, "out")["sent"].as_u64().unwrap_or(0) >= acked.len() as u64);
}
