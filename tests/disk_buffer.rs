//! The disk buffer through the binary: everything acknowledged to a sender survives `kill -9`.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::intake::Intake;
use common::{Case, free_port, terminate, try_post, wait_for_port};

fn start(case: &Case, config: &std::path::Path, port: u16, last: bool) -> Child {
    let mut command = common::sluice();
    if last {
        command.arg("--ledger-json").arg(case.path("ledger.json"));
    }
    let child = common::background(command.arg("--config").arg(config));
    wait_for_port(port, Duration::from_secs(30));
    child
}

/// 200,000 events posted with acknowledgements into an http sink with a disk buffer; sluice is
/// killed with SIGKILL at 20 moments and restarted. Every event a sender got 2xx for reaches
/// the intake; duplicates are printed.
#[test]
fn every_acknowledged_event_survives_twenty_kills() {
    let intake = Intake::start(|_, _, _| 200);
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"

[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"

[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{}/bulk"
encoding.codec = "text"
batch.max_events = 500
batch.timeout_secs = 0.05
request.concurrency = 4
buffer.type = "disk"
buffer.max_size = 67108864
"#,
        intake.port
    ));
    let total_batches = 2_000;
    let queue: Arc<Mutex<VecDeque<usize>>> = Arc::new(Mutex::new((0..total_batches).collect()));
    let acknowledged: Arc<Mutex<BTreeSet<usize>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let done = Arc::new(AtomicBool::new(false));
    let mut child = start(&case, &config, port, false);
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (queue, acknowledged, done) = (queue.clone(), acknowledged.clone(), done.clone());
            std::thread::spawn(move || {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some(batch) = next else {
                        if done.load(Ordering::Relaxed) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let body: String = (0..100).map(|i| format!("b{batch:05}-e{i:03}\n")).collect();
                    let ok = try_post(port, "/", body.as_bytes()) == Some(200);
                    if ok {
                        if let Ok(mut a) = acknowledged.lock() {
                            a.insert(batch);
                        }
                    } else {
                        // Not acknowledged: the sender keeps it and tries again.
                        if let Ok(mut q) = queue.lock() {
                            q.push_back(batch);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })
        })
        .collect();
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut random = move |range: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state % range
    };
    for kill in 0..20 {
        std::thread::sleep(Duration::from_millis(150 + random(500)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let acked = acknowledged.lock().map(|a| a.len()).unwrap_or(0);
        println!("kill {kill}: {acked} batches acknowledged so far");
        child = start(&case, &config, port, kill == 19);
    }
    let start_wait = Instant::now();
    while acknowledged.lock().map(|a| a.len()).unwrap_or(0) < total_batches {
        assert!(start_wait.elapsed() < Duration::from_secs(240), "the senders do not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    done.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    // Let the last restart deliver what it read from disk, then stop cleanly.
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let delivered = intake.accepted_lines();
    let distinct: BTreeSet<&String> = delivered.iter().collect();
    let expected = total_batches * 100;
    let missing: Vec<String> = (0..total_batches)
        .flat_map(|b| (0..100).map(move |i| format!("b{b:05}-e{i:03}")))
        .filter(|line| !distinct.contains(line))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "acknowledged events lost, e.g. {missing:?}");
    println!(
        "{expected} events acknowledged, {} delivered, {} duplicates (re-sent by senders whose answer was lost, or re-read after a kill)",
        delivered.len(),
        delivered.len() - distinct.len()
    );
    assert_eq!(distinct.len(), expected);
    // Per kill, at most: the senders' unanswered requests (4 x 100 events, sent again), and
    // what the sink had sent but not yet acknowledged on disk (4 requests x 500 events, read
    // again after the restart), with room for acknowledgements not yet persisted.
    let duplicates = delivered.len() - distinct.len();
    assert!(duplicates <= 20 * 3_000, "{duplicates} duplicates exceed what can be in flight at 20 kills");
}

/// A renamed sink must not strand its buffer: `validate` names the directory nobody owns, and
/// `buffer.id` lets the renamed sink take it over.
#[test]
fn validate_reports_a_buffer_directory_that_no_sink_owns() {
    let case = Case::new();
    let orphan = case.path("data/buffer/old_name");
    std::fs::create_dir_all(&orphan).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(orphan.join("segment-00000000000000000000.wal"), b"x".repeat(100)).unwrap_or_else(|e| panic!("{e}"));
    let config = |buffer_id: &str| {
        case.config(&format!(
            r#"
data_dir = "{{dir}}/data"

[sources.in]
type = "stdin"

[sinks.new_name]
type = "blackhole"
inputs = ["in"]
buffer.type = "disk"
buffer.max_size = 1000000
{buffer_id}
"#
        ))
    };
    let validate = |path: &std::path::Path| {
        let output = common::sluice().arg("validate").arg(path).output().unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
    };
    let text = validate(&config(""));
    assert!(text.contains("old_name holds 100 bytes of buffered events that no sink owns"), "{text}");
    assert!(text.contains("buffer.id = \"old_name\""), "{text}");
    let text = validate(&config("buffer.id = \"old_name\""));
    assert!(!text.contains("no sink owns"), "{text}");
}

/// A buffer left by an earlier run with a damaged record in the middle and a torn tail: the
/// good records are delivered, the damaged bytes are in the dead-letter queue with reason
/// `buffer_corrupt`, and nothing crashes.
/// A buffer from an "earlier run" under `data/buffer/out`: six one-event records `good N`;
/// record 2's payload is damaged and record 5 is cut in half (a crash mid-write).
fn damaged_buffer(case: &Case) -> std::path::PathBuf {
    use sluice_buffers::disk::record;
    use sluice_core::event::{EventMetadata, LogEvent};

    let dir = case.path("data/buffer/out");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut data = Vec::new();
    let mut starts = Vec::new();
    for id in 0..6u64 {
        let event = LogEvent::from_value(
            vrl::value::Value::from(format!("good {id}")),
            EventMetadata::new("in", chrono::Utc::now()),
        );
        let mut payload = Vec::new();
        sluice_core::codec::encode_chunk(&[event], &mut payload);
        starts.push(data.len());
        record::encode(&mut data, id, 1, &payload);
    }
    data[starts[2] + record::HEADER + 3] ^= 0xff;
    data.truncate(starts[5] + (data.len() - starts[5]) / 2);
    std::fs::write(dir.join("segment-00000000000000000000.wal"), &data).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// stdin (empty) → a file sink with a disk buffer under `{dir}/data`.
const DRAIN_BUFFER: &str = r#"
data_dir = "{dir}/data"

[sources.in]
type = "stdin"

[sinks.out]
type = "file"
inputs = ["in"]
path = "{dir}/out.log"
encoding.codec = "text"
buffer.type = "disk"
buffer.max_size = 10000000
"#;

fn no_segment_left(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map(|d| d.flatten().all(|e| !e.path().to_string_lossy().ends_with(".wal"))).unwrap_or(true)
}

#[test]
fn a_damaged_buffer_delivers_the_good_records_and_quarantines_the_rest() {
    let case = Case::new();
    let dir = damaged_buffer(&case);
    let config = case.config(DRAIN_BUFFER);
    let output = case.run_with_stdin(&config, b"");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let written = std::fs::read_to_string(case.path("out.log")).unwrap_or_default();
    assert_eq!(written.lines().collect::<Vec<_>>(), vec!["good 0", "good 1", "good 3", "good 4"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Damaged bytes in the disk buffer"), "{stderr}");
    let dlq = common::files::dead_letters(&case.path("data"), "out");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["reason"], "buffer_corrupt");
    assert!(dlq[0]["event"]["buffer_corrupt"]["location"].as_str().unwrap_or_default().contains("segment-"));
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert!(no_segment_left(&dir), "a drained buffer leaves no segment");
}

/// `buffer check --repair` moves the damage to the owning sink's DLQ before sluice starts;
/// sluice then delivers the good records and finds nothing left to quarantine.
#[test]
fn buffer_check_repair_quarantines_the_damage_before_start() {
    let case = Case::new();
    let dir = damaged_buffer(&case);
    let config = case.config(DRAIN_BUFFER);
    let output = common::sluice()
        .args(["buffer", "check", "--repair", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "healthy after the repair: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("repaired: 1 damaged ranges"), "{text}");
    assert!(text.contains("4 records (4 events) waiting"), "{text}");
    let dlq = common::files::dead_letters(&case.path("data"), "out");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!((dlq[0]["reason"].as_str(), dlq[0]["sink_type"].as_str()), (Some("buffer_corrupt"), Some("file")));

    let output = case.run_with_stdin(&config, b"");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let written = std::fs::read_to_string(case.path("out.log")).unwrap_or_default();
    assert_eq!(written.lines().collect::<Vec<_>>(), vec!["good 0", "good 1", "good 3", "good 4"]);
    assert!(!stderr.contains("Damaged bytes"), "nothing was left to quarantine: {stderr}");
    assert_eq!(common::files::dead_letters(&case.path("data"), "out").len(), 1, "no second copy of the damage");
    common::assert_ledger_balanced(&case.ledger());
    assert!(no_segment_left(&dir), "the removed id did not hold the buffer back");
}

/// A buffer directory belongs to one process: a second sluice on the same data_dir and a
/// repair are refused while the first runs, naming its pid.
#[test]
fn a_buffer_in_use_is_neither_opened_twice_nor_repaired() {
    let case = Case::new();
    let port = free_port();
    let config_for = |port: u16| {
        format!(
            r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
[sinks.out]
type = "file"
inputs = ["in"]
path = "{{dir}}/out.log"
encoding.codec = "text"
buffer.type = "disk"
buffer.max_size = 10000000
"#
        )
    };
    let first = case.config(&config_for(port));
    let running = case.spawn(&first);
    wait_for_port(port, Duration::from_secs(30));
    let second = case.path("second.toml");
    std::fs::write(&second, config_for(free_port()).replace("{dir}", &case.path("").display().to_string()))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = common::sluice().arg("--config").arg(&second).output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a second sluice must not share the buffer: {stderr}");
    let pid = format!("in use by another process (pid {})", running.id());
    assert!(stderr.contains(&pid), "{stderr}");

    let output = common::sluice()
        .args(["buffer", "check", "--repair", "--config"])
        .arg(&first)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&pid), "{}", String::from_utf8_lossy(&output.stderr));
    let output =
        common::sluice().args(["buffer", "check", "--config"]).arg(&first).output().unwrap_or_else(|e| panic!("{e}"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("in use by a running sluice"));
    let (code, stderr) = terminate(running);
    assert_eq!(code, Some(0), "{stderr}");
}

/// `sluice buffer check` reports what a buffer holds and its damage, and changes nothing.
#[test]
fn buffer_check_reports_the_fixture_damage_without_changing_it() {
    let case = Case::new();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/buffers/tests/fixtures/disk-buffer-v1");
    let dir = case.path("data/buffer/out");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(&fixture).into_iter().flatten().flatten() {
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap_or_else(|e| panic!("{e}"));
    }
    let before: Vec<u8> = std::fs::read(dir.join("segment-00000000000000000000.wal")).unwrap_or_default();
    let output = common::sluice()
        .args(["buffer", "check", "--data-dir"])
        .arg(case.path("data"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(1), "damage makes the exit code 1");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("3 records (3 events) waiting, acknowledged below id 1, 1 damaged ranges"), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert_eq!(std::fs::read(dir.join("segment-00000000000000000000.wal")).unwrap_or_default(), before);
}

/// A record damaged on disk while sluice runs (after it was stored, before the sink read it):
/// its event goes to the DLQ raw, every other event is delivered, and the ledger still
/// balances (the damaged record's event was counted once, when it arrived).
#[test]
fn damage_to_a_record_of_the_same_run_keeps_the_ledger_balanced() {
    use std::os::unix::fs::FileExt;

    use sluice_buffers::disk::record::{self, Parsed};

    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    let intake = Intake::start(move |_, _, _| if flag.load(Ordering::Relaxed) { 200 } else { 503 });
    let case = Case::new();
    let port = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{}/"
encoding.codec = "text"
batch.max_events = 1
request.concurrency = 1
request.retry_initial_backoff_secs = 0.2
buffer.type = "disk"
buffer.max_size = 10000000
"#,
        intake.port
    ));
    let running = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(30));
    // One record per request; the sink is stuck on the first while the destination is down.
    for i in 0..300 {
        assert_eq!(try_post(port, "/", format!("event {i}").as_bytes()), Some(200));
    }
    let segment = case.path("data/buffer/out/segment-00000000000000000000.wal");
    let data = std::fs::read(&segment).unwrap_or_default();
    let mut at = 0;
    let mut starts = Vec::new();
    while let Parsed::Record(_, len) = record::parse(&data[at..]) {
        starts.push(at);
        at += len;
    }
    assert_eq!(starts.len(), 300, "every record is on disk");
    // Record 250 is far past what the reader reads ahead.
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap_or_else(|e| panic!("{e}"));
    let target = (starts[250] + record::HEADER + 2) as u64;
    let byte = [data[starts[250] + record::HEADER + 2] ^ 0xff];
    file.write_all_at(&byte, target).unwrap_or_else(|e| panic!("{e}"));
    up.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while intake.accepted_lines().len() < 299 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stderr) = terminate(running);
    let lines: BTreeSet<String> = intake.accepted_lines().into_iter().collect();
    assert_eq!(lines.len(), 299, "{stderr}");
    assert!(!lines.contains("event 250"), "the damaged record was not delivered");
    assert!(stderr.contains("Damaged bytes in the disk buffer"), "{stderr}");
    assert_eq!(common::files::dead_letters(&case.path("data"), "out").len(), 1);
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    let out = common::component(&ledger, "out");
    assert_eq!(
        (out["received"].as_u64(), out["sent"].as_u64(), out["dead_lettered"].as_u64()),
        (Some(300), Some(299), Some(1))
    );
    assert_eq!(code, Some(0), "{stderr}");
}

/// SIGTERM while the destination is down: what the disk buffer holds stays there for the
/// next start (neither failed nor dead-lettered), and so do the events of the sink's
/// retrying request once the shutdown cuts it short; the exit is clean, and the next start
/// delivers them all.
#[test]
fn a_signal_leaves_the_disk_backlog_for_the_next_start() {
    let case = Case::new();
    let port = free_port();
    let destination = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "http_server"
address = "127.0.0.1:{port}"
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{destination}/"
encoding.codec = "text"
batch.max_events = 10
batch.timeout_secs = 0.05
request.concurrency = 1
buffer.type = "disk"
buffer.max_size = 10000000
"#
    ));
    let spawn = || case.spawn_with(&config, &["--graceful-shutdown-limit-secs", "4"]);
    let child = spawn();
    wait_for_port(port, Duration::from_secs(30));
    for r in 0..50 {
        let body: String = (0..10).map(|i| format!("r{r:02}-e{i}\n")).collect();
        assert_eq!(try_post(port, "/", body.as_bytes()), Some(200), "stored on disk, so acknowledged");
    }
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "events kept on disk are safe: {stderr}");
    let ledger = case.ledger();
    let out = common::component(&ledger, "out");
    let kept = out["buffer_on_disk_events"].as_u64().unwrap_or(0);
    let dead = out["dead_lettered"].as_u64().unwrap_or(0);
    println!("{kept} events kept on disk, {dead} dead-lettered");
    assert_eq!(kept, 500, "the backlog and the cut-short request stayed on disk: {out:#}");
    assert_eq!(dead, 0, "{out:#}");
    assert_eq!(out["in_flight"], 500, "kept on disk: in flight, and a clean exit");
    assert_eq!(out["errored"], 0);
    assert!(stderr.contains("stay in this sink's disk buffer"), "{stderr}");

    let intake = Intake::on_port(destination, |_, _, _| 200);
    let child = spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    while intake.accepted_lines().iter().collect::<BTreeSet<_>>().len() < kept as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let delivered: BTreeSet<String> = intake.accepted_lines().into_iter().collect();
    assert_eq!(delivered.len() as u64, kept, "every event kept on disk, after the restart");
}

/// Every source finished (stdin at its end) while the destination is down: what the sink
/// could not deliver within its drain time stays in the disk buffer, untried events and
/// cut-short retries alike (none dead-lettered, exit 0), and the next start delivers them.
#[test]
fn a_finished_source_leaves_what_the_drain_could_not_deliver_on_disk() {
    let case = Case::new();
    let destination = free_port();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{destination}/"
encoding.codec = "text"
batch.max_events = 10
request.concurrency = 1
buffer.type = "disk"
buffer.max_size = 10000000
"#
    ));
    let run = |input: &[u8], limit_secs: &str| {
        let mut command = common::sluice();
        command.args(["--graceful-shutdown-limit-secs", limit_secs]);
        common::run_sluice(command, &config, Some(&case.path("ledger.json")), input)
    };
    let input: String = (0..500).map(|i| format!("e{i:03}\n")).collect();
    let output = run(input.as_bytes(), "2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "events kept on disk are safe: {stderr}");
    let ledger = case.ledger();
    let out = common::component(&ledger, "out");
    assert_eq!(out["dead_lettered"], 0, "nothing dead-lettered untried: {out:#}");
    assert_eq!(out["buffer_on_disk_events"], 500, "{out:#}");
    assert_eq!(out["in_flight"], 500, "kept on disk: in flight, and a clean exit");
    assert!(stderr.contains("stay in this sink's disk buffer"), "{stderr}");

    let intake = Intake::on_port(destination, |_, _, _| 200);
    // A drain that can deliver ends as soon as it has: the limit only bounds it.
    let output = run(b"", "60");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let delivered: BTreeSet<String> = intake.accepted_lines().into_iter().collect();
    assert_eq!(delivered.len(), 500, "every event kept on disk, after the restart");
    common::assert_ledger_balanced(&case.ledger());
}
