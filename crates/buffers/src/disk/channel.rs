//! The disk buffer as a channel: a [`DiskSender`] appends records, a [`DiskReceiver`] reads
//! them back and acknowledges them. One task owns the [`Wal`]; every file operation runs on
//! the blocking pool, grouped: all appends waiting, then one fsync, then the callbacks.
//!
//! Contract:
//! - `send` waits while the command queue is full, and while the log is full or the disk has
//!   no space (back-pressure, retried every 100 ms and after each acknowledgement);
//! - a record's `done` callback runs with `true` only after the fsync that covers it (the
//!   events count as stored), with `false` if the write or the fsync failed (after which the
//!   buffer takes nothing more);
//! - `recv` returns records in id order, waits when caught up, and returns `None` once every
//!   sender is gone and everything was read;
//! - a sender may hand over, with a record, the value it encoded (`keep`). While the reader
//!   keeps up, that value comes back instead of the record's bytes ([`Received::Kept`]): the
//!   record is on disk all the same, but it is not read back and decoded. At most
//!   [`KEEP_RECORDS`] values are kept; past that, and after a restart, records are read from
//!   disk;
//! - a record is removed only after [`DiskReceiver::ack`] (see [`Wal`]).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_core::log_limit::{self, LogLimit};
use tokio::sync::{mpsc, oneshot};

use super::storage::Storage;
use super::wal::{AppendError, Item, Placement, Wal, WalOptions};

/// Most values kept for the reader (records appended and not yet read).
pub const KEEP_RECORDS: usize = 64;

/// Most records handed to the reader per trip to the log (fewer past [`READ_BATCH_BYTES`]).
const READ_BATCH: usize = 64;
const READ_BATCH_BYTES: usize = 4 << 20;

/// The acknowledgement floor is persisted at most this often (and always before a segment is
/// removed, and at close): after a crash, at most this much delivery is repeated.
pub const PERSIST_ACKS_EVERY: Duration = Duration::from_millis(20);

/// Called once a record is durable (`true`) or could not be stored (`false`).
pub type Done = Box<dyn FnOnce(bool) + Send>;

struct Append<T> {
    events: u16,
    payload: Vec<u8>,
    keep: Option<T>,
    done: Done,
}

/// What the reader gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<T> {
    /// Read back from disk.
    Read(Item),
    /// Record `id`, whose value its sender kept: the same contents, not read back.
    Kept { id: u64, value: T },
}

/// Records read in one trip, in order; `None` at the end.
type Reply<T> = oneshot::Sender<Option<Vec<Received<T>>>>;

enum Control<T> {
    Read(Reply<T>),
    /// A record id and how many events it held.
    Ack(u64, u16),
}

/// What a disk buffer holds now, for the buffer gauges: events and bytes of records not yet
/// acknowledged. Kept by the log's task; events of records found at open are counted from
/// their headers.
#[derive(Debug, Default)]
pub struct Level {
    events: AtomicU64,
    bytes: AtomicU64,
}

impl Level {
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    fn add_events(&self, n: u64) {
        self.events.fetch_add(n, Ordering::Relaxed);
    }
    fn remove_events(&self, n: u64) {
        let _ = self.events.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }
}

/// Settings of one disk buffer.
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    pub wal: WalOptions,
    /// Longest wait before an fsync; zero syncs after every group of appends.
    pub sync_interval: Duration,
}

/// The writing half; clone it for each upstream.
pub struct DiskSender<T> {
    tx: mpsc::Sender<Append<T>>,
}

impl<T> Clone for DiskSender<T> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

/// The reading half.
pub struct DiskReceiver<T> {
    control: mpsc::UnboundedSender<Control<T>>,
    /// A read asked for and not yet answered (kept when `recv` is cancelled).
    pending: Option<oneshot::Receiver<Option<Vec<Received<T>>>>>,
    /// Records read and not yet returned.
    ready: VecDeque<Received<T>>,
    /// The first id appended by this process: older records were stored by an earlier run.
    pub first_new_id: u64,
    /// What the buffer holds now.
    pub level: Arc<Level>,
}

/// Acknowledges records; clone it freely.
pub struct DiskAcker<T> {
    control: mpsc::UnboundedSender<Control<T>>,
}

impl<T> Clone for DiskAcker<T> {
    fn clone(&self) -> Self {
        Self { control: self.control.clone() }
    }
}

impl<T> DiskAcker<T> {
    /// Acknowledges a record of `events` events (delivered or dead-lettered), or an id lost
    /// in a damaged range once its bytes are stored elsewhere.
    pub fn ack(&self, id: u64, events: u16) {
        let _ = self.control.send(Control::Ack(id, events));
    }
}

impl<T> DiskSender<T> {
    /// Queues one record, with the value it encodes if the reader may have it instead of the
    /// bytes. Returns `done` back if the buffer is gone.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn send(&self, events: u16, payload: Vec<u8>, keep: Option<T>, done: Done) -> Result<(), Done> {
        self.tx.send(Append { events, payload, keep, done }).await.map_err(|e| e.0.done)
    }
}

impl<T> DiskReceiver<T> {
    /// The next record or damaged range; `None` at the end.
    ///
    /// # Cancel safety
    /// Cancel safe: an answer that arrives after a cancelled call is returned by the next one.
    pub async fn recv(&mut self) -> Option<Received<T>> {
        if let Some(item) = self.ready.pop_front() {
            return Some(item);
        }
        if self.pending.is_none() {
            let (tx, rx) = oneshot::channel();
            self.control.send(Control::Read(tx)).ok()?;
            self.pending = Some(rx);
        }
        let items = match self.pending.as_mut() {
            Some(rx) => rx.await.ok().flatten(),
            None => None,
        };
        self.pending = None;
        self.ready.extend(items?);
        self.ready.pop_front()
    }

    /// A handle that acknowledges records.
    pub fn acker(&self) -> DiskAcker<T> {
        DiskAcker { control: self.control.clone() }
    }
}

/// The task that owns the log: run it (spawn it, or await it in the drain) until it ends,
/// which is once every sender and the receiver are gone and the last fsync and
/// acknowledgements are on disk.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Opens the buffer in `dir`.
pub fn open<T: Send + 'static>(
    dir: &Path,
    storage: Arc<dyn Storage>,
    options: ChannelOptions,
) -> std::io::Result<(DiskSender<T>, DiskReceiver<T>, Task)> {
    let wal = Wal::open(dir, storage, options.wal)?;
    let first_new_id = wal.next_id();
    let level = Arc::new(Level::default());
    level.add_events(wal.events_at_open());
    level.bytes.store(wal.unacknowledged_bytes(), Ordering::Relaxed);
    let (tx, appends) = mpsc::channel(64);
    let (control, control_rx) = mpsc::unbounded_channel();
    let state = State { wal, kept: VecDeque::new(), acks_persisted: tokio::time::Instant::now(), level: level.clone() };
    let task = Box::pin(run(state, appends, control_rx, options.sync_interval));
    let rx = DiskReceiver { control, pending: None, ready: VecDeque::new(), first_new_id, level };
    Ok((DiskSender { tx }, rx, task))
}

/// Work gathered for one trip to the blocking pool.
struct Batch<T> {
    appends: Vec<Append<T>>,
    acks: Vec<(u64, u16)>,
    sync: bool,
}

/// The log and the values kept for the reader, in id order.
struct State<T> {
    wal: Wal,
    kept: VecDeque<(Placement, T)>,
    acks_persisted: tokio::time::Instant,
    level: Arc<Level>,
}

async fn run<T: Send + 'static>(
    state: State<T>,
    mut appends: mpsc::Receiver<Append<T>>,
    mut control: mpsc::UnboundedReceiver<Control<T>>,
    sync_interval: Duration,
) {
    let mut wal = Some(state);
    let mut parked: Option<Reply<T>> = None;
    // Appended, waiting for the fsync that covers them.
    let mut unsynced: Vec<Done> = Vec::new();
    let mut sync_due: Option<tokio::time::Instant> = None;
    let mut persist_due: Option<tokio::time::Instant> = None;
    // Appends the log had no room for, retried in order.
    let mut waiting: Vec<Append<T>> = Vec::new();
    let mut senders_gone = false;
    let mut control_gone = false;
    loop {
        let mut batch = Batch { appends: std::mem::take(&mut waiting), acks: Vec::new(), sync: false };
        let retry = !batch.appends.is_empty();
        tokio::select! {
            command = control.recv(), if !control_gone => match command {
                Some(Control::Read(reply)) => parked = Some(reply),
                Some(Control::Ack(id, events)) => batch.acks.push((id, events)),
                None => control_gone = true,
            },
            append = appends.recv(), if !senders_gone && !retry => match append {
                Some(append) => batch.appends.push(append),
                None => senders_gone = true,
            },
            () = tokio::time::sleep(Duration::from_millis(100)), if retry => {}
            () = sleep_until(sync_due) => batch.sync = true,
            () = sleep_until(persist_due) => persist_due = None,
            () = std::future::ready(()), if senders_gone && control_gone && unsynced.is_empty() => {
                // Nobody reads and nothing more comes: what still waits for room cannot be stored.
                batch.appends.drain(..).for_each(|a| (a.done)(false));
                if let Some(mut state) = wal.take() {
                    let closed = tokio::task::spawn_blocking(move || state.wal.close()).await;
                    if !matches!(closed, Ok(Ok(()))) {
                        tracing::warn!("Cannot close the disk buffer cleanly; some events may be delivered twice after a restart.");
                    }
                }
                return;
            }
        }
        while let Ok(command) = control.try_recv() {
            match command {
                Control::Read(reply) => parked = Some(reply),
                Control::Ack(id, events) => batch.acks.push((id, events)),
            }
        }
        if !retry {
            while batch.appends.len() < 64
                && let Ok(append) = appends.try_recv()
            {
                batch.appends.push(append);
            }
        }
        if senders_gone || sync_interval.is_zero() {
            batch.sync = true;
        }
        let Some(log) = wal.take() else { return };
        let read = parked.is_some();
        let outcome = tokio::task::spawn_blocking(move || apply(log, batch, read)).await;
        let Ok((log, result)) = outcome else {
            tracing::error!("The disk buffer's task failed; its events stay on disk for the next start.");
            return;
        };
        if log.wal.acks_unpersisted() && persist_due.is_none() {
            persist_due = Some(tokio::time::Instant::now() + PERSIST_ACKS_EVERY);
        }
        wal = Some(log);
        waiting = result.waiting;
        unsynced.extend(result.appended);
        for done in result.failed {
            done(false);
        }
        match result.synced {
            Some(true) => {
                unsynced.drain(..).for_each(|done| done(true));
                sync_due = None;
            }
            Some(false) => unsynced.drain(..).for_each(|done| done(false)),
            None if !unsynced.is_empty() && sync_due.is_none() => {
                sync_due = Some(tokio::time::Instant::now() + sync_interval);
            }
            None => {}
        }
        if !result.items.is_empty() {
            if let Some(reply) = parked.take() {
                let _ = reply.send(Some(result.items));
            }
        } else if read && senders_gone && waiting.is_empty() {
            // Caught up and nothing more can come.
            if let Some(reply) = parked.take() {
                let _ = reply.send(None);
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Applied<T> {
    appended: Vec<Done>,
    failed: Vec<Done>,
    waiting: Vec<Append<T>>,
    /// `Some(ok)` when an fsync ran.
    synced: Option<bool>,
    items: Vec<Received<T>>,
}

// A failing disk (full, read-only) fails every trip of the log's task, up to 50 a second:
// one line per site per 10 s says so, with how many were folded into it.
static ACK_FAILED: LogLimit = LogLimit::new(log_limit::INTERVAL);
static WRITE_FAILED: LogLimit = LogLimit::new(log_limit::INTERVAL);
static PERSIST_FAILED: LogLimit = LogLimit::new(log_limit::INTERVAL);
static READ_FAILED: LogLimit = LogLimit::new(log_limit::INTERVAL);

fn apply<T>(mut state: State<T>, batch: Batch<T>, read: bool) -> (State<T>, Applied<T>) {
    let State { wal, kept, acks_persisted, level } = &mut state;
    let mut out =
        Applied { appended: Vec::new(), failed: Vec::new(), waiting: Vec::new(), synced: None, items: Vec::new() };
    for (id, events) in batch.acks {
        level.remove_events(u64::from(events));
        if let Err(err) = wal.ack(id)
            && let Some(folded) = ACK_FAILED.admit()
        {
            tracing::error!(error = %err, similar_since_last_line = folded, "Cannot remove acknowledged records from the disk buffer; they stay on disk.");
        }
    }
    for append in batch.appends {
        // Once one must wait for room, the ones behind it wait too (order is kept).
        if !out.waiting.is_empty() {
            out.waiting.push(append);
            continue;
        }
        match wal.append(append.events, &append.payload) {
            Ok(_) => {
                level.add_events(u64::from(append.events));
                if let (Some(value), Some(at)) = (append.keep, wal.last_placement())
                    && kept.len() < KEEP_RECORDS
                {
                    kept.push_back((at, value));
                }
                out.appended.push(append.done);
            }
            Err(AppendError::Full | AppendError::NoSpace) => out.waiting.push(append),
            Err(err) => {
                if let Some(folded) = WRITE_FAILED.admit() {
                    tracing::error!(error = %err, similar_since_last_line = folded, "Cannot write to the disk buffer; the events count as failed.");
                }
                out.failed.push(append.done);
            }
        }
    }
    if batch.sync {
        out.synced = Some(wal.sync().is_ok());
    }
    level.bytes.store(wal.unacknowledged_bytes(), Ordering::Relaxed);
    if acks_persisted.elapsed() >= PERSIST_ACKS_EVERY {
        *acks_persisted = tokio::time::Instant::now();
        if let Err(err) = wal.persist_acks()
            && let Some(folded) = PERSIST_FAILED.admit()
        {
            tracing::warn!(error = %err, similar_since_last_line = folded, "Cannot persist the disk buffer's acknowledgements; some events may be delivered twice after a restart.");
        }
    }
    let mut bytes = 0;
    while read && out.items.len() < READ_BATCH && bytes < READ_BATCH_BYTES {
        // Values of records the reader already passed (read from disk) are of no more use.
        while kept.front().is_some_and(|(at, _)| wal.read_up_to().is_some_and(|read| at.id <= read)) {
            kept.pop_front();
        }
        let item = match kept.front() {
            Some((at, _)) if wal.pass_over(*at) => {
                kept.pop_front().map(|(at, value)| Received::Kept { id: at.id, value })
            }
            // Read from disk up to the next record whose value is kept, no further.
            next => match wal.read_next_before(next.map(|(at, _)| *at)) {
                Ok(item) => item.map(Received::Read),
                Err(err) => {
                    if let Some(folded) = READ_FAILED.admit() {
                        tracing::error!(error = %err, similar_since_last_line = folded, "Cannot read the disk buffer.");
                    }
                    None
                }
            },
        };
        match item {
            Some(item) => {
                bytes += match &item {
                    Received::Read(Item::Record { payload, .. }) => payload.len(),
                    Received::Read(Item::Corrupt { bytes, .. }) => bytes.len(),
                    Received::Kept { .. } => 0,
                };
                out.items.push(item);
            }
            None => break,
        }
    }
    (state, out)
}
