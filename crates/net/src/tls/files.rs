//! Reading certificates and keys named by a `tls` block: a path, or the PEM text itself.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;

/// A certificate chain and the key that belongs to its first certificate.
pub(crate) struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn is_inline(value: &str) -> bool {
    value.trim_start().starts_with("-----BEGIN")
}

/// How a value is named in messages: the path, or `(inline PEM)`.
pub(crate) fn shown(value: &str) -> String {
    if is_inline(value) { "(inline PEM)".to_owned() } else { value.to_owned() }
}

fn read(field: &'static str, value: &str) -> Result<Vec<u8>, TlsError> {
    if is_inline(value) {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|source| TlsError::Read { field, path: value.to_owned(), source })
}

/// Every certificate in a PEM file, or the one certificate of a DER file.
pub(crate) fn load_certs(field: &'static str, value: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(field, value)?;
    let pem: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok).collect();
    if !pem.is_empty() {
        return Ok(pem);
    }
    // DER: an X.509 certificate is an ASN.1 SEQUENCE.
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    Err(TlsError::Empty { field, path: shown(value), what: "certificate" })
}

/// The private key of a PEM or DER file; an encrypted PKCS#8 key is opened with `pass`.
pub(crate) fn load_key(value: &str, pass: Option<&str>) -> Result<PrivateKeyDer<'static>, TlsError> {
    let field = "key_file";
    let bytes = read(field, value)?;
    let invalid = |message: String| TlsError::Invalid { field, path: shown(value), message };
    if let Some(der) = encrypted_pkcs8(&bytes) {
        let Some(pass) = pass else {
            return Err(invalid("the key is encrypted; give its passphrase as `key_pass`".into()));
        };
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
            .map_err(|e| invalid(format!("not an encrypted PKCS#8 key: {e}")))?;
        let doc = info.decrypt(pass).map_err(|_| invalid("cannot decrypt the key: wrong `key_pass`?".into()))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(doc.as_bytes().to_vec())));
    }
    if let Ok(key) = PrivateKeyDer::from_pem_slice(&bytes) {
        return Ok(key);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes)));
    }
    Err(TlsError::Empty { field, path: shown(value), what: "private key" })
}

/// The DER of an `ENCRYPTED PRIVATE KEY` PEM section, if the file holds one.
fn encrypted_pkcs8(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let start = text.find("-----BEGIN ENCRYPTED PRIVATE KEY-----")?;
    let end_marker = "-----END ENCRYPTED PRIVATE KEY-----";
    let end = text[start..].find(end_marker)? + start + end_marker.len();
    let (label, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[start..end]).ok()?;
    (label == "ENCRYPTED PRIVATE KEY").then_some(der)
}

/// A certificate chain and its key, checked to belong together.
pub(crate) fn identity(crt: &str, key_value: &str, pass: Option<&str>) -> Result<Identity, TlsError> {
    let chain = load_certs("crt_file", crt)?;
    let key = load_key(key_value, pass)?;
    let signing = super::provider().key_provider.load_private_key(key.clone_key()).map_err(|e| TlsError::Invalid {
        field: "key_file",
        path: shown(key_value),
        message: format!("unusable key: {e}"),
    })?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
    certified.keys_match().map_err(|_| TlsError::Invalid {
        field: "key_file",
        path: shown(key_value),
        message: format!("the key does not belong to the certificate in `{}`", shown(crt)),
    })?;
    Ok(Identity { chain, key })
}
