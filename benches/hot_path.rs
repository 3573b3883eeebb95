//! Hot-path benchmarks: a chunk through a three-way fan-out, the quickstart remap program,
//! and JSON encoding. Run with `cargo bench --bench hot_path`.

use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sluice_buffers::memory;
use sluice_components::codecs::EncodingConfig;
use sluice_core::component::{GlobalOptions, TransformConfig, TransformContext, TransformOutputs};
use sluice_core::event::EventMetadata;
use sluice_core::ledger::{ComponentKind, ComponentLedger};
use sluice_core::{Chunk, LogEvent};
use sluice_runtime::config::WhenFull;
use sluice_runtime::topology::fanout::{Consumer, Fanout};

/// The same allocator as the `sluice` binary, so allocation costs are representative.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHUNK: usize = 1000;

fn line(i: usize) -> String {
    format!(
        r#"{{"log_id":"{i:032x}","timestamp":"2026-11-22T01:00:00.000Z","model":"llama-3-70b","prompt_tokens":{},"completion_tokens":{},"latency_ms":{},"user_id":"user-{:05}","is_fine_tune":false,"inference_type":"chat","region":"us-east-1","endpoint":"/v1/chat/completions"}}"#,
        i % 4000,
        i % 2000,
        i % 9000,
        i % 50000
    )
}

fn chunk() -> Chunk {
    let host = Bytes::from_static(b"bench");
    (0..CHUNK)
        .map(|i| {
            let meta = EventMetadata::new("in", chrono::Utc::now());
            LogEvent::legacy(Bytes::from(line(i)), "stdin", Some(&host), meta)
        })
        .collect()
}

fn fanout(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.bench_function("chunk_to_three_consumers", |b| {
        let mut receivers = Vec::new();
        let consumers = (0..3)
            .map(|i| {
                let (tx, rx) = memory::<Chunk>(CHUNK * 4);
                receivers.push(rx);
                Consumer::new(
                    tx,
                    Arc::new(ComponentLedger::new(format!("s{i}"), ComponentKind::Sink, "blackhole")),
                    WhenFull::Block,
                )
            })
            .collect();
        let mut fanout = Fanout::new(consumers);
        let input = chunk();
        b.iter(|| {
            runtime.block_on(async {
                let _ = fanout.send_all(input.clone()).await;
                for rx in &mut receivers {
                    std::hint::black_box(rx.recv().await);
                }
            })
        });
    });
    group.finish();
}

fn remap(c: &mut Criterion) {
    let config: sluice_components::transforms::remap::RemapConfig = serde_json::from_value(serde_json::json!({
        "source": ". = parse_json!(string!(.message))\n.total_tokens = int!(.prompt_tokens) + int!(.completion_tokens)\n.is_high_latency = int!(.latency_ms) > 5000\n.user_id = sha2(string!(.user_id), variant: \"SHA-256\")"
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let cx = TransformContext { id: Arc::from("enrich"), globals: Arc::new(GlobalOptions::default()) };
    let mut transform = config.build(&cx).unwrap_or_else(|e| panic!("{e}"));
    let input = chunk();
    let mut group = c.benchmark_group("remap");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.bench_function("parse_json_and_enrich", |b| {
        let mut out = TransformOutputs::with_named(0);
        b.iter(|| {
            transform.transform(input.clone(), &mut out);
            std::hint::black_box(std::mem::take(&mut out.default));
        });
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let config: EncodingConfig =
        serde_json::from_value(serde_json::json!({"codec": "json"})).unwrap_or_else(|e| panic!("{e}"));
    let encoder = config.build();
    let input = chunk();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(CHUNK as u64));
    group.bench_function("json", |b| {
        let mut buf = Vec::with_capacity(1 << 20);
        b.iter(|| {
            buf.clear();
            for event in &input {
                let _ = encoder.encode(event, &mut buf);
                buf.push(b'\n');
            }
            std::hint::black_box(buf.len());
        });
    });
    group.finish();
}

criterion_group!(benches, fanout, remap, encode);
criterion_main!(benches);
