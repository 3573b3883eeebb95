//! The running topology: each component's task, its input buffer and the fan-outs of its
//! outputs, kept by id so that a reload can start, stop and rewire components one by one.
//!
//! Invariants:
//! - Every running transform and sink has its input's sender kept here ([`InputEnd`]), so
//!   its channel stays open while its upstreams change; the drain drops them all.
//! - Every output port of a running component has its [`FanoutHandle`] here.
//! - A component's ledger is registered once per id and kept when the component is changed
//!   or removed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_buffers::{MemorySender, memory};
use sluice_core::Chunk;
use sluice_core::component::{
    AnyConfig, GlobalOptions, SinkContext, SinkInput, SourceContext, SourceSender, TransformConfig, TransformContext,
};
use sluice_core::ledger::{BufferLevel, ComponentKind, ComponentLedger, Ledger};
use sluice_core::shutdown::{ShutdownTrigger, shutdown_pair};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::fanout::{Consumer, DeadLetterSlot, Diversions, Fanout, FanoutHandle};
use super::transform::{self, Copies, Outputs, Swap};
use super::{BufferInput, RunOptions, disk};
use crate::config::{BufferConfig, Component, Globals, OutputRef, WhenFull, schema::BufferType};
use crate::dead_letter::SinkDeadLetter;
use crate::tap::Taps;

/// Estimated bytes queued between a memory stage limited in bytes and its disk stage's writer.
const OVERFLOW_HANDOFF_BYTES: usize = 4 << 20;

/// Events a transform's input channel holds.
const TRANSFORM_INPUT_EVENTS: usize = 2048;

pub(super) type Tasks = JoinSet<Result<(), ()>>;

/// The writing end of a transform's or sink's input buffer, from which the fan-outs of its
/// inputs get their consumers.
pub(super) struct InputEnd {
    tx: MemorySender<Chunk>,
    when_full: WhenFull,
    weigh_bytes: bool,
    /// `when_full = "overflow"`: the disk stage's input.
    overflow: Option<MemorySender<Chunk>>,
    /// Sinks: their dead-letter queue, for isolation.
    dead_letter: Option<DeadLetterSlot>,
    stall_timeout: Duration,
}

impl InputEnd {
    fn consumer(&self, ledger: Arc<ComponentLedger>, diversions: &Diversions) -> Consumer {
        let mut consumer = Consumer::new(self.tx.clone(), ledger, self.when_full);
        if self.weigh_bytes {
            consumer = consumer.weighed_in_bytes();
        }
        if let Some(overflow) = &self.overflow {
            consumer = consumer.overflowing_to(overflow.clone());
        }
        match &self.dead_letter {
            Some(slot) => consumer.isolated(slot.clone(), self.stall_timeout, diversions.clone()),
            None => consumer,
        }
    }
}

/// A component without its config (which building consumes).
pub(super) struct Meta {
    pub id: String,
    pub kind: ComponentKind,
    pub type_name: &'static str,
    pub inputs: Vec<OutputRef>,
    pub outputs: Vec<sluice_core::component::OutputSpec>,
    pub buffer: BufferConfig,
    pub acknowledgements: bool,
    pub fingerprint: String,
    pub healthcheck: crate::config::SinkHealthcheck,
}

impl Meta {
    fn split(c: Component) -> (Self, AnyConfig) {
        let meta = Self {
            id: c.id,
            kind: c.kind,
            type_name: c.type_name,
            inputs: c.inputs,
            outputs: c.outputs,
            buffer: c.buffer,
            acknowledgements: c.acknowledgements,
            fingerprint: c.fingerprint,
            healthcheck: c.healthcheck,
        };
        (meta, c.config)
    }
}

/// One running component.
pub(super) struct Live {
    pub kind: ComponentKind,
    pub inputs: Vec<OutputRef>,
    /// Its output ports, in its config's order.
    pub ports: Vec<OutputRef>,
    pub fingerprint: String,
    pub ledger: Arc<ComponentLedger>,
    /// Transforms and sinks.
    pub input: Option<InputEnd>,
    /// Sources: stop reading. Sinks: the drain's time has started.
    pub shutdown: ShutdownTrigger,
    /// Sinks with a disk buffer: stop with the backlog kept on disk.
    pub interrupt: Option<ShutdownTrigger>,
    /// Resolve when the component's tasks have ended.
    pub done: Vec<oneshot::Receiver<()>>,
    /// Transforms: where a reload hands a changed transform with the same outputs.
    pub swap: Option<Arc<Swap>>,
    /// Sinks: their dead-letter queue's housekeeping.
    pub housekeeping: Option<tokio::task::JoinHandle<()>>,
}

impl Live {
    /// Waits until every task of the component has ended, at most `limit`. False on timeout.
    pub async fn finished(&mut self, limit: Duration) -> bool {
        let done = std::mem::take(&mut self.done);
        tokio::time::timeout(limit, futures::future::join_all(done)).await.is_ok()
    }
}

pub(super) struct Topology {
    pub globals: Globals,
    pub options: RunOptions,
    pub ledger: Ledger,
    pub taps: Taps,
    pub diversions: Diversions,
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// Set once shutdown was asked for by a signal: disk buffers keep their backlog.
    pub interrupted: bool,
    pub live: BTreeMap<String, Live>,
    pub ports: BTreeMap<OutputRef, FanoutHandle>,
    pub sources: Tasks,
    pub others: Tasks,
    pub names: BTreeMap<tokio::task::Id, String>,
    /// Healthchecks of the sinks started since they were last taken: sink id, time limit,
    /// check.
    pub healthchecks: Vec<(String, Duration, sluice_core::component::Healthcheck)>,
}

/// Spawns `task` in `set` under `name`; the receiver resolves when it ends (or is aborted).
fn spawn_tracked(
    set: &mut Tasks,
    names: &mut BTreeMap<tokio::task::Id, String>,
    name: String,
    task: impl Future<Output = Result<(), ()>> + Send + 'static,
) -> oneshot::Receiver<()> {
    let (tx, rx) = oneshot::channel::<()>();
    let handle = set.spawn(async move {
        let result = task.await;
        drop(tx);
        result
    });
    names.insert(handle.id(), name);
    rx
}

impl Topology {
    /// The ledger of component `c`: the one it had before a reload, or a new one.
    fn ledger_for(&self, c: &Meta) -> Arc<ComponentLedger> {
        self.ledger.register(Arc::new(ComponentLedger::new(c.id.clone(), c.kind, c.type_name)))
    }

    /// A fan-out for `port` of `c`, with a consumer for every running component that reads
    /// it, and its tap point.
    fn fanout(&mut self, c: &Meta, port: &OutputRef) -> Fanout {
        let consumers = self
            .live
            .iter()
            .filter(|(_, l)| l.inputs.contains(port))
            .filter_map(|(_, l)| l.input.as_ref().map(|input| input.consumer(l.ledger.clone(), &self.diversions)))
            .collect();
        let point = self.taps.point(&c.id, port.port.as_deref(), c.kind.as_str(), c.type_name);
        let fanout = Fanout::new(consumers).tapped(point);
        self.ports.insert(port.clone(), fanout.handle());
        fanout
    }

    /// A consumer for component `id`'s input, if it is running and has one.
    pub fn consumer_of(&self, id: &str) -> Option<Consumer> {
        let live = self.live.get(id)?;
        live.input.as_ref().map(|input| input.consumer(live.ledger.clone(), &self.diversions))
    }

    fn live(&self, c: &Meta, ledger: Arc<ComponentLedger>, shutdown: ShutdownTrigger) -> Live {
        Live {
            kind: c.kind,
            inputs: c.inputs.clone(),
            ports: c.outputs.iter().map(|o| OutputRef { component: c.id.clone(), port: o.name.clone() }).collect(),
            fingerprint: c.fingerprint.clone(),
            ledger,
            input: None,
            shutdown,
            interrupt: None,
            done: Vec::new(),
            swap: None,
            housekeeping: None,
        }
    }

    /// Builds and starts a source; its fan-out reaches every running component that reads it.
    pub fn start_source(&mut self, c: Component) -> Result<(), String> {
        let (c, config) = Meta::split(c);
        let AnyConfig::Source(config) = config else {
            return Err(format!("\"{}\" is not a source", c.id));
        };
        let ledger = self.ledger_for(&c);
        let port = OutputRef { component: c.id.clone(), port: None };
        let fanout = self.fanout(&c, &port);
        let dead_letter = Arc::new(SinkDeadLetter::new(
            &c.id,
            c.type_name,
            ledger.clone(),
            Fanout::default(),
            &self.globals.options.data_dir,
        ));
        let (trigger, signal) = shutdown_pair();
        let cx = SourceContext {
            id: Arc::from(c.id.as_str()),
            out: SourceSender::new(Box::new(fanout), ledger.clone()),
            shutdown: signal,
            acknowledgements: c.acknowledgements && config.can_acknowledge(),
            globals: self.globals.options.clone(),
            pipeline: self.ledger.clone(),
            ready: self.ready.clone(),
            dead_letter,
        };
        let mut live = self.live(&c, ledger, trigger);
        match config.build(cx) {
            Ok(task) => {
                live.done.push(spawn_tracked(&mut self.sources, &mut self.names, c.id.clone(), task));
                self.live.insert(c.id, live);
                Ok(())
            }
            Err(err) => {
                self.ports.remove(&port);
                Err(format!("source \"{}\": {err}", c.id))
            }
        }
    }

    /// The input buffer of a transform or sink.
    fn input(&self, c: &Meta, slot: Option<DeadLetterSlot>) -> (InputEnd, sluice_buffers::MemoryReceiver<Chunk>) {
        let buffer: &BufferConfig = &c.buffer;
        let capacity = match c.kind {
            ComponentKind::Sink => buffer.memory_bytes().map_or(buffer.max_events, |b| b as usize),
            _ => TRANSFORM_INPUT_EVENTS,
        };
        let (tx, rx) = memory::<Chunk>(capacity);
        let sink = c.kind == ComponentKind::Sink;
        let end = InputEnd {
            tx,
            when_full: if sink { buffer.when_full } else { WhenFull::Block },
            weigh_bytes: sink && buffer.memory_bytes().is_some(),
            overflow: None,
            dead_letter: slot,
            stall_timeout: Duration::from_secs_f64(buffer.stall_timeout_secs.clamp(0.0, 1e9)),
        };
        (end, rx)
    }

    /// Starts a transform built by `prebuilt` (or from its config); its fan-outs reach every
    /// running component that reads it. Its upstreams get its consumer from the caller.
    pub fn start_transform(&mut self, c: Component, prebuilt: Option<Copies>) -> Result<(), String> {
        let (c, config) = Meta::split(c);
        let copies = match (prebuilt, &config) {
            (Some(copies), _) => copies,
            (None, AnyConfig::Transform(config)) => build_copies(&c.id, config.as_ref(), &self.globals.options)?,
            (None, _) => return Err(format!("\"{}\" is not a transform", c.id)),
        };
        let ledger = self.ledger_for(&c);
        let (input, rx) = self.input(&c, None);
        let mut default = None;
        let mut named = Vec::new();
        for out in &c.outputs {
            let port = OutputRef { component: c.id.clone(), port: out.name.clone() };
            let fanout = self.fanout(&c, &port);
            match out.name {
                None => default = Some(fanout),
                Some(_) => named.push(fanout),
            }
        }
        let (trigger, _) = shutdown_pair();
        let swap = Arc::new(Swap::default());
        let mut live = self.live(&c, ledger.clone(), trigger);
        live.input = Some(input);
        live.swap = Some(swap.clone());
        let task = transform::run(rx, copies, Outputs { default, named, ledger }, swap);
        live.done.push(spawn_tracked(&mut self.others, &mut self.names, c.id.clone(), task));
        self.live.insert(c.id, live);
        Ok(())
    }

    /// Builds and starts a sink with its buffer and dead-letter queue.
    pub fn start_sink(&mut self, c: Component) -> Result<(), String> {
        let (c, config) = Meta::split(c);
        let ledger = self.ledger_for(&c);
        let data_dir = self.globals.options.data_dir.clone();
        let dlq_port = OutputRef { component: c.id.clone(), port: Some("dead_letter".to_owned()) };
        let dead_letter =
            Arc::new(SinkDeadLetter::new(&c.id, c.type_name, ledger.clone(), self.fanout(&c, &dlq_port), &data_dir));
        let slot = DeadLetterSlot::default();
        let _ = slot.set(dead_letter.clone());
        let (mut input, rx) = self.input(&c, Some(slot));
        let (shutdown, signal) = shutdown_pair();
        let disk_backed = c.buffer.buffer_type == BufferType::Disk;
        let (interrupt, interrupted) = shutdown_pair();
        if self.interrupted {
            interrupt.trigger();
        }
        let mut live = self.live(&c, ledger.clone(), shutdown);
        live.housekeeping = Some(dead_letter.spawn_housekeeping());
        let fail = |live: Live, err: String| {
            if let Some(h) = &live.housekeeping {
                h.abort();
            }
            Err(err)
        };
        let cx = SinkContext {
            id: Arc::from(c.id.as_str()),
            ledger: ledger.clone(),
            globals: self.globals.options.clone(),
            dead_letter,
            shutdown: signal,
            drain_limit: self.options.graceful_shutdown_limit,
            disk_backed,
            healthcheck_uri: c.healthcheck.uri.clone(),
        };
        let AnyConfig::Sink(config) = config else {
            return fail(live, format!("\"{}\" is not a sink", c.id));
        };
        let sink = match config.build(cx) {
            Ok(sink) => sink,
            Err(err) => return fail(live, format!("sink \"{}\": {err}", c.id)),
        };
        if self.globals.healthchecks
            && c.healthcheck.enabled
            && let Some(check) = sink.healthcheck()
        {
            let limit = Duration::from_secs_f64(c.healthcheck.timeout_secs.clamp(0.001, 86_400.0));
            self.healthchecks.push((c.id.clone(), limit, check));
        }
        let memory_gauge = input.tx.gauge();
        let in_bytes = c.buffer.memory_bytes().is_some();
        let memory_input = BufferInput { rx, ack_on_arrival: !c.acknowledgements };
        // The memory stage, unless the whole buffer is on disk; then the disk stage.
        let (disk_rx, memory_input) = match (c.buffer.buffer_type, c.buffer.overflow.as_deref()) {
            (BufferType::Disk, _) => (Some(memory_input.rx), None),
            (_, Some(stage)) => {
                // The hand-off to the disk stage's writer, weighed like the memory stage.
                let capacity = if in_bytes { OVERFLOW_HANDOFF_BYTES } else { stage.max_events };
                let (overflow_tx, overflow_rx) = memory::<Chunk>(capacity);
                input.overflow = Some(overflow_tx);
                (Some(overflow_rx), Some(memory_input))
            }
            (_, None) => (None, Some(memory_input)),
        };
        let sink_input: Box<dyn sluice_core::component::ChunkReceiver> =
            match (disk_rx, c.buffer.disk_stage(), memory_input) {
                (Some(disk_rx), Some(stage), memory_input) => {
                    let dir = disk::buffer_dir(&data_dir, &c.id, stage);
                    let dead_letter = match input.dead_letter.as_ref().and_then(|s| s.get()) {
                        Some(dlq) => dlq.clone(),
                        None => return fail(live, format!("sink \"{}\": no dead-letter queue", c.id)),
                    };
                    // A sink replaced by a reload: its ledger still holds its backlog in flight.
                    let backlog_counted = ledger.in_flight() > 0;
                    let started =
                        disk::start(&dir, stage, disk_rx, ledger.clone(), dead_letter, interrupted, backlog_counted);
                    let (disk_input, writer) = match started {
                        Ok(started) => started,
                        Err(err) => {
                            let message =
                                format!("sink \"{}\": cannot open its disk buffer {}: {err}", c.id, dir.display());
                            return fail(live, message);
                        }
                    };
                    let overflow = c.buffer.buffer_type == BufferType::Memory;
                    let gauge = Box::new(memory_gauge);
                    ledger.set_buffer_probe(disk::probe(disk_input.level(), stage, gauge, overflow, !in_bytes));
                    let name = format!("{} (disk buffer)", c.id);
                    let writer = async move {
                        writer.await;
                        Ok(())
                    };
                    live.done.push(spawn_tracked(&mut self.others, &mut self.names, name, writer));
                    live.interrupt = Some(interrupt);
                    match memory_input {
                        Some(memory) => Box::new(disk::Overflowing::new(Box::new(memory), disk_input)),
                        None => Box::new(disk_input),
                    }
                }
                (_, _, Some(memory)) => {
                    ledger.set_buffer_probe(Box::new(move || {
                        let (queued, max) = memory_gauge();
                        if in_bytes {
                            BufferLevel { bytes: Some(queued), max_bytes: Some(max), ..BufferLevel::default() }
                        } else {
                            BufferLevel { events: Some(queued), max_events: Some(max), ..BufferLevel::default() }
                        }
                    }));
                    Box::new(memory)
                }
                (_, _, None) => return fail(live, format!("sink \"{}\": a disk buffer without its stage", c.id)),
            };
        live.input = Some(input);
        let task = sink.run(SinkInput::new(sink_input));
        live.done.push(spawn_tracked(&mut self.others, &mut self.names, c.id.clone(), task));
        self.live.insert(c.id, live);
        Ok(())
    }

    /// Starts one component of a checked graph.
    pub fn start(&mut self, c: Component) -> Result<(), String> {
        match c.kind {
            ComponentKind::Source => self.start_source(c),
            ComponentKind::Transform => self.start_transform(c, None),
            ComponentKind::Sink => self.start_sink(c),
        }
    }

    /// Starts component `id`'s stop without taking it out yet: its drain time starts (a sink
    /// cuts its retries short at half the graceful limit) and a disk buffer stops handing out
    /// its backlog. A sink stuck on its destination then frees its buffer, so the fan-outs
    /// that feed it can be locked.
    pub fn begin_stop(&self, id: &str) {
        if let Some(live) = self.live.get(id) {
            live.shutdown.trigger();
            if let Some(interrupt) = &live.interrupt {
                interrupt.trigger();
            }
        }
    }

    /// Takes component `id` out of the topology: its kept input is dropped, its shutdown fires
    /// (disk buffers keep their backlog) and its ports are forgotten. Its consumers in the
    /// fan-outs of its inputs are the caller's to remove; once they are gone, its input
    /// closes and it drains. Returns it to await.
    pub fn detach(&mut self, id: &str) -> Option<Live> {
        let mut live = self.live.remove(id)?;
        live.input = None;
        live.shutdown.trigger();
        if let Some(interrupt) = &live.interrupt {
            interrupt.trigger();
        }
        if let Some(housekeeping) = &live.housekeeping {
            housekeeping.abort();
        }
        for port in &live.ports {
            self.ports.remove(port);
        }
        Some(live)
    }

    /// Shutdown: sources stop, sinks' drain time starts, and (on a signal) disk buffers keep
    /// their backlog. The kept input senders go: channels close as their upstreams finish.
    pub fn shut_down(&mut self, interrupted: bool) {
        for live in self.live.values_mut() {
            live.shutdown.trigger();
            live.input = None;
        }
        self.ports.clear();
        if interrupted {
            self.keep_disk_backlogs();
        }
    }

    /// Disk buffers stop handing out their backlog: what they hold stays on disk for the
    /// next start (on a signal, or once the drain time after the sources' end ran out).
    pub fn keep_disk_backlogs(&mut self) {
        self.interrupted = true;
        for interrupt in self.live.values().filter_map(|live| live.interrupt.as_ref()) {
            interrupt.trigger();
        }
    }

    /// Aborts every DLQ housekeeping task (the end of the run).
    pub fn stop_housekeeping(&mut self) {
        for live in self.live.values() {
            if let Some(h) = &live.housekeeping {
                h.abort();
            }
        }
    }
}

/// Builds a transform: one copy, or one per runtime worker when its config allows several
/// at once (see [`transform`]).
pub(crate) fn build_copies(
    id: &str,
    config: &dyn TransformConfig,
    globals: &Arc<GlobalOptions>,
) -> Result<Copies, String> {
    let cx = TransformContext { id: Arc::from(id), globals: globals.clone() };
    let count = if config.concurrent() {
        tokio::runtime::Handle::try_current().map_or(1, |runtime| runtime.metrics().num_workers()).max(1)
    } else {
        1
    };
    (0..count).map(|_| config.build(&cx).map_err(|err| format!("transform \"{id}\": {err}"))).collect()
}
