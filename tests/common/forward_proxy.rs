//! A forward HTTP proxy for tests: `CONNECT` tunnels, and absolute-form requests relayed to
//! their origin. Records each request line, its `Proxy-Authorization` and its `Authorization`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A request seen: its request line, `Proxy-Authorization` and `Authorization`.
pub type Request = (String, Option<String>, Option<String>);
/// Every request seen.
pub type Seen = Arc<Mutex<Vec<Request>>>;

pub struct ForwardProxy {
    pub port: u16,
    pub seen: Seen,
}

impl ForwardProxy {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve(client, &log));
            }
        });
        Self { port, seen }
    }

    pub fn lines(&self) -> Vec<String> {
        self.seen.lock().map(|s| s.iter().map(|(l, _, _)| l.clone()).collect()).unwrap_or_default()
    }
}

/// A request or response head and its body (by Content-Length).
fn read_message(reader: &mut BufReader<TcpStream>) -> Option<(Vec<String>, Vec<u8>)> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let length = header(&lines, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((lines, body))
}

fn header(lines: &[String], name: &str) -> Option<String> {
    lines.iter().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

fn serve(client: TcpStream, seen: &Mutex<Vec<Request>>) {
    let Ok(mut writer) = client.try_clone() else { return };
    let mut reader = BufReader::new(client);
    while let Some((lines, body)) = read_message(&mut reader) {
        let request_line = lines[0].clone();
        if let Ok(mut seen) = seen.lock() {
            seen.push((request_line.clone(), header(&lines, "proxy-authorization"), header(&lines, "authorization")));
        }
        let mut parts = request_line.split(' ');
        let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        if method == "CONNECT" {
            let Ok(upstream) = TcpStream::connect(target.replace("localhost", "127.0.0.1")) else { return };
            if writer.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").is_err() {
                return;
            }
            let (Ok(up_read), Ok(client_read)) = (upstream.try_clone(), reader.get_ref().try_clone()) else { return };
            std::thread::spawn(move || pipe(up_read, writer));
            pipe(client_read, upstream);
            return;
        }
        // Absolute form: http://host:port/path → forward in origin form.
        let Some(rest) = target.strip_prefix("http://") else { return };
        let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
        let Ok(upstream) = TcpStream::connect(authority) else { return };
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        for line in lines.iter().skip(1) {
            if !line.to_ascii_lowercase().starts_with("proxy-") {
                head.push_str(line);
                head.push_str("\r\n");
            }
        }
        head.push_str("\r\n");
        let Ok(mut up_writer) = upstream.try_clone() else { return };
        if up_writer.write_all(head.as_bytes()).and_then(|()| up_writer.write_all(&body)).is_err() {
            return;
        }
        let mut up_reader = BufReader::new(upstream);
        let Some((answer, answer_body)) = read_message(&mut up_reader) else { return };
        let mut out = answer.join("\r\n");
        out.push_str("\r\n\r\n");
        if writer.write_all(out.as_bytes()).and_then(|()| writer.write_all(&answer_body)).is_err() {
            return;
        }
    }
}
