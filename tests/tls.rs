//! TLS through the binary: the http sink to an https intake (a private CA, the wrong CA),
//! and `http_server` and `socket` with TLS and mutual TLS.

mod common;

use std::time::Duration;

use common::intake::Intake;
use common::{Case, component};
use sluice_net::TlsConfig;
use sluice_net::test_pki::TestPki;

fn server_tls(pki: &TestPki) -> TlsConfig {
    TlsConfig {
        enabled: Some(true),
        crt_file: Some(pki.server_crt.display().to_string()),
        key_file: Some(pki.server_key.display().to_string()),
        ..TlsConfig::default()
    }
}

fn lines(n: usize) -> Vec<u8> {
    (0..n).map(|i| format!("event {i}\n")).collect::<String>().into_bytes()
}

#[test]
fn the_http_sink_delivers_to_an_https_intake_with_a_private_ca() {
    let case = Case::new();
    let pki = TestPki::new(case.dir.path(), "intake");
    let tls = server_tls(&pki).server_config().unwrap_or_else(|e| panic!("{e}"));
    let intake = Intake::start_tls(tls, |_, _, _| 200);
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
[sinks.out]
type = "http"
inputs = ["in"]
uri = "https://localhost:{port}/ingest"
encoding.codec = "text"
batch.max_events = 50
tls.ca_file = "{ca}"
"#,
        port = intake.port,
        ca = pki.ca.display()
    ));
    let output = case.run_with_stdin(&config, &lines(200));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut got = intake.accepted_lines();
    got.sort();
    assert_eq!(got.len(), 200);
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 200);
}

#[test]
fn the_wrong_ca_is_retried_counted_as_tls_and_dead_lettered_at_the_deadline() {
    let case = Case::new();
    let pki = TestPki::new(case.dir.path(), "intake");
    let other = TestPki::new(case.dir.path(), "other");
    let tls = server_tls(&pki).server_config().unwrap_or_else(|e| panic!("{e}"));
    let intake = Intake::start_tls(tls, |_, _, _| 200);
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
[sinks.out]
type = "http"
inputs = ["in"]
uri = "https://localhost:{port}/ingest"
encoding.codec = "text"
tls.ca_file = "{ca}"
request.retry_deadline_secs = 2
request.retry_initial_backoff_secs = 0.2
request.retry_max_duration_secs = 0.5
"#,
        port = intake.port,
        ca = other.ca.display()
    ));
    let output = case.run_with_stdin(&config, &lines(20));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dead-lettered events are safe: {stderr}");
    assert!(stderr.contains("unknown CA"), "the reason is logged: {stderr}");
    assert!(intake.accepted_lines().is_empty(), "nothing crosses a handshake that failed");
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    let out = component(&ledger, "out");
    assert_eq!(out["dead_lettered"], 20);
    let tls_errors = out["errors"]["tls/sending"].as_u64().unwrap_or(0);
    assert!(tls_errors >= 2, "each failed handshake is counted as tls: {out:#}");
    let dlq = common::files::dead_letters(&case.path("data"), "out");
    assert_eq!(dlq.len(), 20);
    assert_eq!(dlq[0]["reason"], "retries_exhausted");
    let message = dlq[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("TLS handshake failed: unknown CA"), "{message}");
}

/// A config whose source (`source`: its type and address lines) listens with TLS on the
/// server certificate of `pki`, plus `tls_extra` lines, into a text file sink at `out.log`.
fn listener_config(case: &Case, pki: &TestPki, source: &str, tls_extra: &str) -> std::path::PathBuf {
    case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\n{source}\ntls.enabled = true\ntls.crt_file = \"{crt}\"\ntls.key_file = \"{key}\"\n{tls_extra}\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{{dir}}/out.log\"\nencoding.codec = \"text\"\n",
        crt = pki.server_crt.display(),
        key = pki.server_key.display(),
    ))
}

/// Posts `body` over HTTPS with the given client TLS settings; the status, or why it failed.
fn post_tls(port: u16, tls: &TlsConfig, body: &str) -> Result<u16, String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = sluice_net::http::HttpClient::new(Some(tls)).map_err(|e| e.to_string())?;
        let request = http::Request::post(format!("https://localhost:{port}/"))
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let send = client.send(request);
        match tokio::time::timeout(Duration::from_secs(30), send).await {
            Ok(Ok(response)) => Ok(response.status().as_u16()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("timed out".into()),
        }
    })
}

#[test]
fn http_server_with_mutual_tls_refuses_a_client_without_a_certificate() {
    let case = Case::new();
    let pki = TestPki::new(case.dir.path(), "server");
    let port = common::free_port();
    let source = format!("type = \"http_server\"\naddress = \"127.0.0.1:{port}\"");
    let mtls = format!("tls.ca_file = \"{}\"\ntls.verify_certificate = true", pki.ca.display());
    let config = listener_config(&case, &pki, &source, &mtls);
    let api = common::enable_api(&config);
    let child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    let ca = Some(pki.ca.display().to_string());
    let anonymous = TlsConfig { ca_file: ca.clone(), ..TlsConfig::default() };
    let refused = post_tls(port, &anonymous, "without a certificate\n");
    assert!(refused.is_err(), "a client without a certificate is refused: {refused:?}");
    let with_cert = TlsConfig {
        ca_file: ca,
        crt_file: Some(pki.client_crt.display().to_string()),
        key_file: Some(pki.client_key.display().to_string()),
        ..TlsConfig::default()
    };
    assert_eq!(post_tls(port, &with_cert, "with a certificate\n"), Ok(200));
    let metrics = common::get(api, "/metrics");
    let refused_count = common::sample(
        &metrics,
        r#"component_errors_total{component_id="in",component_kind="source",component_type="http_server",error_type="tls",stage="receiving"}"#,
    );
    // The client's pool may try the refused request once more on a new connection.
    assert!(refused_count.is_some_and(|n| n >= 1.0), "the refused handshake is counted as tls: {metrics}");
    common::files::stop(child);
    assert_eq!(common::files::out_lines(&case), vec!["with a certificate".to_owned()]);
}

#[test]
fn http_server_with_tls_answers_https_and_not_plain_http() {
    let case = Case::new();
    let pki = TestPki::new(case.dir.path(), "server");
    let port = common::free_port();
    let source = format!("type = \"http_server\"\naddress = \"127.0.0.1:{port}\"");
    let config = listener_config(&case, &pki, &source, "");
    let child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    assert_eq!(common::try_post(port, "/", b"plain\n"), None, "plain HTTP gets no answer");
    let client = TlsConfig { ca_file: Some(pki.ca.display().to_string()), ..TlsConfig::default() };
    assert_eq!(post_tls(port, &client, "over tls\n"), Ok(200));
    common::files::stop(child);
    assert_eq!(common::files::out_lines(&case), vec!["over tls".to_owned()]);
}

#[test]
fn validate_names_a_missing_tls_file_and_a_key_that_does_not_match() {
    let case = Case::new();
    let a = TestPki::new(case.dir.path(), "a");
    let b = TestPki::new(case.dir.path(), "b");
    let config = case.config(&format!(
        r#"
[sources.in]
type = "http_server"
address = "127.0.0.1:9"
tls.enabled = true
tls.crt_file = "{crt}"
tls.key_file = "{key}"
[sinks.out]
type = "http"
inputs = ["in"]
uri = "https://localhost:9/"
encoding.codec = "json"
tls.ca_file = "{{dir}}/missing-ca.pem"
"#,
        crt = a.server_crt.display(),
        key = b.server_key.display(),
    ));
    let output = common::sluice().arg("validate").arg(&config).output().unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = format!("{stdout}{stderr}");
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("tls.key_file") && text.contains("does not belong"), "{text}");
    assert!(text.contains("tls.ca_file") && text.contains("missing-ca.pem"), "{text}");
}

#[test]
fn the_socket_source_reads_lines_over_tls() {
    use std::io::Write;
    let case = Case::new();
    let pki = TestPki::new(case.dir.path(), "server");
    let port = common::free_port();
    let source = format!("type = \"socket\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"");
    let config = listener_config(&case, &pki, &source, "");
    let child = case.spawn(&config);
    common::wait_for_port(port, Duration::from_secs(30));
    let client = TlsConfig { ca_file: Some(pki.ca.display().to_string()), ..TlsConfig::default() };
    let config = client.client_config().unwrap_or_else(|e| panic!("{e}"));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
    let conn = rustls::ClientConnection::new(config, name).unwrap_or_else(|e| panic!("{e}"));
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream.write_all(b"first\nsecond\n").unwrap_or_else(|e| panic!("{e}"));
    stream.conn.send_close_notify();
    let _ = stream.flush();
    drop(stream);
    let out = case.path("out.log");
    assert_eq!(common::files::wait_lines(&out, 2, Duration::from_secs(30)), 2);
    common::files::stop(child);
    assert_eq!(common::files::out_lines(&case), vec!["first".to_owned(), "second".to_owned()]);
}

#[test]
fn a_machine_without_root_certificates_still_sends_plain_http() {
    let intake = Intake::start(|_, _, _| 200);
    let case = Case::new();
    let config = case.config(&format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"http://127.0.0.1:{}/\"\nencoding.codec = \"text\"\n",
        intake.port
    ));
    // No system roots: rustls-native-certs reads only these, and they do not exist.
    let mut command = common::sluice();
    command.env("SSL_CERT_FILE", case.path("no-roots.pem")).env("SSL_CERT_DIR", case.path("no-roots"));
    let output = common::run_sluice(command, &config, None, &lines(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(intake.accepted_lines().len(), 10);
    assert!(stderr.contains("no root certificates"), "the missing roots are said: {stderr}");
}
