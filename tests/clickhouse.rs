//! `clickhouse` through the binary against a real ClickHouse server (`common::clickhouse`):
//! rows counted with `SELECT count()`, rows ClickHouse cannot parse isolated into the DLQ,
//! and errors about the table or the credentials dead-lettering a batch in one step.

mod common;

use std::collections::BTreeSet;

use common::clickhouse::{ClickHouse, PASSWORD, USER};
use common::{Case, component};

const TABLE: &str =
    "CREATE TABLE default.logs (timestamp DateTime, n UInt64, message String) ENGINE = MergeTree ORDER BY n";

fn ch_config(ch: &ClickHouse, extra: &str) -> String {
    format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"

[sinks.ch]
type = "clickhouse"
inputs = ["in"]
endpoint = "{url}"
table = "logs"
skip_unknown_fields = true
date_time_best_effort = true
auth.strategy = "basic"
auth.user = "{USER}"
batch.timeout_secs = 0.5
request.retry_initial_backoff_secs = 0.1
{extra}
"#,
        url = ch.url()
    )
}

#[test]
fn a_hundred_thousand_rows_land_and_exactly_the_three_unparsable_ones_are_dead_lettered() {
    let ch = ClickHouse::start();
    ch.query(TABLE);
    let case = Case::new();
    let config = case.config(&ch_config(&ch, &format!("auth.password = \"{PASSWORD}\"")));
    let bad: BTreeSet<u64> = [17, 50_000, 99_999].into();
    let input: String = (0..100_003u64)
        .map(|n| {
            let ts = if bad.contains(&n) { "the day before yesterday" } else { "2026-12-02T08:00:00Z" };
            format!("{{\"timestamp\":\"{ts}\",\"n\":{n},\"message\":\"row {n}\",\"not_a_column\":1}}\n")
        })
        .collect();
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(ch.query("SELECT count() FROM default.logs").trim(), "100000");
    assert_eq!(ch.query("SELECT uniqExact(n) FROM default.logs").trim(), "100000", "no row twice");
    let dlq = common::files::dead_letters(&case.path("data"), "ch");
    let dead: BTreeSet<u64> = dlq.iter().filter_map(|r| r["event"]["n"].as_u64()).collect();
    assert_eq!(dead, bad, "exactly the unparsable rows");
    assert_eq!(dlq.len(), 3);
    for record in &dlq {
        let message = record["message"].as_str().unwrap_or_default();
        assert!(message.contains("Code: 41") && message.contains("DateTime"), "{message}");
    }
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "ch")["sent"], 100_000);
    assert_eq!(component(&ledger, "ch")["dead_lettered"], 3);
}

#[test]
fn a_wrong_password_or_a_missing_table_dead_letters_the_batch_in_one_request() {
    let ch = ClickHouse::start();
    ch.query(TABLE);
    for (extra, expect) in [
        ("auth.password = \"wrong\"".to_owned(), "193"),
        (format!("auth.password = \"{PASSWORD}\"\ntable = \"missing\""), "60"),
    ] {
        let case = Case::new();
        let text = ch_config(&ch, &extra);
        let text = if extra.contains("table =") { text.replacen("table = \"logs\"\n", "", 1) } else { text };
        let config = case.config(&text);
        let input: String = (0..500)
            .map(|n| format!("{{\"timestamp\":\"2026-12-02 08:00:00\",\"n\":{n},\"message\":\"m\"}}\n"))
            .collect();
        let output = case.run_with_stdin(&config, input.as_bytes());
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let dlq = common::files::dead_letters(&case.path("data"), "ch");
        assert_eq!(dlq.len(), 500);
        let message = dlq[0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("Code: {expect}")), "{message}");
        let ledger = case.ledger();
        common::assert_ledger_balanced(&ledger);
        let errors = &component(&ledger, "ch")["errors"];
        assert_eq!(errors["destination_error/sending"], 1, "one request, not split: {errors}");
        assert!(errors.get("batch_split/sending").is_none(), "{errors}");
    }
    assert_eq!(ch.query("SELECT count() FROM default.logs").trim(), "0");
}

#[test]
fn a_table_template_sends_each_event_to_its_table() {
    let ch = ClickHouse::start();
    for table in ["app_a", "app_b"] {
        ch.query(&format!("CREATE TABLE default.{table} (n UInt64, app String) ENGINE = MergeTree ORDER BY n"));
    }
    let case = Case::new();
    let text = ch_config(
        &ch,
        &format!("auth.password = \"{PASSWORD}\"\ntable = \"app_{{{{ app }}}}\"\ncompression = \"none\""),
    );
    let config = case.config(&text.replacen("table = \"logs\"\n", "", 1));
    let input: String =
        (0..300).map(|n| format!("{{\"n\":{n},\"app\":\"{}\"}}\n", if n % 3 == 0 { "a" } else { "b" })).collect();
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(ch.query("SELECT count() FROM default.app_a").trim(), "100");
    assert_eq!(ch.query("SELECT count() FROM default.app_b").trim(), "200");
    common::assert_ledger_balanced(&case.ledger());
}

/// The healthcheck runs `SELECT 1` with the sink's credentials, as Vector's: a wrong
/// password fails it, and `--require-healthy` then exits 78 before reading anything.
#[test]
fn the_healthcheck_asks_with_the_sinks_credentials() {
    let ch = ClickHouse::start();
    ch.query(TABLE);
    for (password, expected) in [(PASSWORD, 0), ("wrong", 78)] {
        let case = Case::new();
        let config = case.config(&ch_config(&ch, &format!("auth.password = \"{password}\"")));
        common::assert_healthcheck(&config, expected == 0, &format!("password {password}"));
    }
}
