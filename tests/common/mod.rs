//! Helpers for tests that drive the real `sluice` binary.
#![allow(dead_code)]

pub mod api_server;
pub mod azurite;
pub mod clickhouse;
pub mod datadog;
pub mod elastic;
pub mod fault_proxy;
pub mod files;
pub mod forward_proxy;
pub mod gcp;
pub mod intake;
pub mod kafka;
pub mod loki;
pub mod moto;
pub mod splunk;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("SLUICE_LOG", "warn");
    cmd
}

/// A temp dir holding a config; paths in the config may use `{dir}`.
pub struct Case {
    pub dir: tempfile::TempDir,
}

impl Case {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")) }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `config.toml` with `{dir}` replaced by the temp dir.
    pub fn config(&self, text: &str) -> PathBuf {
        let path = self.path("config.toml");
        let text = text.replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write config: {e}"));
        path
    }

    pub fn ledger(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.path("ledger.json")).unwrap_or_else(|e| panic!("ledger.json: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ledger json: {e}"))
    }

    /// Runs `sluice --config config.toml --ledger-json ledger.json` with `input` on stdin.
    pub fn run_with_stdin(&self, config: &Path, input: &[u8]) -> Output {
        run_sluice(sluice(), config, Some(&self.path("ledger.json")), input)
    }

    /// Starts `sluice` in the background.
    pub fn spawn(&self, config: &Path) -> Child {
        self.spawn_with(config, &[])
    }

    /// Starts `sluice` in the background with more arguments (`--graceful-shutdown-limit-secs`).
    pub fn spawn_with(&self, config: &Path, args: &[&str]) -> Child {
        background(sluice().arg("--config").arg(config).arg("--ledger-json").arg(self.path("ledger.json")).args(args))
    }

    /// Starts `sluice` in the background (more `args` first) with `input` on its stdin, which
    /// is then closed: the stdin source ends, other sources go on.
    pub fn spawn_feeding(&self, config: &Path, args: &[&str], input: &[u8]) -> Child {
        let mut command = sluice();
        command.args(args).arg("--config").arg(config).arg("--ledger-json").arg(self.path("ledger.json"));
        let mut child = spawn_in_background(&mut command, Stdio::piped());
        let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
        stdin.write_all(input).unwrap_or_else(|e| panic!("write stdin: {e}"));
        child
    }
}

/// Runs `command` (the sluice binary, its environment set by the caller) on `config` with
/// `input` on stdin; `ledger` adds `--ledger-json`.
pub fn run_sluice(mut command: Command, config: &Path, ledger: Option<&Path>, input: &[u8]) -> Output {
    command.arg("--config").arg(config);
    if let Some(ledger) = ledger {
        command.arg("--ledger-json").arg(ledger);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn sluice: {e}"));
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"));
    let _ = writer.join();
    output
}

/// Asserts that every component's ledger balances and nothing is left in flight.
pub fn assert_ledger_balanced(ledger: &serde_json::Value) {
    assert_eq!(ledger["balanced"], true, "ledger: {ledger:#}");
    assert_eq!(ledger["unresolved_drops"], 0, "ledger: {ledger:#}");
    for c in ledger["components"].as_array().unwrap_or(&Vec::new()) {
        assert_eq!(c["in_flight"], 0, "in flight at exit: {c:#}");
    }
}

pub fn component<'a>(ledger: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    ledger["components"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no component {id} in {ledger:#}"))
}

/// Starts a server process on a free loopback port and waits until it answers as itself.
/// `spawn(port)` starts it; `is_it(port)` asks it something only it answers (a port chosen free
/// can be taken by another test before a slow server binds it: then the server exits, or
/// something else answers, and a new port is tried).
pub fn start_server(name: &str, mut spawn: impl FnMut(u16) -> Child, is_it: impl Fn(u16) -> bool) -> (u16, Child) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = spawn(port);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("{name} exited ({status}) on port {port}; trying another port");
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && is_it(port) {
                return (port, child);
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{name} did not start on port {port} within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("{name} could not start: is it installed? scripts/test installs it")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// An intake that accepts connections and never answers; returns its port. Connections are
/// held open for 20 seconds.
pub fn silent_intake() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(held);
    });
    port
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < timeout, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like [`post`], but `None` when the connection fails (the server is down or died).
pub fn try_post(port: u16, path: &str, body: &[u8]) -> Option<u16> {
    post_within(port, path, body, Duration::from_secs(60))
}

/// The status of a POST, or `None` when the connection fails or no answer comes in `timeout`.
pub fn post_within(port: u16, path: &str, body: &[u8], timeout: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok())
}

/// A minimal HTTP/1.1 POST; returns (status, body).
pub fn post(port: u16, path: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
    stream.write_all(body).unwrap_or_else(|e| panic!("write: {e}"));
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// What background processes wrote to stderr, by process id, read as it comes: a process
/// that logs more than a pipe holds must never block on it while the test waits for its
/// output.
static STDERR: std::sync::Mutex<BTreeMap<u32, std::thread::JoinHandle<Vec<u8>>>> =
    std::sync::Mutex::new(BTreeMap::new());

/// Spawns `command` in the background: no stdin, stdout discarded, stderr kept for
/// [`terminate`] (or [`stderr_of`]).
pub fn background(command: &mut Command) -> Child {
    spawn_in_background(command, Stdio::null())
}

fn spawn_in_background(command: &mut Command, stdin: Stdio) -> Child {
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    if let Some(mut pipe) = child.stderr.take() {
        let reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        });
        STDERR.lock().unwrap_or_else(|e| e.into_inner()).insert(child.id(), reader);
    }
    child
}

/// The stderr of a background process that has exited (killed or stopped).
pub fn stderr_of(pid: u32) -> String {
    let reader = STDERR.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    let text = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    String::from_utf8_lossy(&text).into_owned()
}

/// Sends SIGTERM and waits for the exit status.
pub fn terminate(child: Child) -> (Option<i32>, String) {
    let pid = child.id();
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"));
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    stderr.push_str(&stderr_of(pid));
    (output.status.code(), stderr)
}

/// A minimal HTTP/1.1 GET; returns the whole response (status line, headers, body).
pub fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The value of one Prometheus sample line `name{labels}` in `metrics`, if present.
pub fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Writes `api.enabled` and `api.address` at the top of a config file; returns the API port.
pub fn enable_api(config: &Path) -> u16 {
    let port = free_port();
    let text = std::fs::read_to_string(config).unwrap_or_default();
    let text = format!("api.enabled = true\napi.address = \"127.0.0.1:{port}\"\n{text}");
    std::fs::write(config, text).unwrap_or_else(|e| panic!("{e}"));
    port
}

/// Runs `sluice --require-healthy` on `config` with empty stdin and checks the outcome of the
/// sinks' healthchecks: exit 0 and "Healthcheck passed" when `healthy`, else exit 78 and
/// "Healthcheck failed". Returns stderr.
pub fn assert_healthcheck(config: &Path, healthy: bool, what: &str) -> String {
    let mut command = sluice();
    command.env("SLUICE_LOG", "info").arg("--require-healthy");
    let output = run_sluice(command, config, None, b"");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let (code, said) = if healthy { (0, "Healthcheck passed") } else { (78, "Healthcheck failed") };
    assert_eq!(output.status.code(), Some(code), "{what}: {stderr}");
    assert!(stderr.contains(said), "{what}: {stderr}");
    stderr
}
