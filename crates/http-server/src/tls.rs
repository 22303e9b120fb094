//! Optional HTTPS on the listening socket (rustls, ring provider), for
//! deployments without a terminating proxy.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the expected kind.
    #[error("cannot read {what} from {path}")]
    Read {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file.
        path: String,
    },
    /// rustls rejected the pair (key does not match, unsupported algorithm).
    #[error("invalid certificate or key")]
    Invalid(#[source] rustls::Error),
}

/// A server configuration from PEM files: the certificate chain (leaf
/// first) and its private key. Offers HTTP/2 and HTTP/1.1 by ALPN.
pub fn tls_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let read_error = |what, path: &Path| TlsError::Read {
        what,
        path: path.display().to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|_| read_error("certificate chain", cert_path))?
        .collect::<Result<_, _>>()
        .map_err(|_| read_error("certificate chain", cert_path))?;
    if certs.is_empty() {
        return Err(read_error("certificate chain", cert_path));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(|_| read_error("private key", key_path))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Invalid)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(TlsError::Invalid)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
