//! The disk buffer's write-ahead log: segment files of records (see [`super::record`]), an
//! acknowledgement floor, and a reader that never stops at damage.
//!
//! Invariants:
//! - records get consecutive ids; a record is appended whole or its segment is abandoned (the
//!   next append starts a new segment), so a torn record can only be the tail of a segment;
//! - [`Wal::sync`] makes every record appended so far durable; nothing counts as stored before;
//! - a record is removed only when acknowledged: the floor (every id below it acknowledged) is
//!   persisted in `acked` (atomic replace), and a segment is deleted once all its ids are below
//!   the floor. After a crash, records at or above the persisted floor are read again (at least
//!   once; duplicates are bounded by what was delivered after the last persist);
//! - "full" is counted in unacknowledged bytes (the bytes the reader has not passed, plus the
//!   records it handed out that are not acknowledged yet), so every acknowledgement makes room
//!   at once, not when a whole segment goes. The files hold at most one partly acknowledged
//!   segment more, and never more than twice `max_size`;
//! - bytes that are not a valid record (checksum, version, length) are handed out as
//!   [`Item::Corrupt`], raw, and reading continues at the next valid record; a segment's torn
//!   tail is skipped and counted. The reader never fails on the buffer's own data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Parsed};
use super::storage::{AppendFile, DirLock, Storage};

/// The file name ending of segments.
pub const SEGMENT_SUFFIX: &str = ".wal";
const ACKED: &str = "acked";
const ACKED_HEADER: &str = "sluice-buffer-acked v1";
/// Bytes the reader reads ahead at a time (more when one record is larger). Unit tests use a
/// window smaller than most records, so refills happen mid-record.
const READ_WINDOW: usize = if cfg!(test) { 48 } else { 1 << 20 };

/// Limits of one buffer.
#[derive(Debug, Clone, Copy)]
pub struct WalOptions {
    /// Most bytes of unacknowledged records (the files may hold up to twice as much, see
    /// [`Wal::size`]).
    pub max_size: u64,
    /// A segment rolls over past this size.
    pub segment_bytes: u64,
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `max_size` reached: wait for acknowledgements (back-pressure).
    #[error("the buffer is full")]
    Full,
    /// The disk is full: wait and try again (back-pressure, not a crash).
    #[error("no space left on the device")]
    NoSpace,
    /// A sync failed earlier: the buffer takes nothing more.
    #[error("the buffer stopped accepting after an error: {0}")]
    Failed(String),
    #[error("write failed: {0}")]
    Io(std::io::Error),
}

/// What the reader hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Record {
        id: u64,
        events: u16,
        payload: Vec<u8>,
    },
    /// Bytes that are not a valid record, with where they were and why. `lost` are the ids
    /// the damage swallowed: acknowledge them once the bytes are stored elsewhere (the DLQ).
    Corrupt {
        segment: PathBuf,
        offset: u64,
        bytes: Vec<u8>,
        reason: &'static str,
        lost: std::ops::Range<u64>,
        /// Events in the lost ids that this process appended (and so already counted as
        /// received): 0 for damage left by an earlier run.
        lost_events_this_run: u64,
    },
}

/// Where an appended record sits in the log: the reader may pass over it without reading
/// (see [`Wal::pass_over`]) when the caller still holds its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub id: u64,
    /// The first id of its segment.
    segment: u64,
    offset: u64,
    len: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first_id: u64,
    /// The last id it may hold (`None` while empty).
    last_id: Option<u64>,
    bytes: u64,
    /// Where it starts in the log's bytes since open (its position in the sequence of every
    /// segment, deleted ones included).
    start: u64,
}

#[derive(Debug, Default)]
struct Cursor {
    segment: usize,
    /// Offset in the segment file of `buf[pos]`, the next byte to read.
    offset: u64,
    /// Bytes read ahead from the segment; `buf[..pos]` are consumed.
    buf: Vec<u8>,
    pos: usize,
    /// Highest id read so far (resync looks for ids above it).
    last_id: Option<u64>,
}

/// Counters for reports and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalStats {
    pub torn_tails: u64,
    pub torn_bytes: u64,
    pub corrupt_ranges: u64,
    pub corrupt_bytes: u64,
}

pub struct Wal {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    options: WalOptions,
    segments: Vec<Segment>,
    writer: Option<Box<dyn AppendFile>>,
    /// A failed write left part of a record: the next append starts a new segment.
    abandon_segment: bool,
    unsynced: bool,
    failed: Option<String>,
    next_id: u64,
    floor: u64,
    persisted_floor: u64,
    acked: BTreeSet<u64>,
    cursor: Cursor,
    /// Bytes of the segment files.
    total_bytes: u64,
    /// Where the log ends in its bytes since open (see [`Segment::start`]).
    end: u64,
    /// Bytes of the records (and damaged ranges, under their first id) the reader handed out
    /// that are not acknowledged yet.
    in_flight: BTreeMap<u64, u64>,
    in_flight_bytes: u64,
    stats: WalStats,
    last_placement: Option<Placement>,
    /// The record being appended (reused).
    scratch: Vec<u8>,
    /// Keeps the directory to this process (a second sluice, or a repair, cannot open it).
    _lock: DirLock,
    /// (id, events) of records this process appended that the reader has not passed yet.
    appended: std::collections::VecDeque<(u64, u16)>,
    /// Events in the records at or above the floor found at open (for the buffer gauge).
    events_at_open: u64,
}

fn segment_name(first_id: u64) -> String {
    format!("segment-{first_id:020}{SEGMENT_SUFFIX}")
}

/// The first record id a segment file's name gives.
pub(crate) fn first_id_of(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix("segment-")?.strip_suffix(SEGMENT_SUFFIX)?.parse().ok()
}

impl Wal {
    /// Opens (or creates) the buffer in `dir`.
    pub fn open(dir: &Path, storage: Arc<dyn Storage>, options: WalOptions) -> std::io::Result<Self> {
        storage.create_dir(dir)?;
        let lock = storage.lock(dir)?;
        let floor = match storage.read(&dir.join(ACKED))? {
            None => 0,
            Some(data) => {
                let text = String::from_utf8_lossy(&data);
                match text.strip_prefix(ACKED_HEADER).and_then(|rest| rest.trim().parse().ok()) {
                    Some(floor) => floor,
                    None => {
                        tracing::warn!(dir = %dir.display(), "The buffer's acknowledgement file is damaged; reading from its oldest record (some events may be delivered twice).");
                        0
                    }
                }
            }
        };
        let mut segments = Vec::new();
        for path in storage.list(dir, SEGMENT_SUFFIX)? {
            let Some(first_id) = first_id_of(&path) else { continue };
            let bytes = storage.len(&path)?;
            segments.push(Segment { path, first_id, last_id: None, bytes, start: 0 });
        }
        // A segment may hold ids up to the next one's first; the last one is scanned.
        for i in 0..segments.len() {
            segments[i].last_id = match segments.get(i + 1) {
                Some(next) => next.first_id.checked_sub(1),
                None => {
                    let mut data = Vec::new();
                    storage.read_at(&segments[i].path, 0, &mut data, usize::MAX)?;
                    last_valid_id(&data)
                }
            };
        }
        // A last segment without one whole record holds only a torn write; its name would be
        // the next segment's.
        if segments.last().is_some_and(|s| s.last_id.is_none())
            && let Some(empty) = segments.pop()
        {
            storage.remove(&empty.path)?;
        }
        let next_id = segments.iter().filter_map(|s| s.last_id).max().map_or(floor, |l| (l + 1).max(floor));
        let mut events_at_open = 0;
        for segment in &segments {
            events_at_open += count_events(storage.as_ref(), &segment.path, segment.bytes, floor)?;
        }
        let mut total_bytes = 0;
        for segment in &mut segments {
            segment.start = total_bytes;
            total_bytes += segment.bytes;
        }
        let mut wal = Self {
            dir: dir.to_path_buf(),
            storage,
            options,
            segments,
            writer: None,
            abandon_segment: false,
            unsynced: false,
            failed: None,
            next_id,
            floor,
            persisted_floor: floor,
            acked: BTreeSet::new(),
            cursor: Cursor::default(),
            total_bytes,
            end: total_bytes,
            in_flight: BTreeMap::new(),
            in_flight_bytes: 0,
            stats: WalStats::default(),
            last_placement: None,
            scratch: Vec::new(),
            _lock: lock,
            appended: std::collections::VecDeque::new(),
            events_at_open,
        };
        wal.drop_acked_segments()?;
        Ok(wal)
    }

    /// Events waiting in the records found at open (records at or above the floor; counted
    /// from record headers, up to the first damaged one of each segment).
    pub fn events_at_open(&self) -> u64 {
        self.events_at_open
    }

    /// The id the next append gets.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// Bytes of the segment files: segments not yet fully acknowledged.
    pub fn size(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes not acknowledged yet: what `max_size` bounds. The bytes the reader has not passed
    /// (records, and below-floor or damaged bytes it has yet to skip) and the records it
    /// handed out that wait for their acknowledgement.
    pub fn unacknowledged_bytes(&self) -> u64 {
        let cursor = self.segments.get(self.cursor.segment).map_or(self.end, |s| s.start + self.cursor.offset);
        self.end.saturating_sub(cursor) + self.in_flight_bytes
    }

    /// Records appended and not yet acknowledged (an upper bound across restarts).
    pub fn unacknowledged(&self) -> u64 {
        self.next_id.saturating_sub(self.floor).saturating_sub(self.acked.len() as u64)
    }

    /// Appends one record. Not durable until [`Wal::sync`].
    pub fn append(&mut self, events: u16, payload: &[u8]) -> Result<u64, AppendError> {
        if let Some(error) = &self.failed {
            return Err(AppendError::Failed(error.clone()));
        }
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        let id = self.next_id;
        record::encode(&mut bytes, id, events, payload);
        let result = self.append_record(id, &bytes);
        self.scratch = bytes;
        if result.is_ok() {
            self.appended.push_back((id, events));
        }
        result
    }

    fn append_record(&mut self, id: u64, bytes: &[u8]) -> Result<u64, AppendError> {
        let len = bytes.len() as u64;
        let unacknowledged = self.unacknowledged_bytes();
        // Records acknowledged ahead of an older one in flight stay on disk until the floor
        // passes them: the files are bounded too, at twice `max_size`.
        if (unacknowledged > 0 && unacknowledged + len > self.options.max_size)
            || (self.total_bytes > 0 && self.total_bytes + len > self.options.max_size.saturating_mul(2))
        {
            return Err(AppendError::Full);
        }
        let roll = self.abandon_segment
            || self.writer.is_none()
            || self.segments.last().is_none_or(|s| s.bytes >= self.options.segment_bytes);
        if roll {
            self.roll(id)?;
        }
        let Some(writer) = self.writer.as_mut() else {
            return Err(AppendError::Failed("no segment to write".into()));
        };
        let mut written = 0;
        while written < bytes.len() {
            match writer.write(&bytes[written..]) {
                Ok(0) => {
                    if let Some(segment) = self.segments.last_mut() {
                        segment.bytes += written as u64;
                    }
                    self.total_bytes += written as u64;
                    self.end += written as u64;
                    self.abandon_segment = written > 0;
                    return Err(AppendError::Io(std::io::Error::from(std::io::ErrorKind::WriteZero)));
                }
                Ok(n) => written += n,
                Err(err) => {
                    if let Some(segment) = self.segments.last_mut() {
                        segment.bytes += written as u64;
                    }
                    self.total_bytes += written as u64;
                    self.end += written as u64;
                    self.abandon_segment = written > 0;
                    return Err(if err.raw_os_error() == Some(28) {
                        AppendError::NoSpace
                    } else {
                        AppendError::Io(err)
                    });
                }
            }
        }
        if let Some(segment) = self.segments.last_mut() {
            self.last_placement =
                Some(Placement { id, segment: segment.first_id, offset: segment.bytes, len: bytes.len() as u64 });
            segment.bytes += bytes.len() as u64;
            segment.last_id = Some(id);
        }
        self.total_bytes += len;
        self.end += len;
        self.next_id += 1;
        self.unsynced = true;
        Ok(id)
    }

    /// Starts a new segment whose first record will be `id`, syncing the current one first.
    fn roll(&mut self, id: u64) -> Result<(), AppendError> {
        self.sync().map_err(|e| AppendError::Failed(e.to_string()))?;
        self.writer = None;
        // A segment abandoned before its first whole record holds only garbage, and its name
        // is the one the new segment needs.
        if let Some(last) = self.segments.last()
            && last.first_id == id
            && last.last_id.is_none()
        {
            self.storage.remove(&last.path).map_err(AppendError::Io)?;
            self.total_bytes -= last.bytes.min(self.total_bytes);
            self.segments.pop();
            if self.cursor.segment >= self.segments.len() {
                self.cursor =
                    Cursor { segment: self.segments.len(), last_id: self.cursor.last_id, ..Cursor::default() };
            }
        }
        let path = self.dir.join(segment_name(id));
        let writer = self
            .storage
            .create(&path)
            .map_err(|err| if err.raw_os_error() == Some(28) { AppendError::NoSpace } else { AppendError::Io(err) })?;
        self.writer = Some(writer);
        self.abandon_segment = false;
        self.segments.push(Segment { path, first_id: id, last_id: None, bytes: 0, start: self.end });
        Ok(())
    }

    /// Makes every appended record durable. After a failure the buffer accepts nothing more.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if let Some(error) = &self.failed {
            return Err(std::io::Error::other(error.clone()));
        }
        if !self.unsynced {
            return Ok(());
        }
        if let Some(writer) = self.writer.as_mut()
            && let Err(err) = writer.sync()
        {
            self.failed = Some(format!("fsync failed: {err}"));
            return Err(err);
        }
        self.unsynced = false;
        Ok(())
    }

    /// The next record (or damaged range) after the ones already read; `None` when the reader
    /// has caught up with the writer.
    pub fn read_next(&mut self) -> std::io::Result<Option<Item>> {
        self.read_next_before(None)
    }

    /// [`Wal::read_next`], reading ahead no further than `stop` (a record the caller holds and
    /// will [`Wal::pass_over`]).
    pub fn read_next_before(&mut self, stop: Option<Placement>) -> std::io::Result<Option<Item>> {
        let item = self.read_next_inner(stop);
        self.forget_passed();
        item
    }

    /// Drops the bookkeeping of this run's records the reader has passed.
    fn forget_passed(&mut self) {
        let Some(read) = self.cursor.last_id else { return };
        while self.appended.front().is_some_and(|(id, _)| *id <= read) {
            self.appended.pop_front();
        }
    }

    fn read_next_inner(&mut self, stop: Option<Placement>) -> std::io::Result<Option<Item>> {
        // Whether the bytes read ahead reach the segment's end (as of this call).
        let mut at_end = false;
        loop {
            let Some(segment) = self.segments.get(self.cursor.segment) else { return Ok(None) };
            let active = self.cursor.segment + 1 == self.segments.len() && self.writer.is_some();
            let rest = &self.cursor.buf[self.cursor.pos..];
            let parsed = record::parse(rest);
            if !at_end && !matches!(parsed, Parsed::Record(..)) {
                // Damage is judged on everything up to the segment's end; a record on what it
                // claims to need, and at least a window.
                let mut want = match parsed {
                    Parsed::Invalid(_) => usize::MAX,
                    _ => record::declared_len(rest).unwrap_or(0).saturating_sub(rest.len()).max(READ_WINDOW),
                };
                let from = self.cursor.offset + rest.len() as u64;
                if let Some(stop) = stop.filter(|s| s.segment == segment.first_id && s.offset > from)
                    && !matches!(parsed, Parsed::Invalid(_))
                {
                    want = want.min((stop.offset - from) as usize).max(1);
                }
                let path = segment.path.clone();
                self.cursor.buf.drain(..self.cursor.pos);
                self.cursor.pos = 0;
                let got = self.storage.read_at(&path, from, &mut self.cursor.buf, want)?;
                at_end = got < want;
                continue;
            }
            let rest = &self.cursor.buf[self.cursor.pos..];
            match parsed {
                // Ids only grow along the log: a record whose id repeats or goes back is a
                // stale copy (a duplicated block), damage to quarantine, not to deliver again.
                Parsed::Record(r, len) if self.cursor.last_id.is_some_and(|last| r.id <= last) => {
                    let after = self.cursor.last_id.map_or(0, |last| last + 1);
                    let item = Item::Corrupt {
                        segment: segment.path.clone(),
                        offset: self.cursor.offset,
                        bytes: rest[..len].to_vec(),
                        reason: record::ID_OUT_OF_ORDER,
                        lost: after..after,
                        lost_events_this_run: 0,
                    };
                    self.stats.corrupt_ranges += 1;
                    self.stats.corrupt_bytes += len as u64;
                    self.advance(len);
                    return Ok(Some(item));
                }
                Parsed::Record(r, len) => {
                    // Ids are consecutive; ids missing before this record were removed by
                    // `sluice buffer check --repair` (their bytes went to the DLQ): nothing is
                    // left of them to deliver.
                    let expected = self.cursor.last_id.map_or(self.floor, |l| l + 1).max(self.floor);
                    for id in expected..r.id {
                        self.acked.insert(id);
                    }
                    while self.acked.remove(&self.floor) {
                        self.floor += 1;
                    }
                    let item = (r.id >= self.floor && !self.acked.contains(&r.id)).then(|| Item::Record {
                        id: r.id,
                        events: r.events,
                        payload: r.payload.to_vec(),
                    });
                    let id = r.id;
                    self.cursor.last_id = Some(id.max(self.cursor.last_id.unwrap_or(0)));
                    self.advance(len);
                    self.forget_in_flight_below_floor();
                    if let Some(item) = item {
                        self.hand_out(id, len as u64);
                        return Ok(Some(item));
                    }
                }
                Parsed::Incomplete if active => return Ok(None),
                Parsed::Incomplete => {
                    if !rest.is_empty() {
                        self.stats.torn_tails += 1;
                        self.stats.torn_bytes += rest.len() as u64;
                    }
                    self.cursor =
                        Cursor { segment: self.cursor.segment + 1, last_id: self.cursor.last_id, ..Cursor::default() };
                    at_end = false;
                }
                Parsed::Invalid(reason) => {
                    let min_id = self.cursor.last_id.map_or(segment.first_id, |l| l + 1);
                    let resynced = record::resync(rest, min_id);
                    let end = resynced.unwrap_or(rest.len());
                    // The ids in between: up to the next valid record, or to the segment's end.
                    let lost_end = match resynced.map(|at| record::parse(&rest[at..])) {
                        Some(Parsed::Record(r, _)) => r.id,
                        _ if active => self.next_id,
                        _ => segment.last_id.map_or(min_id, |l| l + 1),
                    };
                    let lost = min_id..lost_end.max(min_id);
                    let lost_events_this_run = self
                        .appended
                        .iter()
                        .filter(|(id, _)| lost.contains(id))
                        .map(|(_, events)| u64::from(*events))
                        .sum();
                    let item = Item::Corrupt {
                        segment: segment.path.clone(),
                        offset: self.cursor.offset,
                        bytes: rest[..end].to_vec(),
                        reason,
                        lost: lost.clone(),
                        lost_events_this_run,
                    };
                    if let Some(last) = lost.end.checked_sub(1).filter(|_| !lost.is_empty()) {
                        self.cursor.last_id = Some(last);
                    }
                    self.stats.corrupt_ranges += 1;
                    self.stats.corrupt_bytes += end as u64;
                    self.advance(end);
                    if !lost.is_empty() {
                        self.hand_out(lost.start, end as u64);
                    }
                    return Ok(Some(item));
                }
            }
        }
    }

    /// Where the last successful [`Wal::append`] put its record.
    pub fn last_placement(&self) -> Option<Placement> {
        self.last_placement
    }

    /// The highest id the reader has passed.
    pub fn read_up_to(&self) -> Option<u64> {
        self.cursor.last_id
    }

    /// Moves the reader past the record at `at` without reading it, if that record is exactly
    /// the next one to read and nothing is read ahead; the caller then hands out the contents
    /// it kept. Returns whether it did (otherwise read with [`Wal::read_next`]).
    pub fn pass_over(&mut self, at: Placement) -> bool {
        if self.cursor.pos != self.cursor.buf.len() || at.id < self.floor || self.acked.contains(&at.id) {
            return false;
        }
        let Some(current) = self.segments.get(self.cursor.segment) else { return false };
        let here = current.first_id == at.segment && self.cursor.offset == at.offset;
        // At the very end of a finished segment, and the record opens the next one.
        let next = !here
            && at.offset == 0
            && self.cursor.offset == current.bytes
            && self.segments.get(self.cursor.segment + 1).is_some_and(|s| s.first_id == at.segment);
        if !here && !next {
            return false;
        }
        if next {
            self.cursor =
                Cursor { segment: self.cursor.segment + 1, last_id: self.cursor.last_id, ..Cursor::default() };
        }
        self.cursor.buf.clear();
        self.cursor.pos = 0;
        self.cursor.offset += at.len;
        self.cursor.last_id = Some(at.id.max(self.cursor.last_id.unwrap_or(0)));
        self.forget_passed();
        self.hand_out(at.id, at.len);
        true
    }

    /// Counts a record the reader handed out as in flight until it is acknowledged.
    fn hand_out(&mut self, id: u64, bytes: u64) {
        if let Some(old) = self.in_flight.insert(id, bytes) {
            self.in_flight_bytes -= old.min(self.in_flight_bytes);
        }
        self.in_flight_bytes += bytes;
    }

    /// Ids below the floor are acknowledged, however they got there.
    fn forget_in_flight_below_floor(&mut self) {
        while let Some(entry) = self.in_flight.first_entry().filter(|e| *e.key() < self.floor) {
            let bytes = entry.remove();
            self.in_flight_bytes -= bytes.min(self.in_flight_bytes);
        }
    }

    fn advance(&mut self, n: usize) {
        self.cursor.pos += n;
        self.cursor.offset += n as u64;
    }

    /// Acknowledges record `id` (delivered, or dead-lettered).
    pub fn ack(&mut self, id: u64) -> std::io::Result<()> {
        if id < self.floor {
            return Ok(());
        }
        self.acked.insert(id);
        if let Some(bytes) = self.in_flight.remove(&id) {
            self.in_flight_bytes -= bytes.min(self.in_flight_bytes);
        }
        while self.acked.remove(&self.floor) {
            self.floor += 1;
        }
        self.forget_in_flight_below_floor();
        self.drop_acked_segments()
    }

    /// Closes the segment being written (after syncing it) and removes what is acknowledged:
    /// a buffer whose every record was acknowledged leaves no segment behind.
    pub fn close(&mut self) -> std::io::Result<()> {
        self.sync()?;
        self.writer = None;
        if self.unacknowledged() == 0 {
            // Nothing is left to read: the reader may pass every segment.
            self.cursor.segment = self.segments.len();
        }
        self.drop_acked_segments()?;
        self.persist_acks()
    }

    /// Whether acknowledgements wait for [`Wal::persist_acks`].
    pub fn acks_unpersisted(&self) -> bool {
        self.floor != self.persisted_floor
    }

    /// Persists the acknowledgement floor (atomic replace).
    pub fn persist_acks(&mut self) -> std::io::Result<()> {
        if self.floor == self.persisted_floor {
            return Ok(());
        }
        let text = format!("{ACKED_HEADER} {}\n", self.floor);
        self.storage.write_atomic(&self.dir.join(ACKED), text.as_bytes())?;
        self.persisted_floor = self.floor;
        Ok(())
    }

    /// Removes segments whose every id is acknowledged (never the one being written), and
    /// empty segments the reader has passed.
    fn drop_acked_segments(&mut self) -> std::io::Result<()> {
        while let Some(first) = self.segments.first() {
            let writing = self.segments.len() == 1 && self.writer.is_some();
            let done = match first.last_id {
                Some(last) => last < self.floor,
                None => self.cursor.segment > 0,
            };
            if writing || !done {
                break;
            }
            // The floor must be durable before the records it covers disappear, or a crash
            // would leave ids below a stale floor that a new record could take again.
            self.persist_acks()?;
            let Some(first) = self.segments.first() else { break };
            self.storage.remove(&first.path)?;
            self.total_bytes -= first.bytes.min(self.total_bytes);
            self.segments.remove(0);
            if self.cursor.segment > 0 {
                self.cursor.segment -= 1;
            } else {
                self.cursor = Cursor { last_id: self.cursor.last_id, ..Cursor::default() };
            }
        }
        Ok(())
    }
}

/// Events in the records of `path` whose id is at least `floor`, from their headers alone
/// (no payload is read); stops at the first header that makes no sense.
/// Events in the records of a segment of `size` bytes at or above `floor`, from their
/// headers. A record whose body does not fit in the file (a write torn by a crash) counts
/// nothing: it is never read, so it would never be acknowledged either.
fn count_events(storage: &dyn Storage, path: &Path, size: u64, floor: u64) -> std::io::Result<u64> {
    let (mut offset, mut events) = (0u64, 0u64);
    let mut header = Vec::with_capacity(record::HEADER);
    loop {
        header.clear();
        if storage.read_at(path, offset, &mut header, record::HEADER)? < record::HEADER {
            return Ok(events);
        }
        let Some(header) = record::parse_header(&header) else { return Ok(events) };
        if (header.len as u64) < record::HEADER as u64 || offset + header.len as u64 > size {
            return Ok(events);
        }
        if header.id >= floor {
            events += u64::from(header.events);
        }
        offset += header.len as u64;
    }
}

/// The id of the last whole, valid record in `data`.
fn last_valid_id(data: &[u8]) -> Option<u64> {
    let (mut at, mut last) = (0, None);
    while at < data.len() {
        match record::parse(&data[at..]) {
            Parsed::Record(r, len) => {
                last = Some(r.id);
                at += len;
            }
            Parsed::Incomplete => break,
            Parsed::Invalid(_) => match record::resync(&data[at..], last.map_or(0, |l| l + 1)) {
                Some(skip) => at += skip,
                None => break,
            },
        }
    }
    last
}
