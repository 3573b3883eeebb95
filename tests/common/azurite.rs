//! Azurite, Azure Storage's emulator (npm `azurite`), its blob service started per test on a
//! free loopback port and read through the Blob API. `scripts/test` installs it; a missing
//! Azurite fails the test, it never skips.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use base64::Engine;

use super::moto::{Reply, between_all};

/// Azurite's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Azurite {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let program = std::env::var("SLUICE_AZURITE_BLOB").unwrap_or_else(|_| "azurite-blob".to_owned());
        let spawn = |port: u16| {
            Command::new(&program)
                .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--skipApiVersionCheck", "--silent"])
                .arg("--location")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program}: {e}; scripts/test installs Azurite (npm)"))
        };
        // Azurite names itself in the `Server` header of every answer.
        let is_it = |port: u16| {
            super::moto::probe(port, "/").is_some_and(|reply| {
                reply.headers.iter().any(|(name, value)| name == "server" && value.contains("Azurite"))
            })
        };
        let (port, child) = super::start_server("Azurite", spawn, is_it);
        Self { port, child, _dir: dir }
    }

    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};BlobEndpoint=http://127.0.0.1:{}/{ACCOUNT};",
            self.port
        )
    }

    /// A request signed with the account key (by the sink's own Shared Key code; Azurite
    /// checks it).
    pub fn request(&self, method: &str, path_and_query: &str, body: &[u8]) -> Reply {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let uri: http::Uri = format!("http://127.0.0.1:{}/{ACCOUNT}{path_and_query}", self.port)
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut headers = http::HeaderMap::new();
        headers.insert("x-ms-date", date.parse().unwrap_or_else(|e| panic!("{e}")));
        headers.insert("x-ms-version", "2021-12-02".parse().unwrap_or_else(|e| panic!("{e}")));
        let key = base64::engine::general_purpose::STANDARD.decode(KEY).unwrap_or_else(|e| panic!("{e}"));
        let method = http::Method::from_bytes(method.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let auth = sluice_components::sinks::azure_blob::shared_key(&method, &uri, &headers, body.len(), ACCOUNT, &key)
            .unwrap_or_else(|e| panic!("{e}"));
        let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
        let date_header = headers.get("x-ms-date").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        super::moto::request(
            self.port,
            method.as_str(),
            &path,
            &[("x-ms-date", &date_header), ("x-ms-version", "2021-12-02"), ("Authorization", &auth)],
            body,
        )
    }

    pub fn create_container(&self, name: &str) {
        let reply = self.request("PUT", &format!("/{name}?restype=container"), b"");
        assert_eq!(reply.status, 201, "create container: {}", reply.text());
    }

    pub fn delete_container(&self, name: &str) {
        let reply = self.request("DELETE", &format!("/{name}?restype=container"), b"");
        assert_eq!(reply.status, 202, "delete container: {}", reply.text());
    }

    /// Every blob name in the container.
    pub fn blobs(&self, container: &str) -> Vec<String> {
        let reply = self.request("GET", &format!("/{container}?comp=list&restype=container"), b"");
        assert_eq!(reply.status, 200, "list: {}", reply.text());
        between_all(&reply.text(), "<Name>", "</Name>")
    }

    pub fn get(&self, container: &str, name: &str) -> Reply {
        let reply = self.request("GET", &format!("/{container}/{name}"), b"");
        assert_eq!(reply.status, 200, "get {name}: {}", reply.text());
        reply
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
