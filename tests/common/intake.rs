//! A local HTTP intake for tests: accepts requests on loopback and answers each with the
//! status a rule picks from the body. Records accepted bodies.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

type Rule = dyn Fn(&str, &str, usize) -> u16 + Send + Sync;

pub struct Intake {
    pub port: u16,
    /// Bodies answered with 2xx.
    pub accepted: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Intake {
    /// `rule(head, body, request_number)` returns the status to answer; `head` holds the
    /// request line and headers.
    pub fn start(rule: impl Fn(&str, &str, usize) -> u16 + Send + Sync + 'static) -> Self {
        Self::on_port(0, rule)
    }

    /// Like [`Intake::start`], on a given port (0: any).
    pub fn on_port(port: u16, rule: impl Fn(&str, &str, usize) -> u16 + Send + Sync + 'static) -> Self {
        Self::listen(port, None, rule)
    }

    /// Like [`Intake::start`], speaking HTTPS with `tls`.
    pub fn start_tls(
        tls: Arc<rustls::ServerConfig>,
        rule: impl Fn(&str, &str, usize) -> u16 + Send + Sync + 'static,
    ) -> Self {
        Self::listen(0, Some(tls), rule)
    }

    fn listen(
        port: u16,
        tls: Option<Arc<rustls::ServerConfig>>,
        rule: impl Fn(&str, &str, usize) -> u16 + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Rule> = Arc::new(rule);
        let (a, r, s) = (accepted.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (a, r, rule, tls) = (a.clone(), r.clone(), rule.clone(), tls.clone());
                std::thread::spawn(move || match tls {
                    None => serve(stream, &a, &r, &*rule),
                    Some(tls) => {
                        let Ok(conn) = rustls::ServerConnection::new(tls) else { return };
                        serve(rustls::StreamOwned::new(conn, stream), &a, &r, &*rule);
                    }
                });
            }
        });
        Self { port, accepted, requests, stop }
    }

    pub fn accepted_lines(&self) -> Vec<String> {
        self.accepted
            .lock()
            .map(|bodies| bodies.iter().flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: impl Read + Write, accepted: &Mutex<Vec<String>>, requests: &AtomicUsize, rule: &Rule) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut head = line.clone();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&header);
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        let status = rule(&head, &body, n);
        if (200..300).contains(&status)
            && let Ok(mut bodies) = accepted.lock()
        {
            bodies.push(body);
        }
        let response = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\nRetry-After: 0\r\n\r\nno");
        if reader.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
