//! The `kafka` source's consumer thread: polls librdkafka, builds chunks, hands them to the
//! source's task, follows their outcomes and commits the safe offsets.
//!
//! Everything librdkafka calls back (rebalances, commit results) runs inside `poll` on this
//! thread, so the offsets and the queue of chunks not yet handed on live behind mutexes that
//! are never contended.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_core::LogEvent;
use sluice_core::ack::{BatchNotifier, EventFinalizer, Outcome};
use sluice_core::component::BuildError;
use sluice_core::dead_letter::{DeadLetterReason, Failure};
use sluice_core::event::{EventMetadata, LegacyTemplate};
use sluice_core::ledger::ComponentLedger;
use sluice_core::log_limit::{INTERVAL, LogLimit};
use tokio::sync::{mpsc, oneshot};
use vrl::value::{KeyString, ObjectMap, Value};

use super::KafkaSourceConfig;
use super::offsets::{Offsets, Partition};
use crate::codecs::decoding::{Decoder, FrameStats, Framer};
use crate::sources::Out;

/// Events per chunk.
const CHUNK: usize = 1_000;
/// How long chunks may wait for room downstream before the partitions are paused.
const PAUSE_AFTER: Duration = Duration::from_millis(500);
/// Chunks kept ready while downstream is full; more pause the partitions at once.
const MAX_QUEUED: usize = 8;
/// How long a shutdown waits for the outcomes of events in flight before the last commit.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(60);

/// Event field names; `None` where the setting is `""`.
#[derive(Debug, Clone)]
pub(super) struct Fields {
    key: Option<KeyString>,
    topic: Option<KeyString>,
    partition: Option<KeyString>,
    offset: Option<KeyString>,
    headers: Option<KeyString>,
}

impl Fields {
    pub fn new(config: &KafkaSourceConfig) -> Self {
        let key = |name: &str| (!name.is_empty()).then(|| KeyString::from(name.trim_start_matches('.')));
        Self {
            key: key(&config.key_field),
            topic: key(&config.topic_key),
            partition: key(&config.partition_key),
            offset: key(&config.offset_key),
            headers: key(&config.headers_key),
        }
    }
}

pub(super) struct Settings {
    pub config: rdkafka::ClientConfig,
    pub topics: Vec<String>,
    pub commit_interval: Duration,
    pub drain_timeout: Duration,
    pub decoder: Decoder,
    pub framer: Framer,
    pub fields: Fields,
}

/// What the thread shares with librdkafka's callbacks.
struct Shared {
    id: Arc<str>,
    offsets: Mutex<Offsets>,
    acks: Mutex<mpsc::UnboundedReceiver<(u64, Outcome)>>,
    /// Chunks built and not yet handed to the source's task.
    queue: Mutex<VecDeque<Out>>,
    /// The offset after the last message read, per partition owned: the next message should
    /// have it.
    positions: Mutex<HashMap<Partition, i64>>,
    /// To the source's task; taken when the thread has handed on everything.
    tx: Mutex<Option<mpsc::Sender<Out>>>,
    ledger: Arc<ComponentLedger>,
    drain_timeout: Duration,
    runtime: tokio::runtime::Handle,
    /// Set by a revoke, which librdkafka calls back from inside a poll, possibly in the
    /// middle of a chunk: the reader seals what it built before reading on, so a partition
    /// owned again never grows a unit of its previous ownership.
    revoked: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Applies every outcome received so far.
    fn drain_acks(&self) {
        let mut acks = lock(&self.acks);
        let mut offsets = lock(&self.offsets);
        while let Ok((tag, outcome)) = acks.try_recv() {
            self.apply(&mut offsets, tag, outcome);
        }
    }

    fn apply(&self, offsets: &mut Offsets, tag: u64, outcome: Outcome) {
        if let Some(held) = offsets.resolve(tag, outcome) {
            self.ledger.error("commit_held", "committing");
            tracing::warn!(
                component_id = &*self.id,
                topic = &*held.partition.0,
                partition = held.partition.1,
                offset = held.offset,
                "Events failed and were not stored; this partition's commit stays before them, so they are read again after a restart or a rebalance."
            );
        }
    }

    /// Waits up to `limit` for one outcome; false when none came.
    fn wait_ack(&self, limit: Duration) -> bool {
        let next = {
            let mut acks = lock(&self.acks);
            self.runtime.block_on(async { tokio::time::timeout(limit, acks.recv()).await })
        };
        match next {
            Ok(Some((tag, outcome))) => {
                self.apply(&mut lock(&self.offsets), tag, outcome);
                true
            }
            _ => false,
        }
    }

    /// Hands queued chunks to the source's task while it has room. False when it is gone.
    fn hand_on(&self) -> bool {
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else { return false };
        let mut queue = lock(&self.queue);
        while let Some(out) = queue.pop_front() {
            match tx.try_send(out) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(out)) => {
                    queue.push_front(out);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(out)) => {
                    queue.push_front(out);
                    return false;
                }
            }
        }
        true
    }

    fn commit(&self, consumer: &BaseConsumer<KafkaContext>, mode: CommitMode) {
        let ready = lock(&self.offsets).take_commits();
        if ready.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in &ready {
            if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
                tracing::error!(component_id = &*self.id, error = %e, "Cannot list an offset to commit.");
            }
        }
        if let Err(e) = consumer.commit(&list, mode) {
            self.commit_failed(&e.to_string(), &ready.into_iter().map(|(p, _)| p).collect::<Vec<_>>());
        }
    }

    fn commit_failed(&self, error: &str, partitions: &[Partition]) {
        self.ledger.error("commit_failed", "committing");
        lock(&self.offsets).uncommitted(partitions);
        static LOG: LogLimit = LogLimit::new(INTERVAL);
        if let Some(folded) = LOG.admit() {
            tracing::warn!(
                component_id = &*self.id,
                error,
                similar_since_last_line = folded,
                "Cannot commit offsets; trying again at the next commit."
            );
        }
    }
}

/// librdkafka's callbacks.
pub(super) struct KafkaContext {
    shared: Arc<Shared>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(component_id = &*self.shared.id, facility, "librdkafka: {message}")
            }
            L::Warning => tracing::warn!(component_id = &*self.shared.id, facility, "librdkafka: {message}"),
            _ => tracing::debug!(component_id = &*self.shared.id, facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.shared.ledger.error("kafka_error", "receiving");
        static LOG: LogLimit = LogLimit::new(INTERVAL);
        if let Some(folded) = LOG.admit() {
            tracing::warn!(component_id = &*self.shared.id, error = %error, reason, similar_since_last_line = folded, "Kafka client error.");
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let revoked: Vec<Partition> = list.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
        let shared = &self.shared;
        shared.revoked.store(true, Ordering::Relaxed);
        // Give the events handed on a bounded time to settle, then commit what is safe. Those
        // of a chunk still being built go on after the callback and are read again by the
        // new owner.
        let deadline = Instant::now() + shared.drain_timeout;
        shared.drain_acks();
        while lock(&shared.offsets).in_flight(revoked.iter()) && !consumer.assignment_lost() {
            shared.hand_on();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    component_id = &*shared.id,
                    partitions = revoked.len(),
                    "Partitions were revoked before all their events settled; the new owner reads the unsettled ones again."
                );
                break;
            }
            shared.wait_ack(left.min(Duration::from_millis(50)));
        }
        if !consumer.assignment_lost() {
            shared.commit(consumer, CommitMode::Sync);
        }
        let mut offsets = lock(&shared.offsets);
        let mut positions = lock(&shared.positions);
        for partition in &revoked {
            offsets.forget(partition);
            positions.remove(partition);
        }
        tracing::info!(component_id = &*shared.id, partitions = revoked.len(), "Partitions revoked.");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(component_id = &*self.shared.id, partitions = list.count(), "Partitions assigned.");
            }
            Rebalance::Error(e) => {
                self.shared.ledger.error("rebalance_failed", "receiving");
                tracing::warn!(component_id = &*self.shared.id, error = %e, "Rebalance failed.");
            }
            Rebalance::Revoke(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            let partitions: Vec<Partition> =
                offsets.elements().iter().map(|e| (Arc::from(e.topic()), e.partition())).collect();
            self.shared.commit_failed(&e.to_string(), &partitions);
        }
    }
}

/// The source task's handle on its consumer thread.
pub(super) struct Handle {
    start: std::sync::mpsc::Sender<()>,
    stop: Arc<AtomicBool>,
    done: oneshot::Receiver<()>,
}

impl Handle {
    /// Starts polling (once the topology is ready).
    pub fn start(&self) {
        let _ = self.start.send(());
    }

    /// Stops reading; what was read is handed on and committed once it settles.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Waits until the thread has committed and left the group.
    pub async fn finished(self) {
        self.stop();
        drop(self.start);
        let _ = self.done.await;
    }
}

/// Creates the consumer, subscribes, and starts its thread (which waits for [`Handle::start`]).
pub(super) fn start(
    id: Arc<str>,
    settings: Settings,
    tx: mpsc::Sender<Out>,
    ledger: Arc<ComponentLedger>,
) -> Result<Handle, BuildError> {
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        id: id.clone(),
        offsets: Mutex::new(Offsets::default()),
        acks: Mutex::new(ack_rx),
        queue: Mutex::new(VecDeque::new()),
        positions: Mutex::new(HashMap::new()),
        tx: Mutex::new(Some(tx)),
        ledger,
        drain_timeout: settings.drain_timeout,
        runtime: tokio::runtime::Handle::current(),
        revoked: AtomicBool::new(false),
    });
    let context = KafkaContext { shared: shared.clone() };
    let consumer: BaseConsumer<KafkaContext> = settings
        .config
        .create_with_context(context)
        .map_err(|e| BuildError(format!("cannot create the Kafka consumer: {e}")))?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(|e| BuildError(format!("cannot subscribe to {topics:?}: {e}")))?;
    let (start_tx, start_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = oneshot::channel();
    let thread_stop = stop.clone();
    std::thread::Builder::new()
        .name(format!("kafka-{id}"))
        .spawn(move || {
            if start_rx.recv().is_ok() {
                let mut reader = Reader::new(&shared, settings, ack_tx);
                reader.run(&consumer, &thread_stop);
                reader.finish(&consumer);
            }
            drop(consumer);
            let _ = done_tx.send(());
        })
        .map_err(|e| BuildError(format!("cannot start the Kafka consumer thread: {e}")))?;
    Ok(Handle { start: start_tx, stop, done: done_rx })
}

/// The run of one partition's messages in the chunk being built.
struct Unit {
    partition: Partition,
    /// The topic's name as an event value, made once per unit.
    topic: Bytes,
    tag: u64,
    /// Every event of the unit shares this template's finalizer.
    template: LegacyTemplate,
    /// The offset after the unit's last message.
    next: i64,
}

/// The chunk being built: events, and the open unit of each partition in it.
struct Reader<'a> {
    shared: &'a Shared,
    settings: Settings,
    ack_tx: Option<mpsc::UnboundedSender<(u64, Outcome)>>,
    events: Vec<LogEvent>,
    units: Vec<Unit>,
    frames: Vec<Bytes>,
    paused: bool,
    blocked_since: Option<Instant>,
}

impl<'a> Reader<'a> {
    fn new(shared: &'a Shared, settings: Settings, ack_tx: mpsc::UnboundedSender<(u64, Outcome)>) -> Self {
        Self {
            shared,
            settings,
            ack_tx: Some(ack_tx),
            events: Vec::with_capacity(CHUNK),
            units: Vec::new(),
            frames: Vec::new(),
            paused: false,
            blocked_since: None,
        }
    }

    fn run(&mut self, consumer: &BaseConsumer<KafkaContext>, stop: &AtomicBool) {
        let shared = self.shared;
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            shared.drain_acks();
            if last_commit.elapsed() >= self.settings.commit_interval {
                shared.commit(consumer, CommitMode::Async);
                last_commit = Instant::now();
            }
            if !shared.hand_on() {
                return;
            }
            let queued = lock(&shared.queue).len();
            self.pace(consumer, queued);
            let wait = if queued == 0 { Duration::from_millis(100) } else { Duration::from_millis(10) };
            let mut next = consumer.poll(wait);
            while let Some(message) = next {
                if shared.revoked.load(Ordering::Relaxed) {
                    shared.revoked.store(false, Ordering::Relaxed);
                    self.seal();
                }
                match message {
                    Ok(message) => self.read(&message),
                    Err(e) => {
                        shared.ledger.error("kafka_error", "receiving");
                        static LOG: LogLimit = LogLimit::new(INTERVAL);
                        if let Some(folded) = LOG.admit() {
                            tracing::warn!(component_id = &*shared.id, error = %e, similar_since_last_line = folded, "Cannot read from Kafka.");
                        }
                    }
                }
                if self.events.len() >= CHUNK {
                    break;
                }
                next = consumer.poll(Duration::ZERO);
            }
            self.seal();
        }
    }

    /// Pauses the assigned partitions while chunks wait for room downstream, resumes them
    /// once everything is handed on. Polling goes on either way, so the group keeps us.
    fn pace(&mut self, consumer: &BaseConsumer<KafkaContext>, queued: usize) {
        if queued == 0 {
            self.blocked_since = None;
            if self.paused {
                self.paused = false;
                self.resume(consumer);
            }
            return;
        }
        let since = *self.blocked_since.get_or_insert_with(Instant::now);
        if !self.paused && (queued >= MAX_QUEUED || since.elapsed() >= PAUSE_AFTER) {
            self.paused = true;
            self.shared.ledger.error("partitions_paused", "receiving");
            if let Ok(list) = consumer.assignment()
                && let Err(e) = consumer.pause(&list)
            {
                tracing::warn!(component_id = &*self.shared.id, error = %e, "Cannot pause partitions.");
            }
        }
    }

    /// Resumes the assigned partitions. librdkafka goes on from the message after the last
    /// one read (what it had fetched while paused is dropped and fetched again).
    fn resume(&self, consumer: &BaseConsumer<KafkaContext>) {
        if let Ok(assigned) = consumer.assignment()
            && let Err(e) = consumer.resume(&assigned)
        {
            tracing::warn!(component_id = &*self.shared.id, error = %e, "Cannot resume partitions.");
        }
    }

    /// Counts and reports offsets that jump: a compacted topic, aborted transactions, or a
    /// broker that skipped records. Nothing is lost by sluice there, but it is worth knowing.
    fn gap(&self, partition: &Partition, expected: i64, offset: i64) {
        self.shared.ledger.error("offset_gap", "receiving");
        static LOG: LogLimit = LogLimit::new(INTERVAL);
        if let Some(folded) = LOG.admit() {
            tracing::warn!(
                component_id = &*self.shared.id,
                topic = &*partition.0,
                partition = partition.1,
                expected,
                offset,
                similar_since_last_line = folded,
                "Offsets jumped: the messages between were never handed to this consumer (a compacted topic, aborted transactions, or the broker skipped them)."
            );
        }
    }

    /// Turns one message into events of its partition's open unit.
    fn read(&mut self, message: &BorrowedMessage<'_>) {
        let partition_id = message.partition();
        let offset = message.offset();
        let position =
            self.units.iter().position(|u| u.partition.1 == partition_id && &*u.partition.0 == message.topic());
        let index = match position {
            Some(i) => i,
            None => {
                let partition: Partition = (Arc::from(message.topic()), partition_id);
                let expected = lock(&self.shared.positions).get(&partition).copied();
                if let Some(expected) = expected.filter(|e| offset > *e) {
                    self.gap(&partition, expected, offset);
                }
                let tag = lock(&self.shared.offsets).open(&partition, offset);
                let mut meta = EventMetadata::new(&self.shared.id, chrono::Utc::now());
                if let Some(ack_tx) = &self.ack_tx {
                    meta.set_finalizer(EventFinalizer::new(BatchNotifier::with_channel(ack_tx.clone(), tag)));
                }
                let template = LegacyTemplate::new(self.settings.decoder.source_type(), None, meta);
                let topic = Bytes::copy_from_slice(partition.0.as_bytes());
                self.units.push(Unit { partition, topic, tag, template, next: offset + 1 });
                self.units.len() - 1
            }
        };
        let expected = self.units[index].next;
        if offset > expected {
            self.gap(&self.units[index].partition, expected, offset);
        }
        self.units[index].next = offset + 1;
        let Unit { partition, topic, template, .. } = &self.units[index];
        // A tombstone (no payload) is no event; its offset is still covered by the unit.
        let Some(payload) = message.payload() else { return };
        self.shared.ledger.received_bytes(payload.len());
        let payload = Bytes::copy_from_slice(payload);
        if self.settings.framer.is_bytes() {
            self.frames.push(payload.clone());
        } else {
            let mut buf = BytesMut::from(&payload[..]);
            let mut stats = FrameStats::default();
            self.settings.framer.split(&mut buf, &mut self.frames, &mut stats);
            self.settings.framer.finish(&mut buf, &mut self.frames, &mut stats);
        }
        let start = self.events.len();
        let mut failed = None;
        for frame in self.frames.drain(..) {
            if let Err(e) = self.settings.decoder.decode(frame, template, &mut self.events) {
                failed = Some(e);
            }
        }
        let extra = self.extra_fields(message, partition, topic);
        if let Some(error) = failed {
            // The whole message goes to the dead-letter queue as it came, with its reason;
            // the events its other frames made give way to it.
            sluice_core::event::resolve_all(self.events.drain(start..), Outcome::Discarded);
            let mut event = template.event(payload);
            for (key, value) in &extra {
                event.insert(key, value.clone());
            }
            let now = chrono::Utc::now();
            let failure = Failure {
                reason: DeadLetterReason::ParseError,
                message: error,
                status: None,
                attempts: 1,
                first_failure: now,
                last_failure: now,
            };
            self.shared.ledger.error("parse_error", "receiving");
            lock(&self.shared.queue).push_back(Out::DeadLetters(vec![event], failure));
            return;
        }
        for event in &mut self.events[start..] {
            for (key, value) in &extra {
                event.insert(key, value.clone());
            }
        }
    }

    /// The fields every event of `message` gets: key, topic, partition, offset, headers and
    /// the message's timestamp.
    fn extra_fields(
        &self,
        message: &BorrowedMessage<'_>,
        partition: &Partition,
        topic: &Bytes,
    ) -> Vec<(KeyString, Value)> {
        let fields = &self.settings.fields;
        let mut extra = Vec::with_capacity(6);
        if let Some(key) = &fields.key {
            let value = message.key().map_or(Value::Null, |k| Value::Bytes(Bytes::copy_from_slice(k)));
            extra.push((key.clone(), value));
        }
        if let Some(key) = &fields.topic {
            extra.push((key.clone(), Value::Bytes(topic.clone())));
        }
        if let Some(key) = &fields.partition {
            extra.push((key.clone(), Value::Integer(i64::from(partition.1))));
        }
        if let Some(key) = &fields.offset {
            extra.push((key.clone(), Value::Integer(message.offset())));
        }
        if let Some(key) = &fields.headers {
            let mut map = ObjectMap::new();
            if let Some(headers) = message.headers() {
                for header in headers.iter() {
                    let value = header.value.map_or(Value::Null, |v| Value::Bytes(Bytes::copy_from_slice(v)));
                    map.insert(KeyString::from(header.key), value);
                }
            }
            extra.push((key.clone(), Value::Object(map)));
        }
        if let Some(millis) = message.timestamp().to_millis()
            && let Some(ts) = chrono::DateTime::from_timestamp_millis(millis)
        {
            extra.push((KeyString::from(sluice_core::event::fields::timestamp()), Value::Timestamp(ts)));
        }
        extra
    }

    /// Closes the chunk being built: queues it, and registers its units as sent.
    fn seal(&mut self) {
        if !self.events.is_empty() {
            let chunk = std::mem::replace(&mut self.events, Vec::with_capacity(CHUNK));
            lock(&self.shared.queue).push_back(Out::Chunk(chunk));
        }
        // The units' last offsets, then their templates' own finalizers, which never became
        // events (units whose messages made no event, tombstones, resolve as discarded now).
        let mut offsets = lock(&self.shared.offsets);
        let mut positions = lock(&self.shared.positions);
        for mut unit in self.units.drain(..) {
            if offsets.extend(unit.tag, unit.next - 1) {
                positions.insert(unit.partition, unit.next);
            }
            unit.template.set_finalizer(EventFinalizer::default());
        }
    }

    /// After a stop: hands on everything read, waits for the outcomes, commits, leaves.
    fn finish(&mut self, consumer: &BaseConsumer<KafkaContext>) {
        let shared = self.shared;
        self.seal();
        let tx = lock(&shared.tx).take();
        loop {
            let next = lock(&shared.queue).pop_front();
            let Some(out) = next else { break };
            let sent = match &tx {
                Some(tx) => tx.blocking_send(out).map_err(|mpsc::error::SendError(out)| out),
                None => Err(out),
            };
            if let Err(out) = sent {
                // The source's task is gone (aborted): these events were never accepted.
                let events = match out {
                    Out::Chunk(events) | Out::DeadLetters(events, _) => events,
                };
                sluice_core::event::resolve_all(events, Outcome::Failed);
            }
        }
        // The source's task ends once this is gone, and downstream drains.
        drop(tx);
        self.ack_tx = None;
        let deadline = Instant::now() + SHUTDOWN_DRAIN;
        shared.drain_acks();
        while lock(&shared.offsets).any_in_flight() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !shared.wait_ack(left) {
                break;
            }
        }
        shared.commit(consumer, CommitMode::Sync);
        if lock(&shared.offsets).any_in_flight() {
            tracing::warn!(
                component_id = &*shared.id,
                "Stopped before every event read settled; those are read again at the next start."
            );
        }
        consumer.unsubscribe();
    }
}
