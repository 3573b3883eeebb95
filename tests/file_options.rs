//! `file` source settings through the binary: `read_from`, `ignore_older_secs`,
//! `remove_after_secs`, gzip files, `device_and_inode`, `ignore_checkpoints`, `offset_key`,
//! a damaged checkpoint store that must not send reading back to the start, and two sources
//! with different settings on one file.

mod common;

use std::time::Duration;

use common::files::{append, append_bytes, file_case, lines_in, out_lines, stop, wait_lines, wait_until};
use common::terminate;

const WAIT: Duration = Duration::from_secs(30);

/// `read_from = "end"`: a file present at startup without a checkpoint starts at its end;
/// one created later starts at its beginning.
#[test]
fn read_from_end_applies_to_files_present_at_startup_only() {
    let (case, config) = file_case("*", "read_from = \"end\"");
    append(&case.path("logs/old.log"), "old", 0..10);
    let child = case.spawn(&config);
    // Found at startup (its position, its end, is written down) before it grows.
    let store = case.path("data/checkpoints/checkpoints.json");
    assert!(wait_until(WAIT, || std::fs::read_to_string(&store).unwrap_or_default().contains("old.log")));
    append(&case.path("logs/old.log"), "old", 10..12);
    append(&case.path("logs/new.log"), "new", 0..3);
    assert!(wait_until(WAIT, || lines_in(&case.path("out.log")) == 5));
    stop(child);
    let mut got = out_lines(&case);
    got.sort();
    assert_eq!(got, vec!["new-l00000", "new-l00001", "new-l00002", "old-l00010", "old-l00011"]);
}

/// `ignore_older_secs`: a file unchanged for longer starts at its end.
#[test]
fn files_older_than_ignore_older_secs_start_at_their_end() {
    let (case, config) = file_case("*", "ignore_older_secs = 3600");
    let old = case.path("logs/old.log");
    append(&old, "old", 0..10);
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(day_ago))
        .unwrap_or_else(|e| panic!("{e}"));
    append(&case.path("logs/fresh.log"), "fresh", 0..2);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 2, WAIT), 2);
    std::thread::sleep(Duration::from_millis(300));
    stop(child);
    assert_eq!(out_lines(&case), vec!["fresh-l00000", "fresh-l00001"]);
}

/// `remove_after_secs`: a file read to its end and fully acknowledged is deleted.
#[test]
fn remove_after_secs_deletes_a_file_once_every_line_is_acknowledged() {
    let (case, config) = file_case("*", "remove_after_secs = 0");
    let log = case.path("logs/done.log");
    append(&log, "done", 0..100);
    let child = case.spawn(&config);
    assert!(wait_until(WAIT, || !log.exists()), "the file was removed");
    stop(child);
    assert_eq!(lines_in(&case.path("out.log")), 100, "every line was delivered before the file went");
}

/// A gzip file is read through its decompressed stream, once.
#[test]
fn gzip_files_are_read_decompressed_once() {
    use std::io::Write;
    let (case, config) = file_case("*", "");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(b"zipped 1\nzipped 2\n").unwrap_or_else(|e| panic!("{e}"));
    append_bytes(&case.path("logs/rotated.log.1.gz"), &gz.finish().unwrap_or_default());
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 2, WAIT), 2);
    std::thread::sleep(Duration::from_millis(300));
    stop(child);
    let child = case.spawn(&config);
    std::thread::sleep(Duration::from_millis(300));
    stop(child);
    assert_eq!(out_lines(&case), vec!["zipped 1", "zipped 2"]);
}

/// `fingerprint.strategy = "device_and_inode"` and `offset_key`; `ignore_checkpoints` reads
/// again from the start.
#[test]
fn device_and_inode_offsets_and_ignore_checkpoints() {
    let (case, config) = file_case("*", "fingerprint.strategy = \"device_and_inode\"\noffset_key = \"offset\"");
    append_bytes(&case.path("logs/a.log"), b"x\n");
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 1, WAIT), 1);
    stop(child);
    let store = std::fs::read_to_string(case.path("data/checkpoints/checkpoints.json")).unwrap_or_default();
    assert!(store.contains("\"dev_inode\":["), "{store}");
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    let json = text.replace("encoding.codec = \"text\"", "encoding.codec = \"json\"").replace("out.log", "out.jsonl");
    let config = case.config(&format!("{json}\n"));
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    let config =
        case.config(&text.replace("offset_key = \"offset\"", "offset_key = \"offset\"\nignore_checkpoints = true"));
    append_bytes(&case.path("logs/a.log"), b"y\n");
    let child = case.spawn(&config);
    assert!(wait_until(WAIT, || lines_in(&case.path("out.jsonl")) == 2));
    stop(child);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(case.path("out.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect();
    assert_eq!((lines[0]["message"].as_str(), lines[0]["offset"].as_i64()), (Some("x"), Some(0)));
    assert_eq!((lines[1]["message"].as_str(), lines[1]["offset"].as_i64()), (Some("y"), Some(2)));
}

/// A damaged checkpoint store (the current copy torn): positions come from the previous copy,
/// not from the start, and the damaged file is kept aside.
#[test]
fn a_damaged_checkpoint_store_does_not_send_reading_back_to_the_start() {
    let (case, config) = file_case("*", "");
    let log = case.path("logs/a.log");
    append(&log, "a", 0..1000);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 1000, WAIT), 1000);
    stop(child);
    append(&log, "a", 1000..1010);
    let child = case.spawn(&config);
    assert_eq!(wait_lines(&case.path("out.log"), 1010, WAIT), 1010);
    stop(child);
    let store = case.path("data/checkpoints/checkpoints.json");
    std::fs::write(&store, b"{\"version\":1,\"checkpoints\":[{\"fingerprint\":{\"first_li")
        .unwrap_or_else(|e| panic!("{e}"));
    let child = case.spawn(&config);
    wait_lines(&case.path("out.log"), 1020, WAIT);
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("checkpoint store is damaged"), "{stderr}");
    // The previous copy held the position after line 1000: the 10 lines since are read
    // again, not the 1,010 from the start.
    assert_eq!(lines_in(&case.path("out.log")), 1020, "only what changed since the previous copy is read again");
    let aside = std::fs::read_dir(case.path("data/checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".corrupt-"));
    assert!(aside);
}

/// Two file sources with different line settings on one file: it is read once, with the
/// first source's settings, both get its lines, and a warning names them.
#[test]
fn sources_with_different_line_settings_share_a_file_and_are_warned_about() {
    let case = common::Case::new();
    std::fs::create_dir_all(case.path("logs")).unwrap_or_else(|e| panic!("{e}"));
    append_bytes(&case.path("logs/a.log"), b"one\ntwo\n");
    let config = case.config(
        r#"
data_dir = "{dir}/data"
[sources.a]
type = "file"
include = ["{dir}/logs/*.log"]
[sources.b]
type = "file"
include = ["{dir}/logs/a.log"]
max_line_bytes = 1000
[sinks.out_a]
type = "file"
inputs = ["a"]
path = "{dir}/a.out"
encoding.codec = "text"
[sinks.out_b]
type = "file"
inputs = ["b"]
path = "{dir}/b.out"
encoding.codec = "text"
"#,
    );
    let child = case.spawn(&config);
    assert!(wait_until(WAIT, || lines_in(&case.path("a.out")) == 2 && lines_in(&case.path("b.out")) == 2));
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("read once, with the settings of the first"), "{stderr}");
    assert!(stderr.contains("\"a\"") && stderr.contains("\"b\""), "{stderr}");
}

/// A file source with a `data_dir` of its own keeps its checkpoints there; `sluice
/// checkpoints list --config` reads every store the config uses and says which.
#[test]
fn checkpoints_list_with_a_config_finds_a_sources_own_data_dir() {
    let (case, config) = common::files::file_case("*.log", "data_dir = \"{dir}/own\"");
    common::files::append(&case.path("logs/app.log"), "app", 0..5);
    let child = case.spawn(&config);
    assert_eq!(common::files::wait_lines(&case.path("out.log"), 5, Duration::from_secs(30)), 5);
    common::files::stop(child);
    let output = common::sluice()
        .args(["checkpoints", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "the source's own store is read: {stdout}");
    assert!(listed[0]["path"].as_str().is_some_and(|p| p.ends_with("app.log")), "{stdout}");
    let own = case.path("own").join("checkpoints").display().to_string();
    let global = case.path("data").join("checkpoints").display().to_string();
    assert!(stderr.contains(&format!("{own}: 1 checkpoints")), "says which stores it read: {stderr}");
    assert!(stderr.contains(&format!("{global}: 0 checkpoints")), "{stderr}");
}
