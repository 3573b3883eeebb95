//! Acknowledgement tracking per file and reader: a file's position moves only past lines
//! whose events every reader of the file has acknowledged, in order.
//!
//! Each chunk of events a reader makes from a file gets a notifier tagged with the file
//! offset its last line ends at. Outcomes arrive in any order; a reader's position is the end
//! of the longest prefix of its chunks that were all safe (delivered, stored, or discarded by
//! a rule). A failed chunk stops that prefix for the rest of the run: its lines are read again
//! after a restart (at least once, never skipped).

use std::collections::{HashMap, VecDeque};

use sluice_core::ack::{BatchNotifier, EventFinalizer, Outcome};
use tokio::sync::mpsc::UnboundedSender;

/// Which file (watcher id) and which reader (subscriber index).
pub type Key = (u64, usize);

/// One reader's progress in one file.
#[derive(Debug)]
pub struct Track {
    /// (tag, end offset, outcome once known: safe or not).
    pending: VecDeque<(u64, u64, Option<bool>)>,
    /// Every line before this offset is acknowledged.
    pub acked: u64,
    /// A chunk failed: the position stays at `acked` for the rest of the run.
    pub failed: bool,
}

impl Track {
    pub fn new(position: u64) -> Self {
        Self { pending: VecDeque::new(), acked: position, failed: false }
    }

    pub fn is_settled(&self) -> bool {
        self.pending.iter().all(|(_, _, outcome)| outcome.is_some())
    }

    fn advance(&mut self) {
        while let Some(&(_, end, Some(safe))) = self.pending.front() {
            if !safe {
                self.failed = true;
                return;
            }
            if !self.failed {
                self.acked = self.acked.max(end);
            }
            self.pending.pop_front();
        }
    }
}

/// Every track, and the tags of notifiers still out.
#[derive(Debug, Default)]
pub struct Tracker {
    pub tracks: HashMap<Key, Track>,
    tags: HashMap<u64, Key>,
    next_tag: u64,
}

/// What an outcome changed.
pub enum Resolved {
    Nothing,
    Safe(Key),
    /// The first failure of this track (worth a warning).
    FirstFailure(Key, u64),
}

impl Tracker {
    /// Applies one notifier's outcome.
    pub fn resolve(&mut self, tag: u64, outcome: Outcome) -> Resolved {
        let Some(key) = self.tags.remove(&tag) else { return Resolved::Nothing };
        let Some(track) = self.tracks.get_mut(&key) else { return Resolved::Nothing };
        if let Some(entry) = track.pending.iter_mut().find(|(t, _, _)| *t == tag) {
            entry.2 = Some(outcome.is_safe());
        }
        let was_failed = track.failed;
        track.advance();
        if track.failed && !was_failed { Resolved::FirstFailure(key, track.acked) } else { Resolved::Safe(key) }
    }

    /// Whether any notifier of `watcher` is still out.
    pub fn watcher_settled(&self, watcher: u64) -> bool {
        self.tracks.iter().filter(|((w, _), _)| *w == watcher).all(|(_, t)| t.is_settled())
    }

    /// Whether any notifier of reader `sub` is still out.
    pub fn reader_settled(&self, sub: usize) -> bool {
        self.tracks.iter().filter(|((_, s), _)| *s == sub).all(|(_, t)| t.is_settled())
    }
}

/// A reader's way to give the events it makes from a file their finalizers.
pub struct Acks<'a> {
    pub(crate) sub: usize,
    /// Acknowledgements on for this reader; off, positions move as lines are handed on.
    pub(crate) tracking: bool,
    pub(crate) tracker: &'a mut Tracker,
    pub(crate) outcomes: &'a UnboundedSender<(u64, Outcome)>,
}

impl Acks<'_> {
    /// A finalizer for events made from lines of `file` ending at `end`: the file's position
    /// may pass `end` once all of them (and everything before) are acknowledged. Every event
    /// of the chunk shares it (clone it).
    pub fn finalizer(&mut self, file: u64, end: u64) -> EventFinalizer {
        let key = (file, self.sub);
        let tracker = &mut *self.tracker;
        let track = tracker.tracks.entry(key).or_insert_with(|| Track::new(0));
        if !self.tracking {
            track.pending.push_back((u64::MAX, end, Some(true)));
            track.advance();
            return EventFinalizer::default();
        }
        tracker.next_tag += 1;
        let tag = tracker.next_tag;
        tracker.tags.insert(tag, key);
        track.pending.push_back((tag, end, None));
        EventFinalizer::new(BatchNotifier::with_channel(self.outcomes.clone(), tag))
    }

    /// Lines of `file` up to `end` that became nothing to acknowledge.
    pub fn settle(&mut self, file: u64, end: u64) {
        let track = self.tracker.tracks.entry((file, self.sub)).or_insert_with(|| Track::new(0));
        track.pending.push_back((u64::MAX, end, Some(true)));
        track.advance();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Against a model: after outcomes arrive in any order, the position is the end of the
        /// longest prefix of chunks that were all safe, and never moves past a failed one.
        #[test]
        fn the_position_is_the_end_of_the_longest_safe_prefix(
            outcomes in proptest::collection::vec(0u8..4, 1..30),
            order in proptest::collection::vec(proptest::num::usize::ANY, 0..30),
        ) {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut tracker = Tracker::default();
            let mut finalizers: Vec<Option<EventFinalizer>> = {
                let mut acks = Acks { sub: 0, tracking: true, tracker: &mut tracker, outcomes: &tx };
                (0..outcomes.len()).map(|i| Some(acks.finalizer(1, (i as u64 + 1) * 10))).collect()
            };
            let outcome = |o: u8| match o {
                0 => Outcome::Failed,
                1 => Outcome::Stored,
                2 => Outcome::Delivered,
                _ => Outcome::Discarded,
            };
            // Resolve in the order given, then whatever is left in index order.
            let mut sequence: Vec<usize> = order.iter().map(|o| o % outcomes.len()).collect();
            sequence.extend(0..outcomes.len());
            for i in sequence {
                if let Some(f) = finalizers[i].take() {
                    f.resolve(outcome(outcomes[i]));
                }
                while let Ok((tag, o)) = rx.try_recv() {
                    tracker.resolve(tag, o);
                }
            }
            let safe_prefix = outcomes.iter().take_while(|o| **o != 0).count() as u64;
            let track = &tracker.tracks[&(1, 0)];
            proptest::prop_assert_eq!(track.acked, safe_prefix * 10);
            proptest::prop_assert_eq!(track.failed, outcomes.contains(&0));
            proptest::prop_assert!(tracker.watcher_settled(1));
        }
    }

    #[test]
    fn the_position_moves_over_the_acknowledged_prefix_and_a_failure_holds_it() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tracker = Tracker::default();
        tracker.tracks.insert((1, 0), Track::new(0));
        let mut acks = Acks { sub: 0, tracking: true, tracker: &mut tracker, outcomes: &tx };
        let a = acks.finalizer(1, 10);
        let b = acks.finalizer(1, 20);
        let c = acks.finalizer(1, 30);
        let d = acks.finalizer(1, 40);
        b.resolve(Outcome::Delivered);
        let mut apply = |tracker: &mut Tracker| {
            while let Ok((tag, outcome)) = rx.try_recv() {
                tracker.resolve(tag, outcome);
            }
        };
        apply(&mut tracker);
        assert_eq!(tracker.tracks[&(1, 0)].acked, 0, "out of order: waits for the first");
        a.resolve(Outcome::Stored);
        apply(&mut tracker);
        assert_eq!(tracker.tracks[&(1, 0)].acked, 20);
        c.resolve(Outcome::Failed);
        d.resolve(Outcome::Delivered);
        apply(&mut tracker);
        let track = &tracker.tracks[&(1, 0)];
        assert_eq!((track.acked, track.failed), (20, true), "a failed chunk holds the position");
        assert!(tracker.watcher_settled(1));
    }
}
