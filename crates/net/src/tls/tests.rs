#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TlsConfig;
use crate::server::{Acceptor, TlsIncoming};
use crate::test_pki::TestPki;

fn text(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn client(pki: &TestPki) -> TlsConfig {
    TlsConfig { ca_file: Some(text(&pki.ca)), ..TlsConfig::default() }
}

fn server(pki: &TestPki) -> TlsConfig {
    TlsConfig {
        enabled: Some(true),
        crt_file: Some(text(&pki.server_crt)),
        key_file: Some(text(&pki.server_key)),
        ..TlsConfig::default()
    }
}

#[test]
fn a_missing_file_is_an_error_naming_the_field_and_the_file() {
    let tls = TlsConfig { ca_file: Some("/nonexistent/ca.pem".into()), ..TlsConfig::default() };
    let issues = tls.check("tls", false);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].path, "tls.ca_file");
    assert!(issues[0].message.contains("/nonexistent/ca.pem"), "{}", issues[0].message);
}

#[test]
fn a_file_without_a_certificate_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let tls = TlsConfig { ca_file: Some(text(&path)), ..TlsConfig::default() };
    let issues = tls.check("tls", false);
    assert_eq!(issues[0].path, "tls.ca_file");
    assert!(issues[0].message.contains("holds no certificate"), "{}", issues[0].message);
}

#[test]
fn a_key_that_does_not_belong_to_its_certificate_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let a = TestPki::new(dir.path(), "a");
    let b = TestPki::new(dir.path(), "b");
    let tls = TlsConfig { key_file: Some(text(&b.server_key)), ..server(&a) };
    let issues = tls.check("tls", true);
    assert_eq!(issues[0].path, "tls.key_file");
    assert!(issues[0].message.contains("does not belong"), "{}", issues[0].message);
}

#[test]
fn a_server_needs_a_certificate_and_inline_pem_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "a");
    let bare = TlsConfig { enabled: Some(true), ..TlsConfig::default() };
    assert_eq!(bare.check("tls", true)[0].path, "tls.crt_file");
    let inline = TlsConfig {
        enabled: Some(true),
        crt_file: Some(std::fs::read_to_string(&pki.server_crt).unwrap()),
        key_file: Some(std::fs::read_to_string(&pki.server_key).unwrap()),
        ..TlsConfig::default()
    };
    assert!(inline.check("tls", true).is_empty());
}

type Failures = tokio::sync::mpsc::UnboundedReceiver<String>;

/// Runs one handshake; returns the client's result and the server's failure reports.
async fn handshake(client: &TlsConfig, server: &TlsConfig, name: &str) -> (Result<String, String>, Failures) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, failures) = tokio::sync::mpsc::unbounded_channel();
    let acceptor = Acceptor::new(server.server_config().unwrap(), Duration::from_secs(5));
    let mut incoming =
        TlsIncoming::new(listener, acceptor, Arc::new(move |_, reason: &str| drop(seen.send(reason.to_owned()))))
            .unwrap();
    tokio::spawn(async move {
        while let Some((mut stream, _)) = incoming.next().await {
            let _ = stream.write_all(b"hello").await;
            let _ = stream.shutdown().await;
        }
    });
    let connector = tokio_rustls::TlsConnector::from(client.client_config().unwrap());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let result = match connector.connect(name, tcp).await {
        Ok(mut stream) => {
            let mut got = String::new();
            match stream.read_to_string(&mut got).await {
                Ok(_) => Ok(got),
                Err(err) => Err(super::handshake_failure(&err).unwrap_or_else(|| err.to_string())),
            }
        }
        Err(err) => Err(super::handshake_failure(&err).unwrap_or_else(|| err.to_string())),
    };
    (result, failures)
}

/// The server's next failure report.
async fn next_failure(failures: &mut Failures) -> String {
    tokio::time::timeout(Duration::from_secs(10), failures.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_client_trusting_the_ca_completes_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "a");
    let (result, mut failures) = handshake(&client(&pki), &server(&pki), "localhost").await;
    assert_eq!(result, Ok("hello".to_owned()));
    assert!(failures.try_recv().is_err(), "the server completed the handshake: it wrote to the client");
}

#[tokio::test]
async fn the_wrong_ca_fails_as_unknown_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "a");
    let other = TestPki::new(dir.path(), "b");
    let (result, mut failures) = handshake(&client(&other), &server(&pki), "localhost").await;
    let reason = result.unwrap_err();
    assert!(reason.contains("unknown CA"), "{reason}");
    let seen = next_failure(&mut failures).await;
    assert!(seen.contains("refused the handshake"), "the server learns why: {seen}");
}

#[tokio::test]
async fn a_name_mismatch_fails_unless_hostname_checks_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "a");
    let (result, _) = handshake(&client(&pki), &server(&pki), "elsewhere.test").await;
    let reason = result.unwrap_err();
    assert!(reason.contains("name mismatch"), "{reason}");
    let lax = TlsConfig { verify_hostname: Some(false), ..client(&pki) };
    let (result, _) = handshake(&lax, &server(&pki), "elsewhere.test").await;
    assert_eq!(result, Ok("hello".to_owned()));
    let off = TlsConfig { verify_certificate: Some(false), ..TlsConfig::default() };
    let (result, _) = handshake(&off, &server(&pki), "elsewhere.test").await;
    assert_eq!(result, Ok("hello".to_owned()));
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "a");
    let mtls = TlsConfig { verify_certificate: Some(true), ca_file: Some(text(&pki.ca)), ..server(&pki) };
    let (result, mut failures) = handshake(&client(&pki), &mtls, "localhost").await;
    assert!(result.is_err(), "{result:?}");
    let seen = next_failure(&mut failures).await;
    assert!(seen.contains("no client certificate"), "{seen}");
    let with_cert =
        TlsConfig { crt_file: Some(text(&pki.client_crt)), key_file: Some(text(&pki.client_key)), ..client(&pki) };
    let (result, mut failures) = handshake(&with_cert, &mtls, "localhost").await;
    assert_eq!(result, Ok("hello".to_owned()));
    assert!(failures.try_recv().is_err());
}

#[tokio::test]
async fn the_http_client_reports_an_unknown_ca_as_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "a");
    let other = TestPki::new(dir.path(), "b");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = Acceptor::new(server(&pki).server_config().unwrap(), Duration::from_secs(5));
    let _incoming = TlsIncoming::new(listener, acceptor, Arc::new(|_, _: &str| {})).unwrap();
    let client = crate::http::HttpClient::new(Some(&client(&other))).unwrap();
    let request = http::Request::get(format!("https://localhost:{port}/"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let err = client.send(request).await.unwrap_err();
    assert_eq!(err.error_type(), "tls", "{err:?}");
    assert!(err.to_string().contains("unknown CA"), "{err}");
}

#[test]
fn an_encrypted_key_opens_with_key_pass_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path(), "a");
    let encrypted = dir.path().join("encrypted.pem");
    let status = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-passout", "pass:s3cret", "-in"])
        .arg(&pki.server_key)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .unwrap();
    assert!(status.success(), "openssl (scripts/test installs it)");
    let with = |pass: Option<&str>| TlsConfig {
        key_file: Some(text(&encrypted)),
        key_pass: pass.map(str::to_owned),
        ..server(&pki)
    };
    assert!(with(Some("s3cret")).check("tls", true).is_empty());
    let missing = with(None).check("tls", true);
    assert!(missing[0].message.contains("give its passphrase as `key_pass`"), "{}", missing[0].message);
    let wrong = with(Some("guess")).check("tls", true);
    assert!(wrong[0].message.contains("wrong `key_pass`"), "{}", wrong[0].message);
}

#[test]
fn tls_files_without_enabled_are_warned_about() {
    let files = TlsConfig { crt_file: Some("a.pem".into()), key_file: Some("a.key".into()), ..TlsConfig::default() };
    assert_eq!(files.server_warnings("tls")[0].path, "tls.enabled");
    let on = TlsConfig { enabled: Some(true), ..files.clone() };
    assert!(on.server_warnings("tls").is_empty());
    let off = TlsConfig { enabled: Some(false), ..files };
    assert!(off.server_warnings("tls").is_empty(), "an explicit `false` is a choice");
}
