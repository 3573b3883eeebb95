//! `sluice tap` over the API: samples at outputs and inputs, the limit per interval, the
//! formats, and a client that stops reading, which must change nothing for the pipeline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Child;
use std::time::Duration;

use common::files::wait_until;
use common::{Case, free_port, post, terminate, wait_for_port};

struct Running {
    case: Case,
    child: Option<Child>,
    port: u16,
    api: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = terminate(child);
        }
    }
}

/// http_server → remap (`.tagged = true`) → file.
fn start() -> Running {
    let case = Case::new();
    let (port, api) = (free_port(), free_port());
    let config = case.config(&format!(
        r#"
api.enabled = true
api.address = "127.0.0.1:{api}"
[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
[transforms.tag]
type = "remap"
inputs = ["intake"]
source = '.tagged = true'
[sinks.archive]
type = "file"
inputs = ["tag"]
path = "{{dir}}/out.log"
encoding.codec = "json"
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    wait_for_port(api, Duration::from_secs(20));
    Running { case, child: Some(child), port, api }
}

/// Posts batches of 10 lines every few milliseconds until `stop`.
fn traffic(port: u16, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let body: String = (0..10).map(|i| format!("line {}\n", sent + i)).collect();
            let (status, _) = post(port, "/", body.as_bytes());
            assert_eq!(status, 200);
            sent += 10;
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    })
}

fn tap(api: u16, args: &[&str]) -> (String, String) {
    let output = common::sluice()
        .arg("tap")
        .args(["--url", &format!("http://127.0.0.1:{api}")])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

#[test]
fn tap_samples_outputs_and_inputs_within_its_limit_in_each_format() {
    let run = start();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = traffic(run.port, stop.clone());
    // Outputs of the remap: tagged events, at most 5 per 200 ms over 1 s.
    let (stdout, stderr) = tap(run.api, &["tag", "--limit", "5", "--interval", "200", "--duration-ms", "1000"]);
    assert!(stderr.contains(r#"tapping ["tag"]"#), "{stderr}");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_default()).collect();
    assert!(!events.is_empty() && events.len() <= 5 * 6, "{} events", events.len());
    assert!(events.iter().all(|e| e["tagged"] == true && e["message"].is_string()), "{stdout}");
    // Inputs of the sink are the remap's outputs; with --meta each says where it came from.
    let (stdout, _) = tap(run.api, &["--inputs-of", "archive", "--meta", "--limit", "3", "--duration-ms", "600"]);
    let first: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(first["component_id"], "tag", "{stdout}");
    assert_eq!(first["component_kind"], "transform");
    assert_eq!(first["event"]["tagged"], true);
    // The source's outputs, untagged, as YAML and as logfmt.
    let (yaml, _) =
        tap(run.api, &["--outputs-of", "intake", "--format", "yaml", "--limit", "2", "--duration-ms", "600"]);
    assert!(yaml.starts_with("---\n") && yaml.contains("message: line") && !yaml.contains("tagged"), "{yaml}");
    let (logfmt, _) = tap(run.api, &["intake", "--format", "logfmt", "--limit", "2", "--duration-ms", "600"]);
    assert!(logfmt.lines().next().unwrap_or_default().contains("message=\"line "), "{logfmt}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = sender.join().unwrap_or_default();
    // Tapping took nothing away.
    assert!(wait_until(Duration::from_secs(20), || common::files::lines_in(&run.case.path("out.log")) == sent));
    // A pattern that matches nothing is an error, not a silent tap.
    let output = common::sluice()
        .args(["tap", "nothing_here", "--url", &format!("http://127.0.0.1:{}", run.api)])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no component output matches"));
}

#[test]
fn a_tap_client_that_stops_reading_changes_nothing_for_the_pipeline() {
    let run = start();
    // A client that asks for everything, as fast as it comes, and never reads.
    let mut stuck = TcpStream::connect(("127.0.0.1", run.api)).unwrap_or_else(|e| panic!("{e}"));
    stuck
        .write_all(b"GET /tap?limit=1000000&interval_ms=10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let total = 100_000;
    let body: String =
        (0..1000).map(|i| format!("a line long enough to fill socket buffers quickly {i:04}\n")).collect();
    for _ in 0..total / 1000 {
        let (status, _) = post(run.port, "/", body.as_bytes());
        assert_eq!(status, 200, "every sender acknowledged as if nobody tapped");
    }
    assert_eq!(common::files::lines_in(&run.case.path("out.log")), total, "acknowledged means written");
    // The client reads at last: it is told how much it missed.
    stuck.set_read_timeout(Some(Duration::from_secs(5))).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    let mut buf = vec![0; 1 << 20];
    let told = wait_until(Duration::from_secs(20), || {
        if let Ok(n) = stuck.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&seen).contains("tap_dropped")
    });
    assert!(told, "the tap reports what it dropped");
}
