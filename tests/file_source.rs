//! The `file` source through the binary: positions keyed by fingerprint survive renaming,
//! splitting and merging sources; Vector's checkpoints are adopted; `kill -9` loses no
//! acknowledged line; a line that fails holds its file's position.

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::time::{Duration, Instant};

use common::files::{append, counts, dead_letters, lines_in, wait_lines};
use common::intake::Intake;
use common::{Case, assert_ledger_balanced, component, terminate};

fn stop(child: Child) {
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
}

/// 100 files of 10,000 lines. Source `a` is stopped half-way through the first 5,000 lines
/// of each; then it runs renamed `b`, then split into four sources, then merged back into
/// one, with more lines appended before each run: every line is delivered exactly once.
#[test]
fn renaming_splitting_and_merging_sources_delivers_every_line_exactly_once() {
    let case = Case::new();
    let logs = case.path("logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    let files: Vec<(String, std::path::PathBuf)> =
        (0..100).map(|f| (format!("g{}-f{f:03}", f % 4), logs.join(format!("g{}-f{f:03}.log", f % 4)))).collect();
    let sink = |inputs: &str, out: &str| {
        format!(
            "[sinks.out]\ntype = \"file\"\ninputs = [{inputs}]\npath = \"{{dir}}/{out}\"\nencoding.codec = \"text\"\n"
        )
    };
    let source =
        |id: &str, glob: &str| format!("[sources.{id}]\ntype = \"file\"\ninclude = [\"{{dir}}/logs/{glob}\"]\n");
    let head = "data_dir = \"{dir}/data\"\n";
    let stages = [
        (0..5_000, format!("{head}{}{}", source("a", "*.log"), sink("\"a\"", "out-1.log"))),
        (5_000..7_000, format!("{head}{}{}", source("b", "*.log"), sink("\"b\"", "out-2.log"))),
        (
            7_000..8_500,
            format!(
                "{head}{}{}{}{}{}",
                source("c0", "g0-*.log"),
                source("c1", "g1-*.log"),
                source("c2", "g2-*.log"),
                source("c3", "g3-*.log"),
                sink("\"c0\", \"c1\", \"c2\", \"c3\"", "out-3.log")
            ),
        ),
        (8_500..10_000, format!("{head}{}{}", source("m", "*.log"), sink("\"m\"", "out-4.log"))),
    ];
    let mut expected_total = 0;
    let mut outputs = Vec::new();
    for (stage, (range, config)) in stages.iter().enumerate() {
        for (name, path) in &files {
            append(path, name, range.clone());
        }
        expected_total += range.len() * files.len();
        let config = case.config(config);
        let out = case.path(&format!("out-{}.log", stage + 1));
        outputs.push(out.clone());
        let child = case.spawn(&config);
        let delivered_before: usize = outputs[..stage].iter().map(|p| lines_in(p)).sum();
        if stage == 0 {
            // Stop half-way through.
            let got = wait_lines(&out, 200_000, Duration::from_secs(120));
            assert!(got >= 200_000, "stage 1 delivered {got}");
            stop(child);
            let got = lines_in(&out);
            println!("source `a` stopped after {got} of 500,000 lines");
            assert!(got < 500_000, "stopped half-way, not at the end: {got}");
        } else {
            let want = expected_total - delivered_before;
            let got = wait_lines(&out, want, Duration::from_secs(120));
            stop(child);
            assert!(got >= want, "stage {} delivered {got} of {want}", stage + 1);
        }
        assert_ledger_balanced(&case.ledger());
    }
    let seen = counts(&outputs);
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    println!("{} lines delivered once each, {duplicates} duplicates", seen.len());
    assert_eq!(seen.len(), 1_000_000, "every line arrived");
    assert_eq!(duplicates, 0, "none was delivered twice");
}

/// A Vector `checkpoints.json` (documented format, real CRC-64/ECMA-182 values) under
/// `<data_dir>/<source id>/`: sluice resumes exactly at its positions, at start.
#[test]
fn vectors_checkpoints_are_adopted_and_nothing_is_read_again() {
    let case = Case::new();
    let logs = case.path("logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    // "hello world\n" fingerprints to 11908805321237624401 (> 2^53); Vector read 12 bytes.
    std::fs::write(logs.join("a.log"), "hello world\nsecond\nthird\n").unwrap_or_else(|e| panic!("{e}"));
    let vector = case.path("data/app_logs");
    std::fs::create_dir_all(&vector).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        vector.join("checkpoints.json"),
        r#"{"version":"1","checkpoints":[{"fingerprint":{"first_lines_checksum":11908805321237624401},"position":19,"modified":"2026-08-21T10:00:00.123456Z"},{"fingerprint":{"dev_inode":[2049,1312356]},"position":98,"modified":"2026-08-21T10:00:00Z"}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = case.config(
        r#"
data_dir = "{dir}/data"
[sources.app_logs]
type = "file"
include = ["{dir}/logs/*.log"]
[sinks.out]
type = "file"
inputs = ["app_logs"]
path = "{dir}/out.log"
encoding.codec = "text"
"#,
    );
    let child = case.spawn(&config);
    let got = wait_lines(&case.path("out.log"), 1, Duration::from_secs(30));
    stop(child);
    assert_eq!(got, 1);
    assert_eq!(std::fs::read_to_string(case.path("out.log")).unwrap_or_default(), "third\n");
    // The store now holds the adopted position, moved on, with the exact checksum.
    let store = std::fs::read_to_string(case.path("data/checkpoints/checkpoints.json")).unwrap_or_default();
    assert!(store.contains(r#""first_lines_checksum":11908805321237624401},"position":25"#), "{store}");
    // Adopted once: a second start does not go back to Vector's position.
    append(&logs.join("a.log"), "new", 0..1);
    let child = case.spawn(&config);
    wait_lines(&case.path("out.log"), 2, Duration::from_secs(30));
    stop(child);
    assert_eq!(std::fs::read_to_string(case.path("out.log")).unwrap_or_default(), "third\nnew-l00000\n");
}

/// `sluice checkpoints import` from another Vector data directory, then `list` and `forget`.
#[test]
fn checkpoints_can_be_imported_listed_and_forgotten_from_the_command_line() {
    let case = Case::new();
    let vector = case.path("vector/app_logs");
    std::fs::create_dir_all(&vector).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        vector.join("checkpoints.json"),
        r#"{"version":"1","checkpoints":[{"fingerprint":{"first_line_checksum":18446744073709551615},"position":7,"modified":"2026-08-21T10:00:00Z"}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = |args: &[&str]| {
        let output = common::sluice()
            .args(["checkpoints"])
            .args(args)
            .arg("--data-dir")
            .arg(case.path("data"))
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let vector_dir = case.path("vector").display().to_string();
    let (code, text) = run(&["import", "--vector-data-dir", &vector_dir]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 adopted"), "{text}");
    let (code, text) = run(&["list", "--json"]);
    assert_eq!(code, Some(0), "{text}");
    let listed: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(listed[0]["fingerprint"]["first_lines_checksum"].as_u64(), Some(u64::MAX), "exact above 2^53");
    assert_eq!(listed[0]["position"], 7);
    assert_eq!(listed[0]["source"], "vector:app_logs");
    let (code, text) = run(&["forget", "checksum:ffffffffffffffff"]);
    assert_eq!(code, Some(0), "{text}");
    let (_, text) = run(&["list", "--json"]);
    assert_eq!(text.trim(), "[]");
}

/// `kill -9` ten times while a writer appends and sluice tails into a file sink: after the
/// last restart every line was delivered at least once; duplicates are printed and bounded.
#[test]
fn every_line_survives_ten_kills() {
    let case = Case::new();
    let logs = case.path("logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    let config = case.config(
        r#"
data_dir = "{dir}/data"
[sources.in]
type = "file"
include = ["{dir}/logs/*.log"]
glob_minimum_cooldown_ms = 100
[sinks.out]
type = "file"
inputs = ["in"]
path = "{dir}/out.log"
encoding.codec = "text"
"#,
    );
    let total = 200_000;
    let writer_logs = logs.clone();
    let writer = std::thread::spawn(move || {
        for batch in 0..100 {
            for f in 0..4 {
                let name = format!("f{f}");
                append(&writer_logs.join(format!("{name}.log")), &name, batch * 500..(batch + 1) * 500);
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for kill in 0..10 {
        let mut child = case.spawn(&config);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(150 + rng % 400));
        let _ = child.kill();
        let _ = child.wait();
        println!("kill {} at {} lines out", kill + 1, lines_in(&case.path("out.log")));
    }
    let _ = writer.join();
    let child = case.spawn(&config);
    // A kill in the middle of the sink's write leaves a torn line in its output: counted
    // apart, not as a line.
    let whole = |line: &str| line.len() == 9 && line.starts_with('f') && line[2..].starts_with("-l");
    let deadline = Instant::now() + Duration::from_secs(120);
    while counts(&[case.path("out.log")]).keys().filter(|l| whole(l)).count() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(child);
    let all = counts(&[case.path("out.log")]);
    let torn = all.keys().filter(|l| !whole(l)).count();
    let seen: std::collections::BTreeMap<&String, &usize> = all.iter().filter(|(l, _)| whole(l)).collect();
    let delivered: usize = seen.values().copied().sum();
    let duplicates = delivered - seen.len();
    println!("{} distinct lines of {total}, {duplicates} duplicates, {torn} torn writes after 10 kills", seen.len());
    assert_eq!(seen.len(), total, "every line was delivered at least once");
    assert!(torn <= 10, "at most one torn write per kill");
    // Bounded by what was read but not yet acknowledged and written down at each kill: at
    // most what one run read (a kill interval's worth of appends, 20,000 lines) per kill.
    assert!(duplicates <= 10 * 20_000, "{duplicates}");
    assert_ledger_balanced(&case.ledger());
}

/// A sink that rejects one line for good: that line is in the DLQ, and the position moved
/// past it only because it was stored there. A line that fails transiently when sluice is
/// killed is read again after the restart.
#[test]
fn a_rejected_line_is_dead_lettered_and_a_failed_one_is_read_again() {
    let intake = Intake::start(|_, body, _| if body.contains("poison") { 400 } else { 200 });
    let case = Case::new();
    let logs = case.path("logs");
    std::fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(logs.join("a.log"), "good 1\npoison\ngood 2\n").unwrap_or_else(|e| panic!("{e}"));
    let config_for = |port: u16| {
        case.config(&format!(
            r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "file"
include = ["{{dir}}/logs/*.log"]
[sinks.out]
type = "http"
inputs = ["in"]
uri = "http://127.0.0.1:{port}/"
encoding.codec = "text"
batch.timeout_secs = 0.05
"#
        ))
    };
    let config = config_for(intake.port);
    let child = case.spawn(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while intake.accepted_lines().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(child);
    let accepted: BTreeSet<String> = intake.accepted_lines().into_iter().collect();
    assert_eq!(accepted, BTreeSet::from(["good 1".to_owned(), "good 2".to_owned()]));
    let dlq: Vec<String> = dead_letters(&case.path("data"), "out").iter().map(|e| e.to_string()).collect();
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert!(dlq[0].contains("poison") && dlq[0].contains("\"permanent\""), "{}", dlq[0]);
    let store = std::fs::read_to_string(case.path("data/checkpoints/checkpoints.json")).unwrap_or_default();
    assert!(store.contains("\"position\":21"), "the position passed the stored line: {store}");
    assert_ledger_balanced(&case.ledger());
    assert_eq!(component(&case.ledger(), "out")["dead_lettered"], 1);

    // Transient: the destination answers 503 to everything; sluice is killed; the line is
    // read again after the restart and delivered once the destination recovers.
    drop(intake);
    let down = Intake::start(|_, _, _| 503);
    let config = config_for(down.port);
    append(&logs.join("a.log"), "late", 0..1);
    let mut child = case.spawn(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while down.requests.load(std::sync::atomic::Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let up = Intake::start(|_, _, _| 200);
    let config = config_for(up.port);
    let child = case.spawn(&config);
    let deadline = Instant::now() + Duration::from_secs(30);
    while up.accepted_lines().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(child);
    assert_eq!(up.accepted_lines(), vec!["late-l00000".to_owned()], "read again after the restart, and only it");
}
