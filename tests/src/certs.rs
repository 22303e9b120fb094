//! Throw-away certificates for TLS tests, made with the `openssl` command:
//! a CA, a server certificate for `localhost` / `127.0.0.1` and a client
//! certificate for the user `postgres`, both signed by it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The files [`throwaway`] writes.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate to trust (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM), for `localhost` and `127.0.0.1`.
    pub cert: PathBuf,
    /// The server's private key (PEM, unencrypted).
    pub key: PathBuf,
    /// A client certificate (PEM) whose common name is `postgres` (the
    /// user of a provisioned PostgreSQL), for mutual TLS.
    pub client_cert: PathBuf,
    /// The client certificate's private key (PEM, unencrypted).
    pub client_key: PathBuf,
}

/// Makes a CA valid for one day and a server certificate signed by it, in
/// `dir`. Fails with openssl's own message when a step fails.
pub fn throwaway(dir: &Path) -> Result<Certs, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(
        dir.join("leaf.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .map_err(|e| format!("leaf.cnf: {e}"))?;
    std::fs::write(
        dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .map_err(|e| format!("client.cnf: {e}"))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let steps: [Vec<&str>; 5] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=sluice-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
        [
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.cnf",
            "-out",
            "cert.pem",
        ],
        [
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=postgres",
                "-keyout",
                "client.key",
                "-out",
                "client.csr",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "client.cnf",
            "-out",
            "client.pem",
        ],
    ];
    for args in steps {
        let made = Command::new("openssl")
            .current_dir(dir)
            .args(&args)
            .output()
            .map_err(|e| format!("openssl is needed to make test certificates ({e})"))?;
        if !made.status.success() {
            return Err(format!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&made.stderr)
            ));
        }
    }
    Ok(Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}
