//! Live reload (`POST /reload`, SIGHUP, `--watch-config`) under load: every acknowledged
//! event is delivered, the ledger balances across the whole run, a renamed file source reads
//! nothing twice, and a config with errors is refused while the pipeline runs on.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::files::{append, wait_until};
use common::{Case, assert_ledger_balanced, component, enable_api, free_port, post, terminate, wait_for_port};

/// What a step of the reload run changes.
#[derive(Clone, Default)]
struct Shape {
    /// `extra_<n>`: a sink added (and the previous one removed).
    extra: Option<usize>,
    /// The remap's generation, written into every event.
    generation: usize,
    /// `files_<n>`: the file source's id.
    files: usize,
    /// A config with a VRL error.
    broken: bool,
}

fn config_text(port: u16, shape: &Shape) -> String {
    let mut text = format!(
        r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[transforms.shape]
type = "remap"
inputs = ["intake"]
source = '.generation = {generation}{broken}'

[sinks.out]
type = "file"
inputs = ["shape"]
path = "{{dir}}/out.jsonl"
encoding.codec = "json"

[sources.files_{files}]
type = "file"
include = ["{{dir}}/logs/*.log"]
read_from = "beginning"
glob_minimum_cooldown_ms = 100

[sinks.file_out]
type = "file"
inputs = ["files_{files}"]
path = "{{dir}}/file_out.jsonl"
encoding.codec = "json"
"#,
        generation = shape.generation,
        broken = if shape.broken { " +" } else { "" },
        files = shape.files,
    );
    if let Some(n) = shape.extra {
        text.push_str(&format!(
            "\n[sinks.extra_{n}]\ntype = \"blackhole\"\ninputs = [\"shape\"]\nprint_interval_secs = 0\n"
        ));
    }
    text
}

/// Writes `config.toml` in place, as an operator edits it: `text` (`{dir}` replaced) after
/// the API block on port `api`.
fn edit_config(case: &Case, api: u16, text: &str) {
    let text = format!("api.enabled = true\napi.address = \"127.0.0.1:{api}\"\n{text}");
    let text = text.replace("{dir}", &case.dir.path().display().to_string());
    let tmp = case.path("config.toml.tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::rename(&tmp, case.path("config.toml")).unwrap_or_else(|e| panic!("{e}"));
}

fn write_config(case: &Case, api: u16, port: u16, shape: &Shape) {
    edit_config(case, api, &config_text(port, shape));
}

fn messages(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["message"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn reloads_under_load_lose_no_acknowledged_event_and_re_read_no_file() {
    const SENDERS: usize = 4;
    const REQUESTS: usize = 250;
    const LINES: usize = 500;
    const RELOADS: usize = 100;
    let case = Case::new();
    std::fs::create_dir_all(case.path("logs")).unwrap_or_else(|e| panic!("{e}"));
    let log = case.path("logs").join("app.log");
    append(&log, "line", 0..2000);
    let (port, api) = (free_port(), free_port());
    let mut shape = Shape::default();
    write_config(&case, api, port, &shape);
    let child = case.spawn_with(&case.path("config.toml"), &["--graceful-shutdown-limit-secs", "30"]);
    wait_for_port(port, Duration::from_secs(30));
    wait_for_port(api, Duration::from_secs(30));

    // Senders post with acknowledgements; a 200 means the events are in out.jsonl.
    let done = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for r in 0..REQUESTS {
                    let body: String = (0..LINES).map(|l| format!("s{s}-r{r}-l{l}\n")).collect();
                    let (status, answer) = post(port, "/", body.as_bytes());
                    if status == 200 {
                        acknowledged.push((s, r));
                    } else {
                        eprintln!("sender {s} request {r}: {status} {answer}");
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                acknowledged
            })
        })
        .collect();

    let mut next_line = 2000;
    let mut refused = 0;
    for step in 0..RELOADS {
        // Spread the reloads over the senders' run.
        let due = step * SENDERS * REQUESTS / RELOADS;
        assert!(wait_until(Duration::from_secs(120), || done.load(Ordering::Relaxed) >= due), "senders stalled");
        let mut next = Shape { broken: false, ..shape.clone() };
        match step % 4 {
            0 => next.extra = Some(step),
            1 => next.generation = step,
            2 => next.files = step,
            _ => next.broken = true,
        }
        write_config(&case, api, port, &next);
        let (status, answer) = post(api, "/reload", b"");
        if next.broken {
            assert_eq!(status, 400, "a config with errors is refused: {answer}");
            assert!(answer.contains("shape"), "the error names the component: {answer}");
            refused += 1;
        } else {
            assert_eq!(status, 200, "step {step}: {answer}");
            shape = next;
        }
        // The file grows while its source is renamed.
        append(&log, "line", next_line..next_line + 50);
        next_line += 50;
    }
    let acknowledged: Vec<(usize, usize)> =
        senders.into_iter().flat_map(|s| s.join().unwrap_or_else(|_| panic!("sender panicked"))).collect();
    let file_lines = next_line;
    let file_out = case.path("file_out.jsonl");
    let complete = wait_until(Duration::from_secs(60), || messages(&file_out).len() >= file_lines);
    let (code, stderr) = terminate(child);
    assert!(complete, "file_out has {} of {file_lines} lines", messages(&file_out).len());
    assert_eq!(code, Some(0), "{}", stderr.lines().rev().take(40).collect::<Vec<_>>().join("\n"));
    assert_eq!(refused, RELOADS / 4);

    // Every acknowledged event is in out.jsonl.
    let delivered: BTreeSet<String> = messages(&case.path("out.jsonl")).into_iter().collect();
    assert!(acknowledged.len() >= SENDERS * REQUESTS * 9 / 10, "most requests succeed: {}", acknowledged.len());
    for (s, r) in &acknowledged {
        for l in 0..LINES {
            let id = format!("s{s}-r{r}-l{l}");
            assert!(delivered.contains(&id), "acknowledged but not delivered: {id}");
        }
    }
    // The renamed file source read every line once.
    let lines = messages(&file_out);
    let unique: BTreeSet<&String> = lines.iter().collect();
    assert_eq!(unique.len(), file_lines, "every line of the file");
    assert_eq!(lines.len(), file_lines, "no line read twice across {} renames", RELOADS / 4);

    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], delivered.len() as u64);
    assert_eq!(component(&ledger, "file_out")["sent"], file_lines as u64);
}

#[test]
fn a_changed_sink_is_replaced_without_losing_an_acknowledged_event() {
    replace_sink_under_load("");
}

#[test]
fn a_changed_sink_keeps_its_disk_buffer_across_the_replacement() {
    replace_sink_under_load("buffer.type = \"disk\"\nbuffer.max_size = 268435488\n");
}

/// Changes the path of a file sink ten times while a sender posts; `buffer` is the sink's
/// buffer table.
fn replace_sink_under_load(buffer: &str) {
    let case = Case::new();
    let port = free_port();
    let sink = |n: usize| {
        format!(
            r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[sinks.out]
type = "file"
inputs = ["intake"]
path = "{{dir}}/out-{n}.jsonl"
encoding.codec = "json"
{buffer}
"#
        )
    };
    let config = case.config(&sink(0));
    let api = enable_api(&config);
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(30));
    wait_for_port(api, Duration::from_secs(30));
    let sender = std::thread::spawn(move || {
        let mut acknowledged = Vec::new();
        for r in 0..400 {
            let body: String = (0..100).map(|l| format!("r{r}-l{l}\n")).collect();
            let (status, answer) = post(port, "/", body.as_bytes());
            if status == 200 {
                acknowledged.push(r);
            } else {
                eprintln!("request {r}: {status} {answer}");
            }
        }
        acknowledged
    });
    for n in 1..=10 {
        edit_config(&case, api, &sink(n));
        let (status, answer) = post(api, "/reload", b"");
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains(r#""changed":["out"]"#), "{answer}");
    }
    let acknowledged = sender.join().unwrap_or_else(|_| panic!("sender panicked"));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let delivered: BTreeSet<String> = (0..=10).flat_map(|n| messages(&case.path(&format!("out-{n}.jsonl")))).collect();
    assert_eq!(acknowledged.len(), 400, "the source never refused a request");
    for r in &acknowledged {
        for l in 0..100 {
            assert!(delivered.contains(&format!("r{r}-l{l}")), "acknowledged but lost: r{r}-l{l}");
        }
    }
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 40_000);
}

#[test]
fn sighup_and_a_changed_file_reload_and_a_broken_config_leaves_the_pipeline_running() {
    let case = Case::new();
    let port = free_port();
    let base = format!(
        r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[sinks.a]
type = "file"
inputs = ["intake"]
path = "{{dir}}/a.jsonl"
encoding.codec = "json"
"#
    );
    let with_b = format!(
        "{base}\n[sinks.b]\ntype = \"file\"\ninputs = [\"intake\"]\npath = \"{{dir}}/b.jsonl\"\nencoding.codec = \"json\"\n"
    );
    let api = free_port();
    edit_config(&case, api, &base);
    let config = case.path("config.toml");
    let child = common::background(
        common::sluice()
            .env("SLUICE_LOG", "info")
            .arg("--config")
            .arg(&config)
            .arg("--ledger-json")
            .arg(case.path("ledger.json"))
            .arg("--watch-config"),
    );
    wait_for_port(port, Duration::from_secs(30));
    wait_for_port(api, Duration::from_secs(30));
    assert_eq!(post(port, "/", b"one\n").0, 200);

    // A broken config: refused, and the pipeline goes on as it was. SIGHUP asks for it; the
    // API's answer says it was refused (requests are served in order, and the file stays
    // broken until then).
    edit_config(&case, api, &format!("{base}\n[sinks.c]\ntype = \"no_such_sink\"\ninputs = [\"intake\"]\n"));
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill").args(["-HUP", &pid]).status();
    let (status, answer) = post(api, "/reload", b"");
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("no_such_sink"), "{answer}");
    assert_eq!(post(port, "/", b"two\n").0, 200);

    // The file changes: the watcher reloads, and `b` gets what comes after.
    edit_config(&case, api, &with_b);
    let b = case.path("b.jsonl");
    let mut n = 0;
    let reloaded = wait_until(Duration::from_secs(30), || {
        n += 1;
        post(port, "/", format!("probe {n}\n").as_bytes()).0 == 200 && !messages(&b).is_empty()
    });
    assert!(reloaded, "sink b never started");
    // SIGHUP with the file as it is: nothing to change.
    let _ = std::process::Command::new("kill").args(["-HUP", &pid]).status();
    assert_eq!(post(port, "/", b"three\n").0, 200);
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("unknown sink type `no_such_sink`"), "the refusal is logged: {stderr}");
    assert!(stderr.contains("SIGHUP"), "SIGHUP asked for a reload: {stderr}");
    let a = messages(&case.path("a.jsonl"));
    for m in ["one", "two", "three"] {
        assert!(a.contains(&m.to_owned()), "{m} missing from a: {a:?}");
    }
    assert!(messages(&b).contains(&"three".to_owned()));
    assert_ledger_balanced(&case.ledger());
}

#[test]
fn a_changed_http_server_on_the_same_address_keeps_its_listener() {
    let case = Case::new();
    let port = free_port();
    let source = |n: usize| {
        format!(
            r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"
headers = ["X-Version-{n}"]

[sinks.out]
type = "file"
inputs = ["intake"]
path = "{{dir}}/out.jsonl"
encoding.codec = "json"
"#
        )
    };
    let config = case.config(&source(0));
    let api = enable_api(&config);
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(30));
    wait_for_port(api, Duration::from_secs(30));
    let sender = std::thread::spawn(move || {
        (0..600)
            .map(|r| {
                let body: String = (0..20).map(|l| format!("r{r}-l{l}\n")).collect();
                common::try_post(port, "/", body.as_bytes())
            })
            .collect::<Vec<_>>()
    });
    for n in 1..=10 {
        edit_config(&case, api, &source(n));
        let (status, answer) = post(api, "/reload", b"");
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains(r#""changed":["intake"]"#), "{answer}");
    }
    let statuses = sender.join().unwrap_or_else(|_| panic!("sender panicked"));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let refused = statuses.iter().filter(|s| **s != Some(200)).count();
    assert_eq!(refused, 0, "requests not answered 200 while the source was replaced: {statuses:?}");
    assert_eq!(messages(&case.path("out.jsonl")).len(), 600 * 20);
    assert_ledger_balanced(&case.ledger());
}

/// A sink stuck on a destination that never answers, its buffer full, is replaced: the
/// reload does not wait on it for ever (its drain time cuts its retries, what it held goes to
/// its dead-letter queue), and the new version delivers.
#[test]
fn a_sink_stuck_on_its_destination_is_replaced_within_the_drain_time() {
    let case = Case::new();
    let port = free_port();
    let silent = common::silent_intake();
    let healthy = common::intake::Intake::start(|_, _, _| 200);
    let sink = |uri: String| {
        format!(
            r#"
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[sinks.out]
type = "http"
inputs = ["intake"]
uri = "{uri}"
encoding.codec = "json"
buffer.max_events = 10
batch.max_events = 5
request.timeout_secs = 60
"#
        )
    };
    let config = case.config(&sink(format!("http://127.0.0.1:{silent}/")));
    let api = enable_api(&config);
    let child = case.spawn_with(&config, &["--graceful-shutdown-limit-secs", "4"]);
    wait_for_port(port, Duration::from_secs(30));
    wait_for_port(api, Duration::from_secs(30));
    // Senders whose events fill the sink's buffer and wait.
    let senders: Vec<_> = (0..4)
        .map(|s| {
            std::thread::spawn(move || {
                let body: String = (0..10).map(|l| format!("s{s}-l{l}\n")).collect();
                common::post_within(port, "/", body.as_bytes(), Duration::from_secs(60))
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let ledger = common::get(api, "/ledger");
            ledger.contains(r#""in_flight":40"#) || ledger.contains(r#""in_flight":30"#)
        }),
        "the senders' events wait in the sink"
    );
    edit_config(&case, api, &sink(format!("http://127.0.0.1:{}/", healthy.port)));
    let started = std::time::Instant::now();
    let (status, answer) = post(api, "/reload", b"");
    assert_eq!(status, 200, "{answer}");
    assert!(started.elapsed() < Duration::from_secs(15), "the reload took {:?}", started.elapsed());
    for s in senders {
        let _ = s.join();
    }
    assert_eq!(post(port, "/", b"after\n").0, 200, "the new version delivers");
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    let out = component(&ledger, "out");
    let settled = out["sent"].as_u64().unwrap_or(0) + out["dead_lettered"].as_u64().unwrap_or(0);
    assert_eq!(settled, out["received"].as_u64().unwrap_or(0), "{out:#}");
    assert!(healthy.accepted.lock().map(|a| a.iter().any(|b| b.contains("after"))).unwrap_or(false));
}

/// An id can change kind: a sink `x` becomes a transform `x` feeding a new sink, and then a
/// source `x` (the transform's readers move to it).
#[test]
fn a_component_may_change_kind_under_the_same_id() {
    let case = Case::new();
    let port = free_port();
    let head = format!(
        "data_dir = \"{{dir}}/data\"\n[sources.intake]\ntype = \"http_server\"\naddress = \"127.0.0.1:{port}\"\n"
    );
    let configs = [
        format!(
            "{head}[sinks.x]\ntype = \"file\"\ninputs = [\"intake\"]\npath = \"{{dir}}/a.jsonl\"\nencoding.codec = \"json\"\n"
        ),
        format!(
            "{head}[transforms.x]\ntype = \"remap\"\ninputs = [\"intake\"]\nsource = '.seen = true'\n[sinks.out]\ntype = \"file\"\ninputs = [\"x\"]\npath = \"{{dir}}/b.jsonl\"\nencoding.codec = \"json\"\n"
        ),
        format!(
            "{head}[sources.x]\ntype = \"demo_logs\"\nformat = \"shuffle\"\nlines = [\"from the demo\"]\ncount = 3\ninterval = 0.0\n[sinks.out]\ntype = \"file\"\ninputs = [\"x\", \"intake\"]\npath = \"{{dir}}/b.jsonl\"\nencoding.codec = \"json\"\n"
        ),
    ];
    let config = case.config(&configs[0]);
    let api = enable_api(&config);
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(30));
    wait_for_port(api, Duration::from_secs(30));
    let write = |text: &str| edit_config(&case, api, text);
    assert_eq!(post(port, "/", b"one\n").0, 200);
    write(&configs[1]);
    let (status, answer) = post(api, "/reload", b"");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(post(port, "/", b"two\n").0, 200);
    write(&configs[2]);
    let (status, answer) = post(api, "/reload", b"");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(post(port, "/", b"three\n").0, 200);
    let b = case.path("b.jsonl");
    assert!(wait_until(Duration::from_secs(20), || messages(&b).len() == 5), "{:?}", messages(&b));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(messages(&case.path("a.jsonl")), ["one"]);
    let mut b = messages(&b);
    b.sort();
    assert_eq!(b, ["from the demo", "from the demo", "from the demo", "three", "two"]);
    assert_ledger_balanced(&case.ledger());
}
