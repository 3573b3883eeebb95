//! Taps: a live sample of the events leaving components' outputs (`sluice tap`, the API's
//! `/tap`).
//!
//! Contracts:
//! - Nobody tapping costs one relaxed atomic load per chunk and output.
//! - A tap takes at most its budget of events per interval, as copies without
//!   acknowledgements (a tapped event is never held, delayed or resolved by the tap).
//! - Samples are offered to the tap's channel without waiting: a client that reads slowly, or
//!   not at all, loses samples (counted, and reported in its stream), never slows the
//!   pipeline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sluice_core::LogEvent;
use sluice_core::event::EventMetadata;
use tokio::sync::mpsc;

use crate::config::glob_match;

/// One output port that can be tapped.
pub struct TapPoint {
    pub component: String,
    pub port: Option<String>,
    pub kind: &'static str,
    pub component_type: String,
    taps: AtomicUsize,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

/// Events sampled at one output.
pub struct Sample {
    pub point: Arc<TapPoint>,
    pub events: Vec<LogEvent>,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Sample>,
    budget: AtomicU64,
    dropped: Arc<AtomicU64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TapPoint {
    /// `component` or `component.port`.
    pub fn name(&self) -> String {
        match &self.port {
            Some(port) => format!("{}.{port}", self.component),
            None => self.component.clone(),
        }
    }

    /// Offers `events` (about to leave this output) to its taps, if any.
    #[inline]
    pub fn observe(self: &Arc<Self>, events: &[LogEvent]) {
        if self.taps.load(Ordering::Relaxed) != 0 {
            self.offer(events);
        }
    }

    #[cold]
    fn offer(self: &Arc<Self>, events: &[LogEvent]) {
        let subscribers = lock(&self.subscribers).clone();
        for sub in subscribers {
            let taken = sub
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(events.len() as u64)))
                .unwrap_or(0)
                .min(events.len() as u64) as usize;
            if taken == 0 {
                continue;
            }
            let copies = events[..taken]
                .iter()
                .map(|e| LogEvent::from_value(e.value().clone(), EventMetadata::new(e.source_id(), e.ingest_time())))
                .collect();
            if sub.tx.try_send(Sample { point: self.clone(), events: copies }).is_err() {
                sub.dropped.fetch_add(taken as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Every tap point of a running pipeline, and which outputs each component reads; shared by
/// its clones, and brought up to date by a reload (a running tap keeps what it tapped).
#[derive(Clone, Default)]
pub struct Taps {
    graph: Arc<Mutex<TapGraph>>,
    next_id: Arc<AtomicU64>,
}

#[derive(Default)]
struct TapGraph {
    points: Vec<Arc<TapPoint>>,
    inputs: BTreeMap<String, Vec<String>>,
}

/// A running tap: samples arrive on `samples`; `dropped` counts those the client was too slow
/// for. Dropping it removes the tap.
pub struct Subscription {
    pub samples: mpsc::Receiver<Sample>,
    pub dropped: Arc<AtomicU64>,
    /// The outputs tapped, as `component` or `component.port`.
    pub tapped: Vec<String>,
    /// Removes the tap when the subscription is dropped.
    _unsubscribe: Unsubscribe,
}

struct Unsubscribe {
    id: u64,
    points: Vec<Arc<TapPoint>>,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        for point in &self.points {
            lock(&point.subscribers).retain(|s| s.id != self.id);
            point.taps.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Samples a client may have waiting before more are dropped.
const QUEUED_SAMPLES: usize = 64;

impl Taps {
    pub(crate) fn new(inputs: BTreeMap<String, Vec<String>>) -> Self {
        Self { graph: Arc::new(Mutex::new(TapGraph { points: Vec::new(), inputs })), next_id: Arc::default() }
    }

    /// Sets what component `id` reads (`None`: it is gone, with its outputs).
    pub(crate) fn set_inputs(&self, id: &str, inputs: Option<Vec<String>>) {
        let mut graph = lock(&self.graph);
        match inputs {
            Some(inputs) => {
                graph.inputs.insert(id.to_owned(), inputs);
            }
            None => {
                graph.inputs.remove(id);
                graph.points.retain(|p| p.component != id);
            }
        }
    }

    /// A new tap point for an output (replacing the one of that name).
    pub(crate) fn point(
        &self,
        component: &str,
        port: Option<&str>,
        kind: &'static str,
        component_type: &str,
    ) -> Arc<TapPoint> {
        let point = Arc::new(TapPoint {
            component: component.to_owned(),
            port: port.map(str::to_owned),
            kind,
            component_type: component_type.to_owned(),
            taps: AtomicUsize::new(0),
            subscribers: Mutex::new(Vec::new()),
        });
        let mut graph = lock(&self.graph);
        graph.points.retain(|p| !(p.component == point.component && p.port == point.port));
        graph.points.push(point.clone());
        point
    }

    /// Taps the outputs of components matching `outputs_of` (globs on `id` or `id.port`) and
    /// the outputs read by components matching `inputs_of`, `limit` events per `interval`.
    /// `None` when nothing matches.
    pub fn subscribe(
        &self,
        outputs_of: &[String],
        inputs_of: &[String],
        limit: u64,
        interval: Duration,
    ) -> Option<Subscription> {
        let graph = lock(&self.graph);
        let read_by: Vec<&String> = graph
            .inputs
            .iter()
            .filter(|(id, _)| inputs_of.iter().any(|g| glob_match(g, id)))
            .flat_map(|(_, inputs)| inputs)
            .collect();
        let points: Vec<Arc<TapPoint>> = graph
            .points
            .iter()
            .filter(|p| {
                let name = p.name();
                outputs_of.iter().any(|g| glob_match(g, &p.component) || glob_match(g, &name))
                    || read_by.iter().any(|i| **i == name)
            })
            .cloned()
            .collect();
        drop(graph);
        if points.is_empty() {
            return None;
        }
        let (tx, samples) = mpsc::channel(QUEUED_SAMPLES);
        let dropped = Arc::new(AtomicU64::new(0));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Arc::new(Subscriber { id, tx, budget: AtomicU64::new(limit), dropped: dropped.clone() });
        for point in &points {
            lock(&point.subscribers).push(subscriber.clone());
            point.taps.fetch_add(1, Ordering::Relaxed);
        }
        // The budget comes back every interval while the client listens.
        let refill = subscriber.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
            ticks.tick().await;
            while !refill.tx.is_closed() {
                ticks.tick().await;
                refill.budget.store(limit, Ordering::Relaxed);
            }
        });
        let tapped = points.iter().map(|p| p.name()).collect();
        Some(Subscription { samples, dropped, tapped, _unsubscribe: Unsubscribe { id, points } })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: i64) -> LogEvent {
        LogEvent::from_value(vrl::value::Value::from(n), EventMetadata::new("s", chrono::Utc::now()))
    }

    #[tokio::test(start_paused = true)]
    async fn a_tap_takes_its_budget_and_a_full_client_loses_samples_without_waiting() {
        let taps = Taps::new(BTreeMap::from([("sink".to_owned(), vec!["parse".to_owned()])]));
        let point = taps.point("parse", None, "transform", "remap");
        let other = taps.point("other", None, "source", "stdin");
        let chunk: Vec<LogEvent> = (0..10).map(event).collect();
        point.observe(&chunk); // nobody taps: nothing happens
        let Some(mut tap) = taps.subscribe(&[], &["sink".to_owned()], 15, Duration::from_millis(100)) else {
            panic!("sink reads parse");
        };
        assert_eq!(tap.tapped, ["parse"]);
        point.observe(&chunk);
        point.observe(&chunk);
        point.observe(&chunk);
        other.observe(&chunk);
        let first = tap.samples.recv().await.map(|s| s.events.len());
        let second = tap.samples.recv().await.map(|s| s.events.len());
        assert_eq!((first, second), (Some(10), Some(5)), "15 per interval");
        assert!(tap.samples.try_recv().is_err());
        // A client that does not read: after QUEUED_SAMPLES, samples are dropped and counted.
        for _ in 0..QUEUED_SAMPLES + 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            point.observe(&chunk[..1]);
        }
        assert_eq!(tap.samples.len(), QUEUED_SAMPLES);
        assert!(tap.dropped.load(Ordering::Relaxed) >= 5, "{}", tap.dropped.load(Ordering::Relaxed));
        drop(tap);
        assert_eq!(point.taps.load(Ordering::Relaxed), 0, "a dropped tap is removed");
    }
}
