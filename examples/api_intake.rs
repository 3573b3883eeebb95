//! A fast, always-OK stand-in for Elasticsearch's `_bulk` and Loki's push API, for the
//! end-to-end benchmark (`scripts/bench-e2e.py` starts it): it answers as those services do
//! when everything is accepted (a bulk answer with one `201` item per document; Loki's 204)
//! and counts what it received, reported by `GET /count`. `POST /ingest` takes NDJSON, one
//! event per line, and answers 204 (a plain HTTP intake, as nginx answering 204 would). Not a test server: it checks
//! nothing (the strict stand-ins are in `tests/common`).
//!
//!     cargo build --release --example api_intake
//!     target/release/examples/api_intake 127.0.0.1:9200

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};

mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub entries: Vec<Vec<u8>>,
    }
}

async fn handle(
    request: Request<hyper::body::Incoming>,
    count: Arc<AtomicU64>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let reply = |status: u16, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        response.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
        Ok(response)
    };
    match path.as_str() {
        "/" => reply(200, br#"{"name":"bench","version":{"number":"8.15.0"}}"#.to_vec()),
        "/count" => reply(200, count.load(Ordering::Relaxed).to_string().into_bytes()),
        "/_bulk" => {
            let docs = body.iter().filter(|&&b| b == b'\n').count() / 2;
            count.fetch_add(docs as u64, Ordering::Relaxed);
            let mut answer = Vec::with_capacity(docs * 90 + 40);
            answer.extend_from_slice(br#"{"took":1,"errors":false,"items":["#);
            for i in 0..docs {
                if i > 0 {
                    answer.push(b',');
                }
                answer.extend_from_slice(
                    format!(
                        r#"{{"index":{{"_index":"logs","_id":"{i}","_version":1,"result":"created","status":201}}}}"#
                    )
                    .as_bytes(),
                );
            }
            answer.extend_from_slice(b"]}");
            reply(200, answer)
        }
        "/ingest" => {
            let lines = body.iter().filter(|&&b| b == b'\n').count() + usize::from(!body.ends_with(b"\n"));
            count.fetch_add(lines as u64, Ordering::Relaxed);
            reply(204, Vec::new())
        }
        "/loki/api/v1/push" => {
            use prost::Message;
            let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap_or_default();
            let entries =
                proto::PushRequest::decode(&raw[..]).map(|p| p.streams.iter().map(|s| s.entries.len()).sum::<usize>());
            match entries {
                Ok(n) => {
                    count.fetch_add(n as u64, Ordering::Relaxed);
                    reply(204, Vec::new())
                }
                Err(err) => reply(400, err.to_string().into_bytes()),
            }
        }
        _ => reply(404, b"{}".to_vec()),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9200".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = listener.accept().await?;
        let count = count.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| handle(request, count.clone()));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}
