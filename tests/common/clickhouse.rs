//! A real ClickHouse server (Debian's `clickhouse-server`, installed by `scripts/test`),
//! started on loopback ports in a temp dir for one test and stopped when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;

pub struct ClickHouse {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

/// The user the tests insert as (besides `default`, without a password).
pub const USER: &str = "sluice";
pub const PASSWORD: &str = "secret";

fn binary() -> PathBuf {
    for candidate in ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse"] {
        if std::path::Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("clickhouse-server is not installed: run the tests with scripts/test, which installs it")
}

impl ClickHouse {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path().display().to_string();
        let users = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <profiles><default></default></profiles>
    <users>
        <default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default>
        <{USER}><password>{PASSWORD}</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></{USER}>
    </users>
    <quotas><default></default></quotas>
</yandex>
"#
        );
        std::fs::write(dir.path().join("users.xml"), users).unwrap_or_else(|e| panic!("{e}"));
        let spawn = |port: u16| {
            let tcp = super::free_port();
            let config = format!(
                r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><console>1</console></logger>
    <http_port>{port}</http_port>
    <tcp_port>{tcp}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{root}/data/</path>
    <tmp_path>{root}/tmp/</tmp_path>
    <user_files_path>{root}/user_files/</user_files_path>
    <format_schema_path>{root}/format_schemas/</format_schema_path>
    <users_config>{root}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
"#
            );
            std::fs::write(dir.path().join("config.xml"), config).unwrap_or_else(|e| panic!("{e}"));
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap_or_else(|e| panic!("{e}"));
            Command::new(binary())
                .arg(format!("--config-file={root}/config.xml"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap_or_else(|e| panic!("{e}")))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start clickhouse-server: {e}"))
        };
        // `SELECT version()` answers only from ClickHouse.
        let is_it = |port: u16| {
            try_query(port, "SELECT version()").is_some_and(|(status, body)| status == 200 && body.contains('.'))
        };
        let (port, child) = super::start_server("clickhouse-server", spawn, is_it);
        Self { port, child, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Runs `sql`; panics unless it succeeds. Returns the answer's text.
    pub fn query(&self, sql: &str) -> String {
        match try_query(self.port, sql) {
            Some((200, body)) => body,
            other => panic!("{sql}: {other:?}"),
        }
    }
}

fn try_query(port: u16, sql: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = base64::engine::general_purpose::STANDARD.encode("default:");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        sql.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(sql.as_bytes()).ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok())?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Some((status, if chunked { dechunk(body) } else { body.to_owned() }))
}

/// A chunked body's data (ClickHouse answers queries chunked).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { return body.to_owned() };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
