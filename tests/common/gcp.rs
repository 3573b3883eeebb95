//! Google Cloud Storage for tests: the `gcp-storage-emulator` server (PyPI) started per test on
//! a free loopback port, and a strict OAuth2 token endpoint for service accounts. The token
//! endpoint follows Google's documented JWT bearer flow: it checks the grant type, the RS256
//! signature against the account's public key, the audience, the scope and the lifetime, and
//! answers `invalid_grant` otherwise.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;

use super::moto::{Reply, request};

pub struct GcsEmulator {
    pub port: u16,
    child: Child,
}

impl GcsEmulator {
    pub fn start() -> Self {
        let spawn = |port: u16| {
            Command::new("python3")
                .args(["-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--in-memory", "-q"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start gcp-storage-emulator: {e}; scripts/test installs it"))
        };
        // The JSON API's bucket list answers only from the emulator.
        let is_it = |port: u16| {
            super::moto::probe(port, "/storage/v1/b?project=test")
                .is_some_and(|reply| reply.status == 200 && reply.text().contains("storage#buckets"))
        };
        let (port, child) = super::start_server("gcp-storage-emulator", spawn, is_it);
        Self { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn create_bucket(&self, name: &str) {
        let body = format!("{{\"name\":\"{name}\"}}");
        let reply = request(
            self.port,
            "POST",
            "/storage/v1/b?project=test",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 200, "create bucket: {}", reply.text());
    }

    /// Every object name in the bucket (the JSON API's list).
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let reply = request(self.port, "GET", &format!("/storage/v1/b/{bucket}/o"), &[], b"");
        assert_eq!(reply.status, 200, "list: {}", reply.text());
        let list: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        list["items"].as_array().into_iter().flatten().filter_map(|o| o["name"].as_str().map(str::to_owned)).collect()
    }

    pub fn get(&self, bucket: &str, name: &str) -> Reply {
        let encoded: String = name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let reply =
            request(self.port, "GET", &format!("/download/storage/v1/b/{bucket}/o/{encoded}?alt=media"), &[], b"");
        assert_eq!(reply.status, 200, "get {name}: {}", reply.text());
        reply
    }
}

impl Drop for GcsEmulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A service account key file and the strict token endpoint that knows its public key.
pub struct TokenServer {
    pub port: u16,
    pub key_file: PathBuf,
    /// Tokens issued (`token-1`, `token-2`...).
    pub issued: Arc<AtomicUsize>,
    /// Requests refused.
    pub refused: Arc<AtomicUsize>,
}

const EMAIL: &str = "sluice-test@project.iam.gserviceaccount.com";

fn openssl(dir: &Path, args: &[&str]) {
    let status =
        Command::new("openssl").args(args).current_dir(dir).stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(status.is_ok_and(|s| s.success()), "openssl {args:?} failed");
}

impl TokenServer {
    pub fn start(dir: &Path) -> Self {
        openssl(dir, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.pem"]);
        openssl(dir, &["rsa", "-in", "sa.pem", "-RSAPublicKey_out", "-outform", "DER", "-out", "sa.pub.der"]);
        let private_key = std::fs::read_to_string(dir.join("sa.pem")).unwrap_or_else(|e| panic!("{e}"));
        let public_key = std::fs::read(dir.join("sa.pub.der")).unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        let token_uri = format!("http://127.0.0.1:{port}/token");
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": "project",
            "private_key_id": "k1",
            "private_key": private_key,
            "client_email": EMAIL,
            "token_uri": token_uri,
        });
        let key_file = dir.join("service-account.json");
        std::fs::write(&key_file, key.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let (issued, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (i, r) = (issued.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(stream, &public_key, &token_uri, &i, &r);
            }
        });
        Self { port, key_file, issued, refused }
    }
}

fn answer(stream: TcpStream, public_key: &[u8], token_uri: &str, issued: &AtomicUsize, refused: &AtomicUsize) {
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (status, json) = match check(&String::from_utf8_lossy(&body), public_key, token_uri) {
        Ok(()) => {
            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
            (200, format!("{{\"access_token\":\"token-{n}\",\"expires_in\":3599,\"token_type\":\"Bearer\"}}"))
        }
        Err(why) => {
            refused.fetch_add(1, Ordering::SeqCst);
            (400, format!("{{\"error\":\"invalid_grant\",\"error_description\":\"{why}\"}}"))
        }
    };
    let _ = writer.write_all(
        format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}", json.len())
            .as_bytes(),
    );
}

/// Google's checks on a JWT bearer grant.
fn check(form: &str, public_key: &[u8], token_uri: &str) -> Result<(), String> {
    let field = |name: &str| form.split('&').find_map(|p| p.strip_prefix(&format!("{name}=")));
    if field("grant_type") != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return Err("unsupported grant_type".into());
    }
    let assertion = field("assertion").ok_or("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else { return Err("not a JWT".into()) };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signature = b64.decode(signature).map_err(|_| "signature not base64url")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public_key)
        .verify(format!("{header}.{claims}").as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    let header: serde_json::Value =
        serde_json::from_slice(&b64.decode(header).map_err(|_| "header")?).map_err(|_| "header")?;
    if header["alg"] != "RS256" {
        return Err("alg must be RS256".into());
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(claims).map_err(|_| "claims")?).map_err(|_| "claims")?;
    if claims["iss"] != EMAIL || claims["aud"] != token_uri {
        return Err("Invalid JWT: iss or aud".into());
    }
    if !claims["scope"].as_str().is_some_and(|s| s.contains("devstorage")) {
        return Err("no storage scope".into());
    }
    let (iat, exp) = (claims["iat"].as_u64().unwrap_or(0), claims["exp"].as_u64().unwrap_or(0));
    if exp <= iat || exp - iat > 3600 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes)".into());
    }
    Ok(())
}
