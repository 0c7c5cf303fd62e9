//! Per-registry TLS trust from a containers `certs.d` directory
//! (containers-certs.d(5)): `<dir>/<host[:port]>/*.crt` are CA certificates
//! trusted for that registry in addition to the system roots.
//!
//! `*.cert` / `*.key` (a client certificate) cannot be used: oci-client
//! offers no way to present a client identity. They are reported once per
//! directory and otherwise ignored, so a registry that demands one fails
//! its TLS handshake with the server's own error.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Why a registry's certificate directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// The host name cannot name a directory.
    #[error("registry host {host:?} cannot name a certs.d directory")]
    BadHost {
        /// The host as given.
        host: String,
    },
    /// A file or the directory cannot be read.
    #[error("reading {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A `.crt` file holds no PEM certificate, or a broken one.
    #[error("{path}: not a PEM certificate file")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The cause, when the PEM parser gave one.
        #[source]
        source: Option<rustls_pki_types::pem::Error>,
    },
}

/// TLS settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTls {
    /// Extra trusted CA certificates (DER), from `*.crt`.
    pub roots: Vec<Vec<u8>>,
}

/// Reads `<certs_dir>/<host>/*.crt` (sorted by name). A missing directory
/// is no extra trust.
pub fn load(certs_dir: &Path, host: &str) -> Result<HostTls, CertsError> {
    if host.is_empty() || host.contains('/') || host == "." || host == ".." {
        return Err(CertsError::BadHost {
            host: host.to_owned(),
        });
    }
    let dir = certs_dir.join(host);
    let read = match std::fs::read_dir(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostTls::default()),
        Err(source) => return Err(CertsError::Read { path: dir, source }),
    };
    let mut files = Vec::new();
    for entry in read {
        let entry = entry.map_err(|source| CertsError::Read {
            path: dir.clone(),
            source,
        })?;
        files.push(entry.path());
    }
    files.sort();
    let mut tls = HostTls::default();
    let mut client_files = false;
    for path in files {
        match path.extension().and_then(|e| e.to_str()) {
            Some("crt") => tls.roots.extend(read_certs(&path)?),
            Some("cert" | "key") => client_files = true,
            _ => {}
        }
    }
    if client_files {
        warn_client_cert_once(&dir);
    }
    Ok(tls)
}

fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, CertsError> {
    let pem = std::fs::read(path).map_err(|source| CertsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertsError::Pem {
            path: path.to_owned(),
            source: Some(e),
        })?;
    if certs.is_empty() {
        return Err(CertsError::Pem {
            path: path.to_owned(),
            source: None,
        });
    }
    Ok(certs)
}

/// Client certificates are warned about once per directory, not per pull.
fn warn_client_cert_once(dir: &Path) {
    static WARNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if !warned.iter().any(|d| d == dir) {
        tracing::warn!(
            dir = %dir.display(),
            "client certificates (*.cert, *.key) in certs.d are not supported and are ignored"
        );
        warned.push(dir.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway self-signed certificate (no key kept anywhere).
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUOshhvC73sEyWCrL1G8dtqxjDSeMwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJa3Jpby10ZXN0MB4XDTI2MTEyOTEwMTMxOVoXDTM2MTEyNjEw
MTMxOVowFDESMBAGA1UEAwwJa3Jpby10ZXN0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAE70DznDTogOdNdF9JEIseNtAZTKXGa3ww17sycDrfxvH+52H8ybVpBnh8
+oRUUacNzMOE4i5V31Ch+Fk3J8DqiqNTMFEwHQYDVR0OBBYEFBQ8TeCAjE5pfDgt
4MShvXZX1lLuMB8GA1UdIwQYMBaAFBQ8TeCAjE5pfDgt4MShvXZX1lLuMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhANaAA1NTRgvo5LGaq4R6Izd6
EqH1+OvseeC/QNJtweWuAiBdCf/fdJCOI7RSVBVYxde3XfmQ9xosL7ThBRUbx21q
gQ==
-----END CERTIFICATE-----
";

    #[test]
    fn crt_files_are_roots_and_missing_dir_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            load(dir.path(), "127.0.0.1:5443").expect("missing ok"),
            HostTls::default()
        );
        let host = dir.path().join("127.0.0.1:5443");
        std::fs::create_dir(&host).expect("mkdir");
        std::fs::write(host.join("ca.crt"), format!("{CERT}{CERT}")).expect("write");
        std::fs::write(host.join("README"), "ignored").expect("write");
        std::fs::write(host.join("client.cert"), CERT).expect("write");
        let tls = load(dir.path(), "127.0.0.1:5443").expect("loads");
        assert_eq!(tls.roots.len(), 2, "a bundle gives each certificate");
        std::fs::write(host.join("z.crt"), "not pem").expect("write");
        assert!(matches!(
            load(dir.path(), "127.0.0.1:5443"),
            Err(CertsError::Pem { .. })
        ));
        assert!(matches!(
            load(dir.path(), ".."),
            Err(CertsError::BadHost { .. })
        ));
    }
}
