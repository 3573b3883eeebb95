//! Vector's `log_schema`: sources put the message, time, host and source type under the
//! configured names, and sinks read them there (the text codec's message, a template's time).

mod common;

use std::time::Duration;

use common::{Case, assert_ledger_balanced, free_port, post, terminate, wait_for_port};

const SCHEMA: &str = r#"
log_schema.message_key = "msg"
log_schema.timestamp_key = ".ts"
log_schema.host_key = "machine"
log_schema.source_type_key = "kind"
"#;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn sources_and_sinks_use_the_configured_field_names() {
    let case = Case::new();
    std::fs::write(case.path("app.log"), "from a file\n").unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let config = case.config(&format!(
        r#"{SCHEMA}
data_dir = "{{dir}}/data"

[sources.intake]
type = "http_server"
address = "127.0.0.1:{port}"

[sources.files]
type = "file"
include = ["{{dir}}/app.log"]
read_from = "beginning"

[transforms.shout]
type = "remap"
inputs = ["intake", "files"]
source = '.msg = upcase!(.msg)'

[sinks.json]
type = "file"
inputs = ["shout"]
path = "{{dir}}/out-%Y.jsonl"
encoding.codec = "json"

[sinks.text]
type = "file"
inputs = ["shout"]
path = "{{dir}}/out.txt"
encoding.codec = "text"
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(port, Duration::from_secs(30));
    assert_eq!(post(port, "/", b"from http\n").0, 200);
    let year = chrono::Utc::now().format("%Y").to_string();
    let json = case.path(&format!("out-{year}.jsonl"));
    assert!(common::files::wait_until(Duration::from_secs(20), || lines(&json).len() == 2), "{:?}", lines(&json));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let mut events = lines(&json);
    events.sort_by_key(|e| e["msg"].as_str().unwrap_or_default().to_owned());
    assert_eq!(events[0]["msg"], "FROM A FILE");
    assert_eq!(events[0]["kind"], "file");
    assert_eq!(events[1]["msg"], "FROM HTTP");
    assert_eq!(events[1]["kind"], "http_server");
    for event in &events {
        assert!(event["ts"].is_string(), "{event}");
        for default in ["message", "timestamp", "source_type"] {
            assert!(event.get(default).is_none(), "{default} in {event}");
        }
    }
    assert!(events[0]["machine"].is_string(), "the file source's host: {}", events[0]);
    let mut text: Vec<String> =
        std::fs::read_to_string(case.path("out.txt")).unwrap_or_default().lines().map(str::to_owned).collect();
    text.sort();
    assert_eq!(text, ["FROM A FILE", "FROM HTTP"], "the text codec writes the message field");
    assert_ledger_balanced(&case.ledger());
}

#[test]
fn a_nested_schema_key_is_refused_with_the_field_named() {
    let case = Case::new();
    let config = case.config(
        "log_schema.message_key = \"event.msg\"\n[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n",
    );
    let output = common::sluice().arg("validate").arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(78), "{report}");
    assert!(report.contains("log_schema.message_key") && report.contains("top-level"), "{report}");
}

#[test]
fn unit_tests_see_the_configured_message_field() {
    let case = Case::new();
    let config = case.config(&format!(
        r#"{SCHEMA}
[sources.in]
type = "stdin"
[transforms.shout]
type = "remap"
inputs = ["in"]
source = '.msg = upcase!(.msg)'
[sinks.out]
type = "blackhole"
inputs = ["shout"]

[[tests]]
name = "the message is in msg"
[[tests.inputs]]
insert_at = "shout"
type = "raw"
value = "hello"
[[tests.outputs]]
extract_from = "shout"
[[tests.outputs.conditions]]
type = "vrl"
source = '.msg == "HELLO" && exists(.ts)'
"#
    ));
    let output = common::sluice().arg("test").arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{report}{}", String::from_utf8_lossy(&output.stderr));
}
