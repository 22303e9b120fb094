//! The CA roots a TLS client trusts: the bundled Mozilla roots, or the
//! certificates of a PEM file.

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// The certificates of `ca_file`, or the bundled roots without one.
pub(crate) fn ca_roots(ca_file: Option<&Path>) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|_| Error::config("ssl_ca", "cannot read the CA file"))?;
            for cert in certs {
                let cert =
                    cert.map_err(|_| Error::config("ssl_ca", "not a PEM certificate file"))?;
                roots
                    .add(cert)
                    .map_err(|_| Error::config("ssl_ca", "invalid CA certificate"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}
