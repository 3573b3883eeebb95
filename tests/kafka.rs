//! The `kafka` source and sink against a real Kafka-protocol broker (tansu, started per test
//! on loopback): fields, commits that never pass an undelivered message (through an outage
//! and a `kill -9`), a consumer group losing a member, and a poison message.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Case;
use common::files::json_lines;
use common::intake::Intake;
use common::kafka::Broker;

fn source(broker: &Broker, topic: &str, group: &str, extra: &str) -> String {
    format!(
        r#"
[sources.in]
type = "kafka"
bootstrap_servers = "{}"
group_id = "{group}"
topics = ["{topic}"]
auto_offset_reset = "earliest"
commit_interval_ms = 200
session_timeout_ms = 6000
{extra}
"#,
        broker.bootstrap()
    )
}

#[test]
fn the_source_reads_every_message_with_its_key_headers_topic_partition_and_offset() {
    let broker = Broker::start();
    broker.create_topic("logs", 3);
    broker.produce(
        "logs",
        (0..300).map(|i| {
            (
                Some(format!("k{}", i % 5).into_bytes()),
                format!("line {i}").into_bytes(),
                vec![("trace".to_owned(), i.to_string().into_bytes())],
            )
        }),
    );
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n{}\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{{dir}}/out.log\"\nencoding.codec = \"json\"\n",
        source(&broker, "logs", "readers", "")
    ));
    let child = case.spawn(&config);
    let read = common::files::wait_lines(&case.path("out.log"), 300, Duration::from_secs(60));
    assert_eq!(read, 300);
    // Every offset is committed once its event is written.
    let committed = common::files::wait_until(Duration::from_secs(20), || {
        broker.committed("readers", "logs", 3).iter().map(|o| o.unwrap_or(0)).sum::<i64>() == 300
    });
    common::files::stop(child);
    assert!(committed, "committed: {:?}", broker.committed("readers", "logs", 3));
    let events = json_lines(&case.path("out.log"));
    let mut seen = BTreeSet::new();
    for event in &events {
        let message = event["message"].as_str().unwrap_or_default();
        let i: usize = message.trim_start_matches("line ").parse().unwrap_or_else(|e| panic!("{e}: {event}"));
        assert_eq!(event["message_key"], format!("k{}", i % 5), "{event}");
        assert_eq!(event["headers"]["trace"], i.to_string(), "{event}");
        assert_eq!(event["topic"], "logs");
        assert_eq!(event["source_type"], "kafka");
        assert!(event["partition"].as_i64().is_some_and(|p| (0..3).contains(&p)), "{event}");
        assert!(event["offset"].as_i64().is_some(), "{event}");
        assert!(event["timestamp"].is_string(), "{event}");
        seen.insert(i);
    }
    assert_eq!(seen.len(), 300);
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn the_sink_sends_keys_headers_and_payloads_to_the_rendered_topic() {
    let broker = Broker::start();
    broker.create_topic("app-a", 2);
    broker.create_topic("app-b", 2);
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"
[sinks.out]
type = "kafka"
inputs = ["in"]
bootstrap_servers = "{}"
topic = "app-{{{{ app }}}}"
key_field = "user"
headers_key = "meta"
encoding.codec = "json"
compression = "zstd"
batch.timeout_secs = 0.1
"#,
        broker.bootstrap()
    ));
    let input: String = (0..200)
        .map(|i| {
            let app = if i % 2 == 0 { "a" } else { "b" };
            format!("{{\"app\":\"{app}\",\"user\":\"u{}\",\"meta\":{{\"n\":\"{i}\"}},\"message\":\"m{i}\"}}\n", i % 7)
        })
        .collect();
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    common::assert_ledger_balanced(&case.ledger());
    for (topic, parity) in [("app-a", 0), ("app-b", 1)] {
        let records = broker.read_all(topic, 2, 100, Duration::from_secs(30));
        assert_eq!(records.len(), 100, "{topic}");
        for record in records {
            let event: serde_json::Value = serde_json::from_slice(&record.payload).unwrap_or_else(|e| panic!("{e}"));
            let i: usize = event["message"].as_str().unwrap_or_default()[1..].parse().unwrap_or(usize::MAX);
            assert_eq!(i % 2, parity, "{event}");
            assert_eq!(record.key.as_deref(), Some(format!("u{}", i % 7).as_bytes()));
            assert_eq!(record.headers, vec![("n".to_owned(), Some(i.to_string().into_bytes()))]);
        }
    }
}

#[test]
fn a_message_over_the_size_limit_is_dead_lettered_alone_and_the_rest_delivered() {
    let broker = Broker::start();
    broker.create_topic("sized", 1);
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
max_length = 4000000
[sinks.out]
type = "kafka"
inputs = ["in"]
bootstrap_servers = "{}"
topic = "sized"
encoding.codec = "text"
batch.timeout_secs = 0.1
"#,
        broker.bootstrap()
    ));
    let mut input = String::new();
    for i in 0..10_000 {
        if i == 5_000 {
            input.push_str(&"x".repeat(2_000_000));
            input.push('\n');
        } else {
            input.push_str(&format!("event {i}\n"));
        }
    }
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    let sink = common::component(&ledger, "out");
    assert_eq!(sink["sent"], 9_999, "{sink:#}");
    assert_eq!(sink["dead_lettered"], 1, "{sink:#}");
    let dead = common::files::dead_letters(&case.path("data"), "out");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["reason"], "permanent");
    assert!(dead[0]["message"].as_str().is_some_and(|m| m.contains("too large")), "{:#}", dead[0]);
    let records = broker.read_all("sized", 1, 9_999, Duration::from_secs(60));
    assert_eq!(records.len(), 9_999);
    assert!(records.iter().all(|r| r.payload.len() < 100));
}

/// Offsets committed by `group` that pass a message the intake has not accepted yet.
fn commits_past_undelivered(
    broker: &Broker,
    group: &str,
    topic: &str,
    partitions: i32,
    intake: &Intake,
) -> Vec<(i32, i64)> {
    // Committed first: everything before a commit was delivered before it was read.
    let committed = broker.committed(group, topic, partitions);
    let delivered = delivered_offsets(intake);
    let mut bad = Vec::new();
    for (p, offset) in committed.iter().enumerate() {
        let Some(offset) = offset else { continue };
        let partition = p as i32;
        if let Some(missing) = (0..*offset).find(|o| !delivered.contains(&(partition, *o))) {
            bad.push((partition, missing));
        }
    }
    bad
}

fn delivered_offsets(intake: &Intake) -> BTreeSet<(i32, i64)> {
    intake
        .accepted_lines()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| (e["partition"].as_i64().unwrap_or(-1) as i32, e["offset"].as_i64().unwrap_or(-1)))
        .collect()
}

#[test]
fn commits_never_pass_an_undelivered_message_through_an_outage_and_a_kill() {
    let broker = Broker::start();
    broker.create_topic("orders", 2);
    let port = common::free_port();
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
{}
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{port}/"
encoding.codec = "json"
framing.method = "newline_delimited"
batch.max_events = 50
batch.timeout_secs = 0.1
request.concurrency = 2
request.retry_initial_backoff_secs = 0.2
request.retry_max_duration_secs = 1
"#,
        source(&broker, "orders", "shippers", "")
    ));
    let mut child = case.spawn(&config);
    // The destination is down for 30 s while messages keep arriving and being read.
    let producing = {
        let bootstrap = broker.port;
        std::thread::spawn(move || {
            let broker = Broker::attach(bootstrap);
            for round in 0..6 {
                broker.produce_lines("orders", "order-", round * 500..(round + 1) * 500);
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };
    let down_until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < down_until {
        let committed = broker.committed("shippers", "orders", 2);
        assert!(committed.iter().all(|o| o.unwrap_or(0) == 0), "committed while nothing was delivered: {committed:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = producing.join();
    // A slow destination once it is back, so the kill comes while the backlog drains.
    let intake = Arc::new(Intake::on_port(port, |_, _, _| {
        std::thread::sleep(Duration::from_millis(100));
        200
    }));
    // Sample the commits while the backlog drains, then kill mid-way.
    let mut samples = 0;
    let drained_some = common::files::wait_until(Duration::from_secs(60), || {
        let bad = commits_past_undelivered(&broker, "shippers", "orders", 2, &intake);
        assert!(bad.is_empty(), "committed past undelivered messages: {bad:?}");
        samples += 1;
        delivered_offsets(&intake).len() >= 1_000
    });
    assert!(drained_some, "delivery resumed after the outage");
    let _ = child.kill();
    let _ = child.wait();
    let bad = commits_past_undelivered(&broker, "shippers", "orders", 2, &intake);
    assert!(bad.is_empty(), "after kill -9: committed past undelivered messages: {bad:?}");
    // After the restart every message arrives.
    let restarted = case.spawn(&config);
    let all = common::files::wait_until(Duration::from_secs(90), || {
        let bad = commits_past_undelivered(&broker, "shippers", "orders", 2, &intake);
        assert!(bad.is_empty(), "committed past undelivered messages: {bad:?}");
        samples += 1;
        let lines: BTreeSet<String> = intake
            .accepted_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .collect();
        lines.len() == 3_000
    });
    common::files::stop(restarted);
    assert!(all, "every message delivered after the restart ({} lines)", intake.accepted_lines().len());
    println!("commit samples checked: {samples}");
    let committed = broker.committed("shippers", "orders", 2);
    assert_eq!(committed.iter().map(|o| o.unwrap_or(0)).sum::<i64>(), 3_000, "{committed:?}");
}

#[test]
fn a_group_member_killed_mid_run_loses_nothing_and_duplicates_only_what_it_held() {
    let broker = Broker::start();
    broker.create_topic("events", 6);
    let total = 30_000;
    let cases: Vec<Case> = (0..3).map(|_| Case::new()).collect();
    let configs: Vec<_> = cases
        .iter()
        .map(|case| {
            case.config(&format!(
                "data_dir = \"{{dir}}/data\"\n{}\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{{dir}}/out.log\"\nencoding.codec = \"json\"\n",
                source(&broker, "events", "members", "")
            ))
        })
        .collect();
    // The restarted member is stopped with SIGTERM at the end, maybe soon after its start:
    // its API port being up says it listens for the signal (a process that does not yet is
    // killed by it, and exits without a code).
    let api = common::enable_api(&configs[0]);
    // Info-level logs show each member's rebalances when this fails.
    let spawn = |i: usize| {
        common::background(
            common::sluice()
                .env("SLUICE_LOG", "info")
                .arg("--config")
                .arg(&configs[i])
                .arg("--ledger-json")
                .arg(cases[i].path("ledger.json")),
        )
    };
    let mut children: Vec<_> = (0..3).map(|i| Some(spawn(i))).collect();
    broker.produce_lines("events", "e-", 0..total / 2);
    let outputs: Vec<_> = cases.iter().map(|c| c.path("out.log")).collect();
    let count = |paths: &[std::path::PathBuf]| paths.iter().map(|p| common::files::lines_in(p)).sum::<usize>();
    assert!(common::files::wait_until(Duration::from_secs(60), || count(&outputs) >= total / 4), "reading started");
    // kill -9 the first member mid-run; what it wrote but had not committed is read again.
    let mut killed_pid = 0;
    if let Some(mut child) = children[0].take() {
        killed_pid = child.id();
        let _ = child.kill();
        let _ = child.wait();
    }
    let committed_at_kill = broker.committed("members", "events", 6);
    let rereadable: usize = json_lines(&outputs[0])
        .iter()
        .filter(|e| {
            let p = e["partition"].as_i64().unwrap_or(0) as usize;
            e["offset"].as_i64().unwrap_or(0) >= committed_at_kill[p].unwrap_or(0)
        })
        .count();
    let distinct = || -> usize {
        let seen: BTreeSet<String> = outputs
            .iter()
            .flat_map(|p| json_lines(p))
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .collect();
        seen.len()
    };
    // The survivors take the dead member's partitions once its session expires and read
    // them from its last commit. Its restart waits for that: tansu's group coordinator has
    // been seen to leave partitions unassigned when a join and an expiry overlap.
    let taken_over = common::files::wait_until(Duration::from_secs(60), || distinct() == total / 2);
    broker.produce_lines("events", "e-", total / 2..total);
    children[0] = Some(spawn(0));
    common::wait_for_port(api, Duration::from_secs(30));
    let all = taken_over && common::files::wait_until(Duration::from_secs(120), || distinct() == total);
    let killed = common::stderr_of(killed_pid);
    let logs: Vec<String> = children
        .into_iter()
        .flatten()
        .map(|child| {
            let (code, stderr) = common::terminate(child);
            assert_eq!(code, Some(0), "{stderr}");
            stderr
        })
        .collect();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_partition: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for event in outputs.iter().flat_map(|p| json_lines(p)) {
        *copies.entry(event["message"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
        per_partition
            .entry(event["partition"].as_i64().unwrap_or(-1))
            .or_default()
            .insert(event["offset"].as_i64().unwrap_or(-1));
    }
    let coverage: Vec<String> = per_partition
        .iter()
        .map(|(p, offsets)| format!("p{p}: {} offsets, highest {:?}", offsets.len(), offsets.last()))
        .collect();
    assert!(
        all,
        "every message delivered at least once (taken over: {taken_over}; {} distinct; {coverage:?}; committed {:?})\nkilled member:\n{killed}\nothers:\n{}",
        copies.len(),
        broker.committed("members", "events", 6),
        logs.join("\n----\n")
    );
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    println!("duplicates: {duplicates}; written by the killed member past its commits: {rereadable}");
    // The living members drain their revoked partitions before giving them up; only what the
    // killed one held may come twice, plus one chunk per partition if a drain ran out of time.
    assert!(duplicates <= rereadable + 6 * 1_000, "duplicates {duplicates} > {rereadable} + in flight");
}

#[test]
fn agents_to_an_aggregator_through_kafka_lose_nothing_when_the_aggregator_is_killed() {
    let broker = Broker::start();
    broker.create_topic("agents", 4);
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
[sinks.bus]
type = "kafka"
inputs = ["in"]
bootstrap_servers = "{}"
topic = "agents"
encoding.codec = "json"
batch.timeout_secs = 0.1
# One message per record batch: see tests/common/kafka.rs.
librdkafka_options."batch.num.messages" = "1"
"#,
            broker.bootstrap()
        ));
        agent_children.push(agent.spawn(&config));
    }
    let aggregator = Case::new();
    let config = aggregator.config(&format!(
        "data_dir = \"{{dir}}/data\"\n{}\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{{dir}}/out.log\"\nencoding.codec = \"json\"\n",
        source(&broker, "agents", "aggregators", "decoding.codec = \"json\"")
    ));
    let child = aggregator.spawn(&config);
    let per_agent = 5_000;
    let (complete, events) =
        common::files::kill_aggregator_midway(&aggregator, &config, child, &agents, agent_children, per_agent);
    assert!(complete, "every line of both agents arrived ({events} events)");
    println!("events at the aggregator: {events} for {} lines", 2 * per_agent);
}

#[test]
fn partitions_paused_by_a_slow_sink_resume_where_they_stopped() {
    let broker = Broker::start();
    broker.create_topic("backlog", 3);
    let total = 60_000;
    broker.produce_lines("backlog", "b-", 0..total);
    let intake = Intake::start(|_, _, _| {
        std::thread::sleep(Duration::from_millis(20));
        200
    });
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
{}
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{}/"
encoding.codec = "json"
framing.method = "newline_delimited"
batch.max_events = 1000
batch.timeout_secs = 0.1
request.concurrency = 1
"#,
        source(&broker, "backlog", "slow", ""),
        intake.port
    ));
    let api = common::enable_api(&config);
    let child = case.spawn(&config);
    let distinct = || {
        intake
            .accepted_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .collect::<BTreeSet<String>>()
            .len()
    };
    let all = common::files::wait_until(Duration::from_secs(120), || distinct() == total);
    let metrics = common::get(api, "/metrics");
    common::files::stop(child);
    assert!(all, "every message delivered after pauses ({} of {total})", distinct());
    let paused = common::sample(
        &metrics,
        "component_errors_total{component_id=\"in\",component_kind=\"source\",component_type=\"kafka\",error_type=\"partitions_paused\",stage=\"receiving\"}",
    );
    assert!(paused.is_some_and(|n| n > 0.0), "the slow sink paused the partitions: {metrics}");
    assert!(!metrics.contains("error_type=\"offset_gap\""), "no offset was skipped: {metrics}");
}

#[test]
fn a_message_that_does_not_decode_is_dead_lettered_and_its_offset_still_committed() {
    let broker = Broker::start();
    broker.create_topic("mixed", 1);
    broker.produce(
        "mixed",
        ["{\"message\":\"first\"}", "not json at all", "{\"message\":\"third\"}"]
            .map(|payload| (None, payload.as_bytes().to_vec(), Vec::new())),
    );
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n{}\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{{dir}}/out.log\"\nencoding.codec = \"json\"\n",
        source(&broker, "mixed", "decoders", "decoding.codec = \"json\"")
    ));
    let child = case.spawn(&config);
    let read = common::files::wait_lines(&case.path("out.log"), 2, Duration::from_secs(60));
    let committed = common::files::wait_until(Duration::from_secs(20), || {
        broker.committed("decoders", "mixed", 1) == vec![Some(3)]
    });
    common::files::stop(child);
    assert_eq!(read, 2);
    assert!(committed, "committed: {:?}", broker.committed("decoders", "mixed", 1));
    let dead = common::files::dead_letters(&case.path("data"), "in");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["reason"], "parse_error");
    assert_eq!(dead[0]["event"]["message"], "not json at all");
    assert_eq!(dead[0]["event"]["offset"], 1);
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(common::component(&ledger, "in")["dead_lettered"], 1, "{ledger:#}");
}
