//! What `top` shows per component, from two ledger snapshots (`GET /ledger`) taken
//! `elapsed` apart: rates from the counters' growth, the rest as it is now.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

/// One component's line.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub kind: String,
    #[serde(rename = "type")]
    pub component_type: String,
    /// Events per second in (received) and out (sent: passed on, or delivered by a sink).
    pub events_in_per_sec: f64,
    pub events_out_per_sec: f64,
    /// Bytes per second read from outside (sources) and delivered (sinks), as Vector's
    /// `component_received_bytes_total` and `component_sent_bytes_total` grow.
    pub bytes_in_per_sec: f64,
    pub bytes_out_per_sec: f64,
    pub received: u64,
    pub sent: u64,
    /// Events failed for good (`errored`), and errors by type (retries among them).
    pub errored: u64,
    pub errors: BTreeMap<String, u64>,
    pub discarded: BTreeMap<String, u64>,
    pub dead_lettered: BTreeMap<String, u64>,
    /// Sinks: the buffer's fill, 0 to 1, and in words (`120/500 events`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_fill: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer: Option<String>,
    /// Sinks: events in the disk buffer and the disk DLQ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_on_disk_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_events: Option<u64>,
    pub stalled: bool,
    pub balanced: bool,
}

impl Row {
    pub fn errors_total(&self) -> u64 {
        self.errored + self.errors.values().sum::<u64>()
    }

    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.values().sum()
    }
}

fn counts(value: &Value) -> BTreeMap<String, u64> {
    value
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n))).collect())
        .unwrap_or_default()
}

/// Rows in graph order. Rates are 0 without a previous snapshot.
pub fn rows(previous: Option<&Value>, now: &Value, elapsed: Duration) -> Vec<Row> {
    let before: BTreeMap<&str, &Value> = previous
        .and_then(|p| p["components"].as_array())
        .map(|cs| cs.iter().filter_map(|c| c["id"].as_str().map(|id| (id, c))).collect())
        .unwrap_or_default();
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |c: &Value, field: &str| -> f64 {
        let id = c["id"].as_str().unwrap_or_default();
        match before.get(id) {
            Some(b) => c[field].as_u64().unwrap_or(0).saturating_sub(b[field].as_u64().unwrap_or(0)) as f64 / secs,
            None => 0.0,
        }
    };
    let components = now["components"].as_array().cloned().unwrap_or_default();
    components
        .iter()
        .map(|c| {
            let number = |field: &str| c[field].as_u64();
            let (buffer_fill, buffer) = match (number("buffer_events"), number("buffer_max_events")) {
                (Some(n), Some(max)) if max > 0 => (Some(n as f64 / max as f64), Some(format!("{n}/{max} events"))),
                _ => match (number("buffer_bytes"), number("buffer_max_bytes")) {
                    (Some(n), Some(max)) if max > 0 => {
                        (Some(n as f64 / max as f64), Some(format!("{}/{}", bytes(n), bytes(max))))
                    }
                    (Some(n), _) => (None, Some(bytes(n))),
                    _ => (None, number("buffer_events").map(|n| format!("{n} events"))),
                },
            };
            Row {
                id: c["id"].as_str().unwrap_or_default().to_owned(),
                kind: c["kind"].as_str().unwrap_or_default().to_owned(),
                component_type: c["type"].as_str().unwrap_or_default().to_owned(),
                events_in_per_sec: rate(c, "received"),
                events_out_per_sec: rate(c, "sent"),
                bytes_in_per_sec: rate(c, "received_bytes"),
                bytes_out_per_sec: rate(c, "sent_bytes"),
                received: number("received").unwrap_or(0),
                sent: number("sent").unwrap_or(0),
                errored: number("errored").unwrap_or(0),
                errors: counts(&c["errors"]),
                discarded: counts(&c["discarded"]),
                dead_lettered: counts(&c["dead_lettered_by_reason"]),
                buffer_fill,
                buffer,
                buffer_on_disk_events: number("buffer_on_disk_events"),
                dead_letter_queue_events: number("dead_letter_queue_events"),
                stalled: c["stalled"].as_bool().unwrap_or(false),
                balanced: c["balanced"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `reason: n, reason: n` (empty when there are none).
pub fn by_reason(counts: &BTreeMap<String, u64>) -> String {
    counts.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")
}

/// How rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// The config's order.
    Graph,
    Id,
    In,
    Out,
    Errors,
    DeadLettered,
}

impl SortBy {
    pub fn next(self) -> Self {
        match self {
            Self::Graph => Self::Id,
            Self::Id => Self::In,
            Self::In => Self::Out,
            Self::Out => Self::Errors,
            Self::Errors => Self::DeadLettered,
            Self::DeadLettered => Self::Graph,
        }
    }

    pub fn apply(self, rows: &mut [Row]) {
        match self {
            Self::Graph => {}
            Self::Id => rows.sort_by(|a, b| a.id.cmp(&b.id)),
            Self::In => rows.sort_by(|a, b| b.events_in_per_sec.total_cmp(&a.events_in_per_sec)),
            Self::Out => rows.sort_by(|a, b| b.events_out_per_sec.total_cmp(&a.events_out_per_sec)),
            Self::Errors => rows.sort_by_key(|r| std::cmp::Reverse(r.errors_total())),
            Self::DeadLettered => rows.sort_by_key(|r| std::cmp::Reverse(r.dead_lettered_total())),
        }
    }
}

/// Whether `id` matches the filter: a glob with `*`, else a substring.
pub fn matches(filter: &str, id: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    if !filter.contains('*') {
        return id.contains(filter);
    }
    sluice_runtime::config::glob_match(filter, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_counters_growth() {
        let before = serde_json::json!({"components": [{"id": "a", "received": 100, "sent": 50, "sent_bytes": 1000}]});
        let now = serde_json::json!({"components": [
            {"id": "a", "kind": "sink", "type": "http", "received": 300, "sent": 90, "errored": 1,
             "errors": {"http_status": 4}, "dead_lettered_by_reason": {"permanent": 7},
             "buffer_events": 25, "buffer_max_events": 100, "stalled": true, "balanced": true,
             "sent_bytes": 5000},
            {"id": "b", "received": 10}
        ]});
        let rows = rows(Some(&before), &now, Duration::from_secs(2));
        assert_eq!(rows[0].events_in_per_sec, 100.0);
        assert_eq!(rows[0].events_out_per_sec, 20.0);
        assert_eq!(rows[0].bytes_out_per_sec, 2000.0);
        assert_eq!(rows[0].errors_total(), 5);
        assert_eq!(rows[0].dead_lettered_total(), 7);
        assert_eq!(rows[0].buffer_fill, Some(0.25));
        assert!(rows[0].stalled);
        assert_eq!(rows[1].events_in_per_sec, 0.0, "no earlier sample");
    }

    #[test]
    fn filters_are_globs_or_substrings() {
        assert!(matches("", "x"));
        assert!(matches("api", "datadog_api_sink"));
        assert!(matches("s3_*", "s3_archive"));
        assert!(matches("*_dlq", "s3_dlq"));
        assert!(!matches("s3_*", "gcs_archive"));
        assert!(matches("a*b*c", "a1b2c"));
    }
}
