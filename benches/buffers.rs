//! Buffer throughput: the same chunks of ~260-byte events through a sink's memory buffer and
//! through its disk buffer (default policy: fsync at most every 10 ms), measured in events/s;
//! MiB/s follow from the bytes per event printed at the start. Run with
//! `cargo bench --bench buffers`.
//!
//! - `memory/write_read`: into a memory buffer and out again.
//! - `disk/write_stored`: into a fresh disk buffer, until every event is reported stored
//!   (encoded, written, fsynced).
//! - `disk/write_read_live`: written and read by a sink that keeps up (what a healthy sink
//!   sees: the chunks written come back without being read from disk).
//! - `disk/read_backlog`: a restart with a backlog: every record read from disk and decoded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::BoxFuture;
use sluice_buffers::{MemoryReceiver, memory};
use sluice_core::ack::{BatchNotifier, EventFinalizer};
use sluice_core::component::ChunkReceiver;
use sluice_core::dead_letter::{DeadLetterQueue, Failure};
use sluice_core::event::EventMetadata;
use sluice_core::ledger::{ComponentKind, ComponentLedger};
use sluice_core::{Chunk, LogEvent};
use sluice_runtime::config::{BufferConfig, BufferType};
use sluice_runtime::topology::disk;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Events per chunk and chunks per measured pass.
const CHUNK: usize = 250;
const CHUNKS: usize = 200;

fn line(i: usize) -> String {
    format!(
        r#"{{"log_id":"{i:032x}","timestamp":"2026-11-22T01:00:00.000Z","model":"llama-3-70b","prompt_tokens":{},"completion_tokens":{},"latency_ms":{},"user_id":"user-{:05}","is_fine_tune":false,"inference_type":"chat","region":"us-east-1","endpoint":"/v1/chat/completions"}}"#,
        i % 4000,
        i % 2000,
        i % 9000,
        i % 50000
    )
}

fn chunks() -> Vec<Chunk> {
    let host = Bytes::from_static(b"bench");
    (0..CHUNKS)
        .map(|c| {
            (0..CHUNK)
                .map(|i| {
                    let meta = EventMetadata::new("in", chrono::Utc::now());
                    LogEvent::legacy(Bytes::from(line(c * CHUNK + i)), "stdin", Some(&host), meta)
                })
                .collect()
        })
        .collect()
}

/// Damaged records would land here; the benchmark writes none.
struct NoDeadLetters;

impl DeadLetterQueue for NoDeadLetters {
    fn submit(&self, _events: Vec<LogEvent>, _failure: Failure) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

fn config() -> BufferConfig {
    BufferConfig { buffer_type: BufferType::Disk, max_size: Some(1 << 30), ..BufferConfig::default() }
}

/// Opens the disk buffer in `dir` with `input` as its writer's input.
fn open(dir: &std::path::Path, input: MemoryReceiver<Chunk>) -> (disk::DiskInput, BoxFuture<'static, ()>) {
    let ledger = Arc::new(ComponentLedger::new("out".to_string(), ComponentKind::Sink, "blackhole"));
    // Never asked to stop: the trigger lives as long as the process.
    let (trigger, interrupt) = sluice_core::shutdown::shutdown_pair();
    std::mem::forget(trigger);
    disk::start(dir, &config(), input, ledger, Arc::new(NoDeadLetters), interrupt, false)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Sends every chunk with a notifier; returns the receivers of "stored".
async fn send_all(
    tx: &sluice_buffers::MemorySender<Chunk>,
    input: &[Chunk],
) -> Vec<sluice_core::ack::BatchStatusReceiver> {
    let mut waits = Vec::with_capacity(input.len());
    for chunk in input {
        let (notifier, wait) = BatchNotifier::with_receiver();
        let chunk: Chunk =
            chunk.iter().map(|e| e.clone().with_finalizer(EventFinalizer::new(notifier.clone()))).collect();
        drop(notifier);
        waits.push(wait);
        let n = chunk.len();
        if tx.send(chunk, n).await.is_err() {
            panic!("the buffer closed");
        }
    }
    waits
}

/// Stores `input` in a fresh buffer in `dir` (nobody reads it) and closes it; returns the time
/// until every event was reported stored.
async fn store(dir: &std::path::Path, input: &[Chunk]) -> Duration {
    let (tx, rx) = memory::<Chunk>(CHUNK * 2);
    let (disk_input, writer) = open(dir, rx);
    let writer = tokio::spawn(writer);
    let started = Instant::now();
    for mut wait in send_all(&tx, input).await {
        assert!(wait.wait().await.is_safe(), "stored");
    }
    let elapsed = started.elapsed();
    drop((tx, disk_input));
    let _ = writer.await;
    elapsed
}

/// Reads `events` events and settles them (delivered).
async fn drain(input: &mut disk::DiskInput, events: usize) {
    let mut seen = 0;
    while seen < events {
        let Some(chunk) = input.recv().await else { panic!("the buffer ended early") };
        seen += chunk.len();
        for event in chunk {
            event.resolve(sluice_core::ack::Outcome::Delivered);
        }
    }
}

fn buffers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let input = chunks();
    let events = CHUNK * CHUNKS;
    let mut payload = Vec::new();
    sluice_core::codec::encode_chunk(&input[0], &mut payload);
    println!(
        "{} bytes of message per event, {} bytes per event in a disk record",
        line(0).len(),
        payload.len() / CHUNK
    );
    let mut group = c.benchmark_group("buffer");
    group.throughput(Throughput::Elements(events as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));

    group.bench_function("memory/write_read", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let (tx, mut rx) = memory::<Chunk>(CHUNK * 4);
                let reader = tokio::spawn(async move {
                    let mut seen = 0;
                    while let Some(chunk) = rx.recv().await {
                        seen += chunk.len();
                        std::hint::black_box(chunk);
                    }
                    seen
                });
                for chunk in &input {
                    let _ = tx.send(chunk.clone(), chunk.len()).await;
                }
                drop(tx);
                assert_eq!(reader.await.unwrap_or_default(), events);
            })
        });
    });

    group.bench_function("disk/write_stored", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                total += runtime.block_on(store(dir.path(), &input));
            }
            total
        });
    });

    group.bench_function("disk/write_read_live", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                total += runtime.block_on(async {
                    let (tx, rx) = memory::<Chunk>(CHUNK * 2);
                    let (mut disk_input, writer) = open(dir.path(), rx);
                    let writer = tokio::spawn(writer);
                    let started = Instant::now();
                    let reader = tokio::spawn(async move {
                        drain(&mut disk_input, events).await;
                        disk_input
                    });
                    let waits = send_all(&tx, &input).await;
                    let disk_input = reader.await.unwrap_or_else(|e| panic!("{e}"));
                    let elapsed = started.elapsed();
                    drop((tx, disk_input, waits));
                    let _ = writer.await;
                    elapsed
                });
            }
            total
        });
    });

    group.bench_function("disk/read_backlog", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                total += runtime.block_on(async {
                    // A first run stores the backlog and stops without reading it.
                    store(dir.path(), &input).await;
                    // The restart reads it all from disk.
                    let (tx, rx) = memory::<Chunk>(CHUNK * 2);
                    let (mut disk_input, writer) = open(dir.path(), rx);
                    let writer = tokio::spawn(writer);
                    let started = Instant::now();
                    drain(&mut disk_input, events).await;
                    let elapsed = started.elapsed();
                    drop((tx, disk_input));
                    let _ = writer.await;
                    elapsed
                });
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, buffers);
criterion_main!(benches);
