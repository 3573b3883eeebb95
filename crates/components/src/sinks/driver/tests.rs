//! Driver tests with a scripted service; timing runs under paused tokio time.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::future::BoxFuture;
use sluice_core::ack::{BatchNotifier, EventFinalizer, Outcome};
use sluice_core::component::{ChunkReceiver, GlobalOptions, SinkContext, SinkInput};
use sluice_core::dead_letter::{DeadLetterQueue, DeadLetterReason, Failure};
use sluice_core::event::{EventMetadata, LegacyTemplate, resolve_all};
use sluice_core::ledger::{ComponentKind, ComponentLedger};
use sluice_core::{Chunk, LogEvent};
use tokio::sync::mpsc;

use super::*;

#[derive(Default)]
struct Dlq {
    got: Mutex<Vec<(String, Failure)>>,
    ledger: Mutex<Option<Arc<ComponentLedger>>>,
}

impl DeadLetterQueue for Dlq {
    fn submit(&self, events: Vec<LogEvent>, failure: Failure) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let n = events.len();
            if let Ok(mut got) = self.got.lock() {
                for e in &events {
                    let message = e.get("message").map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
                    got.push((message, failure.clone()));
                }
            }
            resolve_all(events, Outcome::Stored);
            if let Some(ledger) = self.ledger.lock().ok().and_then(|l| l.clone()) {
                ledger.dead_lettered(n, failure.reason.as_str());
            }
        })
    }
}

struct Receiver(mpsc::Receiver<Chunk>);

impl ChunkReceiver for Receiver {
    fn recv(&mut self) -> BoxFuture<'_, Option<Chunk>> {
        Box::pin(self.0.recv())
    }
}

/// Rejects (403) any request holding a poison event; counts requests.
struct Picky {
    calls: AtomicUsize,
}

impl Service for Picky {
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let message = event.get("message").map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
        buf.extend_from_slice(message.as_bytes());
        Ok(())
    }
    fn call<'a>(&'a self, _key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let poisoned = batch.items().any(|i| i.starts_with(b"poison"));
        Box::pin(async move {
            if poisoned {
                CallResult::Permanent { status: Some(403), message: "forbidden tenant".into() }
            } else {
                CallResult::Delivered
            }
        })
    }
}

/// Fails with 503 until `ok_after` calls, optionally with a Retry-After hint.
struct Flaky {
    calls: AtomicUsize,
    ok_after: usize,
    retry_after: Option<Duration>,
}

impl Service for Flaky {
    fn encode(&self, _event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        buf.push(b'x');
        Ok(())
    }
    fn call<'a>(&'a self, _key: &'a PartitionKey, _batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let result = if n > self.ok_after {
            CallResult::Delivered
        } else {
            CallResult::Retriable {
                status: Some(503),
                message: "unavailable".into(),
                retry_after: self.retry_after,
                error_type: "http_status",
            }
        };
        Box::pin(async move { result })
    }
}

struct Harness {
    ledger: Arc<ComponentLedger>,
    dlq: Arc<Dlq>,
    cx: Option<SinkContext>,
}

fn harness() -> Harness {
    let ledger = Arc::new(ComponentLedger::new("out", ComponentKind::Sink, "test"));
    let dlq = Arc::new(Dlq::default());
    if let Ok(mut l) = dlq.ledger.lock() {
        *l = Some(ledger.clone());
    }
    let cx = SinkContext {
        id: Arc::from("out"),
        ledger: ledger.clone(),
        globals: Arc::new(GlobalOptions::default()),
        dead_letter: dlq.clone(),
        shutdown: sluice_core::shutdown::ShutdownSignal::never(),
        drain_limit: Duration::from_secs(60),
        disk_backed: false,
        healthcheck_uri: None,
    };
    Harness { ledger, dlq, cx: Some(cx) }
}

fn events(messages: &[String], finalizer: EventFinalizer) -> Chunk {
    let mut template = LegacyTemplate::new("test", None, EventMetadata::new("in", chrono::Utc::now()));
    template.set_finalizer(finalizer);
    let chunk = messages.iter().map(|m| template.event(Bytes::from(m.clone()))).collect();
    template.set_finalizer(EventFinalizer::default());
    chunk
}

fn settings(max_events: usize) -> DriverSettings {
    DriverSettings {
        max_events,
        max_bytes: usize::MAX,
        batch_timeout: Duration::from_secs(1),
        concurrency: ConcurrencyLimit::Fixed(1),
        rate_limit: None,
        request_timeout: Duration::from_secs(60),
        retry: RetryPolicy::default(),
        flush_when_idle: false,
    }
}

async fn drive<S: Service>(service: S, settings: DriverSettings, h: &mut Harness, chunk: Chunk) {
    let (tx, rx) = mpsc::channel(4);
    h.ledger.accept(chunk.len());
    let _ = tx.send(chunk).await;
    drop(tx);
    let cx = h.cx.take().unwrap_or_else(|| panic!("harness used twice"));
    run(service, settings, cx, SinkInput::new(Box::new(Receiver(rx)))).await;
}

#[tokio::test]
async fn splitting_isolates_three_poison_events_in_a_batch_of_1000() {
    let mut h = harness();
    let messages: Vec<String> = (0..1000)
        .map(|i| if [17, 500, 977].contains(&i) { format!("poison {i}") } else { format!("ok {i}") })
        .collect();
    let (notifier, mut outcome) = BatchNotifier::with_receiver();
    let chunk = events(&messages, EventFinalizer::new(notifier));
    let service = Arc::new(Picky { calls: AtomicUsize::new(0) });
    let picky = PickyRef(service.clone());
    drive(picky, settings(1000), &mut h, chunk).await;
    let snapshot = h.ledger.snapshot();
    assert_eq!(snapshot.sent, 997);
    assert_eq!(snapshot.dead_lettered, 3);
    assert!(snapshot.balanced);
    let got = h.dlq.got.lock().map(|g| g.clone()).unwrap_or_default();
    let mut poisoned: Vec<&str> = got.iter().map(|(m, _)| m.as_str()).collect();
    poisoned.sort();
    assert_eq!(poisoned, vec!["poison 17", "poison 500", "poison 977"]);
    assert!(got.iter().all(|(_, f)| f.status == Some(403) && f.reason == DeadLetterReason::Permanent));
    let calls = service.calls.load(Ordering::Relaxed);
    println!("requests for 1000 events with 3 poison: {calls}");
    // k·log2(N) splits, two requests per split level: 3 · 2 · 10 = 60, plus the first.
    assert!(calls <= 61, "{calls} requests");
    assert_eq!(outcome.wait().await, Outcome::Stored, "the source learns its events are safe");
}

struct PickyRef(Arc<Picky>);

impl Service for PickyRef {
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        self.0.encode(event, buf)
    }
    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        self.0.call(key, batch)
    }
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_always_answers_503_dead_letters_at_the_deadline() {
    let mut h = harness();
    let (notifier, mut outcome) = BatchNotifier::with_receiver();
    let messages: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let chunk = events(&messages, EventFinalizer::new(notifier));
    let started = tokio::time::Instant::now();
    let service = Flaky { calls: AtomicUsize::new(0), ok_after: usize::MAX, retry_after: None };
    drive(service, settings(10), &mut h, chunk).await;
    let elapsed = started.elapsed();
    assert!(elapsed <= Duration::from_secs(601), "gave up after {elapsed:?}");
    assert!(elapsed >= Duration::from_secs(60), "kept trying for a while: {elapsed:?}");
    let got = h.dlq.got.lock().map(|g| g.clone()).unwrap_or_default();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|(_, f)| f.reason == DeadLetterReason::RetriesExhausted && f.attempts > 5));
    assert_eq!(outcome.wait().await, Outcome::Stored, "acknowledged as stored, not failed");
    assert!(h.ledger.snapshot().balanced);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_the_batch_then_delivers() {
    let mut h = harness();
    let started = tokio::time::Instant::now();
    let service = Flaky { calls: AtomicUsize::new(0), ok_after: 2, retry_after: Some(Duration::from_secs(45)) };
    drive(service, settings(5), &mut h, events(&["a".into(), "b".into()], EventFinalizer::default())).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(90), "waited twice for Retry-After: {elapsed:?}");
    assert_eq!(h.ledger.snapshot().sent, 2);
}

#[tokio::test(start_paused = true)]
async fn batches_close_on_size_and_on_timeout() {
    let mut h = harness();
    let messages: Vec<String> = (0..25).map(|i| format!("e{i}")).collect();
    let service = Arc::new(Picky { calls: AtomicUsize::new(0) });
    drive(PickyRef(service.clone()), settings(10), &mut h, events(&messages, EventFinalizer::default())).await;
    assert_eq!(service.calls.load(Ordering::Relaxed), 3, "10 + 10 + 5");
    assert_eq!(h.ledger.snapshot().sent, 25);
}

/// Takes 100 ms per request; records each request's size.
#[derive(Default)]
struct Slow {
    sizes: Mutex<Vec<usize>>,
}

impl Service for Arc<Slow> {
    fn encode(&self, _event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        buf.push(b'x');
        Ok(())
    }
    fn call<'a>(&'a self, _key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        if let Ok(mut sizes) = self.sizes.lock() {
            sizes.push(batch.items().count());
        }
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            CallResult::Delivered
        })
    }
}

/// Feeds one-event chunks at `at` (offsets from the start) into a driver whose input stays
/// open; returns when each event was acknowledged, and the requests' sizes.
async fn acknowledged_at(flush_when_idle: bool, at: &[u64]) -> (Vec<Duration>, Vec<usize>) {
    let mut h = harness();
    let settings = DriverSettings {
        batch_timeout: Duration::from_secs(60),
        concurrency: ConcurrencyLimit::Fixed(4),
        flush_when_idle,
        ..settings(1000)
    };
    let service = Arc::new(Slow::default());
    let (tx, rx) = mpsc::channel(16);
    let cx = h.cx.take().unwrap_or_else(|| panic!("harness used twice"));
    let sink = tokio::spawn(run(service.clone(), settings, cx, SinkInput::new(Box::new(Receiver(rx)))));
    let started = tokio::time::Instant::now();
    let mut waits = Vec::new();
    for (i, ms) in at.iter().enumerate() {
        tokio::time::sleep_until(started + Duration::from_millis(*ms)).await;
        let (notifier, mut outcome) = BatchNotifier::with_receiver();
        h.ledger.accept(1);
        let _ = tx.send(events(&[format!("e{i}")], EventFinalizer::new(notifier))).await;
        waits.push(tokio::spawn(async move {
            let _ = outcome.wait().await;
            started.elapsed()
        }));
    }
    let mut acknowledged = Vec::new();
    for wait in waits {
        acknowledged.push(wait.await.unwrap_or_default());
    }
    drop(tx);
    let _ = sink.await;
    let sizes = service.sizes.lock().map(|s| s.clone()).unwrap_or_default();
    (acknowledged, sizes)
}

#[tokio::test(start_paused = true)]
async fn an_idle_sink_sends_at_once_instead_of_waiting_for_the_batch_timeout() {
    let (acknowledged, sizes) = acknowledged_at(true, &[0]).await;
    assert_eq!(acknowledged, [Duration::from_millis(100)], "one request's time, not the 60 s timeout");
    assert_eq!(sizes, [1]);
    // Without it, the batch waits for its timeout (what the test above would catch).
    let (acknowledged, _) = acknowledged_at(false, &[0]).await;
    assert!(acknowledged[0] >= Duration::from_secs(60), "{acknowledged:?}");
}

#[tokio::test(start_paused = true)]
async fn events_arriving_while_a_request_is_in_flight_gather_into_the_next_batch() {
    let (acknowledged, sizes) = acknowledged_at(true, &[0, 10, 20, 30]).await;
    assert_eq!(sizes, [1, 3], "the first goes alone; the others wait for it and go together");
    let ms: Vec<u128> = acknowledged.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [100, 200, 200, 200], "no event waits for the batch timeout");
}

#[test]
fn encoded_batches_split_at_event_boundaries() {
    let mut batch = EncodedBatch::default();
    for item in [&b"aa"[..], b"b", b"cccc"] {
        batch.buf.extend_from_slice(item);
        batch.ends.push(batch.buf.len());
    }
    let tail = batch.split_off(1);
    assert_eq!(batch.items().collect::<Vec<_>>(), vec![&b"aa"[..]]);
    assert_eq!(tail.items().collect::<Vec<_>>(), vec![&b"b"[..], b"cccc"]);
}

/// A bulk API: rejects `bad` items for good, throttles `slow` items on the first try only, and
/// records every item it accepted.
#[derive(Default)]
struct Bulk {
    calls: AtomicUsize,
    accepted: Mutex<Vec<String>>,
}

impl Service for Arc<Bulk> {
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        let message = event.get("message").map(|m| m.to_string_lossy().into_owned()).unwrap_or_default();
        buf.extend_from_slice(message.as_bytes());
        Ok(())
    }
    fn call<'a>(&'a self, _key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        let first = self.calls.fetch_add(1, Ordering::Relaxed) == 0;
        let mut results = Vec::new();
        for item in batch.items() {
            let text = String::from_utf8_lossy(item).into_owned();
            results.push(if text.starts_with("bad") {
                ItemResult::Permanent { status: Some(400), message: format!("mapper_parsing_exception in {text}") }
            } else if text.starts_with("slow") && first {
                ItemResult::Retriable { status: Some(429), message: "es_rejected_execution_exception".into() }
            } else {
                if let Ok(mut accepted) = self.accepted.lock() {
                    accepted.push(text);
                }
                ItemResult::Delivered
            });
        }
        Box::pin(async move { CallResult::PerItem(results) })
    }
}

#[tokio::test(start_paused = true)]
async fn per_item_results_deliver_retry_and_dead_letter_each_event_by_itself() {
    let mut h = harness();
    let messages: Vec<String> = (0..100)
        .map(|i| match i % 25 {
            3 => format!("bad {i}"),
            7 => format!("slow {i}"),
            _ => format!("ok {i}"),
        })
        .collect();
    let (notifier, mut outcome) = BatchNotifier::with_receiver();
    let service = Arc::new(Bulk::default());
    drive(service.clone(), settings(100), &mut h, events(&messages, EventFinalizer::new(notifier))).await;
    assert_eq!(service.calls.load(Ordering::Relaxed), 2, "one bulk request, one retry of the throttled items");
    let accepted = service.accepted.lock().map(|a| a.clone()).unwrap_or_default();
    assert_eq!(accepted.len(), 96, "every ok and slow event, once");
    assert_eq!(accepted.iter().filter(|a| a.starts_with("slow")).count(), 4);
    let got = h.dlq.got.lock().map(|g| g.clone()).unwrap_or_default();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|(m, f)| m.starts_with("bad") && f.status == Some(400) && f.message.contains(m.as_str())));
    let snapshot = h.ledger.snapshot();
    assert_eq!((snapshot.sent, snapshot.dead_lettered), (96, 4));
    assert!(snapshot.balanced);
    assert_eq!(outcome.wait().await, Outcome::Stored);
}

/// Answers every request as a missing destination; counts requests.
struct Gone {
    calls: Arc<AtomicUsize>,
}

impl Service for Gone {
    fn encode(&self, _event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String> {
        buf.push(b'x');
        Ok(())
    }
    fn call<'a>(&'a self, _key: &'a PartitionKey, _batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { CallResult::DestinationError { status: Some(404), message: "NoSuchBucket".into() } })
    }
}

#[tokio::test]
async fn a_destination_error_dead_letters_the_whole_batch_in_one_request() {
    let mut h = harness();
    let messages: Vec<String> = (0..1000).map(|i| format!("e{i}")).collect();
    let (notifier, mut outcome) = BatchNotifier::with_receiver();
    let chunk = events(&messages, EventFinalizer::new(notifier));
    let calls = Arc::new(AtomicUsize::new(0));
    drive(Gone { calls: calls.clone() }, settings(1000), &mut h, chunk).await;
    assert_eq!(calls.load(Ordering::Relaxed), 1, "no splitting for an error about the destination");
    let snapshot = h.ledger.snapshot();
    assert_eq!(snapshot.dead_lettered, 1000);
    assert!(snapshot.balanced);
    let got = h.dlq.got.lock().map(|g| g.clone()).unwrap_or_default();
    assert!(got.iter().all(|(_, f)| f.message.contains("NoSuchBucket") && f.reason == DeadLetterReason::Permanent));
    assert_eq!(outcome.wait().await, Outcome::Stored);
}
