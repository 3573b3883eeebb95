//! `sluice top` over the API during a fault run: one sink refused by its endpoint (400, so
//! its events go to its DLQ), one healthy. `--json` reports both as they are; the terminal
//! view, driven in tmux, shows the same, and its screen is the one in `docs/top.md`.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::files::wait_until;
use common::intake::Intake;
use common::{Case, free_port, post, terminate, wait_for_port};

struct Fault {
    case: Case,
    child: Option<Child>,
    api: u16,
    port: u16,
    _refusing: Intake,
}

/// http_server → a file sink (healthy) and an http sink whose endpoint answers 400.
fn fault_run() -> Fault {
    let case = Case::new();
    let (port, api) = (free_port(), free_port());
    let refusing = Intake::start(|_, _, _| 400);
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
api.enabled = true
api.address = "127.0.0.1:{api}"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[sinks.archive]
type = "file"
inputs = ["intake"]
path = "{{dir}}/out.log"
encoding.codec = "text"

[sinks.billing_api]
type = "http"
inputs = ["intake"]
uri = "http://127.0.0.1:{}/"
encoding.codec = "json"
batch.max_events = 10
batch.timeout_secs = 0.05
"#,
        refusing.port
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(20));
    wait_for_port(api, Duration::from_secs(20));
    for i in 0..20 {
        let body: String = (0..10).map(|j| format!("request {i} event {j}\n")).collect();
        let _ = post(port, "/", body.as_bytes());
    }
    Fault { case, child: Some(child), api, port, _refusing: refusing }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = terminate(child);
        }
    }
}

fn top_json(api: u16, extra: &[&str]) -> serde_json::Value {
    let output = common::sluice()
        .args(["top", "--json", "--interval", "200", "--url"])
        .arg(format!("http://127.0.0.1:{api}"))
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[test]
fn top_json_shows_the_failing_sink_its_dlq_and_the_balance() {
    let fault = fault_run();
    let sample = top_json(fault.api, &[]);
    let rows = sample["components"].as_array().cloned().unwrap_or_default();
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).cloned().unwrap_or_default();
    assert_eq!(sample["balanced"], true, "{sample}");
    assert_eq!(row("intake")["received"], 200);
    assert_eq!(row("archive")["sent"], 200);
    assert_eq!(row("billing_api")["dead_lettered"]["permanent"], 200, "{sample}");
    assert_eq!(row("billing_api")["dead_letter_queue_events"], 200, "{sample}");
    assert_eq!(row("billing_api")["buffer"], "0/500 events");
    // Bytes in at the source and out at the sinks, as Vector's metrics name them.
    let metrics = common::get(fault.api, "/metrics");
    let bytes = |name: &str, id: &str, kind: &str, kind_type: &str| {
        let labels = format!("{{component_id=\"{id}\",component_kind=\"{kind}\",component_type=\"{kind_type}\"}}");
        common::sample(&metrics, &format!("{name}{labels}")).unwrap_or(0.0)
    };
    assert!(bytes("component_received_bytes_total", "intake", "source", "http_server") > 0.0, "{metrics}");
    assert!(bytes("component_sent_bytes_total", "archive", "sink", "file") > 0.0, "{metrics}");
    // Filter and sort as asked.
    let sample = top_json(fault.api, &["--filter", "bill*", "--sort", "dead-lettered"]);
    let ids: Vec<&str> =
        sample["components"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["billing_api"]);
}

fn tmux(args: &[&str]) -> String {
    let output =
        Command::new("tmux").args(args).output().unwrap_or_else(|e| panic!("tmux ({e}); scripts/test installs it"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn top_in_a_terminal_shows_each_component_and_the_fault() {
    let fault = fault_run();
    // Traffic goes on while the screen is watched, so its rates are not zero.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (stop, port) = (stop.clone(), fault.port);
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = post(port, "/", b"more\nand more\n");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let socket = fault.case.path("tmux.sock").display().to_string();
    let binary = env!("CARGO_BIN_EXE_sluice");
    let command = format!("{binary} top --interval 200 --url http://127.0.0.1:{}", fault.api);
    tmux(&["-S", &socket, "new-session", "-d", "-x", "170", "-y", "10", &command]);
    let mut screen = String::new();
    let shown = wait_until(Duration::from_secs(20), || {
        screen = tmux(&["-S", &socket, "capture-pane", "-p"]);
        screen.contains("billing_api")
            && screen.contains("permanent: ")
            && screen.contains("ledger balanced")
            && screen.lines().any(|l| l.contains("archive") && l.split_whitespace().nth(3).is_some_and(|r| r != "0"))
    });
    // `s` cycles the sort; `q` quits.
    tmux(&["-S", &socket, "send-keys", "s"]);
    let sorted =
        wait_until(Duration::from_secs(10), || tmux(&["-S", &socket, "capture-pane", "-p"]).contains("sort (Id)"));
    tmux(&["-S", &socket, "send-keys", "q"]);
    let quit = wait_until(Duration::from_secs(10), || tmux(&["-S", &socket, "list-sessions"]).is_empty());
    tmux(&["-S", &socket, "kill-server"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender.join();
    assert!(shown, "{screen}");
    for expected in ["intake", "http_server", "archive", "file", "IN/S", "B IN/S", "B OUT/S", "DEAD-LETTERED", "q quit"]
    {
        assert!(screen.contains(expected), "{expected}: {screen}");
    }
    assert!(sorted && quit, "{screen}");
    // The screen in the docs is this one: `SLUICE_BLESS=1` writes it there.
    if std::env::var_os("SLUICE_BLESS").is_some() {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/top.md");
        let text = std::fs::read_to_string(&doc).unwrap_or_else(|e| panic!("{e}"));
        let (before, rest) = text.split_once("```text\n").unwrap_or_else(|| panic!("docs/top.md has a text block"));
        let (_, after) = rest.split_once("```").unwrap_or_else(|| panic!("docs/top.md: unclosed block"));
        let trimmed: String = screen.lines().map(|l| format!("{}\n", l.trim_end())).collect();
        std::fs::write(doc, format!("{before}```text\n{trimmed}```{after}")).unwrap_or_else(|e| panic!("{e}"));
    }
}
