//! A throwaway certificate authority for tests: a CA, a server certificate for `localhost`
//! and `127.0.0.1`, and a client certificate, written as PEM files into a directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// PEM files of one test authority.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca: PathBuf,
    pub server_crt: PathBuf,
    pub server_key: PathBuf,
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

impl TestPki {
    /// A new authority whose files are named `<prefix>-*.pem` in `dir`.
    pub fn new(dir: &Path, prefix: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, format!("sluice test CA {prefix}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let leaf = |names: Vec<String>, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_crt, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
        let (client_crt, client_key) = leaf(vec!["client.test".into()], "client");
        Self {
            ca: write(dir, &format!("{prefix}-ca.pem"), &ca.pem()),
            server_crt: write(dir, &format!("{prefix}-server.pem"), &server_crt),
            server_key: write(dir, &format!("{prefix}-server-key.pem"), &server_key),
            client_crt: write(dir, &format!("{prefix}-client.pem"), &client_crt),
            client_key: write(dir, &format!("{prefix}-client-key.pem"), &client_key),
        }
    }
}
