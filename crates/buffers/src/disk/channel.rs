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
//! - a record is removed only after [`DiskReceiver::ack`] (see [`Wal`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::storage::Storage;
use super::wal::{AppendError, Item, Wal, WalOptions};

/// Called once a record is durable (`true`) or could not be stored (`false`).
pub type Done = Box<dyn FnOnce(bool) + Send>;

struct Append {
    events: u16,
    payload: Vec<u8>,
    done: Done,
}

enum Control {
    Read(oneshot::Sender<Option<Item>>),
    Ack(u64),
}

/// Settings of one disk buffer.
#[derive(Debug, Clone, Copy)]
pub struct ChannelOptions {
    pub wal: WalOptions,
    /// Longest wait before an fsync; zero syncs after every group of appends.
    pub sync_interval: Duration,
}

/// The writing half; clone it for each upstream.
#[derive(Clone)]
pub struct DiskSender {
    tx: mpsc::Sender<Append>,
}

/// The reading half.
pub struct DiskReceiver {
    control: mpsc::UnboundedSender<Control>,
    /// A read asked for and not yet answered (kept when `recv` is cancelled).
    pending: Option<oneshot::Receiver<Option<Item>>>,
    /// The first id appended by this process: older records were stored by an earlier run.
    pub first_new_id: u64,
}

/// Acknowledges records; clone it freely.
#[derive(Clone)]
pub struct DiskAcker {
    control: mpsc::UnboundedSender<Control>,
}

impl DiskAcker {
    /// Acknowledges a record (delivered or dead-lettered), or an id lost in a damaged range
    /// once its bytes are stored elsewhere.
    pub fn ack(&self, id: u64) {
        let _ = self.control.send(Control::Ack(id));
    }
}

impl DiskSender {
    /// Queues one record. Returns it back if the buffer is gone.
    ///
    /// # Cancel safety
    /// Not cancel safe.
    pub async fn send(&self, events: u16, payload: Vec<u8>, done: Done) -> Result<(), Done> {
        self.tx.send(Append { events, payload, done }).await.map_err(|e| e.0.done)
    }
}

impl DiskReceiver {
    /// The next record or damaged range; `None` at the end.
    ///
    /// # Cancel safety
    /// Cancel safe: an answer that arrives after a cancelled call is returned by the next one.
    pub async fn recv(&mut self) -> Option<Item> {
        if self.pending.is_none() {
            let (tx, rx) = oneshot::channel();
            self.control.send(Control::Read(tx)).ok()?;
            self.pending = Some(rx);
        }
        let item = match self.pending.as_mut() {
            Some(rx) => rx.await.ok().flatten(),
            None => None,
        };
        self.pending = None;
        item
    }

    /// A handle that acknowledges records.
    pub fn acker(&self) -> DiskAcker {
        DiskAcker { control: self.control.clone() }
    }
}

/// The task that owns the log: run it (spawn it, or await it in the drain) until it ends,
/// which is once every sender and the receiver are gone and the last fsync and
/// acknowledgements are on disk.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Opens the buffer in `dir`.
pub fn open(
    dir: &Path,
    storage: Arc<dyn Storage>,
    options: ChannelOptions,
) -> std::io::Result<(DiskSender, DiskReceiver, Task)> {
    let wal = Wal::open(dir, storage, options.wal)?;
    let first_new_id = wal.next_id();
    let (tx, appends) = mpsc::channel(8);
    let (control, control_rx) = mpsc::unbounded_channel();
    let task = Box::pin(run(wal, appends, control_rx, options.sync_interval));
    Ok((DiskSender { tx }, DiskReceiver { control, pending: None, first_new_id }, task))
}

/// Work gathered for one trip to the blocking pool.
#[derive(Default)]
struct Batch {
    appends: Vec<Append>,
    acks: Vec<u64>,
    sync: bool,
}

async fn run(
    wal: Wal,
    mut appends: mpsc::Receiver<Append>,
    mut control: mpsc::UnboundedReceiver<Control>,
    sync_interval: Duration,
) {
    let mut wal = Some(wal);
    let mut parked: Option<oneshot::Sender<Option<Item>>> = None;
    // Appended, waiting for the fsync that covers them.
    let mut unsynced: Vec<Done> = Vec::new();
    let mut sync_due: Option<tokio::time::Instant> = None;
    // Appends the log had no room for, retried in order.
    let mut waiting: Vec<Append> = Vec::new();
    let mut senders_gone = false;
    let mut control_gone = false;
    loop {
        let mut batch = Batch { appends: std::mem::take(&mut waiting), ..Batch::default() };
        let retry = !batch.appends.is_empty();
        tokio::select! {
            command = control.recv(), if !control_gone => match command {
                Some(Control::Read(reply)) => parked = Some(reply),
                Some(Control::Ack(id)) => batch.acks.push(id),
                None => control_gone = true,
            },
            append = appends.recv(), if !senders_gone && !retry => match append {
                Some(append) => batch.appends.push(append),
                None => senders_gone = true,
            },
            () = tokio::time::sleep(Duration::from_millis(100)), if retry => {}
            () = sleep_until(sync_due) => batch.sync = true,
            () = std::future::ready(()), if senders_gone && control_gone && unsynced.is_empty() => {
                // Nobody reads and nothing more comes: what still waits for room cannot be stored.
                batch.appends.drain(..).for_each(|a| (a.done)(false));
                if let Some(mut log) = wal.take() {
                    let closed = tokio::task::spawn_blocking(move || log.close()).await;
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
                Control::Ack(id) => batch.acks.push(id),
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
        if let Some(item) = result.item {
            if let Some(reply) = parked.take() {
                let _ = reply.send(Some(item));
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

struct Applied {
    appended: Vec<Done>,
    failed: Vec<Done>,
    waiting: Vec<Append>,
    /// `Some(ok)` when an fsync ran.
    synced: Option<bool>,
    item: Option<Item>,
}

fn apply(mut wal: Wal, batch: Batch, read: bool) -> (Wal, Applied) {
    let mut out = Applied { appended: Vec::new(), failed: Vec::new(), waiting: Vec::new(), synced: None, item: None };
    for id in batch.acks {
        if let Err(err) = wal.ack(id) {
            tracing::error!(error = %err, "Cannot remove acknowledged records from the disk buffer; they stay on disk.");
        }
    }
    for append in batch.appends {
        // Once one must wait for room, the ones behind it wait too (order is kept).
        if !out.waiting.is_empty() {
            out.waiting.push(append);
            continue;
        }
        match wal.append(append.events, &append.payload) {
            Ok(_) => out.appended.push(append.done),
            Err(AppendError::Full | AppendError::NoSpace) => out.waiting.push(append),
            Err(err) => {
                tracing::error!(error = %err, "Cannot write to the disk buffer; the events count as failed.");
                out.failed.push(append.done);
            }
        }
    }
    if batch.sync {
        out.synced = Some(wal.sync().is_ok());
    }
    if let Err(err) = wal.persist_acks() {
        tracing::warn!(error = %err, "Cannot persist the disk buffer's acknowledgements; some events may be delivered twice after a restart.");
    }
    if read {
        match wal.read_next() {
            Ok(item) => out.item = item,
            Err(err) => tracing::error!(error = %err, "Cannot read the disk buffer."),
        }
    }
    (wal, out)
}
