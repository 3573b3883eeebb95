//! A load generator for the end-to-end benchmark's HTTP scenario (`scripts/bench-e2e.py`
//! starts it), posting like wrk: `connections` keep-alive connections, each sending fixed
//! NDJSON bodies of `per_body` lines (made once from the data file) one after the other, as
//! fast as the answers come. A body answered with anything but 2xx is sent again (as a sender
//! that must not lose data does). Prints one JSON line: events acknowledged, seconds,
//! requests, bodies sent again, and the latency percentiles of the 2xx answers.
//!
//!     cargo build --release --example http_load
//!     target/release/examples/http_load 127.0.0.1:8080 data.ndjson 1000000 32 100

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

struct Args {
    address: String,
    data: String,
    events: u64,
    connections: usize,
    per_body: usize,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut next = |what: &str| it.next().ok_or_else(|| format!("missing {what}"));
    let address = next("address")?;
    let data = next("data file")?;
    let number = |text: String| text.parse::<u64>().map_err(|e| format!("{text}: {e}"));
    let events = number(next("events")?)?;
    let connections = number(next("connections").unwrap_or_else(|_| "32".into()))? as usize;
    let per_body = number(next("lines per body").unwrap_or_else(|_| "100".into()))? as usize;
    Ok(Args { address, data, events, connections, per_body })
}

/// Bodies of `per_body` lines each, from the data's lines in order.
fn bodies(data: &[u8], per_body: usize) -> Vec<Bytes> {
    let lines: Vec<&[u8]> = data.split_inclusive(|b| *b == b'\n').collect();
    lines.chunks(per_body.max(1)).filter(|c| c.len() == per_body.max(1)).map(|c| Bytes::from(c.concat())).collect()
}

/// One connection's loop: takes the next body number until `total` bodies are acknowledged.
async fn connection(
    address: String,
    bodies: Arc<Vec<Bytes>>,
    next: Arc<AtomicU64>,
    total: u64,
    resent: Arc<AtomicU64>,
) -> Result<Vec<Duration>, String> {
    let stream = tokio::net::TcpStream::connect(&address).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut latencies = Vec::new();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return Ok(latencies);
        }
        let body = bodies[(n % bodies.len() as u64) as usize].clone();
        loop {
            let request = hyper::Request::post(format!("http://{address}/"))
                .header("content-type", "application/x-ndjson")
                .body(Full::new(body.clone()))
                .map_err(|e| e.to_string())?;
            sender.ready().await.map_err(|e| e.to_string())?;
            let started = Instant::now();
            let answer = sender.send_request(request).await.map_err(|e| e.to_string())?;
            let ok = answer.status().is_success();
            let _ = answer.into_body().collect().await;
            if ok {
                latencies.push(started.elapsed());
                break;
            }
            resent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = args()?;
    let data = std::fs::read(&args.data).map_err(|e| format!("{}: {e}", args.data))?;
    let bodies = Arc::new(bodies(&data, args.per_body));
    if bodies.is_empty() {
        return Err("the data has fewer lines than one body".into());
    }
    let total = args.events / args.per_body as u64;
    let next = Arc::new(AtomicU64::new(0));
    let resent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(connection(args.address.clone(), bodies.clone(), next.clone(), total, resent.clone())))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "{{\"events\":{},\"seconds\":{seconds:.3},\"requests\":{},\"resent\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
        total * args.per_body as u64,
        latencies.len(),
        resent.load(Ordering::Relaxed),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}
