//! The `file` source through the binary, file by file: rotation by rename and by
//! copytruncate, truncation, deletion while reading, oversized lines, CRLF, a last line
//! without its newline, multiline messages and UTF-16.

mod common;

use std::time::Duration;

use common::files::{
    append, append_bytes, counts, dead_letters, file_case, lines_in, out_lines, stop, wait_lines, wait_until,
};
use common::{Case, assert_ledger_balanced};

const WAIT: Duration = Duration::from_secs(30);

fn exactly_once(case: &Case, expected: usize) {
    let seen = counts(&[case.path("out.log")]);
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dup.is_empty(), "delivered twice: {dup:?}");
    assert_eq!(seen.len(), expected);
}

/// Rename and create: the old file is renamed away (out of the glob) and its writer keeps
/// appending for a moment; a new file takes the name. Every line of both, once.
#[test]
fn rotation_by_rename_and_create_reads_both_files_to_the_end() {
    let (case, config) = file_case("app.log", "");
    let log = case.path("logs/app.log");
    append(&log, "old", 0..1000);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 1000, WAIT), 1000);
    let rotated = case.path("logs/app.log.1");
    std::fs::rename(&log, &rotated).unwrap_or_else(|e| panic!("{e}"));
    append(&rotated, "old", 1000..1500);
    append(&log, "new", 0..700);
    assert!(wait_until(WAIT, || counts(&[case.path("out.log")]).len() == 2200));
    stop(child);
    exactly_once(&case, 2200);
    assert_ledger_balanced(&case.ledger());
}

/// copytruncate: the file is copied to `app.log.1` (matched too) and truncated in place;
/// lines the copy holds that were not read yet are read from it, at the stored position, and
/// the truncated file's new content from its start.
#[test]
fn copytruncate_loses_nothing_and_repeats_nothing() {
    let (case, config) = file_case("app.log*", "");
    let log = case.path("logs/app.log");
    append(&log, "first", 0..1000);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 1000, WAIT), 1000);
    // Written after sluice's last read, before the copy: only the copy has these.
    append(&log, "first", 1000..1200);
    std::fs::copy(&log, case.path("logs/app.log.1")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::OpenOptions::new().write(true).open(&log).and_then(|f| f.set_len(0)).unwrap_or_else(|e| panic!("{e}"));
    append(&log, "second", 0..300);
    assert!(wait_until(WAIT, || counts(&[case.path("out.log")]).len() == 1500), "{}", lines_in(&case.path("out.log")));
    stop(child);
    exactly_once(&case, 1500);
}

/// logrotate with `compress`: the rotated file is gzipped to `app.log.1.gz` (matched by the
/// glob) and then deleted; the compressed copy has its fingerprint and takes its position
/// over, so nothing is read twice.
#[test]
fn a_compressed_rotation_is_not_read_again() {
    use std::io::Write;
    let (case, config) = file_case("app.log*", "");
    let log = case.path("logs/app.log");
    append(&log, "first", 0..2000);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 2000, WAIT), 2000);
    let rotated = case.path("logs/app.log.1");
    std::fs::rename(&log, &rotated).unwrap_or_else(|e| panic!("{e}"));
    append(&log, "second", 0..100);
    assert!(wait_until(WAIT, || lines_in(&case.path("out.log")) == 2100));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(&rotated).unwrap_or_default()).unwrap_or_else(|e| panic!("{e}"));
    append_bytes(&case.path("logs/app.log.1.gz"), &gz.finish().unwrap_or_default());
    std::thread::sleep(Duration::from_millis(200));
    std::fs::remove_file(&rotated).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_millis(1000));
    stop(child);
    exactly_once(&case, 2100);
}

/// A file truncated in place (no copy) is read again from its start: its new lines arrive.
#[test]
fn a_truncated_file_is_read_from_its_start() {
    let (case, config) = file_case("*.log", "");
    let log = case.path("logs/a.log");
    append(&log, "before", 0..100);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 100, WAIT), 100);
    std::fs::write(&log, "").unwrap_or_else(|e| panic!("{e}"));
    append(&log, "after", 0..10);
    assert!(wait_until(WAIT, || lines_in(&case.path("out.log")) == 110));
    stop(child);
    assert_eq!(out_lines(&case)[100..].first().map(String::as_str), Some("after-l00000"));
}

/// A file deleted while sluice reads it is read to its end all the same, its last line
/// (without a newline) included.
#[test]
fn a_file_deleted_while_read_is_read_to_its_end() {
    let (case, config) = file_case("*.log", "max_read_bytes = 4096");
    let log = case.path("logs/big.log");
    append(&log, "big", 0..50_000);
    append_bytes(&log, b"no newline at the end");
    let child = case.spawn(&config);
    assert!(wait_lines(&case.path("out.log"), 1, WAIT) >= 1);
    std::fs::remove_file(&log).unwrap_or_else(|e| panic!("{e}"));
    assert!(wait_until(WAIT, || lines_in(&case.path("out.log")) == 50_001), "{}", lines_in(&case.path("out.log")));
    stop(child);
    exactly_once(&case, 50_001);
    assert_eq!(out_lines(&case).last().map(String::as_str), Some("no newline at the end"));
}

/// A line over `max_line_bytes` goes to the source's DLQ with its first bytes and its
/// length; the lines around it are delivered; the position passes it once it is stored.
#[test]
fn an_oversized_line_goes_to_the_dlq_and_reading_goes_on() {
    let (case, config) = file_case("*.log", "max_line_bytes = 64");
    let log = case.path("logs/a.log");
    let long = "x".repeat(500);
    append_bytes(&log, format!("short 1\n{long}\nshort 2\n").as_bytes());
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 2, WAIT), 2);
    stop(child);
    assert_eq!(out_lines(&case), vec!["short 1", "short 2"]);
    let dlq = dead_letters(&case.path("data"), "in");
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    assert_eq!(dlq[0]["reason"], "oversized_line");
    assert_eq!(dlq[0]["event"]["line_bytes"], 500);
    assert_eq!(dlq[0]["event"]["offset"], 8);
    assert_eq!(dlq[0]["event"]["message"].as_str().map(str::len), Some(64));
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(common::component(&ledger, "in")["dead_lettered"], 1);
    let store = std::fs::read_to_string(case.path("data/checkpoints/checkpoints.json")).unwrap_or_default();
    assert!(store.contains(&format!("\"position\":{}", 8 + 501 + 8)), "{store}");
}

/// CRLF files with `line_delimiter = "\r\n"`; a last line without its delimiter waits for it.
#[test]
fn crlf_lines_and_a_last_line_that_waits_for_its_delimiter() {
    let (case, config) = file_case("*.log", "line_delimiter = \"\\r\\n\"");
    let log = case.path("logs/a.log");
    append_bytes(&log, b"one\r\ntwo\r\nthr");
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 2, WAIT), 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(out_lines(&case), vec!["one", "two"], "the partial line is held");
    append_bytes(&log, b"ee\r\n");
    assert_eq!(wait_lines(&case.path("out.log"), 3, WAIT), 3);
    stop(child);
    assert_eq!(out_lines(&case), vec!["one", "two", "three"]);
}

/// Vector's multiline `continue_through`: a Java stack trace is one event; a message still
/// open is given out after `timeout_ms`.
#[test]
fn multiline_joins_a_stack_trace_and_times_out_an_open_message() {
    let (case, config) = file_case(
        "*.log",
        "multiline.start_pattern = '^[^\\s]'\nmultiline.condition_pattern = '^[\\s]+'\nmultiline.mode = \"continue_through\"\nmultiline.timeout_ms = 200",
    );
    let log = case.path("logs/a.log");
    append_bytes(&log, b"Exception in thread main\n  at a.b(C.java:1)\n  at d.e(F.java:2)\nnext line\n");
    let child = case.spawn(&config);
    assert!(wait_until(WAIT, || std::fs::read_to_string(case.path("out.log"))
        .unwrap_or_default()
        .contains("next line")));
    stop(child);
    let text = std::fs::read_to_string(case.path("out.log")).unwrap_or_default();
    assert_eq!(text, "Exception in thread main\n  at a.b(C.java:1)\n  at d.e(F.java:2)\nnext line\n");
    // Two events: the trace (three lines in one message) and the timed-out last one.
    assert_eq!(common::component(&case.ledger(), "out")["sent"], 2);
}

/// UTF-16LE with a byte-order mark: lines arrive as UTF-8.
#[test]
fn utf16_files_are_decoded() {
    let (case, config) = file_case("*.log", "encoding.charset = \"utf-16le\"");
    let mut bytes = vec![0xff, 0xfe];
    for unit in "héllo\nwörld\n".encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    append_bytes(&case.path("logs/a.log"), &bytes);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 2, WAIT), 2);
    stop(child);
    assert_eq!(out_lines(&case), vec!["héllo", "wörld"]);
}

/// The real logrotate (`create`, `compress`, `delaycompress`), five times while a writer
/// appends and reopens its file after each rotation, as applications do: every line once.
/// (`.ci/run` installs logrotate.)
#[test]
fn five_real_logrotate_rotations_with_compression_lose_and_repeat_nothing() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let (case, config) = file_case("app.log*", "");
    let log = case.path("logs/app.log");
    append_bytes(&log, b"");
    let conf = case.path("logrotate.conf");
    std::fs::write(
        &conf,
        format!("{} {{\n  rotate 5\n  create\n  compress\n  delaycompress\n  missingok\n}}\n", log.display()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let child = case.spawn(&config);
    let stop_writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (log, stop_writing) = (log.clone(), stop_writing.clone());
        std::thread::spawn(move || {
            let open = || std::fs::OpenOptions::new().create(true).append(true).open(&log);
            let mut file = open().unwrap_or_else(|e| panic!("{e}"));
            let mut inode = std::fs::metadata(&log).map(|m| m.ino()).unwrap_or(0);
            let mut n = 0usize;
            while !stop_writing.load(std::sync::atomic::Ordering::Relaxed) {
                let burst: String = (n..n + 200).map(|i| format!("line-{i:07}\n")).collect();
                n += 200;
                file.write_all(burst.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
                if std::fs::metadata(&log).map(|m| m.ino()).unwrap_or(0) != inode {
                    file = open().unwrap_or_else(|e| panic!("{e}"));
                    inode = std::fs::metadata(&log).map(|m| m.ino()).unwrap_or(0);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(700));
        let binary = ["/usr/sbin/logrotate", "/usr/bin/logrotate"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("logrotate");
        let status = std::process::Command::new(binary)
            .arg("-f")
            .arg("-s")
            .arg(case.path("logrotate.state"))
            .arg(&conf)
            .status()
            .unwrap_or_else(|e| panic!("logrotate must be installed (apt-get install logrotate): {e}"));
        assert!(status.success());
    }
    stop_writing.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap_or_else(|_| panic!("writer"));
    assert!(
        wait_until(WAIT, || counts(&[case.path("out.log")]).len() == written),
        "{}",
        lines_in(&case.path("out.log"))
    );
    std::thread::sleep(Duration::from_millis(500));
    stop(child);
    exactly_once(&case, written);
}
