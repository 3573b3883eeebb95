//! A fault-injecting HTTP proxy in front of an S3 endpoint (moto). Every `slowdown_every`-th
//! PUT is answered `503 SlowDown` without reaching S3; every `cut_every`-th PUT reaches S3, but
//! the client gets only half of S3's answer before the connection is cut. For every PUT that
//! S3 stored, the proxy records when and which event ids (the `"id"` of each line of the
//! gzip body) it held.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
pub struct Counts {
    pub puts: AtomicUsize,
    pub slowdowns: AtomicUsize,
    pub cuts: AtomicUsize,
    /// Event id → when S3 first stored an object holding it.
    pub stored_at: Mutex<HashMap<u64, Instant>>,
}

pub struct FaultProxy {
    pub port: u16,
    pub counts: Arc<Counts>,
}

impl FaultProxy {
    pub fn start(upstream: u16, slowdown_every: usize, cut_every: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counts = shared.clone();
                std::thread::spawn(move || serve(client, upstream, slowdown_every, cut_every, &counts));
            }
        });
        Self { port, counts }
    }
}

/// Reads one request: its head (as text) and body. `None` at the end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let done = line == "\r\n";
        head.push_str(&line);
        if done {
            break;
        }
    }
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn ids(body: &[u8]) -> Vec<u64> {
    let mut text = String::new();
    if flate2::read::MultiGzDecoder::new(body).read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_u64())
        .collect()
}

fn serve(client: TcpStream, upstream: u16, slowdown_every: usize, cut_every: usize, counts: &Counts) {
    let Ok(mut writer) = client.try_clone() else { return };
    let mut reader = BufReader::new(client);
    while let Some((head, body)) = read_request(&mut reader) {
        let is_put = head.starts_with("PUT ");
        let n = if is_put { counts.puts.fetch_add(1, Ordering::SeqCst) + 1 } else { 0 };
        if is_put && n % slowdown_every == 0 {
            counts.slowdowns.fetch_add(1, Ordering::SeqCst);
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let answer = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{xml}",
                xml.len()
            );
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        // Forward on a fresh upstream connection that closes after the answer.
        let head = head
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
            .map(|l| format!("{l}\r\n"))
            .collect::<String>()
            + "Connection: close\r\n\r\n";
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
        if up.write_all(head.as_bytes()).and_then(|()| up.write_all(&body)).is_err() {
            return;
        }
        let mut answer = Vec::new();
        let _ = up.read_to_end(&mut answer);
        let stored = answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200");
        if is_put && stored {
            let now = Instant::now();
            if let Ok(mut stored_at) = counts.stored_at.lock() {
                for id in ids(&body) {
                    stored_at.entry(id).or_insert(now);
                }
            }
        }
        if is_put && n % cut_every == 0 {
            counts.cuts.fetch_add(1, Ordering::SeqCst);
            let _ = writer.write_all(&answer[..answer.len() / 2]);
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return;
        }
        // moto closes after each answer; keep the client's connection open.
        let answer = keep_alive(&answer);
        if writer.write_all(&answer).is_err() {
            return;
        }
    }
}

/// The upstream answer with its `Connection: close` removed and a Content-Length set, so
/// the client may send its next request on the same connection.
fn keep_alive(answer: &[u8]) -> Vec<u8> {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return answer.to_vec() };
    let head = String::from_utf8_lossy(&answer[..end]);
    let body = &answer[end + 4..];
    let mut out = String::new();
    for line in head.split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:")
            || lower.starts_with("content-length:")
            || lower.starts_with("transfer-encoding:")
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
