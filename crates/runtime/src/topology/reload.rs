//! Reload: switch the running pipeline to a new checked graph without losing an event.
//!
//! The new graph is diffed against the running one by component id and fingerprint (the
//! component's table without `inputs`):
//! - unchanged components keep running, with their buffers and connections; if only their
//!   `inputs` changed, their consumers move between fan-outs;
//! - a changed transform with the same outputs takes its new program at its next chunk;
//! - changed sinks and other changed transforms are replaced while the fan-outs that feed
//!   them are held (their upstreams wait; nothing goes to neither): the old one drains its
//!   memory buffer (a disk buffer keeps its backlog for the new one) and the new one starts;
//! - removed and changed sources stop first, with their acknowledgements settled and their
//!   checkpoints saved, so a renamed file source starts from the shared checkpoint store
//!   and reads nothing twice;
//! - removed transforms and sinks stop taking events and drain, upstream first.
//!
//! Component ledgers stay across reloads (by id), so the ledger balances over the whole run.
//! A reload that changes the global options is refused: they take effect at the next start.

use std::collections::{BTreeMap, BTreeSet};

use sluice_core::component::AnyConfig;
use sluice_core::ledger::ComponentKind;

use super::build::{Topology, build_copies};
use super::fanout::FanoutGuard;
use super::transform::Copies;
use crate::config::{Component, Graph, OutputRef};

/// What a reload did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadSummary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Unchanged components whose `inputs` changed.
    pub rewired: Vec<String>,
    /// Components the reload could not start (the rest of it was applied).
    pub failed: Vec<String>,
    /// Components that did not finish draining within the graceful limit.
    pub slow: Vec<String>,
}

impl ReloadSummary {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty() && self.rewired.is_empty()
    }
}

/// Depth of each component from the sources (sources 0), over `(id, inputs)`.
pub(super) fn ranks<'a>(components: impl Iterator<Item = (&'a str, &'a Vec<OutputRef>)>) -> BTreeMap<String, usize> {
    let inputs: BTreeMap<&str, Vec<&str>> =
        components.map(|(id, inputs)| (id, inputs.iter().map(|i| i.component.as_str()).collect())).collect();
    fn rank<'a>(
        id: &'a str,
        inputs: &BTreeMap<&'a str, Vec<&'a str>>,
        memo: &mut BTreeMap<&'a str, usize>,
        depth: usize,
    ) -> usize {
        if let Some(r) = memo.get(id) {
            return *r;
        }
        // The graph was checked for cycles; the depth bound only guards against a bug.
        let r = match inputs.get(id) {
            Some(ups) if depth < 10_000 => ups.iter().map(|u| rank(u, inputs, memo, depth + 1) + 1).max().unwrap_or(0),
            _ => 0,
        };
        memo.insert(id, r);
        r
    }
    let mut memo = BTreeMap::new();
    for id in inputs.keys() {
        rank(id, &inputs, &mut memo, 0);
    }
    memo.into_iter().map(|(id, r)| (id.to_owned(), r)).collect()
}

fn port_names(ports: impl IntoIterator<Item = Option<String>>) -> BTreeSet<Option<String>> {
    ports.into_iter().collect()
}

/// Locks the fan-outs of `ports` that are running, upstream first (an upstream holding its
/// lock while it waits on a downstream that is already locked would never let go).
async fn lock_ports(
    t: &Topology,
    ports: impl IntoIterator<Item = OutputRef>,
    ranks: &BTreeMap<String, usize>,
) -> Vec<(OutputRef, FanoutGuard)> {
    let mut ports: Vec<OutputRef> = ports.into_iter().filter(|p| t.ports.contains_key(p)).collect();
    ports.sort_by_key(|p| (ranks.get(&p.component).copied().unwrap_or(0), p.clone()));
    ports.dedup();
    let mut guards = Vec::with_capacity(ports.len());
    for port in ports {
        if let Some(handle) = t.ports.get(&port) {
            guards.push((port, handle.lock().await));
        }
    }
    guards
}

/// Applies `graph` to the running topology. Errors mean nothing was changed.
pub(super) async fn apply(t: &mut Topology, graph: Graph) -> Result<ReloadSummary, Vec<String>> {
    let Graph { globals, components } = graph;
    if globals.fingerprint != t.globals.fingerprint {
        return Err(vec![
            "the global options changed (data_dir, api, acknowledgements, proxy...): they take effect at the next start, so nothing was reloaded".to_owned(),
        ]);
    }
    let mut new: BTreeMap<String, Component> = components.into_iter().map(|c| (c.id.clone(), c)).collect();
    let mut summary = ReloadSummary {
        removed: t.live.keys().filter(|id| !new.contains_key(*id)).cloned().collect(),
        ..ReloadSummary::default()
    };
    let mut swapped = Vec::new();
    for (id, c) in &new {
        match t.live.get(id) {
            None => summary.added.push(id.clone()),
            Some(live) if live.kind != c.kind || live.fingerprint != c.fingerprint => {
                let same_ports = port_names(live.ports.iter().map(|p| p.port.clone()))
                    == port_names(c.outputs.iter().map(|o| o.name.clone()));
                if c.kind == ComponentKind::Transform && live.kind == ComponentKind::Transform && same_ports {
                    swapped.push(id.clone());
                } else {
                    summary.changed.push(id.clone());
                }
            }
            Some(live) if live.inputs != c.inputs => summary.rewired.push(id.clone()),
            Some(_) => {}
        }
    }
    if summary.is_empty() && swapped.is_empty() {
        return Ok(summary);
    }
    // Transforms are built first: one that does not build refuses the whole reload.
    let mut prebuilt: BTreeMap<String, Copies> = BTreeMap::new();
    let mut errors = Vec::new();
    for (id, c) in &new {
        let building = swapped.contains(id) || summary.added.contains(id) || summary.changed.contains(id);
        if let (true, AnyConfig::Transform(config)) = (building, &c.config) {
            match build_copies(id, config.as_ref(), &t.globals.options) {
                Ok(copies) => {
                    prebuilt.insert(id.clone(), copies);
                }
                Err(err) => errors.push(err),
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let limit = t.options.graceful_shutdown_limit;
    // Ranks over both graphs: the new one, and what goes away from the old one.
    let mut edges: BTreeMap<String, Vec<OutputRef>> =
        t.live.iter().map(|(id, l)| (id.clone(), l.inputs.clone())).collect();
    edges.extend(new.iter().map(|(id, c)| (id.clone(), c.inputs.clone())));
    let ranks = ranks(edges.iter().map(|(id, inputs)| (id.as_str(), inputs)));
    let rank = |id: &String| ranks.get(id).copied().unwrap_or(0);
    let kind_of = |t: &Topology, id: &String| t.live.get(id).map(|l| l.kind);

    // 1. Sources that go or change stop, settled, before anything reads their files again.
    let stopping: Vec<String> = summary
        .removed
        .iter()
        .chain(&summary.changed)
        .filter(|id| kind_of(t, id) == Some(ComponentKind::Source))
        .cloned()
        .collect();
    for id in &stopping {
        if let Some(mut live) = t.detach(id) {
            t.taps.set_inputs(id, None);
            if !live.finished(limit).await {
                summary.slow.push(id.clone());
            }
        }
    }

    // 2. Changed transforms with the same outputs take their new program at the next chunk.
    for id in &swapped {
        if let (Some(live), Some(c), Some(transform)) = (t.live.get_mut(id), new.get(id), prebuilt.remove(id)) {
            if let Some(swap) = &live.swap {
                swap.put(transform);
            }
            live.fingerprint = c.fingerprint.clone();
            live.inputs = c.inputs.clone();
        }
    }
    for id in &summary.rewired {
        if let (Some(live), Some(c)) = (t.live.get_mut(id), new.get(id)) {
            live.inputs = c.inputs.clone();
        }
    }

    // 3. Changed sinks and transforms, downstream first, each while its upstreams wait. (One
    // that becomes a source under the same id only stops here; it starts in 4.)
    let mut replacing: Vec<String> = summary
        .changed
        .iter()
        .filter(|id| matches!(kind_of(t, id), Some(ComponentKind::Sink | ComponentKind::Transform)))
        .cloned()
        .collect();
    replacing.sort_by_key(|id| std::cmp::Reverse(rank(id)));
    for id in &replacing {
        let (Some(c), Some(old_inputs)) = (new.remove(id), t.live.get(id).map(|l| l.inputs.clone())) else {
            continue;
        };
        t.begin_stop(id);
        let mut guards = lock_ports(t, old_inputs.into_iter().chain(c.inputs.iter().cloned()), &ranks).await;
        for (_, guard) in &mut guards {
            guard.remove(id);
        }
        if let Some(mut old) = t.detach(id) {
            t.taps.set_inputs(id, None);
            if !old.finished(limit).await {
                summary.slow.push(id.clone());
            }
        }
        let inputs = c.inputs.clone();
        let started = match c.kind {
            ComponentKind::Source => {
                new.insert(id.clone(), c);
                continue;
            }
            ComponentKind::Transform => {
                let transform = prebuilt.remove(id);
                t.start_transform(c, transform)
            }
            ComponentKind::Sink => t.start(c),
        };
        match started {
            Ok(()) => {
                for (port, guard) in &mut guards {
                    if inputs.contains(port)
                        && let Some(consumer) = t.consumer_of(id)
                    {
                        guard.add(consumer);
                    }
                }
            }
            Err(err) => {
                tracing::error!(
                    component_id = id.as_str(),
                    error = err.as_str(),
                    "Reload: cannot start the new version."
                );
                summary.failed.push(err);
            }
        }
        drop(guards);
    }

    // 4. New components (and changed ones stopped in 1), downstream first: each fan-out is
    // made with the consumers of its readers. Sources last.
    let mut starting: Vec<Component> = new
        .into_values()
        .filter(|c| summary.added.contains(&c.id) || (summary.changed.contains(&c.id) && !t.live.contains_key(&c.id)))
        .collect();
    starting.sort_by_key(|c| (c.kind == ComponentKind::Source, std::cmp::Reverse(rank(&c.id))));
    for c in starting {
        let id = c.id.clone();
        let started = match c.kind {
            ComponentKind::Transform => {
                let transform = prebuilt.remove(&id);
                t.start_transform(c, transform)
            }
            _ => t.start(c),
        };
        if let Err(err) = started {
            tracing::error!(component_id = id.as_str(), error = err.as_str(), "Reload: cannot start the component.");
            summary.failed.push(err);
        }
    }

    // 5. Every fan-out gets the consumers its readers now name and loses the rest, all at
    // once (upstream first). Fan-outs of components about to be removed keep theirs: those
    // drain into them.
    let removing: BTreeSet<String> = summary
        .removed
        .iter()
        .filter(|id| t.live.get(*id).is_some_and(|l| l.kind != ComponentKind::Source))
        .cloned()
        .collect();
    for id in &removing {
        t.begin_stop(id);
    }
    let ports: Vec<OutputRef> = t.ports.keys().filter(|p| !removing.contains(&p.component)).cloned().collect();
    let mut guards = lock_ports(t, ports, &ranks).await;
    for (port, guard) in &mut guards {
        let wanted: BTreeSet<&String> = t
            .live
            .iter()
            .filter(|(id, l)| !removing.contains(*id) && l.input.is_some() && l.inputs.contains(port))
            .map(|(id, _)| id)
            .collect();
        for id in guard.ids() {
            if !wanted.contains(&id) {
                guard.remove(&id);
            }
        }
        let present: BTreeSet<String> = guard.ids().into_iter().collect();
        for id in wanted {
            if !present.contains(id)
                && let Some(consumer) = t.consumer_of(id)
            {
                guard.add(consumer);
            }
        }
    }
    drop(guards);

    // 6. Removed transforms and sinks drain, upstream first.
    let mut removing: Vec<String> = removing.into_iter().collect();
    removing.sort_by_key(|id| rank(id));
    for id in &removing {
        if let Some(mut live) = t.detach(id) {
            t.taps.set_inputs(id, None);
            if !live.finished(limit).await {
                summary.slow.push(id.clone());
            }
        }
    }
    for (id, live) in &t.live {
        t.taps.set_inputs(id, Some(live.inputs.iter().map(ToString::to_string).collect()));
    }
    summary.changed.extend(swapped);
    summary.changed.sort();
    // Listeners no source took back (their address changed, or their source is gone).
    sluice_core::listeners::sweep();
    Ok(summary)
}
