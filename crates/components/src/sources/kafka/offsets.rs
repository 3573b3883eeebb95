//! Which offsets the `kafka` source may commit: per partition, the end of the longest run of
//! read messages whose events are all safe (delivered, stored or discarded by a rule).
//!
//! Messages are tracked in units: a run of one partition's messages in one chunk, sharing one
//! acknowledgement. Units resolve in any order; the commit point only moves over a prefix of
//! resolved units. A failed unit holds its partition's commit where it is for as long as this
//! consumer owns the partition: its messages are read again after a restart or a rebalance,
//! never skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use sluice_core::ack::Outcome;

/// A topic and partition.
pub type Partition = (Arc<str>, i32);

#[derive(Debug)]
struct Unit {
    tag: u64,
    /// The offset after the unit's last message: what a commit covering it says.
    next_offset: i64,
    outcome: Option<Outcome>,
    /// Handed on (its chunk sealed); before that its events cannot settle.
    sealed: bool,
}

#[derive(Debug, Default)]
struct Track {
    units: VecDeque<Unit>,
    /// The offset to commit: every message before it is safe.
    safe: Option<i64>,
    /// The offset last committed (or sent to be).
    committed: Option<i64>,
    /// The first message of a failed unit: the commit never passes it.
    held_at: Option<i64>,
}

/// The commit state of every partition this consumer owns.
#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<Partition, Track>,
    owner: HashMap<u64, Partition>,
    next_tag: u64,
}

/// A failed unit, reported once.
#[derive(Debug, PartialEq, Eq)]
pub struct Held {
    pub partition: Partition,
    pub offset: i64,
}

impl Offsets {
    /// A new unit of `partition` whose messages start at `first_offset`; returns its tag.
    /// Units of one partition must be opened in offset order.
    pub fn open(&mut self, partition: &Partition, first_offset: i64) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        let track = self.partitions.entry(partition.clone()).or_default();
        if track.safe.is_none() && track.units.is_empty() {
            // Everything before the first message read is as the group last committed it.
            track.safe = Some(first_offset);
        }
        track.units.push_back(Unit { tag, next_offset: first_offset, outcome: None, sealed: false });
        self.owner.insert(tag, partition.clone());
        tag
    }

    /// Seals the unit `tag` (its partition's newest) at the message at `offset`: its chunk is
    /// handed on. False when its partition is no longer owned.
    pub fn extend(&mut self, tag: u64, offset: i64) -> bool {
        let Some(partition) = self.owner.get(&tag) else { return false };
        match self.partitions.get_mut(partition).and_then(|t| t.units.back_mut()) {
            Some(unit) if unit.tag == tag => {
                unit.next_offset = offset + 1;
                unit.sealed = true;
                true
            }
            _ => false,
        }
    }

    /// Records a unit's outcome. Returns the hold it causes, if it is the first failure of its
    /// partition. Outcomes of units whose partition is gone (revoked) are ignored.
    pub fn resolve(&mut self, tag: u64, outcome: Outcome) -> Option<Held> {
        let partition = self.owner.remove(&tag)?;
        let track = self.partitions.get_mut(&partition)?;
        let start = track.units.partition_point(|u| u.tag < tag);
        let unit = track.units.get_mut(start).filter(|u| u.tag == tag)?;
        unit.outcome = Some(outcome);
        let mut held = None;
        while let Some(front) = track.units.front() {
            match front.outcome {
                None => break,
                Some(o) if o.is_safe() && track.held_at.is_none() => {
                    track.safe = Some(front.next_offset);
                    track.units.pop_front();
                }
                Some(o) if o.is_safe() => {
                    track.units.pop_front();
                }
                Some(_) => {
                    if track.held_at.is_none() {
                        let offset = track.safe.unwrap_or(0);
                        track.held_at = Some(offset);
                        held = Some(Held { partition: partition.clone(), offset });
                    }
                    track.units.pop_front();
                }
            }
        }
        held
    }

    /// Partitions whose safe offset moved since the last call, with that offset.
    pub fn take_commits(&mut self) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for (partition, track) in &mut self.partitions {
            if let Some(safe) = track.safe
                && track.committed != Some(safe)
            {
                track.committed = Some(safe);
                out.push((partition.clone(), safe));
            }
        }
        out
    }

    /// Commits of `partitions` that failed: they are sent again with the next commit.
    pub fn uncommitted(&mut self, partitions: &[Partition]) {
        for partition in partitions {
            if let Some(track) = self.partitions.get_mut(partition) {
                track.committed = None;
            }
        }
    }

    /// The safe offset of `partition`, and whether messages are still in flight there.
    #[cfg(test)]
    pub fn state(&self, partition: &Partition) -> Option<(Option<i64>, bool)> {
        self.partitions.get(partition).map(|t| (t.safe, !t.units.is_empty()))
    }

    /// Whether any handed-on unit of `partitions` is unresolved. A unit still being built
    /// (a rebalance called back in the middle of a chunk) is not waited for: it cannot settle
    /// before the callback returns, and the commit stops before it anyway.
    pub fn in_flight<'a>(&self, mut partitions: impl Iterator<Item = &'a Partition>) -> bool {
        partitions.any(|p| self.partitions.get(p).is_some_and(|t| t.units.iter().any(|u| u.sealed)))
    }

    /// Whether any unit at all is unresolved.
    pub fn any_in_flight(&self) -> bool {
        !self.owner.is_empty()
    }

    /// Forgets a partition given up in a rebalance; later outcomes of its units are ignored.
    pub fn forget(&mut self, partition: &Partition) {
        if let Some(track) = self.partitions.remove(partition) {
            for unit in track.units {
                self.owner.remove(&unit.tag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        (Arc::from("t"), n)
    }

    /// Opens a unit of `count` messages starting at `first`.
    fn unit(offsets: &mut Offsets, partition: i32, first: i64, count: i64) -> u64 {
        let tag = offsets.open(&p(partition), first);
        for o in first..first + count {
            offsets.extend(tag, o);
        }
        tag
    }

    #[test]
    fn the_commit_moves_only_over_a_resolved_prefix() {
        let mut offsets = Offsets::default();
        let a = unit(&mut offsets, 0, 10, 5);
        let b = unit(&mut offsets, 0, 15, 5);
        assert_eq!(offsets.take_commits(), vec![(p(0), 10)]);
        offsets.resolve(b, Outcome::Delivered);
        assert_eq!(offsets.take_commits(), vec![], "b is done but a is not");
        offsets.resolve(a, Outcome::Stored);
        assert_eq!(offsets.take_commits(), vec![(p(0), 20)]);
        assert!(!offsets.any_in_flight());
    }

    #[test]
    fn a_failed_unit_holds_its_partition_and_only_its_partition() {
        let mut offsets = Offsets::default();
        let a = unit(&mut offsets, 0, 0, 3);
        let b = unit(&mut offsets, 0, 3, 3);
        let c = unit(&mut offsets, 1, 100, 2);
        offsets.take_commits();
        offsets.resolve(b, Outcome::Delivered);
        let held = offsets.resolve(a, Outcome::Failed);
        assert_eq!(held, Some(Held { partition: p(0), offset: 0 }));
        offsets.resolve(c, Outcome::Discarded);
        assert_eq!(offsets.take_commits(), vec![(p(1), 102)]);
        // Later units of the held partition never move its commit.
        let d = unit(&mut offsets, 0, 6, 1);
        assert_eq!(offsets.resolve(d, Outcome::Delivered), None, "reported once");
        assert_eq!(offsets.state(&p(0)), Some((Some(0), false)));
        assert_eq!(offsets.take_commits(), vec![]);
    }

    #[test]
    fn a_failure_after_progress_holds_at_its_own_first_message() {
        let mut offsets = Offsets::default();
        let a = unit(&mut offsets, 0, 0, 3);
        let b = unit(&mut offsets, 0, 3, 3);
        offsets.resolve(a, Outcome::Delivered);
        let held = offsets.resolve(b, Outcome::Failed);
        assert_eq!(held, Some(Held { partition: p(0), offset: 3 }));
        assert_eq!(offsets.take_commits(), vec![(p(0), 3)]);
    }

    #[test]
    fn outcomes_of_a_forgotten_partition_are_ignored() {
        let mut offsets = Offsets::default();
        let a = unit(&mut offsets, 0, 0, 3);
        offsets.forget(&p(0));
        assert_eq!(offsets.resolve(a, Outcome::Delivered), None);
        assert_eq!(offsets.take_commits(), vec![]);
        assert!(!offsets.any_in_flight());
        // Owned again (a later rebalance): tracking starts from the first message read.
        let b = unit(&mut offsets, 0, 2, 1);
        offsets.resolve(b, Outcome::Delivered);
        assert_eq!(offsets.take_commits(), vec![(p(0), 3)]);
    }

    #[test]
    fn in_flight_is_per_partition() {
        let mut offsets = Offsets::default();
        let a = unit(&mut offsets, 0, 0, 1);
        unit(&mut offsets, 1, 0, 1);
        offsets.resolve(a, Outcome::Delivered);
        assert!(!offsets.in_flight([p(0)].iter()));
        assert!(offsets.in_flight([p(1)].iter()));
    }

    #[test]
    fn a_unit_still_being_built_is_not_in_flight_and_holds_the_commit() {
        let mut offsets = Offsets::default();
        let a = unit(&mut offsets, 0, 0, 5);
        let open = offsets.open(&p(0), 5);
        assert!(offsets.in_flight([p(0)].iter()), "a is handed on");
        offsets.resolve(a, Outcome::Delivered);
        assert!(!offsets.in_flight([p(0)].iter()), "only the open unit is left");
        assert_eq!(offsets.take_commits(), vec![(p(0), 5)], "the commit stops before the open unit");
        offsets.forget(&p(0));
        assert!(!offsets.extend(open, 9), "a unit of a forgotten partition is not sealed");
    }
}
