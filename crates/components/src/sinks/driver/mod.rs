//! The sink driver shared by every batching sink (G3 for all of them).
//!
//! A sink supplies a [`Service`]: how to encode one event and how to send a batch of encoded
//! events, classifying the result. The driver does the rest:
//! - batching by `batch.max_events`, `batch.max_bytes` and `batch.timeout_secs`; with
//!   `batch.flush_when_idle` (the default but for object stores) an open batch goes as soon
//!   as no request is in flight and no event is waiting, so acknowledgements never wait for
//!   the timer, while under load batches fill up behind the requests in flight;
//! - request concurrency (`request.concurrency`: a number, `none`, or `adaptive`) and
//!   back-pressure when every request slot is busy;
//! - bounded retries of retriable failures ([`retry::RetryPolicy`]);
//! - poison isolation: a batch of N > 1 events that fails permanently is split in two and each
//!   half sent again, recursively, so only the events that cause the failure reach the
//!   dead-letter queue (about k·log2(N) extra requests for k poison events); an error about
//!   the destination itself ([`CallResult::DestinationError`]: a missing bucket, denied
//!   access) is not split: the batch is dead-lettered in one step;
//! - every failed attempt is counted in `component_errors_total` under its `error_type`;
//! - settlement: delivered events resolve as `Delivered`; undeliverable ones go to the sink's
//!   dead-letter queue with their error, which resolves them.
//!
//! Invariant: every event the driver takes ends delivered or handed to the dead-letter queue.
//! At shutdown it does so within half the graceful limit: retries that would wait longer, and
//! requests still hanging then, are cut short and their events dead-lettered (stored, safe),
//! instead of being aborted at the limit and failed.

pub mod limits;
pub mod retry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use sluice_core::ack::{BatchFinalizers, Outcome};
use sluice_core::component::{SinkContext, SinkInput};
use sluice_core::dead_letter::{DeadLetterReason, Failure};
use sluice_core::event::resolve_all;
use sluice_core::{Chunk, LogEvent};
use tokio::task::JoinSet;

use self::limits::{AdaptiveSettings, RateLimit, Signal, Slots};
pub use retry::{JitterMode, RetryPolicy, RetryStrategy};

/// `batch` block.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events per batch. Default: the sink's.
    pub max_events: Option<usize>,
    /// Most encoded bytes per batch. Default: the sink's.
    pub max_bytes: Option<usize>,
    /// Seconds from a batch's first event until it is sent. Default: the sink's.
    pub timeout_secs: Option<f64>,
    /// sluice: send an open batch as soon as the sink has nothing else to do (no request in
    /// flight, no event waiting), instead of at `timeout_secs`. Under load batches still fill
    /// while requests are in flight. Default: true, false for object stores (whose objects
    /// should be large).
    pub flush_when_idle: Option<bool>,
}

/// `request` block (Vector's fields, plus `retry_deadline_secs`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestConfig {
    /// `"adaptive"` (default), `"none"` (one at a time), or a number of requests in flight.
    pub concurrency: Option<Concurrency>,
    /// Seconds before a request counts as timed out (retriable). Default 60.
    pub timeout_secs: Option<f64>,
    /// The window of `rate_limit_num`, in seconds. Default 1.
    pub rate_limit_duration_secs: Option<f64>,
    /// Most requests (retries included) per window. Default: unlimited.
    pub rate_limit_num: Option<u64>,
    /// Retries after the first try. Default: bounded only by `retry_deadline_secs`.
    pub retry_attempts: Option<u64>,
    /// First backoff in seconds. Default 1.
    pub retry_initial_backoff_secs: Option<f64>,
    /// Cap on one backoff in seconds. Default 30.
    pub retry_max_duration_secs: Option<f64>,
    /// `Full` (default) or `None`.
    pub retry_jitter_mode: Option<JitterMode>,
    /// sluice: seconds a batch may keep failing before its events are dead-lettered as
    /// `retries_exhausted`. Default 600.
    pub retry_deadline_secs: Option<f64>,
    pub adaptive_concurrency: Option<AdaptiveConcurrency>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Concurrency {
    Fixed(usize),
    Named(ConcurrencyName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyName {
    None,
    Adaptive,
}

/// `request.adaptive_concurrency` (Vector's fields and defaults).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConcurrency {
    pub initial_concurrency: Option<usize>,
    pub max_concurrency_limit: Option<usize>,
    pub decrease_ratio: Option<f64>,
    pub ewma_alpha: Option<f64>,
    pub rtt_deviation_scale: Option<f64>,
}

/// How many requests may be in flight.
#[derive(Debug, Clone, Copy)]
pub enum ConcurrencyLimit {
    Fixed(usize),
    Adaptive(AdaptiveSettings),
}

impl RequestConfig {
    fn secs(value: Option<f64>, default: f64) -> Duration {
        Duration::from_secs_f64(value.unwrap_or(default).max(0.0))
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.retry_attempts.unwrap_or(u64::MAX),
            initial_backoff: Self::secs(self.retry_initial_backoff_secs, 1.0),
            max_backoff: Self::secs(self.retry_max_duration_secs, 30.0),
            jitter: self.retry_jitter_mode.unwrap_or(JitterMode::Full),
            deadline: Self::secs(self.retry_deadline_secs, 600.0),
        }
    }

    pub fn concurrency(&self) -> ConcurrencyLimit {
        match self.concurrency {
            Some(Concurrency::Fixed(n)) => ConcurrencyLimit::Fixed(n.max(1)),
            Some(Concurrency::Named(ConcurrencyName::None)) => ConcurrencyLimit::Fixed(1),
            Some(Concurrency::Named(ConcurrencyName::Adaptive)) | None => {
                ConcurrencyLimit::Adaptive(AdaptiveSettings::new(self.adaptive_concurrency.as_ref()))
            }
        }
    }

    pub fn timeout(&self) -> Duration {
        Self::secs(self.timeout_secs, 60.0).max(Duration::from_millis(1))
    }
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallResult {
    Delivered,
    /// Try again later (timeouts, connection errors, 408, 429, most 5xx).
    Retriable {
        status: Option<u16>,
        message: String,
        retry_after: Option<Duration>,
        /// The `error_type` the failed attempt is counted under (`http_status`, `tls`,
        /// `connection_failed`, `request_failed`, `timeout`...).
        error_type: &'static str,
    },
    /// Never retried; split, then dead-lettered (other 4xx, 413): an error that can come
    /// from the events, so splitting finds the ones that cause it.
    Permanent {
        status: Option<u16>,
        message: String,
    },
    /// Never retried, and about the destination itself, not the events (a missing bucket,
    /// denied access, a bad key): no event of the batch can succeed, so the batch goes to the
    /// dead-letter queue whole, in one step, without splitting.
    DestinationError {
        status: Option<u16>,
        message: String,
    },
    /// The request went through but its events fared differently (bulk APIs): one result per
    /// event, in order. Delivered events settle, permanent ones are dead-lettered each with its
    /// own error, retriable ones are sent again as a smaller batch. A count that does not match
    /// the batch makes every event retriable.
    PerItem(Vec<ItemResult>),
}

impl CallResult {
    /// A request that got no answer (no connection, a failed handshake, a reset, no
    /// credentials): retriable, counted under `error_type`.
    pub fn no_answer(error: &impl std::fmt::Display, error_type: &'static str) -> Self {
        Self::Retriable { status: None, message: error.to_string(), retry_after: None, error_type }
    }
}

/// How one event of a request fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Delivered,
    Retriable {
        status: Option<u16>,
        message: String,
    },
    Permanent {
        status: Option<u16>,
        message: String,
    },
    /// Not sent, on purpose: a rule the user configured (loki's `out_of_order_action =
    /// "drop"`) or a value kept as a baseline (datadog_metrics' first absolute counter value).
    /// Resolved as discarded and counted under `reason`.
    Discarded {
        reason: &'static str,
    },
}

/// What events of one batch share (e.g. rendered header values, a per-tenant key). Events
/// with different keys never share a request.
pub type PartitionKey = Vec<String>;

/// What a sink supplies to the driver.
pub trait Service: Send + Sync + 'static {
    /// Appends the encoding of one event to `buf`.
    fn encode(&self, event: &LogEvent, buf: &mut Vec<u8>) -> Result<(), String>;
    /// The partition of an event. An error dead-letters the event (`encode_error`).
    fn partition(&self, _event: &LogEvent) -> Result<PartitionKey, String> {
        Ok(PartitionKey::new())
    }
    /// Sends one request holding `batch`'s events, in order, and classifies the result.
    fn call<'a>(&'a self, key: &'a PartitionKey, batch: &'a EncodedBatch) -> BoxFuture<'a, CallResult>;
    /// Whether a request that times out is retried (`retry_strategy = "none"` says no).
    fn retries_timeouts(&self) -> bool {
        true
    }
}

/// Encoded events of a batch: one buffer and where each event ends in it.
#[derive(Debug, Default, Clone)]
pub struct EncodedBatch {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl EncodedBatch {
    pub fn len(&self) -> usize {
        self.ends.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }
    /// Every event's encoding, one after the other.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }
    /// Each event's encoding, in order.
    pub fn items(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(s, e)| &self.buf[s..e])
    }
    fn split_off(&mut self, at: usize) -> Self {
        let cut = if at == 0 { 0 } else { self.ends[at - 1] };
        let buf = self.buf.split_off(cut);
        let ends = self.ends.split_off(at).into_iter().map(|e| e - cut).collect();
        Self { buf, ends }
    }
}

/// Events and their encodings, kept together so a batch can be split or dead-lettered.
#[derive(Debug, Default)]
pub struct Batch {
    key: PartitionKey,
    events: Vec<LogEvent>,
    encoded: EncodedBatch,
}

/// An event rejected for good, with its status and error.
type Rejected = (LogEvent, Option<u16>, String);

/// A batch's events sorted by their per-item results.
struct Sorted {
    delivered: Vec<LogEvent>,
    failed: Vec<Rejected>,
    discarded: Vec<(LogEvent, &'static str)>,
    retry: Batch,
}

impl Batch {
    /// Applies per-event results: returns the delivered events, the permanently failed ones
    /// with their errors, the discarded ones with their reason, and a batch of the events to
    /// retry.
    fn sort_items(self, results: &[ItemResult]) -> Sorted {
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        let mut discarded = Vec::new();
        let mut retry = Batch { key: self.key.clone(), ..Batch::default() };
        let items: Vec<Vec<u8>> = self.encoded.items().map(<[u8]>::to_vec).collect();
        for ((event, item), result) in self.events.into_iter().zip(items).zip(results) {
            match result {
                ItemResult::Delivered => delivered.push(event),
                ItemResult::Permanent { status, message } => failed.push((event, *status, message.clone())),
                ItemResult::Discarded { reason } => discarded.push((event, *reason)),
                ItemResult::Retriable { .. } => {
                    retry.encoded.buf.extend_from_slice(&item);
                    retry.encoded.ends.push(retry.encoded.buf.len());
                    retry.events.push(event);
                }
            }
        }
        Sorted { delivered, failed, discarded, retry }
    }

    fn split(mut self) -> (Batch, Batch) {
        let mid = self.events.len() / 2;
        let events = self.events.split_off(mid);
        let encoded = self.encoded.split_off(mid);
        let key = self.key.clone();
        (self, Batch { key, events, encoded })
    }
}

/// A batch being filled, and when it must be sent.
struct Open {
    batch: Batch,
    deadline: tokio::time::Instant,
}

/// Batching and request settings of one sink.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    pub max_events: usize,
    pub max_bytes: usize,
    pub batch_timeout: Duration,
    pub concurrency: ConcurrencyLimit,
    /// `rate_limit_num` and `rate_limit_duration_secs`.
    pub rate_limit: Option<(u64, f64)>,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// `batch.flush_when_idle`.
    pub flush_when_idle: bool,
}

impl DriverSettings {
    /// Settings from the `batch` and `request` blocks, with the sink's batch defaults.
    pub fn new(batch: &BatchConfig, request: &RequestConfig, defaults: (Option<usize>, usize, f64)) -> Self {
        Self {
            max_events: batch.max_events.or(defaults.0).unwrap_or(usize::MAX).max(1),
            max_bytes: batch.max_bytes.unwrap_or(defaults.1).max(1),
            batch_timeout: Duration::from_secs_f64(batch.timeout_secs.unwrap_or(defaults.2).max(0.0)),
            concurrency: request.concurrency(),
            rate_limit: request.rate_limit_num.map(|n| (n, request.rate_limit_duration_secs.unwrap_or(1.0))),
            request_timeout: request.timeout(),
            retry: request.retry_policy(),
            flush_when_idle: batch.flush_when_idle.unwrap_or(true),
        }
    }

    /// For sinks whose batches are objects (S3, GCS, Azure Blob): `batch.flush_when_idle`
    /// defaults to false, so objects are as large as `batch` allows.
    pub fn objects(mut self, batch: &BatchConfig) -> Self {
        self.flush_when_idle = batch.flush_when_idle.unwrap_or(false);
        self
    }
}

struct Shared<S> {
    service: S,
    settings: DriverSettings,
    cx: SinkContext,
    slots: Slots,
    rate_limit: Option<RateLimit>,
    /// When this driver first saw shutdown start.
    shutdown_seen: std::sync::OnceLock<tokio::time::Instant>,
    retry_log: sluice_core::log_limit::LogLimit,
    /// Buffers of delivered batches, reused by new ones: a batch of megabytes then neither
    /// grows by copying nor faults fresh pages in.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

/// Buffers kept for reuse.
const SPARE_BUFFERS: usize = 4;

impl<S> Shared<S> {
    fn take_buffer(&self) -> Vec<u8> {
        self.buffers.lock().ok().and_then(|mut spare| spare.pop()).unwrap_or_default()
    }

    fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        if let Ok(mut spare) = self.buffers.lock()
            && spare.len() < SPARE_BUFFERS
        {
            spare.push(buf);
        }
    }

    /// The moment by which everything must be settled, once shutdown has started.
    fn drain_deadline(&self) -> Option<tokio::time::Instant> {
        if !self.cx.shutdown.is_triggered() {
            return None;
        }
        let seen = *self.shutdown_seen.get_or_init(tokio::time::Instant::now);
        Some(seen + self.cx.drain_limit / 2)
    }
}

/// Runs a sink on the driver until its input ends and every request has settled.
pub async fn run<S: Service>(service: S, settings: DriverSettings, cx: SinkContext, mut input: SinkInput) {
    let slots = match settings.concurrency {
        ConcurrencyLimit::Fixed(n) => Slots::fixed(n),
        ConcurrencyLimit::Adaptive(adaptive) => Slots::adaptive(adaptive),
    };
    let rate_limit = settings.rate_limit.and_then(|(num, secs)| RateLimit::new(Some(num), Some(secs)));
    let shared = Arc::new(Shared {
        service,
        settings,
        cx,
        slots,
        rate_limit,
        shutdown_seen: std::sync::OnceLock::new(),
        retry_log: sluice_core::log_limit::LogLimit::default(),
        buffers: std::sync::Mutex::new(Vec::new()),
    });
    let mut requests: JoinSet<()> = JoinSet::new();
    let mut open: Batches = std::collections::HashMap::new();
    loop {
        // Nothing in flight and nothing waiting: what is open goes now, not at its deadline
        // (a sender waiting for its acknowledgement must not wait for a timer).
        let idle = shared.settings.flush_when_idle && requests.is_empty() && !open.is_empty();
        let chunk = match idle.then(|| input.next().now_or_never()) {
            Some(Some(chunk)) => chunk,
            Some(None) => {
                for (_, o) in open.drain() {
                    dispatch(&shared, &mut requests, o.batch).await;
                }
                continue;
            }
            None => {
                let next_deadline = open.values().map(|o| o.deadline).min();
                tokio::select! {
                    chunk = input.next() => chunk,
                    () = sleep_until(next_deadline) => {
                        let now = tokio::time::Instant::now();
                        let due: Vec<PartitionKey> =
                            open.iter().filter(|(_, o)| o.deadline <= now).map(|(k, _)| k.clone()).collect();
                        for key in due {
                            if let Some(o) = open.remove(&key) {
                                dispatch(&shared, &mut requests, o.batch).await;
                            }
                        }
                        continue;
                    }
                    Some(_) = requests.join_next(), if !requests.is_empty() => continue,
                }
            }
        };
        let Some(chunk) = chunk else { break };
        take(&shared, &mut open, &mut requests, chunk).await;
    }
    for (_, o) in open.drain() {
        dispatch(&shared, &mut requests, o.batch).await;
    }
    while requests.join_next().await.is_some() {}
}

type Batches = std::collections::HashMap<PartitionKey, Open>;

/// Adds a chunk's events to their open batches, sending each batch that fills up.
async fn take<S: Service>(shared: &Arc<Shared<S>>, open: &mut Batches, requests: &mut JoinSet<()>, chunk: Chunk) {
    for event in chunk {
        let key = match shared.service.partition(&event) {
            Ok(key) => key,
            Err(error) => {
                let failure = Failure::now(DeadLetterReason::EncodeError, error, None);
                shared.cx.dead_letter.submit(vec![event], failure).await;
                continue;
            }
        };
        let settings = &shared.settings;
        let slot = open.entry(key.clone()).or_insert_with(|| Open {
            batch: Batch {
                key: key.clone(),
                encoded: EncodedBatch { buf: shared.take_buffer(), ends: Vec::new() },
                ..Batch::default()
            },
            deadline: tokio::time::Instant::now() + settings.batch_timeout,
        });
        let mark = slot.batch.encoded.buf.len();
        if let Err(error) = shared.service.encode(&event, &mut slot.batch.encoded.buf) {
            slot.batch.encoded.buf.truncate(mark);
            let failure = Failure::now(DeadLetterReason::EncodeError, error, None);
            shared.cx.dead_letter.submit(vec![event], failure).await;
            continue;
        }
        if !slot.batch.events.is_empty() && slot.batch.encoded.buf.len() > settings.max_bytes {
            // This event would overflow the batch: send the batch without it.
            let count = slot.batch.events.len();
            let cut = slot.batch.encoded.ends[count - 1];
            let mut tail = EncodedBatch { buf: shared.take_buffer(), ends: Vec::new() };
            tail.buf.extend_from_slice(&slot.batch.encoded.buf[cut..]);
            slot.batch.encoded.buf.truncate(cut);
            let full =
                std::mem::replace(&mut slot.batch, Batch { key: key.clone(), events: Vec::new(), encoded: tail });
            slot.deadline = tokio::time::Instant::now() + settings.batch_timeout;
            dispatch(shared, requests, full).await;
        }
        let Some(slot) = open.get_mut(&key) else { continue };
        slot.batch.encoded.ends.push(slot.batch.encoded.buf.len());
        slot.batch.events.push(event);
        let full = slot.batch.events.len() >= settings.max_events || slot.batch.encoded.bytes() >= settings.max_bytes;
        if full && let Some(o) = open.remove(&key) {
            dispatch(shared, requests, o.batch).await;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Waits for a request slot (back-pressure), then sends `batch` in its own task.
async fn dispatch<S: Service>(shared: &Arc<Shared<S>>, requests: &mut JoinSet<()>, batch: Batch) {
    if batch.events.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            () = shared.slots.acquire() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    let shared = shared.clone();
    requests.spawn(async move {
        // The slot is held while the batch is delivered, retried or split.
        deliver(&shared, batch).await;
        shared.slots.release();
    });
}

/// Sends a batch until it is delivered, dead-lettered, or split and each half settled.
fn deliver<'a, S: Service>(shared: &'a Shared<S>, mut batch: Batch) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let started = tokio::time::Instant::now();
        let first_failure = chrono::Utc::now();
        let mut retries: u32 = 0;
        loop {
            if let Some(rate_limit) = &shared.rate_limit {
                rate_limit.acquire().await;
            }
            let sent_at = tokio::time::Instant::now();
            let call =
                tokio::time::timeout(shared.settings.request_timeout, shared.service.call(&batch.key, &batch.encoded));
            let mut shutdown = shared.cx.shutdown.clone();
            let cut_short = async {
                shutdown.wait().await;
                match shared.drain_deadline() {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let result = tokio::select! {
                result = call => result,
                () = cut_short => {
                    let failure = Failure {
                        reason: DeadLetterReason::RetriesExhausted,
                        message: "still unanswered when the shutdown drain time ran out".to_owned(),
                        status: None,
                        attempts: retries + 1,
                        first_failure,
                        last_failure: chrono::Utc::now(),
                    };
                    cut_short_at_shutdown(shared, batch.events, failure).await;
                    return;
                }
            };
            let signal = match &result {
                Err(_) | Ok(CallResult::Retriable { status: Some(429 | 503), .. }) => Signal::BackPressure,
                Ok(_) => Signal::Normal,
            };
            shared.slots.observe(sent_at.elapsed(), signal);
            let result = match result {
                Ok(result) => result,
                Err(_) => {
                    let message = format!("request timed out after {:?}", shared.settings.request_timeout);
                    if shared.service.retries_timeouts() {
                        CallResult::Retriable { status: None, message, retry_after: None, error_type: "timeout" }
                    } else {
                        CallResult::Permanent { status: None, message }
                    }
                }
            };
            let failure = |reason, status, message: String, attempts: u32| Failure {
                reason,
                message,
                status,
                attempts,
                first_failure,
                last_failure: chrono::Utc::now(),
            };
            let result = match result {
                CallResult::PerItem(items) if items.len() == batch.events.len() => {
                    let (bytes, total) = (batch.encoded.bytes(), batch.events.len().max(1));
                    let Sorted { delivered, failed, discarded, retry: rest } =
                        std::mem::take(&mut batch).sort_items(&items);
                    // The delivered events' share of the request.
                    shared.cx.ledger.sent_bytes(bytes * delivered.len() / total);
                    settle_delivered(shared, delivered);
                    for (event, reason) in discarded {
                        shared.cx.ledger.discarded(1, reason, true);
                        event.resolve(Outcome::Discarded);
                    }
                    for (event, status, message) in failed {
                        let failure = failure(DeadLetterReason::Permanent, status, message, retries + 1);
                        shared.cx.dead_letter.submit(vec![event], failure).await;
                    }
                    batch = rest;
                    match items.into_iter().find(|i| matches!(i, ItemResult::Retriable { .. })) {
                        Some(ItemResult::Retriable { status, message }) => {
                            CallResult::Retriable { status, message, retry_after: None, error_type: "item_failed" }
                        }
                        _ => return,
                    }
                }
                CallResult::PerItem(items) => CallResult::Retriable {
                    status: None,
                    message: format!("the response has {} item results for {} events", items.len(), batch.events.len()),
                    retry_after: None,
                    error_type: "invalid_response",
                },
                other => other,
            };
            match result {
                CallResult::Delivered => {
                    shared.cx.ledger.sent_bytes(batch.encoded.bytes());
                    settle_delivered(shared, batch.events);
                    shared.recycle(batch.encoded.buf);
                    return;
                }
                CallResult::Retriable { status, message, retry_after, error_type } => {
                    shared.cx.ledger.error(error_type, "sending");
                    retries += 1;
                    let next = shared.settings.retry.next_wait(retries, started.elapsed(), retry_after);
                    let fits_drain = |wait: Duration| {
                        shared.drain_deadline().is_none_or(|d| tokio::time::Instant::now() + wait <= d)
                    };
                    if next.is_some_and(|wait| !fits_drain(wait)) {
                        // The retry budget is not spent; the shutdown's drain time is.
                        let message = format!("shutting down before the next retry; last error: {message}");
                        let failure = failure(DeadLetterReason::RetriesExhausted, status, message, retries);
                        cut_short_at_shutdown(shared, batch.events, failure).await;
                        return;
                    }
                    match next {
                        Some(wait) => {
                            shared.cx.ledger.error("request_retried", "sending");
                            if let Some(folded) = shared.retry_log.admit() {
                                tracing::warn!(
                                    component_id = &*shared.cx.id,
                                    status,
                                    error = message.as_str(),
                                    retry = retries,
                                    wait_secs = wait.as_secs_f64(),
                                    events = batch.events.len(),
                                    similar_since_last_line = folded,
                                    "Request failed; retrying."
                                );
                            }
                            let wake = tokio::time::Instant::now() + wait;
                            let mut shutdown = shared.cx.shutdown.clone();
                            tokio::select! {
                                () = tokio::time::sleep_until(wake) => {}
                                () = shutdown.wait() => {
                                    if shared.drain_deadline().is_some_and(|d| wake > d) {
                                        let message = format!("shutting down before the next retry; last error: {message}");
                                        let failure = failure(DeadLetterReason::RetriesExhausted, status, message, retries);
                                        cut_short_at_shutdown(shared, batch.events, failure).await;
                                        return;
                                    }
                                    tokio::time::sleep_until(wake).await;
                                }
                            }
                        }
                        None => {
                            let failure = failure(DeadLetterReason::RetriesExhausted, status, message, retries);
                            shared.cx.dead_letter.submit(batch.events, failure).await;
                            return;
                        }
                    }
                }
                CallResult::PerItem(_) => {
                    unreachable_per_item(shared, batch).await;
                    return;
                }
                CallResult::DestinationError { status, message } => {
                    shared.cx.ledger.error("destination_error", "sending");
                    let failure = failure(DeadLetterReason::Permanent, status, message, retries + 1);
                    shared.cx.dead_letter.submit(batch.events, failure).await;
                    return;
                }
                CallResult::Permanent { status, message } => {
                    if batch.events.len() > 1 {
                        shared.cx.ledger.error("batch_split", "sending");
                        let (left, right) = batch.split();
                        deliver(shared, left).await;
                        deliver(shared, right).await;
                    } else {
                        let failure = failure(DeadLetterReason::Permanent, status, message, retries + 1);
                        shared.cx.dead_letter.submit(batch.events, failure).await;
                    }
                    return;
                }
            }
        }
    })
}

/// Events the shutdown cut short: back to the disk buffer they came from, if the sink reads
/// one (resolved as failed, so their records stay on disk and are delivered after the next
/// start; they stay in flight in the ledger, counted as kept on disk), else to the
/// dead-letter queue.
async fn cut_short_at_shutdown<S: Service>(shared: &Shared<S>, events: Vec<LogEvent>, failure: Failure) {
    if shared.cx.disk_backed {
        let n = events.len();
        resolve_all(events, Outcome::Failed);
        tracing::info!(
            component_id = &*shared.cx.id,
            events = n,
            "Stopping before these events were delivered; they stay in the disk buffer for the next start."
        );
        return;
    }
    shared.cx.dead_letter.submit(events, failure).await;
}

/// Per-item results were turned into the other cases above; if one ever arrives here, its
/// events are dead-lettered rather than dropped.
async fn unreachable_per_item<S: Service>(shared: &Shared<S>, batch: Batch) {
    let failure = Failure::now(DeadLetterReason::Permanent, "unhandled per-item response".to_owned(), None);
    shared.cx.dead_letter.submit(batch.events, failure).await;
}

fn settle_delivered<S: Service>(shared: &Shared<S>, mut events: Vec<LogEvent>) {
    let n = events.len();
    if n == 0 {
        return;
    }
    let mut finalizers = BatchFinalizers::default();
    for event in &mut events {
        finalizers.push(event.take_finalizer());
    }
    drop(events);
    // Counted before the sources hear of it: a sender answered must find it in /metrics.
    shared.cx.ledger.sent(n);
    finalizers.resolve(Outcome::Delivered);
}

#[cfg(test)]
mod tests;
