//! HTTP proxies through the binary: the `proxy` block and the `HTTP(S)_PROXY`/`NO_PROXY`
//! variables, with a forward proxy that records what it carried.

mod common;

use common::forward_proxy::ForwardProxy;
use common::intake::Intake;
use common::{Case, component};
use sluice_net::TlsConfig;
use sluice_net::test_pki::TestPki;

fn lines(n: usize) -> Vec<u8> {
    (0..n).map(|i| format!("event {i}\n")).collect::<String>().into_bytes()
}

fn http_sink(uri: &str, extra: &str) -> String {
    format!(
        "data_dir = \"{{dir}}/data\"\n[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"http\"\ninputs = [\"in\"]\nuri = \"{uri}\"\nencoding.codec = \"text\"\nbatch.max_events = 25\n{extra}\n"
    )
}

fn run(case: &Case, config: &std::path::Path, env: &[(&str, String)], input: &[u8]) {
    let mut command = common::sluice();
    for var in
        ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy"]
    {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = common::run_sluice(command, config, Some(&case.path("ledger.json")), input);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "out")["sent"], 100);
}

#[test]
fn plain_http_goes_through_the_proxy_in_absolute_form_with_its_credentials() {
    let intake = Intake::start(|_, _, _| 200);
    let proxy = ForwardProxy::start();
    let case = Case::new();
    let uri = format!("http://127.0.0.1:{}/ingest", intake.port);
    let config =
        case.config(&http_sink(&uri, &format!("proxy.http = \"http://user:secret@127.0.0.1:{}\"", proxy.port)));
    run(&case, &config, &[], &lines(100));
    assert_eq!(intake.accepted_lines().len(), 100);
    let seen = proxy.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 4, "four batches of 25: {seen:?}");
    for (line, auth, _) in &seen {
        assert!(line.starts_with(&format!("POST {uri} HTTP/1.1")), "absolute form: {line}");
        assert_eq!(auth.as_deref(), Some("Basic dXNlcjpzZWNyZXQ="), "the proxy's credentials");
    }
}

#[test]
fn https_goes_through_a_connect_tunnel_named_by_https_proxy() {
    let case = Case::new();
    let pki = TestPki::new(case.dir.path(), "intake");
    let tls = TlsConfig {
        enabled: Some(true),
        crt_file: Some(pki.server_crt.display().to_string()),
        key_file: Some(pki.server_key.display().to_string()),
        ..TlsConfig::default()
    };
    let intake = Intake::start_tls(tls.server_config().unwrap_or_else(|e| panic!("{e}")), |_, _, _| 200);
    let proxy = ForwardProxy::start();
    let uri = format!("https://localhost:{}/ingest", intake.port);
    let config = case.config(&http_sink(&uri, &format!("tls.ca_file = \"{}\"", pki.ca.display())));
    run(&case, &config, &[("HTTPS_PROXY", format!("http://127.0.0.1:{}", proxy.port))], &lines(100));
    assert_eq!(intake.accepted_lines().len(), 100);
    let seen = proxy.lines();
    assert!(!seen.is_empty(), "the proxy carried the connection");
    assert!(seen.iter().all(|l| l.starts_with(&format!("CONNECT localhost:{} ", intake.port))), "{seen:?}");
}

#[test]
fn no_proxy_hosts_are_reached_directly() {
    let intake = Intake::start(|_, _, _| 200);
    let proxy = ForwardProxy::start();
    let case = Case::new();
    let uri = format!("http://127.0.0.1:{}/ingest", intake.port);
    let config = case.config(&http_sink(&uri, "proxy.no_proxy = [\"127.0.0.1\"]"));
    run(&case, &config, &[("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))], &lines(100));
    assert_eq!(intake.accepted_lines().len(), 100);
    assert!(proxy.lines().is_empty(), "{:?}", proxy.lines());
    let disabled = case.config(&http_sink(&uri, "proxy.enabled = false"));
    run(&case, &disabled, &[("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))], &lines(100));
    assert!(proxy.lines().is_empty(), "enabled = false ignores the environment too");
}

#[test]
fn the_top_level_proxy_applies_to_every_component() {
    let intake = Intake::start(|_, _, _| 200);
    let proxy = ForwardProxy::start();
    let case = Case::new();
    let uri = format!("http://127.0.0.1:{}/ingest", intake.port);
    let config = case.config(&format!("proxy.http = \"http://127.0.0.1:{}\"\n{}", proxy.port, http_sink(&uri, "")));
    run(&case, &config, &[], &lines(100));
    assert_eq!(intake.accepted_lines().len(), 100);
    assert_eq!(proxy.lines().len(), 4, "every batch went through the top-level proxy");
}
