//! The ledger (G1): where every event that entered a component is now.
//!
//! Invariant, per component and at every quiescent moment:
//! `received = sent + discarded + dead_lettered + errored + in_flight`.
//! `in_flight` is tracked as its own gauge (incremented on accept, decremented on every
//! settlement), so the balance is a real check, not an identity.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

use crate::ack::unresolved_drops;

/// The three kinds of components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Source,
    Transform,
    Sink,
}

impl ComponentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Transform => "transform",
            Self::Sink => "sink",
        }
    }
}

/// Counters of one component. Cheap to update: one atomic per settlement of a chunk.
pub struct ComponentLedger {
    id: String,
    kind: ComponentKind,
    type_name: String,
    received: AtomicU64,
    sent: AtomicU64,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
    dead_lettered: AtomicU64,
    errored: AtomicU64,
    in_flight: AtomicI64,
    /// reason → (intentional, count). Touched only when something is discarded.
    discarded: Mutex<BTreeMap<&'static str, (bool, u64)>>,
    /// reason → count of dead-lettered events.
    dead_lettered_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    /// (error_type, stage) → count, for `component_errors_total`.
    errors: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Sinks: reads (events queued, capacity) of the input buffer.
    buffer_probe: OnceLock<BufferProbe>,
    /// Sinks: events and bytes in the disk DLQ; -1 until first measured.
    dlq_events: AtomicI64,
    dlq_bytes: AtomicI64,
    /// Diverted because it stopped taking events while its siblings did (G4).
    stalled: std::sync::atomic::AtomicBool,
    /// Holds events and settled none for a while (the stall watchdog).
    no_progress: std::sync::atomic::AtomicBool,
}

/// What a sink's buffer holds now and can hold; `None` where the buffer does not count in
/// that unit (a memory buffer limited in bytes has no event capacity; a memory buffer has no
/// bytes on disk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferLevel {
    pub events: Option<u64>,
    pub max_events: Option<u64>,
    pub bytes: Option<u64>,
    pub max_bytes: Option<u64>,
    /// Events in a disk stage: safe there, and delivered after a restart if not before.
    pub on_disk: Option<u64>,
}

/// Reads a sink's buffer level when metrics are collected.
pub type BufferProbe = Box<dyn Fn() -> BufferLevel + Send + Sync>;

impl std::fmt::Debug for ComponentLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentLedger").field("id", &self.id).field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl ComponentLedger {
    pub fn new(id: impl Into<String>, kind: ComponentKind, type_name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            type_name: type_name.into(),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            errored: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            discarded: Mutex::new(BTreeMap::new()),
            dead_lettered_by_reason: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            buffer_probe: OnceLock::new(),
            dlq_events: AtomicI64::new(-1),
            dlq_bytes: AtomicI64::new(-1),
            stalled: std::sync::atomic::AtomicBool::new(false),
            no_progress: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Set by the stall watchdog while the component holds events and settles none.
    pub fn set_no_progress(&self, stuck: bool) {
        self.no_progress.store(stuck, Ordering::Relaxed);
    }

    /// Marks this component stalled (or recovered).
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.store(stalled, Ordering::Relaxed);
    }

    /// Sets how to read this sink's input buffer (once; later calls are ignored).
    pub fn set_buffer_probe(&self, probe: BufferProbe) {
        let _ = self.buffer_probe.set(probe);
    }

    /// Sets the size of this sink's disk DLQ.
    pub fn set_dead_letter_queue_size(&self, events: u64, bytes: u64) {
        self.dlq_events.store(events as i64, Ordering::Relaxed);
        self.dlq_bytes.store(bytes as i64, Ordering::Relaxed);
    }

    /// Adds to the size of this sink's disk DLQ (after an append), once it has been measured.
    pub fn grow_dead_letter_queue(&self, events: u64, bytes: u64) {
        let add = |gauge: &AtomicI64, n: u64| {
            let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| (v >= 0).then_some(v + n as i64));
        };
        add(&self.dlq_events, events);
        add(&self.dlq_bytes, bytes);
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Events inside the component now.
    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// `n` events entered the component.
    pub fn accept(&self, n: usize) {
        self.received.fetch_add(n as u64, Ordering::Relaxed);
        self.in_flight.fetch_add(n as i64, Ordering::Relaxed);
    }

    /// Sources: `n` bytes read from outside (request bodies, lines with their newlines,
    /// messages), as Vector's `component_received_bytes_total`.
    pub fn received_bytes(&self, n: usize) {
        self.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Sinks: `n` bytes written to the destination and accepted there (request bodies before
    /// compression, file writes), as Vector's `component_sent_bytes_total`.
    pub fn sent_bytes(&self, n: usize) {
        self.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` events left the component successfully (passed on, or delivered by a sink).
    pub fn sent(&self, n: usize) {
        self.in_flight.fetch_sub(n as i64, Ordering::Relaxed);
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` events were handed to the dead-letter queue for `reason`.
    pub fn dead_lettered(&self, n: usize, reason: &'static str) {
        self.in_flight.fetch_sub(n as i64, Ordering::Relaxed);
        self.dead_lettered.fetch_add(n as u64, Ordering::Relaxed);
        if let Ok(mut map) = self.dead_lettered_by_reason.lock() {
            *map.entry(reason).or_insert(0) += n as u64;
        }
    }

    /// `n` events failed for good and are nowhere durable.
    pub fn errored(&self, n: usize) {
        self.in_flight.fetch_sub(n as i64, Ordering::Relaxed);
        self.errored.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` events were discarded under a named reason.
    pub fn discarded(&self, n: usize, reason: &'static str, intentional: bool) {
        if n == 0 {
            return;
        }
        self.in_flight.fetch_sub(n as i64, Ordering::Relaxed);
        if let Ok(mut map) = self.discarded.lock() {
            map.entry(reason).or_insert((intentional, 0)).1 += n as u64;
        }
    }

    /// Counts one error (not an event count): `component_errors_total{error_type,stage}`.
    pub fn error(&self, error_type: &'static str, stage: &'static str) {
        if let Ok(mut map) = self.errors.lock() {
            *map.entry((error_type, stage)).or_insert(0) += 1;
        }
    }

    pub fn snapshot(&self) -> ComponentSnapshot {
        let discarded: BTreeMap<String, u64> = self
            .discarded
            .lock()
            .map(|m| m.iter().map(|(k, (_, v))| ((*k).to_owned(), *v)).collect())
            .unwrap_or_default();
        let errors: BTreeMap<String, u64> = self
            .errors
            .lock()
            .map(|m| m.iter().map(|((t, s), v)| (format!("{t}/{s}"), *v)).collect())
            .unwrap_or_default();
        let discarded_intentional: BTreeMap<String, bool> = self
            .discarded
            .lock()
            .map(|m| m.iter().map(|(k, (i, _))| ((*k).to_owned(), *i)).collect())
            .unwrap_or_default();
        let dead_lettered_by_reason: BTreeMap<String, u64> = self
            .dead_lettered_by_reason
            .lock()
            .map(|m| m.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
            .unwrap_or_default();
        let discarded_total = discarded.values().sum();
        let buffer = self.buffer_probe.get().map(|probe| probe());
        let gauge = |g: &AtomicI64| u64::try_from(g.load(Ordering::Relaxed)).ok();
        let mut snap = ComponentSnapshot {
            id: self.id.clone(),
            kind: self.kind,
            component_type: self.type_name.clone(),
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            discarded,
            discarded_intentional,
            discarded_total,
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            dead_lettered_by_reason,
            errored: self.errored.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            errors,
            buffer_events: buffer.and_then(|b| b.events),
            buffer_max_events: buffer.and_then(|b| b.max_events),
            buffer_bytes: buffer.and_then(|b| b.bytes),
            buffer_max_bytes: buffer.and_then(|b| b.max_bytes),
            buffer_on_disk_events: buffer.and_then(|b| b.on_disk),
            dead_letter_queue_events: gauge(&self.dlq_events),
            dead_letter_queue_bytes: gauge(&self.dlq_bytes),
            stalled: self.stalled.load(Ordering::Relaxed) || self.no_progress.load(Ordering::Relaxed),
            balanced: false,
        };
        snap.balanced = snap.compute_balanced();
        snap
    }
}

/// A point-in-time copy of one component's counters.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentSnapshot {
    pub id: String,
    pub kind: ComponentKind,
    #[serde(rename = "type")]
    pub component_type: String,
    pub received: u64,
    pub sent: u64,
    /// Sources: bytes read from outside. Sinks: bytes delivered.
    pub received_bytes: u64,
    pub sent_bytes: u64,
    pub discarded: BTreeMap<String, u64>,
    /// Whether each discard reason is a user's rule (`intentional` label).
    #[serde(skip)]
    pub discarded_intentional: BTreeMap<String, bool>,
    pub discarded_total: u64,
    pub dead_lettered: u64,
    pub dead_lettered_by_reason: BTreeMap<String, u64>,
    pub errored: u64,
    pub in_flight: i64,
    pub errors: BTreeMap<String, u64>,
    /// Sinks: events in the input buffer now, and its capacity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_max_events: Option<u64>,
    /// Sinks: bytes in the buffer (on disk, or estimated in memory) and its limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_max_bytes: Option<u64>,
    /// Sinks with a disk stage: events kept there (at exit: for the next start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buffer_on_disk_events: Option<u64>,
    /// Sinks: events and bytes in the disk DLQ, once measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_bytes: Option<u64>,
    /// Stalled now: diverted (G4), or holding events without progress (the watchdog).
    pub stalled: bool,
    pub balanced: bool,
}

impl ComponentSnapshot {
    /// Events this component keeps in a disk buffer (none for other buffers).
    pub fn kept_on_disk(&self) -> u64 {
        self.buffer_on_disk_events.unwrap_or(0)
    }

    fn compute_balanced(&self) -> bool {
        let settled = self.sent as i128
            + self.discarded_total as i128
            + self.dead_lettered as i128
            + self.errored as i128
            + self.in_flight as i128;
        self.in_flight >= 0 && settled == self.received as i128
    }
}

/// Every component's ledger, in graph order; shared by its clones. A reload adds the ledgers
/// of new components; a component's ledger stays (with its counts) when it is changed or
/// removed, so the ledger balances across reloads.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    components: Arc<std::sync::RwLock<Vec<Arc<ComponentLedger>>>>,
}

impl Ledger {
    /// Adds `ledger`, unless one with its id is there: then that one is returned, and the
    /// component goes on counting in it.
    pub fn register(&self, ledger: Arc<ComponentLedger>) -> Arc<ComponentLedger> {
        let mut components = self.components.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = components.iter().find(|c| c.id() == ledger.id()) {
            return existing.clone();
        }
        components.push(ledger.clone());
        ledger
    }

    /// Every component's ledger, in graph order.
    pub fn components(&self) -> Vec<Arc<ComponentLedger>> {
        self.components.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub fn snapshot(&self) -> LedgerSnapshot {
        let components: Vec<_> = self.components().iter().map(|c| c.snapshot()).collect();
        let unresolved = unresolved_drops();
        let balanced = unresolved == 0 && components.iter().all(|c| c.balanced);
        LedgerSnapshot { components, unresolved_drops: unresolved, balanced }
    }
}

/// The whole ledger at one moment; `--ledger-json` writes this.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerSnapshot {
    pub components: Vec<ComponentSnapshot>,
    pub unresolved_drops: u64,
    pub balanced: bool,
}

impl LedgerSnapshot {
    /// Events that ended failed anywhere (sinks' `errored`, sources' undeliverable sends).
    pub fn failed_events(&self) -> u64 {
        self.components.iter().map(|c| c.errored).sum::<u64>() + self.unresolved_drops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_tracks_every_settlement() {
        let l = ComponentLedger::new("s", ComponentKind::Sink, "file");
        l.accept(10);
        assert!(l.snapshot().balanced, "in flight counts toward the balance");
        l.sent(5);
        l.discarded(2, "filter", true);
        l.errored(1);
        l.dead_lettered(1, "permanent");
        let s = l.snapshot();
        assert_eq!(s.in_flight, 1);
        assert!(s.balanced);
        assert_eq!(s.discarded.get("filter"), Some(&2));
    }

    #[test]
    fn settling_more_than_accepted_is_unbalanced() {
        let l = ComponentLedger::new("s", ComponentKind::Sink, "file");
        l.accept(1);
        l.sent(2);
        assert!(!l.snapshot().balanced);
    }
}
