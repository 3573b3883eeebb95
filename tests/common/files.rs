//! Helpers for tests of the file-reading sources.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use super::{Case, terminate};

/// A case with `logs/` and a config whose `file` source reads `{dir}/logs/<include>` into a
/// text `file` sink at `out.log`; `extra` is more of the source's settings.
pub fn file_case(include: &str, extra: &str) -> (Case, PathBuf) {
    let case = Case::new();
    std::fs::create_dir_all(case.path("logs")).unwrap_or_else(|e| panic!("{e}"));
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "file"
include = ["{{dir}}/logs/{include}"]
glob_minimum_cooldown_ms = 50
{extra}
[sinks.out]
type = "file"
inputs = ["in"]
path = "{{dir}}/out.log"
encoding.codec = "text"
"#
    ));
    (case, config)
}

/// SIGTERM, and the exit must be clean.
pub fn stop(child: Child) {
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
}

/// The lines of `out.log`.
pub fn out_lines(case: &Case) -> Vec<String> {
    std::fs::read_to_string(case.path("out.log")).unwrap_or_default().lines().map(str::to_owned).collect()
}

/// Appends lines `<name>-l<n>` (n zero-padded to 5 digits) for `n` in `range` to `path`.
pub fn append(path: &Path, name: &str, range: std::ops::Range<usize>) {
    let mut text = String::with_capacity(range.len() * 16);
    for n in range {
        text.push_str(&format!("{name}-l{n:05}\n"));
    }
    append_bytes(path, text.as_bytes());
}

pub fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap_or_else(|e| panic!("{e}"));
    file.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
}

pub fn lines_in(path: &Path) -> usize {
    std::fs::read(path).map(|d| d.iter().filter(|b| **b == b'\n').count()).unwrap_or(0)
}

/// Waits until `path` holds at least `n` lines; returns how many it holds.
pub fn wait_lines(path: &Path, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let have = lines_in(path);
        if have >= n || Instant::now() > deadline {
            return have;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `done()` holds (polling), up to `timeout`; returns whether it did.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// How many times each line appears across `paths`.
pub fn counts(paths: &[PathBuf]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for path in paths {
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            *out.entry(line.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// Every envelope in a component's disk DLQ.
pub fn dead_letters(data_dir: &Path, id: &str) -> Vec<serde_json::Value> {
    std::fs::read_dir(data_dir.join("dead_letter").join(id))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The JSON objects of a file written with `encoding.codec = "json"` (a line cut short by a
/// kill is skipped).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Agents' logs for fleet tests: `per_agent` lines appended to each agent's `logs/app.log`
/// in ten blocks, 200 ms apart, while the test does its worst.
pub fn write_agent_logs(agents: &[Case], per_agent: usize) -> Vec<std::thread::JoinHandle<()>> {
    agents
        .iter()
        .map(|agent| {
            let path = agent.path("logs").join("app.log");
            std::thread::spawn(move || {
                for block in 0..10 {
                    let from = block * per_agent / 10;
                    append(&path, "app", from..from + per_agent / 10);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect()
}

/// Whether every line of every agent's `logs/app.log` is among the events in `out`, told
/// apart by their `file` field: all there, no gap.
pub fn every_agent_line_in(agents: &[Case], out: &Path, per_agent: usize) -> bool {
    missing_agent_lines(agents, out, per_agent).iter().all(Vec::is_empty)
}

/// For each agent, the numbers of its lines not among the events in `out`.
pub fn missing_agent_lines(agents: &[Case], out: &Path, per_agent: usize) -> Vec<Vec<usize>> {
    let events = json_lines(out);
    agents
        .iter()
        .map(|agent| {
            let file = agent.path("logs").join("app.log").display().to_string();
            let seen: std::collections::BTreeSet<&str> =
                events.iter().filter(|e| e["file"] == file.as_str()).filter_map(|e| e["message"].as_str()).collect();
            (0..per_agent).filter(|n| !seen.contains(format!("app-l{n:05}").as_str())).collect()
        })
        .collect()
}

/// `kill -9` once `out` holds `lines` lines.
pub fn kill_once(mut child: Child, out: &Path, lines: usize) {
    assert!(wait_until(Duration::from_secs(60), || lines_in(out) >= lines), "{} lines in {}", lines, out.display());
    let _ = child.kill();
    let _ = child.wait();
}

/// The fleet test's middle and end: agents write `per_agent` lines each, the aggregator is
/// killed with `kill -9` once it has 2,000, restarted with `config`, and given 90 s to hold
/// every line of every agent. Stops everything; returns whether every line arrived and how
/// many events the aggregator wrote.
pub fn kill_aggregator_midway(
    aggregator: &Case,
    config: &Path,
    child: Child,
    agents: &[Case],
    agent_children: Vec<Child>,
    per_agent: usize,
) -> (bool, usize) {
    let writers = write_agent_logs(agents, per_agent);
    let out = aggregator.path("out.log");
    kill_once(child, &out, 2_000);
    for writer in writers {
        let _ = writer.join();
    }
    let restarted = aggregator.spawn(config);
    let complete = wait_until(Duration::from_secs(90), || every_agent_line_in(agents, &out, per_agent));
    if !complete {
        // Which lines: a gap (lost) reads differently from a tail (still coming).
        for (i, missing) in missing_agent_lines(agents, &out, per_agent).iter().enumerate() {
            let shown: Vec<_> = missing.iter().take(20).collect();
            eprintln!("agent {i}: {} lines missing, first {shown:?}, last {:?}", missing.len(), missing.last());
        }
    }
    stop(restarted);
    for agent in agent_children {
        stop(agent);
    }
    (complete, json_lines(&out).len())
}
