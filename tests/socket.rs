//! `socket` source over TCP and UDP, through the binary.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Case, assert_ledger_balanced, component, free_port, terminate, wait_for_port};

fn wait_for_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect();
        if lines.len() >= n || start.elapsed() > Duration::from_secs(20) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tcp_and_udp_lines_arrive_with_peer_address() {
    let case = Case::new();
    let tcp = free_port();
    let udp = free_port();
    let config = case.config(&format!(
        r#"
[sources.tcp]
type = "socket"
mode = "tcp"
address = "127.0.0.1:{tcp}"
max_length = 64

[sources.udp]
type = "socket"
mode = "udp"
address = "127.0.0.1:{udp}"

[sinks.out]
type = "file"
inputs = ["tcp", "udp"]
path = "{{dir}}/out.jsonl"
encoding.codec = "json"
"#
    ));
    let child = case.spawn(&config);
    wait_for_port(tcp, Duration::from_secs(20));
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap_or_else(|e| panic!("{e}"));
    let long = "x".repeat(100);
    stream.write_all(format!("one\ntwo\n{long}\nthree").as_bytes()).unwrap_or_default();
    drop(stream);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket.send_to(b"datagram", ("127.0.0.1", udp)).unwrap_or_default();
    let lines = wait_for_lines(&case.path("out.jsonl"), 4);
    let (code, stderr) = terminate(child);
    assert_eq!(code, Some(0), "{stderr}");
    let messages: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_default()["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for expected in ["one", "two", "three", "datagram"] {
        assert!(messages.iter().any(|m| m == expected), "missing {expected}: {messages:?}");
    }
    let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap_or_default();
    assert_eq!(event["host"], "127.0.0.1");
    assert!(event["port"].is_number());
    let ledger = case.ledger();
    assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "tcp")["discarded"]["oversized"], 1);
}
