//! End-to-end pipelines through the real binary, fed on stdin. Each test checks what arrived
//! and that the ledger balances (G1).

mod common;

use common::{Case, assert_ledger_balanced, component};

fn lines(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 80);
    for i in 0..n {
        out.extend_from_slice(
            format!(
                "{{\"id\":{i},\"model\":\"m{}\",\"latency_ms\":{},\"user_id\":\"u{}\"}}\n",
                i % 4,
                i % 9000,
                i % 97
            )
            .as_bytes(),
        );
    }
    out
}

fn read_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn stdin_remap_file_delivers_a_million_lines_in_order() {
    let case = Case::new();
    let config = case.config(
        r#"
[sources.in]
type = "stdin"

[transforms.enrich]
type = "remap"
inputs = ["in"]
source = '''
. = parse_json!(string!(.message))
.is_high_latency = int!(.latency_ms) > 5000
'''

[sinks.out]
type = "file"
inputs = ["enrich"]
path = "{dir}/out.jsonl"
encoding.codec = "json"
"#,
    );
    let n = 1_000_000;
    let output = case.run_with_stdin(&config, &lines(n));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let written = read_lines(&case.path("out.jsonl"));
    assert_eq!(written.len(), n);
    for (i, line) in written.iter().enumerate() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {i}: {e}"));
        assert_eq!(value["id"], i, "line {i} out of order");
        assert_eq!(value["is_high_latency"], (i % 9000) > 5000);
    }
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    for id in ["in", "enrich", "out"] {
        assert_eq!(component(&ledger, id)["received"], n, "{id}");
    }
    assert_eq!(component(&ledger, "out")["sent"], n);
}

#[test]
fn fan_out_delivers_every_event_to_all_three_sinks() {
    let case = Case::new();
    let config = case.config(
        r#"
[sources.in]
type = "stdin"
decoding.codec = "json"

[sinks.json]
type = "file"
inputs = ["in"]
path = "{dir}/a.jsonl"
encoding.codec = "json"

[sinks.csv]
type = "file"
inputs = ["in"]
path = "{dir}/b.csv"
encoding.codec = "csv"
encoding.csv.fields = ["id", "model"]

[sinks.gz]
type = "file"
inputs = ["in"]
path = "{dir}/c.log.gz"
compression = "gzip"
encoding.codec = "logfmt"
"#,
    );
    let n = 20_000;
    let output = case.run_with_stdin(&config, &lines(n));
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(read_lines(&case.path("a.jsonl")).len(), n);
    let csv = read_lines(&case.path("b.csv"));
    assert_eq!(csv.len(), n);
    assert_eq!(csv[7], "7,m3");
    let gz = std::fs::read(case.path("c.log.gz")).unwrap_or_default();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(&gz[..]), &mut text)
        .unwrap_or_else(|e| panic!("gzip: {e}"));
    assert_eq!(text.lines().count(), n);
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    for id in ["json", "csv", "gz"] {
        assert_eq!(component(&ledger, id)["received"], n, "{id}");
        assert_eq!(component(&ledger, id)["sent"], n, "{id}");
    }
}

#[test]
fn route_filter_and_remap_account_for_every_event() {
    let case = Case::new();
    let config = case.config(
        r#"
[sources.in]
type = "stdin"

[transforms.parse]
type = "remap"
inputs = ["in"]
drop_on_error = true
reroute_dropped = true
source = ". = parse_json!(string!(.message))"

[transforms.split]
type = "route"
inputs = ["parse"]
route.m0 = '.model == "m0"'
route.even = { type = "vrl", source = "mod(int!(.id), 2) == 0" }

[transforms.slow]
type = "filter"
inputs = ["split._unmatched"]
condition = "int!(.latency_ms) > 4000"

[sinks.m0]
type = "file"
inputs = ["split.m0"]
path = "{dir}/m0.jsonl"
encoding.codec = "json"

[sinks.even]
type = "file"
inputs = ["split.even"]
path = "{dir}/even.jsonl"
encoding.codec = "json"

[sinks.slow_out]
type = "file"
inputs = ["slow"]
path = "{dir}/slow.jsonl"
encoding.codec = "json"

[sinks.bad]
type = "file"
inputs = ["parse.dropped"]
path = "{dir}/bad.txt"
encoding.codec = "text"
"#,
    );
    let n = 10_000;
    let mut input = lines(n);
    input.extend_from_slice(b"not json at all\n{\"id\": \n");
    let output = case.run_with_stdin(&config, &input);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let m0 = (0..n).filter(|i| i % 4 == 0).count();
    let even = (0..n).filter(|i| i % 2 == 0).count();
    let unmatched: Vec<usize> = (0..n).filter(|i| i % 2 == 1).collect();
    let slow = unmatched.iter().filter(|i| *i % 9000 > 4000).count();
    assert_eq!(read_lines(&case.path("m0.jsonl")).len(), m0);
    assert_eq!(read_lines(&case.path("even.jsonl")).len(), even);
    assert_eq!(read_lines(&case.path("slow.jsonl")).len(), slow);
    assert_eq!(read_lines(&case.path("bad.txt")), vec!["not json at all".to_owned(), "{\"id\": ".to_owned()]);
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "slow")["discarded"]["filter"], unmatched.len() - slow);
    // m0 events also match `even`: the extra copies count as received by the route.
    assert_eq!(component(&ledger, "split")["received"], n + m0);
}

#[test]
fn config_dir_and_several_files_merge_into_one_graph() {
    let case = Case::new();
    let dir = case.path("conf.d");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("10-source.yaml"), "sources:\n  in:\n    type: stdin\n").unwrap_or_default();
    std::fs::write(
        dir.join("20-sink.json"),
        r#"{"sinks": {"out": {"type": "file", "inputs": ["in"], "path": "${OUT_DIR}/out.txt", "encoding": {"codec": "text"}}}}"#,
    )
    .unwrap_or_default();
    let mut child = common::sluice()
        .arg("--config-dir")
        .arg(&dir)
        .env("OUT_DIR", case.dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, b"one\ntwo\nthree").unwrap_or_default();
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(0));
    assert_eq!(read_lines(&case.path("out.txt")), vec!["one", "two", "three"]);
}

#[test]
fn demo_logs_formats_all_produce_events() {
    for format in ["apache_common", "apache_error", "syslog", "bsd_syslog", "json", "llm_inference"] {
        let case = Case::new();
        let config = case.config(&format!(
            r#"
[sources.demo]
type = "demo_logs"
format = "{format}"
interval = 0.0
count = 2500

[sinks.out]
type = "file"
inputs = ["demo"]
path = "{{dir}}/out.jsonl"
encoding.codec = "json"
"#
        ));
        let output = case.run_with_stdin(&config, b"");
        assert_eq!(output.status.code(), Some(0), "{format}: {}", String::from_utf8_lossy(&output.stderr));
        let written = read_lines(&case.path("out.jsonl"));
        assert_eq!(written.len(), 2500, "{format}");
        let first: serde_json::Value = serde_json::from_str(&written[0]).unwrap_or_default();
        assert_eq!(first["source_type"], "demo_logs");
        if format == "llm_inference" {
            let inner: serde_json::Value =
                serde_json::from_str(first["message"].as_str().unwrap_or_default()).unwrap_or_default();
            for key in [
                "log_id",
                "timestamp",
                "model",
                "prompt_tokens",
                "completion_tokens",
                "latency_ms",
                "user_id",
                "is_fine_tune",
                "inference_type",
            ] {
                assert!(inner.get(key).is_some(), "llm_inference lacks {key}: {inner}");
            }
        }
        assert_ledger_balanced(&case.ledger());
    }
}

#[test]
fn file_sink_path_from_event_fields_cannot_escape_its_directory() {
    let case = Case::new();
    let config = case.config(
        r#"
[sources.in]
type = "stdin"
decoding.codec = "json"

[sinks.out]
type = "file"
inputs = ["in"]
path = "{dir}/out/{{ app }}.log"
encoding.codec = "json"
"#,
    );
    let input = b"{\"app\":\"web\"}\n{\"app\":\"../../escaped\"}\n{\"app\":\"api\"}\n{\"other\":1}\n";
    let output = case.run_with_stdin(&config, input);
    assert_eq!(output.status.code(), Some(1), "failed events make the exit code non-zero");
    assert!(case.path("out/web.log").exists());
    assert!(case.path("out/api.log").exists());
    assert!(!case.dir.path().parent().unwrap_or(case.dir.path()).join("escaped.log").exists());
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 2);
    assert_eq!(component(&ledger, "out")["errored"], 2);
}

/// Vector's blackhole logs its running total every `print_interval_secs`; a run shorter than
/// one interval must still report its total (it did not: the line was only written when an
/// event arrived after the interval).
#[test]
fn the_blackhole_reports_its_total_when_a_run_ends_within_one_interval() {
    let case = Case::new();
    let config = case.config(
        "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\nprint_interval_secs = 30\n",
    );
    let mut command = common::sluice();
    command.env("SLUICE_LOG", "info");
    let output = common::run_sluice(command, &config, None, &lines(1_234));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let totals: Vec<&str> = stderr.lines().filter(|l| l.contains("Collected events.")).collect();
    assert_eq!(totals.len(), 1, "{stderr}");
    assert!(totals[0].contains("events=1234"), "{stderr}");
}

/// demo_logs takes Vector's `framing`: a shuffled line holding two is split into two events.
#[test]
fn demo_logs_lines_are_split_by_their_framing() {
    let case = Case::new();
    let config = case.config(
        r#"
[sources.demo]
type = "demo_logs"
format = "shuffle"
lines = ["first half\nsecond half"]
count = 5
interval = 0
framing.method = "newline_delimited"
[sinks.out]
type = "file"
inputs = ["demo"]
path = "{dir}/out.log"
encoding.codec = "text"
"#,
    );
    let output = case.run_with_stdin(&config, b"");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let lines = read_lines(&case.path("out.log"));
    assert_eq!(lines.len(), 10, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| *l == "second half").count(), 5);
}

/// `remap`, `filter` and `route` run as one copy per runtime worker (here 4, on chunks of
/// events whose cost varies a hundredfold), and the events of each source still leave every
/// output in the order they came in.
#[test]
fn concurrent_transforms_keep_the_order_of_each_source() {
    let case = Case::new();
    let n = 300_000;
    // A log file as a second source, beside stdin: each source's order is checked on its own.
    let mut file = Vec::new();
    for i in 0..n / 3 {
        file.extend_from_slice(format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 7 * 300)).as_bytes());
    }
    std::fs::write(case.path("app.log"), file).unwrap_or_else(|e| panic!("write: {e}"));
    let mut stdin = Vec::new();
    for i in 0..n {
        // Every 64th event is a hundred times longer: chunks take very different times.
        let pad = if i % 64 == 0 { 20_000 } else { 200 };
        stdin.extend_from_slice(format!("{{\"id\":{i},\"pad\":\"{}\"}}\n", "y".repeat(pad)).as_bytes());
    }
    let config = case.config(
        r#"
data_dir = "{dir}/data"

[sources.in]
type = "stdin"

[sources.logs]
type = "file"
include = ["{dir}/app.log"]
read_from = "beginning"

[transforms.parse]
type = "remap"
inputs = ["in", "logs"]
source = '''
src = if exists(.file) { "logs" } else { "in" }
. = parse_json!(string!(.message))
.src = src
.digest = sha2(string!(.pad))
del(.pad)
'''

[transforms.keep]
type = "filter"
inputs = ["parse"]
condition = "mod(int!(.id), 10) != 3"

[transforms.split]
type = "route"
inputs = ["keep"]
route.even = "mod(int!(.id), 2) == 0"
route.odd = "mod(int!(.id), 2) == 1"

[sinks.even]
type = "file"
inputs = ["split.even"]
path = "{dir}/even.jsonl"
encoding.codec = "json"

[sinks.odd]
type = "file"
inputs = ["split.odd"]
path = "{dir}/odd.jsonl"
encoding.codec = "json"
"#,
    );
    let child = case.spawn_feeding(&config, &["--threads", "4"], &stdin);
    // Both sources run at once; the file source never ends by itself.
    let expected = (0..n).filter(|i| i % 10 != 3).count() + (0..n / 3).filter(|i| i % 10 != 3).count();
    let out = |name: &str| std::fs::read_to_string(case.path(name)).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while out("even.jsonl").lines().count() + out("odd.jsonl").lines().count() < expected {
        assert!(std::time::Instant::now() < deadline, "not every event arrived");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The file source runs until told to stop.
    let (code, stderr) = common::terminate(child);
    assert_eq!(code, Some(0), "stderr: {stderr}");
    for (sink, parity) in [("even.jsonl", 0), ("odd.jsonl", 1)] {
        let mut last: std::collections::BTreeMap<String, i64> = Default::default();
        let mut count = 0;
        for line in out(sink).lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{sink}: {e}"));
            let id = value["id"].as_i64().unwrap_or(-1);
            let source = value["src"].as_str().unwrap_or_default().to_owned();
            assert_eq!(id % 2, parity, "{sink}: {line:.80}");
            let previous = last.insert(source.clone(), id).unwrap_or(-1);
            assert!(id > previous, "{sink}: {source} event {id} came after {previous}");
            count += 1;
        }
        assert!(count > 0, "{sink} is empty");
    }
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "keep")["discarded"]["filter"], n + n / 3 - expected, "filtered events");
}
