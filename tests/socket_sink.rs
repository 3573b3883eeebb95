//! The `socket` sink: events written to TCP, UDP and Unix sockets read by the test, in order,
//! and a destination that is down at first and comes up (written once it listens).

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::Case;

fn config(case: &Case, sink: &str) -> std::path::PathBuf {
    case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"socket\"\ninputs = [\"in\"]\nencoding.codec = \"text\"\n{sink}\n"
    ))
}

fn input(n: usize) -> String {
    (0..n).map(|i| format!("line {i}\n")).collect()
}

/// Reads lines from the first connection to `listener` until `n` arrive.
fn read_lines(listener: std::net::TcpListener, n: usize) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return Vec::new() };
        BufReader::new(stream).lines().map_while(Result::ok).take(n).collect()
    })
}

#[test]
fn tcp_writes_every_event_in_order_as_lines() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let reader = read_lines(listener, 5_000);
    let case = Case::new();
    let config = config(&case, &format!("mode = \"tcp\"\naddress = \"127.0.0.1:{port}\""));
    let output = case.run_with_stdin(&config, input(5_000).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines = reader.join().unwrap_or_default();
    assert_eq!(lines, input(5_000).lines().collect::<Vec<_>>());
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(common::component(&ledger, "out")["sent"], 5_000);
}

#[test]
fn a_destination_down_at_first_gets_everything_once_it_listens() {
    let port = common::free_port();
    let case = Case::new();
    let config = config(&case, &format!("mode = \"tcp\"\naddress = \"127.0.0.1:{port}\""));
    let child = case.spawn_feeding(&config, &[], input(100).as_bytes());
    // The first attempts find nothing listening; the retries then find the listener.
    std::thread::sleep(Duration::from_secs(2));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    let lines = read_lines(listener, 100).join().unwrap_or_default();
    let pid = child.id();
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "{}", common::stderr_of(pid));
    assert_eq!(lines.len(), 100);
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    let sink = common::component(&ledger, "out");
    assert_eq!(sink["sent"], 100);
    assert!(sink["errors"]["connection_failed/sending"].as_u64().is_some_and(|n| n > 0), "{sink:#}");
}

#[test]
fn udp_sends_one_datagram_per_event() {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("{e}"));
    let port = socket.local_addr().map(|a| a.port()).unwrap_or_default();
    let case = Case::new();
    let config = config(&case, &format!("mode = \"udp\"\naddress = \"127.0.0.1:{port}\""));
    let output = case.run_with_stdin(&config, input(50).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut datagrams = Vec::new();
    let mut buf = [0u8; 2048];
    while datagrams.len() < 50 {
        let Ok(n) = socket.recv(&mut buf) else { break };
        datagrams.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(datagrams, input(50).lines().collect::<Vec<_>>(), "datagrams carry no delimiter");
}

#[test]
fn a_unix_stream_socket_gets_every_event() {
    let case = Case::new();
    let path = case.path("out.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("{e}"));
    let reader = std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return Vec::new() };
        BufReader::new(stream).lines().map_while(Result::ok).take(200).collect::<Vec<_>>()
    });
    let config = config(&case, &format!("mode = \"unix\"\npath = \"{}\"", path.display()));
    let output = case.run_with_stdin(&config, input(200).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(reader.join().unwrap_or_default().len(), 200);
}

#[test]
fn tcp_with_tls_writes_to_a_listener_with_a_private_ca() {
    let case = Case::new();
    let pki = sluice_net::test_pki::TestPki::new(case.dir.path(), "relay");
    let server = sluice_net::TlsConfig {
        enabled: Some(true),
        crt_file: Some(pki.server_crt.display().to_string()),
        key_file: Some(pki.server_key.display().to_string()),
        ..sluice_net::TlsConfig::default()
    }
    .server_config()
    .unwrap_or_else(|e| panic!("{e}"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let reader = std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return Vec::new() };
        let Ok(conn) = rustls::ServerConnection::new(server) else { return Vec::new() };
        BufReader::new(rustls::StreamOwned::new(conn, stream)).lines().map_while(Result::ok).take(300).collect()
    });
    let config = config(
        &case,
        &format!(
            "mode = \"tcp\"\naddress = \"localhost:{port}\"\ntls.enabled = true\ntls.ca_file = \"{}\"",
            pki.ca.display()
        ),
    );
    let output = case.run_with_stdin(&config, input(300).as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(reader.join().unwrap_or_default(), input(300).lines().collect::<Vec<_>>());
    common::assert_ledger_balanced(&case.ledger());
}
