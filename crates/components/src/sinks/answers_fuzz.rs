//! Property tests of the API sinks' answer readers: whatever a destination (or something in
//! between) answers, reading it never panics, and an answer that cannot be read is never
//! taken as delivered.

use proptest::prelude::*;

use super::clickhouse::read_answer as clickhouse_answer;
use super::driver::{CallResult, ItemResult};
use super::elasticsearch::read_bulk;
use super::loki::refused_in_one_stream as loki_refused;

/// Bodies shaped like the real ones, with bytes changed, cut or inserted.
/// The real answer with a few edits.
fn mangled(real: &'static str) -> impl Strategy<Value = Vec<u8>> {
    sluice_fuzz::mutated(vec![real.as_bytes().to_vec()], 4)
}

const BULK: &str = r#"{"took":3,"errors":true,"items":[{"index":{"_index":"logs","status":201}},{"create":{"_index":"logs","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse","caused_by":{"reason":"bad"}}}},{"index":{"status":429,"error":"rejected"}}]}"#;
const LOKI: &str = "entry with timestamp 2026-12-02 08:00:00.25 +0000 UTC ignored, reason: 'entry out of order',\nuser 'fake', total ignored: 1 out of 2 for stream: {app=\"web\"}";
const CLICKHOUSE: &str =
    "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected , before: x (at row 1)";

proptest! {
    #![proptest_config(sluice_fuzz::config(2000))]

    #[test]
    fn any_bulk_answer_is_read_without_panicking(body in prop_oneof![mangled(BULK), proptest::collection::vec(any::<u8>(), 0..300)]) {
        match read_bulk(&body, true) {
            CallResult::Delivered => {
                // Only a JSON object whose `errors` is false says so.
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                prop_assert_eq!(value.get("errors"), Some(&serde_json::Value::Bool(false)));
            }
            CallResult::PerItem(items) => {
                let discarded = items.iter().any(|i| matches!(i, ItemResult::Discarded { .. }));
                prop_assert!(!discarded, "a bulk answer never discards");
            }
            _ => {}
        }
    }

    #[test]
    fn any_loki_refusal_is_read_without_panicking(body in prop_oneof![mangled(LOKI), ".{0,300}".prop_map(String::into_bytes)]) {
        let text = String::from_utf8_lossy(&body);
        let mut results = vec![ItemResult::Delivered; 2];
        let base = 1_796_198_400_000_000_000_i64;
        if loki_refused(&text, &[base + 250_000_000, base + 1_000_000_000], &mut results).is_some() {
            // A matched answer refuses at least one entry.
            let refused = results.iter().any(|r| matches!(r, ItemResult::Permanent { .. }));
            prop_assert!(refused, "a matched answer refuses an entry");
        }
    }

    #[test]
    fn any_clickhouse_error_is_read_without_panicking(body in prop_oneof![mangled(CLICKHOUSE), proptest::collection::vec(any::<u8>(), 0..300)]) {
        let result = clickhouse_answer(http::StatusCode::INTERNAL_SERVER_ERROR, &http::HeaderMap::new(), &body);
        prop_assert!(result != CallResult::Delivered, "an error status is never delivered");
    }
}
