//! moto, the AWS service emulator (PyPI `moto[server]`), started per test on a free loopback
//! port, and read through its own S3 and SQS APIs. `scripts/test` installs it; a missing moto
//! fails the test, it never skips.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Moto {
    pub port: u16,
    child: Child,
}

/// One HTTP response: status, headers (lower-case names), body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.1 request to `127.0.0.1:port`, connection closed after the answer.
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    exchange(port, method, path, headers, body, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

/// The same request as a readiness probe: `None` for anything but a whole HTTP answer (a server
/// still starting may accept a connection and close it unanswered).
pub fn probe(port: u16, path: &str) -> Option<Reply> {
    exchange(port, "GET", path, &[], b"", Duration::from_secs(5)).ok()
}

fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect {port}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    // moto does not check signatures, but it takes the caller's identity from this header
    // (anonymous callers may not read objects the sink wrote).
    // The credential scope also tells moto which service a request is for: S3 unless said.
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("authorization")) {
        head.push_str(&format!("Authorization: {}\r\n", authorization("s3")));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| format!("write: {e}"))?;
    stream.write_all(body).map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_reply(&raw).ok_or_else(|| format!("no HTTP answer from {port}: {}", String::from_utf8_lossy(&raw)))
}

/// An `Authorization` header moto accepts for `service` (it checks no signature).
pub fn authorization(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=00"
    )
}

/// Parses a whole HTTP/1.1 response (Content-Length, chunked, or up to the close).
pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest) } else { rest.to_vec() };
    Some(Reply { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}

impl Moto {
    /// Starts `python3 -m moto.server` (or `$SLUICE_MOTO_SERVER`) on a free port.
    pub fn start() -> Self {
        let program = std::env::var("SLUICE_MOTO_SERVER").unwrap_or_else(|_| "python3".to_owned());
        let spawn = |port: u16| {
            let mut command = Command::new(&program);
            if program == "python3" {
                command.args(["-m", "moto.server"]);
            }
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start moto ({program} -m moto.server): {e}; scripts/test installs it")
                })
        };
        // S3's ListBuckets at `/` answers only from moto.
        let is_it = |port: u16| probe(port, "/").is_some_and(|r| r.text().contains("ListAllMyBucketsResult"));
        let (port, child) = super::start_server("moto", spawn, is_it);
        Self { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, bucket: &str) {
        let reply = request(self.port, "PUT", &format!("/{bucket}"), &[], b"");
        assert_eq!(reply.status, 200, "create bucket: {}", reply.text());
    }

    /// Deletes every object, then the bucket.
    pub fn delete_bucket(&self, bucket: &str) {
        for key in self.keys(bucket) {
            request(self.port, "DELETE", &format!("/{bucket}/{key}"), &[], b"");
        }
        let reply = request(self.port, "DELETE", &format!("/{bucket}"), &[], b"");
        assert_eq!(reply.status, 204, "delete bucket: {}", reply.text());
    }

    /// Every key in the bucket (ListObjectsV2, following continuation tokens).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{bucket}?list-type=2&max-keys=1000");
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", encode(t)));
            }
            let reply = request(self.port, "GET", &path, &[], b"");
            assert_eq!(reply.status, 200, "list {bucket}: {}", reply.text());
            let text = reply.text();
            keys.extend(between_all(&text, "<Key>", "</Key>").into_iter().map(|k| unescape(&k)));
            token = between_all(&text, "<NextContinuationToken>", "</NextContinuationToken>").into_iter().next();
            if token.is_none() {
                return keys;
            }
        }
    }

    /// An object's bytes and headers.
    pub fn get(&self, bucket: &str, key: &str) -> Reply {
        let reply = request(self.port, "GET", &format!("/{bucket}/{}", encode_key(key)), &[], b"");
        assert_eq!(reply.status, 200, "get {key}: {}", reply.text());
        reply
    }

    /// Every line of every object, gunzipped when the object is gzip.
    pub fn lines(&self, bucket: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for key in self.keys(bucket) {
            let body = self.get(bucket, &key).body;
            let text = if body.starts_with(&[0x1f, 0x8b]) {
                let mut out = String::new();
                flate2::read::MultiGzDecoder::new(&body[..])
                    .read_to_string(&mut out)
                    .unwrap_or_else(|e| panic!("gunzip {key}: {e}"));
                out
            } else {
                String::from_utf8_lossy(&body).into_owned()
            };
            lines.extend(text.lines().map(str::to_owned));
        }
        lines
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn between_all(text: &str, open: &str, close: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + close.len()..];
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

impl Moto {
    /// One call of SQS's JSON protocol (`AmazonSQS.<action>`).
    pub fn sqs(&self, action: &str, body: &serde_json::Value) -> serde_json::Value {
        let target = format!("AmazonSQS.{action}");
        let reply = request(
            self.port,
            "POST",
            "/",
            &[
                ("Content-Type", "application/x-amz-json-1.0"),
                ("X-Amz-Target", &target),
                ("Authorization", &authorization("sqs")),
            ],
            body.to_string().as_bytes(),
        );
        assert_eq!(reply.status, 200, "{action}: {}", reply.text());
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{action}: {e}: {}", reply.text()))
    }

    /// Creates a queue and returns its URL; a name ending in `.fifo` makes a FIFO queue.
    pub fn create_queue(&self, name: &str) -> String {
        let mut body = serde_json::json!({ "QueueName": name });
        if name.ends_with(".fifo") {
            body["Attributes"] = serde_json::json!({ "FifoQueue": "true", "ContentBasedDeduplication": "true" });
        }
        let answer = self.sqs("CreateQueue", &body);
        answer["QueueUrl"].as_str().unwrap_or_else(|| panic!("no QueueUrl in {answer}")).to_owned()
    }

    /// Every message in the queue, with its attributes and message attributes.
    pub fn receive_all(&self, queue_url: &str) -> Vec<serde_json::Value> {
        let mut messages = Vec::new();
        loop {
            let answer = self.sqs(
                "ReceiveMessage",
                &serde_json::json!({
                    "QueueUrl": queue_url,
                    "MaxNumberOfMessages": 10,
                    "VisibilityTimeout": 600,
                    "AttributeNames": ["All"],
                    "MessageAttributeNames": ["All"],
                }),
            );
            let batch = answer["Messages"].as_array().cloned().unwrap_or_default();
            if batch.is_empty() {
                return messages;
            }
            messages.extend(batch);
        }
    }
}
