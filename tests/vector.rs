//! The `vector` sink and source (Vector's native protocol, v2) between sluice processes:
//! events keep every field and type across the hop, the receiver answers only once its sink
//! has the events, and agents lose nothing when their aggregator is killed with `kill -9`.

mod common;

use std::time::Duration;

use common::Case;
use common::files::json_lines;

fn aggregator(port: u16, sink: &str) -> (Case, std::path::PathBuf) {
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"vector\"\naddress = \"127.0.0.1:{port}\"\nversion = \"2\"\n{sink}\n"
    ));
    (case, config)
}

const FILE_SINK: &str =
    "[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{dir}/out.log\"\nencoding.codec = \"json\"\n";

#[test]
fn events_keep_every_field_and_type_across_the_hop() {
    let port = common::free_port();
    let (agg, agg_config) = aggregator(port, FILE_SINK);
    let child = agg.spawn(&agg_config);
    common::wait_for_port(port, Duration::from_secs(30));
    let agent = Case::new();
    let config = agent.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"
[transforms.typed]
type = "remap"
inputs = ["in"]
source = '''
.at = parse_timestamp!("2026-12-02T10:11:12.345678Z", "%+")
.ratio = 0.25
'''
[sinks.out]
type = "vector"
inputs = ["typed"]
address = "127.0.0.1:{port}"
compression = true
batch.timeout_secs = 0.1
"#
    ));
    let input: String = (0..500)
        .map(|i| format!("{{\"message\":\"m{i}\",\"n\":{i},\"ok\":true,\"tags\":[\"a\",1],\"nested\":{{\"k\":\"v\",\"none\":null}}}}\n"))
        .collect();
    let output = agent.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let read = common::files::wait_lines(&agg.path("out.log"), 500, Duration::from_secs(30));
    common::files::stop(child);
    assert_eq!(read, 500);
    common::assert_ledger_balanced(&agent.ledger());
    common::assert_ledger_balanced(&agg.ledger());
    let events = json_lines(&agg.path("out.log"));
    let e = events.iter().find(|e| e["message"] == "m7").unwrap_or_else(|| panic!("m7 in {events:?}"));
    assert_eq!(e["n"], 7);
    assert_eq!(e["ok"], true);
    assert_eq!(e["tags"], serde_json::json!(["a", 1]));
    assert_eq!(e["nested"], serde_json::json!({"k": "v", "none": null}));
    assert_eq!(e["ratio"], 0.25);
    assert_eq!(e["at"], "2026-12-02T10:11:12.345678Z");
}

#[test]
fn agents_lose_nothing_when_the_aggregator_is_killed() {
    let port = common::free_port();
    let (agg, agg_config) = aggregator(port, FILE_SINK);
    let child = agg.spawn(&agg_config);
    common::wait_for_port(port, Duration::from_secs(30));
    let agents: Vec<Case> = (0..2).map(|_| Case::new()).collect();
    let mut agent_children = Vec::new();
    for agent in &agents {
        std::fs::create_dir_all(agent.path("logs")).unwrap_or_else(|e| panic!("{e}"));
        let config = agent.config(&format!(
            r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "file"
include = ["{{dir}}/logs/*.log"]
glob_minimum_cooldown_ms = 50
[sinks.out]
type = "vector"
inputs = ["in"]
address = "127.0.0.1:{port}"
batch.max_events = 200
batch.timeout_secs = 0.1
request.retry_initial_backoff_secs = 0.2
request.retry_max_duration_secs = 1
"#
        ));
        agent_children.push(agent.spawn(&config));
    }
    // The agents retry while the aggregator is gone; it comes back on the same port.
    let per_agent = 5_000;
    let (complete, events) =
        common::files::kill_aggregator_midway(&agg, &agg_config, child, &agents, agent_children, per_agent);
    assert!(complete, "every line of both agents arrived, with no gap ({events} events)");
    println!("events at the aggregator: {events} for {} lines", 2 * per_agent);
}

#[test]
fn the_receiver_answers_only_once_its_sink_has_the_events() {
    // The aggregator's own destination is down: the agent's request stays unanswered (its
    // events in flight), then is answered once the destination is back and has them.
    let intake_port = common::free_port();
    let port = common::free_port();
    let (agg, agg_config) = aggregator(
        port,
        &format!(
            "[sinks.out]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://127.0.0.1:{intake_port}/\"\nencoding.codec = \"json\"\nframing.method = \"newline_delimited\"\nbatch.timeout_secs = 0.1\nrequest.retry_initial_backoff_secs = 0.2\nrequest.retry_max_duration_secs = 0.5\n"
        ),
    );
    let child = agg.spawn(&agg_config);
    common::wait_for_port(port, Duration::from_secs(30));
    let agent = Case::new();
    let config = agent.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"http_server\"\naddress = \"127.0.0.1:{{http}}\"\n[sinks.out]\ntype = \"vector\"\ninputs = [\"in\"]\naddress = \"127.0.0.1:{port}\"\nbatch.timeout_secs = 0.1\nrequest.timeout_secs = 120\n"
    ));
    let http = common::free_port();
    let text = std::fs::read_to_string(&config).unwrap_or_default().replace("{http}", &http.to_string());
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let agent_child = agent.spawn(&config);
    common::wait_for_port(http, Duration::from_secs(30));
    // The agent's sender waits for the whole chain: http_server → vector → aggregator → http.
    let started = std::time::Instant::now();
    let poster = std::thread::spawn(move || common::post_within(http, "/", b"one\ntwo\n", Duration::from_secs(60)));
    std::thread::sleep(Duration::from_secs(3));
    assert!(!poster.is_finished(), "answered before the aggregator's destination had the events");
    let intake = common::intake::Intake::on_port(intake_port, |_, _, _| 200);
    let status = poster.join().unwrap_or_default();
    assert_eq!(status, Some(200), "answered once delivered");
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(intake.accepted_lines().len(), 2);
    common::files::stop(agent_child);
    common::files::stop(child);
}

#[test]
fn the_hop_works_over_tls_with_a_private_ca() {
    let port = common::free_port();
    let agg = Case::new();
    let pki = sluice_net::test_pki::TestPki::new(agg.dir.path(), "aggregator");
    let agg_config = agg.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"vector\"\naddress = \"127.0.0.1:{port}\"\ntls.enabled = true\ntls.crt_file = \"{}\"\ntls.key_file = \"{}\"\n{FILE_SINK}",
        pki.server_crt.display(),
        pki.server_key.display()
    ));
    let child = agg.spawn(&agg_config);
    common::wait_for_port(port, Duration::from_secs(30));
    let agent = Case::new();
    let config = agent.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"vector\"\ninputs = [\"in\"]\naddress = \"https://localhost:{port}\"\ntls.ca_file = \"{}\"\nbatch.timeout_secs = 0.1\n",
        pki.ca.display()
    ));
    let input: String = (0..100).map(|i| format!("secret {i}\n")).collect();
    let output = agent.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let read = common::files::wait_lines(&agg.path("out.log"), 100, Duration::from_secs(30));
    common::files::stop(child);
    assert_eq!(read, 100);
    let ledger = agent.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(common::component(&ledger, "out")["sent"], 100);
}
