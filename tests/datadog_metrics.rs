//! `log_to_metric` → `datadog_metrics` through the binary against the strict local Datadog
//! intake: the counts and sums Datadog receives equal those of the input logs (the
//! incident's "high-latency inferences to Datadog", done right), with counters summed,
//! distributions sent sample by sample, and the log's acknowledgement carried by its metrics.

mod common;

use common::datadog::Datadog;
use common::{Case, component};
use serde_json::Value;

const MODELS: usize = 3;

#[test]
fn counts_and_sums_received_equal_those_of_the_input_logs() {
    let dd = Datadog::start(&["metrics-key"]);
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"

[transforms.metrics]
type = "log_to_metric"
inputs = ["in"]

[[transforms.metrics.metrics]]
type = "counter"
field = "model"
name = "inferences"
namespace = "llm"
tags.model = "{{{{ model }}}}"

[[transforms.metrics.metrics]]
type = "counter"
field = "tokens"
increment_by_value = true
namespace = "llm"
tags.model = "{{{{ model }}}}"

[[transforms.metrics.metrics]]
type = "histogram"
field = "latency_ms"
namespace = "llm"
tags.model = "{{{{ model }}}}"
tags.host = "{{{{ host }}}}"

[[transforms.metrics.metrics]]
type = "gauge"
field = "queue_depth"
namespace = "llm"

[sinks.dd]
type = "datadog_metrics"
inputs = ["metrics"]
endpoint = "{url}"
default_api_key = "metrics-key"
batch.timeout_secs = 0.3
"#,
        url = dd.url()
    ));
    let mut counts = [0u64; MODELS];
    let mut tokens = [0u64; MODELS];
    let mut latency_sum = [0f64; MODELS];
    let mut input = String::new();
    for i in 0..6000usize {
        let model = i % MODELS;
        let latency = (i % 97) as f64 * 1.5 + 0.25;
        counts[model] += 1;
        tokens[model] += (i % 50) as u64;
        latency_sum[model] += latency;
        input.push_str(&format!(
            "{{\"model\":\"m{model}\",\"tokens\":{},\"latency_ms\":{latency},\"queue_depth\":{},\"host\":\"gpu-1\"}}\n",
            i % 50,
            i % 7
        ));
    }
    let output = case.run_with_stdin(&config, input.as_bytes());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let state = dd.state.lock().map(|s| (s.series.clone(), s.distributions.clone())).unwrap_or_default();
    let (series, distributions) = state;
    let series = series.get("metrics-key").cloned().unwrap_or_default();
    let tag_of = |s: &Value| -> Option<usize> {
        s["tags"].as_array()?.iter().find_map(|t| t.as_str()?.strip_prefix("model:m")?.parse().ok())
    };
    let mut got_counts = [0f64; MODELS];
    let mut got_tokens = [0f64; MODELS];
    for s in &series {
        let points: f64 = s["points"].as_array().map_or(0.0, |p| p.iter().filter_map(|p| p["value"].as_f64()).sum());
        match s["metric"].as_str() {
            Some("llm.inferences") => {
                assert_eq!(s["type"], 1, "a count: {s}");
                got_counts[tag_of(s).unwrap_or_else(|| panic!("{s}"))] += points;
            }
            Some("llm.tokens") => got_tokens[tag_of(s).unwrap_or_else(|| panic!("{s}"))] += points,
            Some("llm.queue_depth") => assert_eq!(s["type"], 3, "a gauge: {s}"),
            other => panic!("unexpected series {other:?}"),
        }
    }
    let mut got_samples = [0usize; MODELS];
    let mut got_latency = [0f64; MODELS];
    for s in distributions.get("metrics-key").cloned().unwrap_or_default() {
        assert_eq!(s["metric"], "llm.latency_ms");
        assert_eq!(s["host"], "gpu-1", "the host tag is the series' host");
        let model = tag_of(&s).unwrap_or_else(|| panic!("{s}"));
        for point in s["points"].as_array().cloned().unwrap_or_default() {
            let values = point[1].as_array().cloned().unwrap_or_default();
            got_samples[model] += values.len();
            got_latency[model] += values.iter().filter_map(Value::as_f64).sum::<f64>();
        }
    }
    for m in 0..MODELS {
        assert_eq!(got_counts[m], counts[m] as f64, "model {m}: inferences");
        assert_eq!(got_tokens[m], tokens[m] as f64, "model {m}: tokens");
        assert_eq!(got_samples[m] as u64, counts[m], "model {m}: every latency sample");
        assert!((got_latency[m] - latency_sum[m]).abs() < 1e-6, "model {m}: {} vs {}", got_latency[m], latency_sum[m]);
    }
    assert!(series.len() < 6000, "series are aggregated, not one per event: {}", series.len());

    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "dd")["sent"], 6000 * 4, "four metrics per log, each delivered");
    assert_eq!(component(&ledger, "metrics")["received"], 6000 * 4, "extra metrics of a log count as received");
}

/// An absolute counter's first value is the baseline of the next change (as in Vector): its
/// events are not sent, and are counted as discarded (`counter_baseline`), not as delivered.
#[test]
fn the_first_value_of_an_absolute_counter_is_counted_as_its_baseline() {
    let dd = Datadog::start(&["metrics-key"]);
    let case = Case::new();
    let config = case.config(&format!(
        r#"
data_dir = "{{dir}}/data"
[sources.in]
type = "stdin"
decoding.codec = "json"

[transforms.metrics]
type = "log_to_metric"
inputs = ["in"]

[[transforms.metrics.metrics]]
type = "counter"
field = "requests_total"
increment_by_value = true
kind = "absolute"

[sinks.dd]
type = "datadog_metrics"
inputs = ["metrics"]
endpoint = "{url}"
default_api_key = "metrics-key"
"#,
        url = dd.url()
    ));
    let output = case.run_with_stdin(&config, b"{\"requests_total\":10}\n{\"requests_total\":25}\n");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let ledger = case.ledger();
    common::assert_ledger_balanced(&ledger);
    assert_eq!(component(&ledger, "dd")["discarded"]["counter_baseline"], 2);
    assert_eq!(component(&ledger, "dd")["sent"], 0);
    assert!(dd.state.lock().map(|s| s.series.is_empty()).unwrap_or(false), "nothing sent for a baseline");
}
