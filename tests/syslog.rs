//! The `syslog` source with real senders: util-linux `logger` (RFC 5424 and 3164, octet
//! counting and newlines, TCP, UDP and a Unix socket) and Debian's rsyslog forwarding over
//! TCP and UDP. A malformed frame goes to the DLQ and the connection goes on.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Case;
use common::files::json_lines;

fn logger(args: &[&str]) {
    let status = Command::new("logger").args(args).status().unwrap_or_else(|e| panic!("logger: {e}"));
    assert!(status.success(), "logger {args:?}");
}

fn find<'a>(events: &'a [serde_json::Value], message: &str) -> &'a serde_json::Value {
    events.iter().find(|e| e["message"] == message).unwrap_or_else(|| panic!("no `{message}` in {events:#?}"))
}

/// A config with syslog sources on a TCP port, a UDP port and a Unix socket, into `out.log`.
fn listening(case: &Case) -> (u16, u16, std::path::PathBuf, Child) {
    let (tcp, udp) = (common::free_port(), common::free_port());
    let unix = case.path("syslog.sock");
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.tcp]
type = "syslog"
mode = "tcp"
address = "127.0.0.1:{tcp}"
[sources.udp]
type = "syslog"
mode = "udp"
address = "127.0.0.1:{udp}"
[sources.unix]
type = "syslog"
mode = "unix"
path = "{}"
[sinks.out]
type = "file"
inputs = ["tcp", "udp", "unix"]
path = "{{dir}}/out.log"
encoding.codec = "json"
"#,
        unix.display()
    ));
    let child = case.spawn(&config);
    common::wait_for_port(tcp, Duration::from_secs(30));
    (tcp, udp, unix, child)
}

#[test]
fn logger_lines_land_with_their_fields_over_tcp_udp_and_a_unix_socket() {
    let case = Case::new();
    let (tcp, udp, unix, child) = listening(&case);
    let (tcp, udp) = (tcp.to_string(), udp.to_string());
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &tcp,
        "--tcp",
        "--rfc5424",
        "--octet-count",
        "--msgid",
        "ID7",
        "--id=4242",
        "--sd-id",
        "meta@32473",
        "--sd-param",
        "region=\"eu-1\"",
        "-t",
        "billing",
        "-p",
        "local3.warning",
        "five four two four over tcp",
    ]);
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &tcp,
        "--tcp",
        "--rfc3164",
        "-t",
        "cron",
        "-p",
        "cron.info",
        "bsd over tcp",
    ]);
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &udp,
        "--udp",
        "--rfc3164",
        "-t",
        "kernel",
        "-p",
        "daemon.err",
        "bsd over udp",
    ]);
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &udp,
        "--udp",
        "--rfc5424",
        "-t",
        "web",
        "five four two four over udp",
    ]);
    logger(&["--socket", &unix.display().to_string(), "--rfc5424", "-t", "local", "over a unix socket"]);
    let read = common::files::wait_lines(&case.path("out.log"), 5, Duration::from_secs(30));
    common::files::stop(child);
    assert_eq!(read, 5, "{:#?}", json_lines(&case.path("out.log")));
    let events = json_lines(&case.path("out.log"));

    let e = find(&events, "five four two four over tcp");
    assert_eq!(e["appname"], "billing");
    assert_eq!(e["msgid"], "ID7");
    assert_eq!(e["facility"], "local3");
    assert_eq!(e["severity"], "warning");
    assert_eq!(e["version"], 1);
    assert_eq!(e["meta@32473"]["region"], "eu-1");
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert_eq!(e["procid"], 4242);
    assert!(e["hostname"].is_string() && e["host"] == e["hostname"], "{e}");
    assert_eq!(e["source_type"], "syslog");

    let e = find(&events, "bsd over tcp");
    assert_eq!(e["appname"], "cron");
    assert_eq!(e["facility"], "cron");
    assert_eq!(e["severity"], "info");
    assert!(e.get("version").is_none(), "{e}");

    let e = find(&events, "bsd over udp");
    assert_eq!(
        (e["appname"].as_str(), e["facility"].as_str(), e["severity"].as_str()),
        (Some("kernel"), Some("daemon"), Some("err"))
    );
    let e = find(&events, "five four two four over udp");
    assert_eq!(e["appname"], "web");
    let e = find(&events, "over a unix socket");
    assert_eq!(e["appname"], "local");
    assert!(e.get("source_ip").is_none(), "{e}");
    common::assert_ledger_balanced(&case.ledger());
}

#[test]
fn a_malformed_frame_is_dead_lettered_and_the_connection_keeps_working() {
    let case = Case::new();
    let (tcp, _, _, child) = listening(&case);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(b"<13>1 2026-12-02T10:00:00Z box app 1 - - before\n").unwrap_or_else(|e| panic!("{e}"));
    stream.write_all(b"this is not syslog at all\n").unwrap_or_else(|e| panic!("{e}"));
    let after = "<14>Dec  2 10:00:01 box app[9]: after";
    stream.write_all(format!("{} {after}", after.len()).as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    stream.flush().unwrap_or_else(|e| panic!("{e}"));
    let read = common::files::wait_lines(&case.path("out.log"), 2, Duration::from_secs(30));
    drop(stream);
    common::files::stop(child);
    assert_eq!(read, 2);
    let events = json_lines(&case.path("out.log"));
    assert_eq!(find(&events, "before")["appname"], "app");
    assert_eq!(find(&events, "after")["procid"], 9);
    let dead = common::files::dead_letters(&case.path("data"), "tcp");
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["reason"], "parse_error");
    assert_eq!(dead[0]["event"]["message"], "this is not syslog at all");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(common::component(&ledger, "tcp")["dead_lettered"], 1, "{ledger:#}");
}

/// rsyslogd in the foreground with `config`, its work files under `dir`.
fn rsyslog(dir: &std::path::Path, config: &str) -> Child {
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
    let program =
        ["/usr/sbin/rsyslogd", "rsyslogd"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("rsyslogd");
    Command::new(program)
        .args(["-n", "-f"])
        .arg(&path)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start rsyslogd: {e}; scripts/test installs rsyslog"))
}

#[test]
fn rsyslog_forwarding_over_tcp_and_udp_lands_with_its_fields() {
    let case = Case::new();
    let (tcp, udp, _, child) = listening(&case);
    let input = common::free_port();
    std::fs::create_dir_all(case.path("rsyslog")).unwrap_or_else(|e| panic!("{e}"));
    let mut rsyslogd = rsyslog(
        &case.path("rsyslog"),
        &format!(
            r#"
global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{input}")
if $msg contains "via-tcp" then action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
if $msg contains "via-udp" then action(type="omfwd" target="127.0.0.1" port="{udp}" protocol="udp" template="RSYSLOG_TraditionalForwardFormat")
"#,
            work = case.path("rsyslog").display()
        ),
    );
    common::wait_for_port(input, Duration::from_secs(30));
    let input = input.to_string();
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &input,
        "--tcp",
        "--rfc5424",
        "--octet-count",
        "-t",
        "shop",
        "order via-tcp",
    ]);
    logger(&[
        "--server",
        "127.0.0.1",
        "--port",
        &input,
        "--tcp",
        "--rfc5424",
        "--octet-count",
        "-t",
        "shop",
        "order via-udp",
    ]);
    let read = common::files::wait_lines(&case.path("out.log"), 2, Duration::from_secs(30));
    let _ = rsyslogd.kill();
    let _ = rsyslogd.wait();
    common::files::stop(child);
    assert_eq!(read, 2, "{:#?}", json_lines(&case.path("out.log")));
    let events = json_lines(&case.path("out.log"));
    for message in ["order via-tcp", "order via-udp"] {
        let e = events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.trim() == message))
            .unwrap_or_else(|| panic!("no `{message}` in {events:#?}"));
        assert_eq!(e["appname"], "shop", "{e}");
        assert_eq!(e["facility"], "user", "{e}");
        assert_eq!(e["severity"], "notice", "{e}");
        assert!(e["hostname"].is_string(), "{e}");
    }
    common::assert_ledger_balanced(&case.ledger());
}
