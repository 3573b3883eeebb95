//! The tail service: one per `data_dir` in a process, shared by every source that reads files
//! there (`file`, `kubernetes_logs`). Each file is discovered, opened and read once, whatever
//! the number of sources whose globs match it; its lines go to every one of them (readers),
//! and its position in the checkpoint store moves only past lines every reader acknowledged.
//!
//! ```text
//! sources ─ subscribe (build) ─► service thread: discover ─► watchers ─► read turns ─► readers
//!                                     ▲                                               │
//!                     outcomes of the readers' chunk notifiers ◄─────── events ◄──────┘
//!                                     │
//!                                     └─► positions ─► checkpoint store (every cooldown, at stop)
//! ```
//!
//! Rules (see `docs/design/checkpoints.md`):
//! - a file is known by its fingerprint; a known fingerprint at a new path is a rename: the
//!   watcher follows it and keeps its position;
//! - a new file starts at its stored position, else at its start (or at its end for files
//!   present at startup with `read_from = "end"`, and for files older than
//!   `ignore_older_secs`);
//! - a file that shrank under its read position was truncated: reading it restarts at 0 (its
//!   old content, if `copytruncate` kept a copy under a matching path, is found there by its
//!   fingerprint and resumed at the stored position);
//! - a deleted file is read to its end, then its held last line is given out, and it is
//!   dropped; its checkpoint goes a minute after its lines are settled (a compressed copy
//!   made just before the deletion takes the position over meanwhile); a file renamed out of every glob is read for `rotate_wait_secs` more;
//! - a reader whose queue is full holds back the files it reads (back-pressure per file);
//! - the service reads nothing until every source registered in the build has started.

mod acks;
mod discover;
mod watcher;

use std::collections::{BTreeMap, HashMap, HashSet};

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sluice_core::ack::Outcome;
use tokio::sync::{mpsc, watch};

pub use acks::{Acks, Tracker};
pub use watcher::BLOCK;
use watcher::Watcher;

use crate::checkpoint::{Store, StoreError, store_dir};
use crate::discovery::Globs;
use crate::fingerprint::{Fingerprint, Strategy};
use crate::lines::Piece;

/// How a reader wants its files read. When readers with different settings match one file,
/// the first reader (by source id) decides for that file.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    pub fingerprint: Strategy,
    pub max_line_bytes: usize,
    /// The delimiter in the file's own encoding.
    pub line_delimiter: Vec<u8>,
    /// Delimiters are matched on multiples of this (2 for UTF-16).
    pub align: usize,
    /// Lines are decoded from this charset to UTF-8.
    pub charset: Option<&'static encoding_rs::Encoding>,
    /// Files present at startup without a checkpoint start at their end.
    pub read_from_end: bool,
    pub ignore_older: Option<Duration>,
    /// Bytes a file may give in one turn before the next file's turn (at least [`BLOCK`]).
    pub max_read_bytes: usize,
    pub oldest_first: bool,
    pub glob_cooldown: Duration,
    pub rotate_wait: Duration,
    pub remove_after: Option<Duration>,
    pub ignore_checkpoints: bool,
}

/// A file as readers see it.
#[derive(Debug, Clone, Copy)]
pub struct FileRef<'a> {
    /// Stable for the life of the watcher (the key of [`Acks::finalizer`]).
    pub id: u64,
    pub path: &'a Path,
    pub fingerprint: Fingerprint,
}

/// A source's side of the service, called on the service's thread.
pub trait Reader: Send {
    /// Whether the reader can take more now; `false` holds back the files it reads.
    fn has_room(&mut self) -> bool;
    /// Pieces read from `file`, in order (texts decoded to UTF-8). Every chunk of events
    /// made from them takes a finalizer from `acks` (see [`Acks::finalizer`]).
    fn pieces(&mut self, file: FileRef<'_>, pieces: Vec<Piece>, acks: &mut Acks<'_>);
    /// Nothing more comes from `file`: give out what is held for it.
    fn file_done(&mut self, file: FileRef<'_>, acks: &mut Acks<'_>);
    /// After every pass: give out what timed out, hand on what was gathered.
    fn end_of_pass(&mut self, now: Instant, acks: &mut Acks<'_>);
}

/// A source's registration.
pub struct Registration {
    pub source_id: String,
    pub globs: Globs,
    pub options: ReadOptions,
    pub acknowledgements: bool,
    pub reader: Box<dyn Reader>,
}

/// Why a source could not join the service.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the file reader thread: {0}")]
    Thread(std::io::Error),
}

/// Runs on the store on the service's thread before reading starts (Vector checkpoint
/// import).
pub type Prepare = Box<dyn FnOnce(&mut Store) + Send>;

enum Command {
    Register { index: usize, registration: Box<Registration>, prepare: Prepare, finished: watch::Sender<bool> },
    Start(usize),
    Stop(usize),
}

/// A source's handle on the service.
pub struct Subscription {
    index: usize,
    commands: std_mpsc::Sender<Command>,
    finished: watch::Receiver<bool>,
}

impl Subscription {
    /// The source runs: once every registered source has started, reading begins.
    pub fn start(&self) {
        let _ = self.commands.send(Command::Start(self.index));
    }

    /// Stops reading for this source: what its reader gathered is handed on, then the reader
    /// is dropped (on the service's thread).
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop(self.index));
    }

    /// Waits until, after [`Subscription::stop`], every chunk this source was given has its
    /// outcome and the positions are written.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn finished(&mut self) {
        let _ = self.finished.wait_for(|done| *done).await;
    }
}

struct Service {
    commands: std_mpsc::Sender<Command>,
    next_index: usize,
    alive: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn services() -> &'static Mutex<HashMap<PathBuf, Service>> {
    static SERVICES: OnceLock<Mutex<HashMap<PathBuf, Service>>> = OnceLock::new();
    SERVICES.get_or_init(Default::default)
}

fn lock_services() -> std::sync::MutexGuard<'static, HashMap<PathBuf, Service>> {
    match services().lock() {
        Ok(map) => map,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Joins the tail service of `data_dir`, starting it (and opening the checkpoint store,
/// which takes its lock) for the first source. `prepare` runs on the store before reading
/// starts.
pub fn subscribe(data_dir: &Path, registration: Registration, prepare: Prepare) -> Result<Subscription, TailError> {
    let mut map = lock_services();
    // A service that finished may still be writing its last checkpoints and holds the
    // store's lock until its thread ends (a source stopped by a reload, its successor
    // starting now): wait for it.
    let finished: Vec<PathBuf> =
        map.iter().filter(|(_, s)| !s.alive.load(Ordering::Relaxed)).map(|(k, _)| k.clone()).collect();
    for key in finished {
        if let Some(thread) = map.remove(&key).and_then(|s| s.thread) {
            let _ = thread.join();
        }
    }
    let key = data_dir.to_path_buf();
    if !map.contains_key(&key) {
        let store = Store::open(&store_dir(data_dir))?;
        let (tx, rx) = std_mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let flag = alive.clone();
        let dir = key.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-file-tail".into())
            .spawn(move || Tail::new(store, rx, dir, flag).run())
            .map_err(TailError::Thread)?;
        map.insert(key.clone(), Service { commands: tx, next_index: 0, alive, thread: Some(thread) });
    }
    let Some(service) = map.get_mut(&key) else {
        return Err(TailError::Thread(std::io::Error::other("the file reader thread is gone")));
    };
    let index = service.next_index;
    service.next_index += 1;
    let (done_tx, done_rx) = watch::channel(false);
    let command = Command::Register { index, registration: Box::new(registration), prepare, finished: done_tx };
    service
        .commands
        .send(command)
        .map_err(|_| TailError::Thread(std::io::Error::other("the file reader thread is gone")))?;
    Ok(Subscription { index, commands: service.commands.clone(), finished: done_rx })
}

/// A registered source on the service's thread.
struct Sub {
    source_id: String,
    globs: Globs,
    options: ReadOptions,
    tracking: bool,
    /// `None` once stopped.
    reader: Option<Box<dyn Reader>>,
    started: bool,
    finished: watch::Sender<bool>,
    done: bool,
}

/// Positions are written every glob cooldown, and at least this often (`kubernetes_logs`
/// looks for files only every minute by default).
const FLUSH_AT_LEAST_EVERY: Duration = Duration::from_secs(1);

/// How long the checkpoint of a deleted file is kept after its lines are settled.
const FORGET_DELETED: Duration = Duration::from_secs(60);

/// Checkpoints whose file is gone from its path and that nobody updated for this long are
/// forgotten when the service starts (rotated files deleted while sluice was not looking).
const PRUNE_AFTER_DAYS: i64 = 7;

/// The service's thread.
struct Tail {
    store: Store,
    commands: std_mpsc::Receiver<Command>,
    data_dir: PathBuf,
    alive: Arc<AtomicBool>,
    subs: Vec<Option<Sub>>,
    watchers: BTreeMap<u64, Watcher>,
    by_fingerprint: HashMap<Fingerprint, u64>,
    /// path → (dev, inode, watcher).
    by_path: HashMap<PathBuf, (u64, u64, u64)>,
    readers_of: HashMap<u64, Vec<usize>>,
    tracker: Tracker,
    outcomes_tx: mpsc::UnboundedSender<(u64, Outcome)>,
    outcomes: mpsc::UnboundedReceiver<(u64, Outcome)>,
    next_watcher: u64,
    discovered_once: bool,
    last_discovery: Option<Instant>,
    last_flush: Instant,
    /// Gzip files read to their end this run.
    finished: HashSet<Fingerprint>,
    /// (path, inode) of files found truncated: their new content starts at 0.
    truncated: HashSet<(PathBuf, u64)>,
    /// Deleted files read to their end (watcher ids).
    deleted: HashSet<u64>,
    /// Fingerprints of deleted files and when they were dropped: their checkpoints go
    /// [`FORGET_DELETED`] later, unless another file took the fingerprint meanwhile (a
    /// compressed copy, `.1.gz`, made just before the original was deleted).
    forget: Vec<(Fingerprint, Instant)>,
    /// Where the next pass starts, so files take turns first when readers are short of room.
    pass_start: usize,
    warned: HashSet<PathBuf>,
}

use std::sync::atomic::{AtomicBool, Ordering};

impl Tail {
    fn new(mut store: Store, commands: std_mpsc::Receiver<Command>, data_dir: PathBuf, alive: Arc<AtomicBool>) -> Self {
        let pruned = store.prune_missing(chrono::Duration::days(PRUNE_AFTER_DAYS));
        if pruned > 0 {
            tracing::info!(
                entries = pruned,
                days = PRUNE_AFTER_DAYS,
                "Forgot checkpoints of files gone for a long time."
            );
        }
        let (outcomes_tx, outcomes) = mpsc::unbounded_channel();
        Self {
            store,
            commands,
            data_dir,
            alive,
            subs: Vec::new(),
            watchers: BTreeMap::new(),
            by_fingerprint: HashMap::new(),
            by_path: HashMap::new(),
            readers_of: HashMap::new(),
            tracker: Tracker::default(),
            outcomes_tx,
            outcomes,
            next_watcher: 0,
            discovered_once: false,
            last_discovery: None,
            last_flush: Instant::now(),
            finished: HashSet::new(),
            truncated: HashSet::new(),
            deleted: HashSet::new(),
            forget: Vec::new(),
            pass_start: 0,
            warned: HashSet::new(),
        }
    }

    fn run(mut self) {
        let mut idle = Duration::from_millis(1);
        loop {
            self.handle_commands();
            self.apply_outcomes();
            let now = Instant::now();
            let mut busy = false;
            if self.ready() {
                let cooldown = self.cooldown();
                if self.last_discovery.is_none_or(|at| now.duration_since(at) >= cooldown) {
                    self.discover(now);
                    self.last_discovery = Some(now);
                }
                busy = self.read_pass(now);
                self.end_of_pass(now);
                self.reap(now);
            }
            if now.duration_since(self.last_flush) >= self.cooldown().min(FLUSH_AT_LEAST_EVERY) {
                self.commit();
                self.flush();
            }
            self.finish_stopped();
            if self.should_exit() {
                break;
            }
            if busy {
                idle = Duration::from_millis(1);
            } else {
                std::thread::sleep(idle);
                idle = (idle * 2).min(Duration::from_millis(100));
            }
        }
        self.commit();
        self.flush();
    }

    fn cooldown(&self) -> Duration {
        self.live_subs().map(|(_, s)| s.options.glob_cooldown).min().unwrap_or(Duration::from_secs(1))
    }

    fn live_subs(&self) -> impl Iterator<Item = (usize, &Sub)> {
        self.subs.iter().enumerate().filter_map(|(i, s)| s.as_ref().filter(|s| s.reader.is_some()).map(|s| (i, s)))
    }

    /// Every registered source has started, and one is still reading.
    fn ready(&self) -> bool {
        self.subs.iter().flatten().all(|s| s.started || s.reader.is_none()) && self.live_subs().next().is_some()
    }

    fn handle_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            self.apply_command(command);
        }
    }

    fn apply_command(&mut self, command: Command) {
        match command {
            Command::Register { index, registration, prepare, finished } => {
                prepare(&mut self.store);
                let Registration { source_id, globs, options, acknowledgements, reader } = *registration;
                if self.subs.len() <= index {
                    self.subs.resize_with(index + 1, || None);
                }
                self.subs[index] = Some(Sub {
                    source_id,
                    globs,
                    options,
                    tracking: acknowledgements,
                    reader: Some(reader),
                    started: false,
                    finished,
                    done: false,
                });
                // A source joining later reads on from where the files are now.
                self.last_discovery = None;
            }
            Command::Start(index) => {
                if let Some(Some(sub)) = self.subs.get_mut(index) {
                    sub.started = true;
                }
            }
            Command::Stop(index) => {
                let now = Instant::now();
                let (tracker, outcomes) = (&mut self.tracker, &self.outcomes_tx);
                if let Some(Some(sub)) = self.subs.get_mut(index)
                    && let Some(mut reader) = sub.reader.take()
                {
                    let mut acks = Acks { sub: index, tracking: sub.tracking, tracker, outcomes };
                    reader.end_of_pass(now, &mut acks);
                }
            }
        }
    }

    fn apply_outcomes(&mut self) {
        while let Ok((tag, outcome)) = self.outcomes.try_recv() {
            if let acks::Resolved::FirstFailure((watcher, _), at) = self.tracker.resolve(tag, outcome) {
                let path = self.watchers.get(&watcher).map(|w| w.path.display().to_string()).unwrap_or_default();
                tracing::warn!(
                    file = path.as_str(),
                    position = at,
                    "Lines of this file failed delivery with nowhere durable to go; its checkpoint stays before them, so they are read again after a restart."
                );
            }
        }
    }

    /// The source whose settings apply to a file matched by `readers` (the first one).
    fn options_for(&self, readers: &[usize]) -> Option<&ReadOptions> {
        readers.first().and_then(|i| self.subs.get(*i)?.as_ref()).map(|s| &s.options)
    }

    fn warn_mismatch(&mut self, path: &Path, readers: &[usize]) {
        let Some(first) = self.options_for(readers) else { return };
        let differs = readers.iter().skip(1).filter_map(|i| self.subs.get(*i)?.as_ref()).any(|s| {
            s.options.line_delimiter != first.line_delimiter
                || s.options.fingerprint != first.fingerprint
                || s.options.max_line_bytes != first.max_line_bytes
                || s.options.charset != first.charset
        });
        if differs && self.warned.insert(path.to_path_buf()) {
            let names: Vec<&str> =
                readers.iter().filter_map(|i| self.subs.get(*i)?.as_ref()).map(|s| s.source_id.as_str()).collect();
            tracing::warn!(
                file = %path.display(),
                sources = ?names,
                "Sources with different line, charset or fingerprint settings read this file; it is read once, with the settings of the first."
            );
        }
    }

    /// One turn for every file whose readers have room. Returns whether anything was read.
    fn read_pass(&mut self, now: Instant) -> bool {
        let mut order: Vec<u64> = self.watchers.iter().filter(|(_, w)| !w.done).map(|(id, _)| *id).collect();
        let oldest_first = self.live_subs().any(|(_, s)| s.options.oldest_first);
        if oldest_first {
            order.sort_by_key(|id| self.watchers.get(id).map(|w| w.modified));
        } else if !order.is_empty() {
            // Round robin: when readers run out of room part-way, other files go first next.
            self.pass_start = self.pass_start.wrapping_add(1);
            let start = self.pass_start % order.len();
            order.rotate_left(start);
        }
        let mut busy = false;
        for id in order {
            let readers: Vec<usize> = self
                .readers_of
                .get(&id)
                .map(|r| {
                    r.iter()
                        .copied()
                        .filter(|i| self.subs.get(*i).and_then(Option::as_ref).is_some_and(|s| s.reader.is_some()))
                        .collect()
                })
                .unwrap_or_default();
            if readers.is_empty() {
                continue;
            }
            let room = readers.iter().all(|i| {
                self.subs
                    .get_mut(*i)
                    .and_then(Option::as_mut)
                    .and_then(|s| s.reader.as_mut())
                    .is_some_and(|r| r.has_room())
            });
            if !room {
                continue;
            }
            let Some(options) = self.options_for(&readers).cloned() else { continue };
            let Some(w) = self.watchers.get_mut(&id) else { continue };
            let turn = match w.read_turn(options.max_read_bytes.max(BLOCK)) {
                Ok(turn) => turn,
                Err(err) => {
                    tracing::warn!(file = %w.path.display(), error = %err, "Cannot read a file; trying again later.");
                    continue;
                }
            };
            busy |= turn.read > 0;
            let (eof, truncated) = (turn.eof, turn.truncated);
            // Lines split before a truncation was noticed are whole: they go out first.
            if !turn.pieces.is_empty() {
                let pieces = decode(turn.pieces, options.charset);
                self.hand_out(id, &readers, pieces);
            }
            if truncated {
                if let Some(w) = self.watchers.get_mut(&id) {
                    tracing::info!(file = %w.path.display(), "File truncated; reading its new content from the start.");
                    self.truncated.insert((w.path.clone(), w.dev_ino.1));
                    w.close();
                    self.by_path.remove(&w.path.clone());
                    self.by_fingerprint.remove(&w.fingerprint);
                }
                self.file_done(id, &readers);
                continue;
            }
            if eof {
                self.at_eof(id, &readers, &options, now);
            } else if options.oldest_first {
                // The oldest file is read to its end before the next one.
                break;
            }
        }
        busy
    }

    /// Gives `pieces` to every reader of watcher `id` (clones for all but the last).
    fn hand_out(&mut self, id: u64, readers: &[usize], pieces: Vec<Piece>) {
        let Some(w) = self.watchers.get(&id) else { return };
        let (path, fp) = (w.path.clone(), w.fingerprint);
        let mut pieces = Some(pieces);
        for (n, &i) in readers.iter().enumerate() {
            let batch = if n + 1 == readers.len() { pieces.take() } else { pieces.clone() };
            let Some(batch) = batch else { continue };
            let (tracker, outcomes) = (&mut self.tracker, &self.outcomes_tx);
            if let Some(Some(sub)) = self.subs.get_mut(i)
                && let Some(reader) = sub.reader.as_mut()
            {
                let mut acks = Acks { sub: i, tracking: sub.tracking, tracker, outcomes };
                reader.pieces(FileRef { id, path: &path, fingerprint: fp }, batch, &mut acks);
            }
        }
    }

    /// A turn found the end of the file: finish it if it is complete or gone.
    fn at_eof(&mut self, id: u64, readers: &[usize], options: &ReadOptions, now: Instant) {
        let Some(w) = self.watchers.get_mut(&id) else { return };
        let finished = if w.is_gzip {
            self.finished.insert(w.fingerprint);
            true
        } else {
            match w.stat() {
                Some((_, false)) => {
                    self.deleted.insert(id);
                    true
                }
                _ => w.lost_since.is_some_and(|since| now.duration_since(since) >= options.rotate_wait),
            }
        };
        let remove = !finished
            && !w.is_gzip
            && options.remove_after.is_some_and(|after| now.duration_since(w.last_data) >= after);
        if remove {
            let committed =
                readers.iter().filter_map(|r| self.tracker.tracks.get(&(id, *r))).map(|t| t.acked).min().unwrap_or(0);
            if committed >= w.read_position() && self.tracker.watcher_settled(id) {
                match std::fs::remove_file(&w.path) {
                    Ok(()) => {
                        tracing::info!(file = %w.path.display(), "Removed a file read to its end and acknowledged (remove_after_secs).")
                    }
                    Err(err) => {
                        tracing::warn!(file = %w.path.display(), error = %err, "Cannot remove a file after reading it.")
                    }
                }
            }
            return;
        }
        if !finished {
            return;
        }
        let last = w.finish();
        self.by_path.remove(&w.path.clone());
        if let Some(piece) = last {
            let pieces = decode(vec![piece], options.charset);
            self.hand_out(id, readers, pieces);
        }
        self.file_done(id, readers);
    }

    fn file_done(&mut self, id: u64, readers: &[usize]) {
        let Some(w) = self.watchers.get(&id) else { return };
        let (path, fp) = (w.path.clone(), w.fingerprint);
        for &i in readers {
            let (tracker, outcomes) = (&mut self.tracker, &self.outcomes_tx);
            if let Some(Some(sub)) = self.subs.get_mut(i)
                && let Some(reader) = sub.reader.as_mut()
            {
                let mut acks = Acks { sub: i, tracking: sub.tracking, tracker, outcomes };
                reader.file_done(FileRef { id, path: &path, fingerprint: fp }, &mut acks);
            }
        }
    }

    fn end_of_pass(&mut self, now: Instant) {
        for (i, slot) in self.subs.iter_mut().enumerate() {
            if let Some(sub) = slot
                && let Some(reader) = sub.reader.as_mut()
            {
                let mut acks =
                    Acks { sub: i, tracking: sub.tracking, tracker: &mut self.tracker, outcomes: &self.outcomes_tx };
                reader.end_of_pass(now, &mut acks);
            }
        }
    }

    /// Drops watchers that are done and settled, after writing their last positions down.
    fn reap(&mut self, now: Instant) {
        let done: Vec<u64> = self
            .watchers
            .iter()
            .filter(|(id, w)| w.done && self.tracker.watcher_settled(**id))
            .map(|(id, _)| *id)
            .collect();
        if !done.is_empty() {
            self.commit();
        }
        for id in done {
            if let Some(w) = self.watchers.remove(&id) {
                if self.by_fingerprint.get(&w.fingerprint) == Some(&id) {
                    self.by_fingerprint.remove(&w.fingerprint);
                }
                if self.deleted.remove(&id) {
                    self.forget.push((w.fingerprint, now));
                }
            }
            self.readers_of.remove(&id);
            self.tracker.tracks.retain(|(w, _), _| *w != id);
        }
        let (store, owned) = (&mut self.store, &self.by_fingerprint);
        self.forget.retain(|(fp, at)| {
            let due = now.duration_since(*at) >= FORGET_DELETED;
            if due && !owned.contains_key(fp) {
                store.remove(fp);
            }
            !due
        });
    }

    /// Writes every file's acknowledged position into the store (not yet to disk).
    fn commit(&mut self) {
        for (id, w) in &self.watchers {
            let Some(readers) = self.readers_of.get(id) else { continue };
            let position = readers.iter().filter_map(|r| self.tracker.tracks.get(&(*id, *r))).map(|t| t.acked).min();
            let Some(position) = position else { continue };
            let source = readers.first().and_then(|r| self.subs.get(*r)?.as_ref()).map_or("", |s| s.source_id.as_str());
            self.store.set(w.fingerprint, position, &w.path, source);
        }
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if let Err(err) = self.store.flush()
            && let Some(folded) = FLUSH_FAILED.admit()
        {
            tracing::error!(dir = %self.store.dir().display(), error = %err, similar_since_last_line = folded, "Cannot write file checkpoints; lines read since the last write will be read again after a restart.");
        }
    }

    /// Tells stopped sources once all their chunks have outcomes and positions are written.
    fn finish_stopped(&mut self) {
        let ready: Vec<usize> = self
            .subs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.reader.is_none() && !s.done).map(|_| i))
            .filter(|i| self.tracker.reader_settled(*i))
            .collect();
        if ready.is_empty() {
            return;
        }
        self.commit();
        self.flush();
        for i in ready {
            if let Some(Some(sub)) = self.subs.get_mut(i) {
                sub.done = true;
                let _ = sub.finished.send(true);
            }
        }
    }

    /// Every source is finished: leave, unless one registers meanwhile (checked under the
    /// registry's lock, so a registration is never lost).
    fn should_exit(&mut self) -> bool {
        if self.subs.is_empty() || !self.subs.iter().flatten().all(|s| s.done) {
            return false;
        }
        let map = lock_services();
        if let Ok(command) = self.commands.try_recv() {
            drop(map);
            self.apply_command(command);
            return false;
        }
        self.alive.store(false, Ordering::Relaxed);
        tracing::debug!(data_dir = %self.data_dir.display(), "File reader finished.");
        true
    }
}

/// A failing disk fails every checkpoint write: one line per 10 s says so.
static FLUSH_FAILED: sluice_core::log_limit::LogLimit =
    sluice_core::log_limit::LogLimit::new(sluice_core::log_limit::INTERVAL);

/// Decodes line texts from `charset` to UTF-8 (a byte-order mark at the file's start is
/// dropped).
fn decode(pieces: Vec<Piece>, charset: Option<&'static encoding_rs::Encoding>) -> Vec<Piece> {
    let Some(charset) = charset else { return pieces };
    pieces
        .into_iter()
        .map(|piece| match piece {
            Piece::Line { start, end, text } => {
                let (decoded, _) = charset.decode_without_bom_handling(&text);
                let decoded = if start == 0 { decoded.trim_start_matches('\u{feff}') } else { &decoded };
                Piece::Line { start, end, text: bytes::Bytes::copy_from_slice(decoded.as_bytes()) }
            }
            other => other,
        })
        .collect()
}
