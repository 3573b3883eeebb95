//! Topology: one task per component, bounded channels carrying chunks, fan-out, drain.
//!
//! Shutdown: when the external signal fires or every source has finished, sources are told to
//! stop; as each source's sender drops, the channels downstream close in turn, transforms
//! finish, and sinks flush and settle what they hold. Everything must settle within the
//! graceful limit; past it the remaining tasks are aborted and whatever they held shows as
//! `in_flight` (and unresolved) in the ledger, which makes the exit code non-zero.

pub mod disk;
pub mod fanout;
pub mod watchdog;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sluice_buffers::{MemoryReceiver, MemorySender, memory};
use sluice_core::Chunk;
use sluice_core::ack::Outcome;
use sluice_core::component::{
    AnyConfig, ChunkReceiver, FunctionTransform, SinkContext, SinkInput, SourceContext, SourceSender, TransformContext,
    TransformOutputs,
};
use sluice_core::event::resolve_all;
use sluice_core::ledger::{BufferLevel, ComponentKind, ComponentLedger, Ledger, LedgerSnapshot};
use sluice_core::shutdown::shutdown_pair;
use tokio::task::JoinSet;

use crate::config::{Graph, OutputRef, schema::BufferType};
use crate::dead_letter::SinkDeadLetter;
use crate::tap::Taps;
use fanout::{Consumer, DeadLetterSlot, Diversions, Fanout};

/// Estimated bytes queued between a memory stage limited in bytes and its disk stage's writer.
const OVERFLOW_HANDOFF_BYTES: usize = 4 << 20;

/// Events a transform's input channel holds.
const TRANSFORM_INPUT_EVENTS: usize = 2048;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How long in-flight events may take to drain after shutdown starts.
    pub graceful_shutdown_limit: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { graceful_shutdown_limit: Duration::from_secs(60) }
    }
}

/// What a run ended with.
#[derive(Debug)]
pub struct RunReport {
    pub ledger: LedgerSnapshot,
    /// The drain did not finish within the graceful limit.
    pub timed_out: bool,
    /// Components whose task ended with an error.
    pub failed_components: Vec<String>,
}

impl RunReport {
    /// True when every event ended safe and every component ended cleanly.
    pub fn is_clean(&self) -> bool {
        !self.timed_out
            && self.failed_components.is_empty()
            && self.ledger.failed_events() == 0
            && self.ledger.balanced
            && self.ledger.components.iter().all(|c| c.in_flight == 0 || c.in_flight as u64 <= c.kept_on_disk())
    }
}

struct BufferInput {
    rx: MemoryReceiver<Chunk>,
    ack_on_arrival: bool,
}

impl ChunkReceiver for BufferInput {
    fn recv(&mut self) -> BoxFuture<'_, Option<Chunk>> {
        Box::pin(async move {
            let mut chunk = self.rx.recv().await?;
            if self.ack_on_arrival {
                for event in &mut chunk {
                    event.take_finalizer().resolve(Outcome::Delivered);
                }
            }
            Some(chunk)
        })
    }
}

async fn run_transform(
    mut rx: MemoryReceiver<Chunk>,
    mut transform: Box<dyn FunctionTransform>,
    mut default: Option<Fanout>,
    mut named: Vec<Fanout>,
    ledger: Arc<ComponentLedger>,
) -> Result<(), ()> {
    let mut out = TransformOutputs::with_named(named.len());
    while let Some(chunk) = rx.recv().await {
        let n = chunk.len();
        transform.transform(chunk, &mut out);
        let mut discarded = 0;
        for (reason, intentional, count) in out.take_discards() {
            ledger.discarded(count, reason, intentional);
            discarded += count;
        }
        let copies = out.default.len() + out.named.iter().map(Vec::len).sum::<usize>();
        let passed = n.saturating_sub(discarded);
        if copies > passed {
            // Events sent to several outputs (route): each extra copy counts as received.
            ledger.accept(copies - passed);
        } else if copies < passed {
            ledger.errored(passed - copies);
            ledger.error("events_lost", "processing");
            tracing::error!(
                component_id = ledger.id(),
                events = passed - copies,
                "Transform lost events without an outcome; counted as failed. This is a bug in sluice."
            );
        }
        let default_chunk = std::mem::take(&mut out.default);
        let ports = std::iter::once((default.as_mut(), default_chunk))
            .chain(named.iter_mut().zip(out.named.iter_mut()).map(|(f, c)| (Some(f), std::mem::take(c))));
        for (fanout, chunk) in ports {
            if chunk.is_empty() {
                continue;
            }
            match fanout {
                Some(fanout) if !fanout.is_empty() => {
                    ledger.sent(chunk.len());
                    fanout.send_all(chunk).await;
                }
                _ => {
                    ledger.discarded(chunk.len(), "unconsumed_output", false);
                    resolve_all(chunk, Outcome::Failed);
                }
            }
        }
    }
    Ok(())
}

/// Builds every component and runs the pipeline until `shutdown` fires or every source ends,
/// then drains. Build errors (a port in use...) are returned before anything runs.
///
/// `observe` is called once with the ledger before anything runs (the API serves it); an
/// error from it stops start-up.
pub async fn run(
    graph: Graph,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
    observe: impl FnOnce(&Ledger, &Taps) -> Result<(), String>,
) -> Result<RunReport, Vec<String>> {
    let Graph { globals, components } = graph;
    let mut ledger = Ledger::default();
    let ledgers: BTreeMap<String, Arc<ComponentLedger>> = components
        .iter()
        .map(|c| {
            let l = Arc::new(ComponentLedger::new(c.id.clone(), c.kind, c.type_name));
            ledger.register(l.clone());
            (c.id.clone(), l)
        })
        .collect();
    let ledger_of = |id: &str| {
        ledgers.get(id).cloned().unwrap_or_else(|| Arc::new(ComponentLedger::new(id, ComponentKind::Sink, "?")))
    };

    let mut taps = Taps::new(
        components.iter().map(|c| (c.id.clone(), c.inputs.iter().map(ToString::to_string).collect())).collect(),
    );

    // Input buffers of transforms and sinks.
    let mut receivers: BTreeMap<String, MemoryReceiver<Chunk>> = BTreeMap::new();
    let mut senders = BTreeMap::new();
    // `when_full = "overflow"`: the disk stage's input, next to the memory stage.
    let mut overflows: BTreeMap<String, (MemorySender<Chunk>, MemoryReceiver<Chunk>)> = BTreeMap::new();
    // Sinks' memory stages, read by the buffer gauges.
    let mut memory_gauges = BTreeMap::new();
    for c in &components {
        let capacity = match c.kind {
            ComponentKind::Source => continue,
            ComponentKind::Transform => TRANSFORM_INPUT_EVENTS,
            ComponentKind::Sink => c.buffer.memory_bytes().map_or(c.buffer.max_events, |b| b as usize),
        };
        let (tx, rx) = memory::<Chunk>(capacity);
        if c.kind == ComponentKind::Sink {
            memory_gauges.insert(c.id.clone(), tx.gauge());
            // Sinks with a disk stage get their probe once the disk buffer is open.
            if c.buffer.disk_stage().is_none() {
                let gauge = tx.gauge();
                let in_bytes = c.buffer.memory_bytes().is_some();
                ledger_of(&c.id).set_buffer_probe(Box::new(move || {
                    let (queued, max) = gauge();
                    if in_bytes {
                        BufferLevel { bytes: Some(queued), max_bytes: Some(max), ..BufferLevel::default() }
                    } else {
                        BufferLevel { events: Some(queued), max_events: Some(max), ..BufferLevel::default() }
                    }
                }));
            }
        }
        senders.insert(c.id.clone(), (tx, c.buffer.when_full));
        receivers.insert(c.id.clone(), rx);
        if let Some(stage) = c.buffer.overflow.as_deref() {
            // The hand-off to the disk stage's writer, weighed like the memory stage.
            let capacity = if c.buffer.memory_bytes().is_some() { OVERFLOW_HANDOFF_BYTES } else { stage.max_events };
            overflows.insert(c.id.clone(), memory::<Chunk>(capacity));
        }
    }
    // Each sink's dead-letter queue, filled in when the sink is built; fan-outs divert a
    // stalled sink's events there (G4).
    let dlq_slots: BTreeMap<String, DeadLetterSlot> = components
        .iter()
        .filter(|c| c.kind == ComponentKind::Sink)
        .map(|c| (c.id.clone(), DeadLetterSlot::default()))
        .collect();
    let diversions = Diversions::default();
    // One fan-out per output port, built before the components are consumed.
    let mut fanouts: BTreeMap<OutputRef, Fanout> = BTreeMap::new();
    for c in &components {
        for out in &c.outputs {
            let port = OutputRef { component: c.id.clone(), port: out.name.clone() };
            let consumers = components
                .iter()
                .filter(|d| d.inputs.contains(&port))
                .filter_map(|d| {
                    senders.get(&d.id).map(|(tx, when_full)| {
                        let mut consumer = Consumer::new(tx.clone(), ledger_of(&d.id), *when_full);
                        if d.buffer.memory_bytes().is_some() {
                            consumer = consumer.weighed_in_bytes();
                        }
                        if let Some((overflow, _)) = overflows.get(&d.id) {
                            consumer = consumer.overflowing_to(overflow.clone());
                        }
                        match dlq_slots.get(&d.id) {
                            Some(slot) => consumer.isolated(
                                slot.clone(),
                                Duration::from_secs_f64(d.buffer.stall_timeout_secs.clamp(0.0, 1e9)),
                                diversions.clone(),
                            ),
                            None => consumer,
                        }
                    })
                })
                .collect();
            let point = taps.point(&c.id, out.name.as_deref(), c.kind.as_str(), c.type_name);
            fanouts.insert(port, Fanout::new(consumers).tapped(point));
        }
    }
    observe(&ledger, &taps).map_err(|e| vec![e])?;
    let mut fanout_for = |port: &OutputRef| fanouts.remove(port).unwrap_or_default();

    let (trigger, signal) = shutdown_pair();
    // Fires only when shutdown was asked for (a signal), not when every source finished:
    // then disk buffers keep their backlog for the next start instead of draining it.
    let (interrupt_trigger, interrupt) = shutdown_pair();
    let mut housekeeping = Vec::new();
    let mut sources = JoinSet::new();
    let mut others = JoinSet::new();
    let mut errors = Vec::new();
    let mut names = BTreeMap::new();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    for c in components {
        let id: Arc<str> = Arc::from(c.id.as_str());
        let own_ledger = ledger_of(&c.id);
        match c.config {
            AnyConfig::Source(config) => {
                let port = OutputRef { component: c.id.clone(), port: None };
                let dead_letter = Arc::new(SinkDeadLetter::new(
                    &c.id,
                    c.type_name,
                    own_ledger.clone(),
                    Fanout::default(),
                    &globals.options.data_dir,
                ));
                let out = SourceSender::new(Box::new(fanout_for(&port)), own_ledger);
                let cx = SourceContext {
                    id: id.clone(),
                    out,
                    shutdown: signal.clone(),
                    acknowledgements: c.acknowledgements && config.can_acknowledge(),
                    globals: globals.options.clone(),
                    pipeline: ledger.clone(),
                    ready: ready.clone(),
                    dead_letter,
                };
                match config.build(cx) {
                    Ok(task) => {
                        let handle = sources.spawn(task);
                        names.insert(handle.id(), c.id.clone());
                    }
                    Err(err) => errors.push(format!("source \"{}\": {err}", c.id)),
                }
            }
            AnyConfig::Transform(config) => {
                let cx = TransformContext { id: id.clone(), globals: globals.options.clone() };
                let Some(rx) = receivers.remove(&c.id) else {
                    continue;
                };
                let mut default = None;
                let mut named = Vec::new();
                for out in &c.outputs {
                    let port = OutputRef { component: c.id.clone(), port: out.name.clone() };
                    match out.name {
                        None => default = Some(fanout_for(&port)),
                        Some(_) => named.push(fanout_for(&port)),
                    }
                }
                match config.build(&cx) {
                    Ok(transform) => {
                        let handle = others.spawn(run_transform(rx, transform, default, named, own_ledger));
                        names.insert(handle.id(), c.id.clone());
                    }
                    Err(err) => errors.push(format!("transform \"{}\": {err}", c.id)),
                }
            }
            AnyConfig::Sink(config) => {
                let port = OutputRef { component: c.id.clone(), port: Some("dead_letter".to_owned()) };
                let dead_letter = Arc::new(SinkDeadLetter::new(
                    &c.id,
                    c.type_name,
                    own_ledger.clone(),
                    fanout_for(&port),
                    &globals.options.data_dir,
                ));
                housekeeping.push(dead_letter.spawn_housekeeping());
                if let Some(slot) = dlq_slots.get(&c.id) {
                    let _ = slot.set(dead_letter.clone());
                }
                let cx = SinkContext {
                    id: id.clone(),
                    ledger: own_ledger,
                    globals: globals.options.clone(),
                    dead_letter,
                    shutdown: signal.clone(),
                    drain_limit: options.graceful_shutdown_limit,
                    disk_backed: (c.buffer.buffer_type == BufferType::Disk).then(|| interrupt.clone()),
                };
                let Some(rx) = receivers.remove(&c.id) else {
                    continue;
                };
                // The memory stage, unless the whole buffer is on disk; then the disk stage.
                let memory_input = BufferInput { rx, ack_on_arrival: !c.acknowledgements };
                let (disk_rx, memory_input) = match (c.buffer.buffer_type, overflows.remove(&c.id)) {
                    (BufferType::Disk, _) => (Some(memory_input.rx), None),
                    (_, Some((_, overflow_rx))) => (Some(overflow_rx), Some(memory_input)),
                    (_, None) => (None, Some(memory_input)),
                };
                let input: Box<dyn ChunkReceiver> = if let (Some(disk_rx), Some(stage)) =
                    (disk_rx, c.buffer.disk_stage())
                {
                    let dir = disk::buffer_dir(&globals.options.data_dir, &c.id, stage);
                    let started =
                        disk::start(&dir, stage, disk_rx, cx.ledger.clone(), cx.dead_letter.clone(), interrupt.clone());
                    match started {
                        Ok((input, writer)) => {
                            if let Some(memory) = memory_gauges.remove(&c.id) {
                                let overflow = c.buffer.buffer_type == BufferType::Memory;
                                let counts_events = c.buffer.memory_bytes().is_none();
                                cx.ledger.set_buffer_probe(disk::probe(
                                    input.level(),
                                    stage,
                                    memory,
                                    overflow,
                                    counts_events,
                                ));
                            }
                            let handle = others.spawn(async move {
                                writer.await;
                                Ok(())
                            });
                            names.insert(handle.id(), format!("{} (disk buffer)", c.id));
                            match memory_input {
                                Some(memory) => Box::new(disk::Overflowing::new(Box::new(memory), input)),
                                None => Box::new(input),
                            }
                        }
                        Err(err) => {
                            errors.push(format!(
                                "sink \"{}\": cannot open its disk buffer {}: {err}",
                                c.id,
                                dir.display()
                            ));
                            continue;
                        }
                    }
                } else {
                    match memory_input {
                        Some(memory) => Box::new(memory),
                        None => continue,
                    }
                };
                match config.build(cx) {
                    Ok(sink) => {
                        let handle = others.spawn(sink.run(SinkInput::new(input)));
                        names.insert(handle.id(), c.id.clone());
                    }
                    Err(err) => errors.push(format!("sink \"{}\": {err}", c.id)),
                }
            }
        }
    }
    // Only the fan-outs hold senders now: channels close as their upstreams finish. (The
    // slots must go too: a sink's dead-letter queue holds the senders of its `.dead_letter`
    // consumers.)
    drop(senders);
    drop(overflows);
    drop(dlq_slots);
    if !errors.is_empty() {
        trigger.trigger();
        sources.abort_all();
        others.abort_all();
        housekeeping.iter().for_each(|c| c.abort());
        return Err(errors);
    }
    let _ = ready_tx.send(true);
    tracing::info!(components = names.len(), "Pipeline started.");
    housekeeping.push(tokio::spawn(watchdog::run(ledger.clone(), watchdog::EVERY, watchdog::THRESHOLD)));

    let mut failed_components = Vec::new();
    let mut record = |result: Result<(tokio::task::Id, Result<(), ()>), tokio::task::JoinError>| {
        let (id, ok) = match result {
            Ok((id, r)) => (id, r.is_ok()),
            Err(err) => (err.id(), err.is_cancelled()),
        };
        if !ok {
            failed_components.push(names.get(&id).cloned().unwrap_or_default());
        }
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => {
                tracing::info!("Shutdown requested; stopping sources and draining (disk buffers keep their backlog).");
                interrupt_trigger.trigger();
                break;
            }
            next = sources.join_next_with_id() => match next {
                Some(result) => record(result),
                None => {
                    tracing::info!("Every source has finished; draining.");
                    break;
                }
            },
        }
    }
    trigger.trigger();
    let limit = options.graceful_shutdown_limit;
    let drained = tokio::time::timeout(limit, async {
        while let Some(result) = sources.join_next_with_id().await {
            record(result);
        }
        while let Some(result) = others.join_next_with_id().await {
            record(result);
        }
        // Stalled sinks' copies still on their way to the dead-letter queue.
        diversions.join().await;
    })
    .await;
    let timed_out = drained.is_err();
    if timed_out {
        tracing::error!(
            limit_secs = limit.as_secs_f64(),
            "Graceful shutdown limit reached; stopping components that still hold events."
        );
        sluice_core::ack::mark_aborting();
        sources.abort_all();
        others.abort_all();
        diversions.abort();
        while sources.join_next().await.is_some() {}
        while others.join_next().await.is_some() {}
    }
    for closer in housekeeping {
        closer.abort();
    }
    drop(interrupt_trigger);
    Ok(RunReport { ledger: ledger.snapshot(), timed_out, failed_components })
}
