//! Talking to one registry endpoint: manifests through `oci-client` (which
//! also runs the bearer-token flow), blobs streamed to a temp file with
//! their size and digest checked on the way and a no-progress timeout.
//!
//! TLS: a secure endpoint is HTTPS, verified against the system roots plus
//! the host's `certs.d` CAs. An `insecure` endpoint is tried, as
//! containers-registries.conf(5) defines it, over HTTPS without
//! certificate verification first and over plain HTTP when that cannot
//! connect; the scheme that answered serves the rest of the pull.

use crate::certs::HostTls;
use crate::digest::{Digest, Hasher};
use crate::layout::{Layout, TempGuard};
use crate::pull::PullError;
use crate::registries::Endpoint;
use futures_util::StreamExt as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth as ClientAuth;
use oci_client::{Client, Reference};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// One endpoint, ready to talk to.
pub struct Remote {
    /// Clients to try in order (HTTPS, then plain HTTP for insecure
    /// endpoints); `chosen` is the one that answered.
    clients: Vec<Client>,
    chosen: AtomicUsize,
    reference: Reference,
    auth: ClientAuth,
    /// Where this is (for messages).
    pub endpoint: Endpoint,
    timeout: Duration,
}

impl Remote {
    /// A client for `endpoint` asking for `tag_or_digest`, trusting the
    /// extra roots of `tls`.
    pub fn new(
        endpoint: Endpoint,
        tag: Option<&str>,
        digest: Option<&Digest>,
        auth: ClientAuth,
        timeout: Duration,
        tls: &HostTls,
    ) -> Result<Self, PullError> {
        let config = |protocol, accept_invalid_certificates| ClientConfig {
            protocol,
            accept_invalid_certificates,
            extra_root_certificates: tls
                .roots
                .iter()
                .map(|der| Certificate {
                    encoding: CertificateEncoding::Der,
                    data: der.clone(),
                })
                .collect(),
            platform_resolver: None,
            read_timeout: Some(timeout),
            connect_timeout: Some(Duration::from_secs(30)),
            user_agent: "krio",
            ..ClientConfig::default()
        };
        let configs = if endpoint.insecure {
            vec![
                config(ClientProtocol::Https, true),
                config(ClientProtocol::Http, false),
            ]
        } else {
            vec![config(ClientProtocol::Https, false)]
        };
        // Client::new would fall back to a default client on a bad
        // certificate; try_from reports it.
        let clients = configs
            .into_iter()
            .map(Client::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| PullError::Registry {
                location: format!("{} (TLS setup)", endpoint.host),
                source: Box::new(source),
            })?;
        let reference = match (tag, digest) {
            (Some(t), Some(d)) => Reference::with_tag_and_digest(
                endpoint.host.clone(),
                endpoint.repository.clone(),
                t.to_owned(),
                d.to_string(),
            ),
            (_, Some(d)) => Reference::with_digest(
                endpoint.host.clone(),
                endpoint.repository.clone(),
                d.to_string(),
            ),
            (Some(t), None) => Reference::with_tag(
                endpoint.host.clone(),
                endpoint.repository.clone(),
                t.to_owned(),
            ),
            (None, None) => Reference::with_tag(
                endpoint.host.clone(),
                endpoint.repository.clone(),
                "latest".to_owned(),
            ),
        };
        Ok(Self {
            clients,
            chosen: AtomicUsize::new(0),
            reference,
            auth,
            endpoint,
            timeout,
        })
    }

    fn client(&self) -> &Client {
        &self.clients[self
            .chosen
            .load(Ordering::Relaxed)
            .min(self.clients.len() - 1)]
    }

    /// `host/repository` for messages.
    pub fn location(&self) -> String {
        format!("{}/{}", self.endpoint.host, self.endpoint.repository)
    }

    /// The manifest or index the reference names (or `digest` if given),
    /// its bytes checked against the requested digest and size limit.
    pub async fn manifest(
        &self,
        digest: Option<&Digest>,
        max: u64,
    ) -> Result<(bytes::Bytes, Digest), PullError> {
        let r = match digest {
            Some(d) => self.reference.clone_with_digest(d.to_string()),
            None => self.reference.clone(),
        };
        let body = loop {
            let fut = self
                .client()
                .pull_manifest_raw(&r, &self.auth, crate::manifest::ACCEPTED);
            let res =
                tokio::time::timeout(self.timeout, fut)
                    .await
                    .map_err(|_| PullError::Timeout {
                        what: format!("manifest of {}", self.location()),
                        secs: self.timeout.as_secs(),
                    })?;
            match res {
                Ok((body, _)) => break body,
                // Could not talk to it at all (TLS to a plain-HTTP
                // registry, say): the next scheme, if there is one.
                Err(oci_client::errors::OciDistributionError::RequestError(e))
                    if self.chosen.load(Ordering::Relaxed) + 1 < self.clients.len() =>
                {
                    tracing::debug!(endpoint = %self.location(), error = %e, "HTTPS failed; trying plain HTTP");
                    self.chosen.fetch_add(1, Ordering::Relaxed);
                }
                Err(source) => {
                    return Err(PullError::Registry {
                        location: self.location(),
                        source: Box::new(source),
                    });
                }
            }
        };
        if body.len() as u64 > max {
            return Err(PullError::TooLarge {
                blob: format!("manifest of {}", self.location()),
                size: body.len() as u64,
                max,
            });
        }
        let actual = Digest::of_bytes(&body);
        // What was asked for: the given digest, else the reference's.
        let want = match digest {
            Some(d) => Some(d.clone()),
            None => self.reference.digest().and_then(|d| Digest::parse(d).ok()),
        };
        if let Some(want) = want
            && want != actual
        {
            return Err(PullError::DigestMismatch {
                blob: want.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok((body, actual))
    }

    /// Streams the blob `digest` of `size` bytes into a temp file of
    /// `layout`, verifying size and digest, then renames it to
    /// `dest`. Counts fetches in `fetches`.
    pub async fn blob_to(
        &self,
        digest: &Digest,
        size: u64,
        layout: &Layout,
        dest: &std::path::Path,
        fetches: &AtomicU64,
    ) -> Result<(), PullError> {
        let tmp = TempGuard::new(layout.temp_path(&format!("blob-{}", &digest.hex()[..12])));
        fetches.fetch_add(1, Ordering::Relaxed);
        let desc = oci_client::client::LayerDescriptor {
            digest: digest.as_str(),
            // Never follow foreign URLs from a manifest.
            urls: &None,
        };
        let io_err =
            |op: &'static str, path: PathBuf| move |source| PullError::Io { op, path, source };
        let stream = tokio::time::timeout(
            self.timeout,
            self.client().pull_blob_stream(&self.reference, &desc),
        )
        .await
        .map_err(|_| PullError::Timeout {
            what: format!("blob {digest} from {}", self.location()),
            secs: self.timeout.as_secs(),
        })?
        .map_err(|source| PullError::Registry {
            location: format!("{} blob {digest}", self.location()),
            source: Box::new(source),
        })?;
        let mut stream = stream.stream;
        let mut file = tokio::fs::File::create(tmp.path())
            .await
            .map_err(io_err("creating", tmp.path().to_owned()))?;
        let mut hasher = Hasher::default();
        loop {
            let next = tokio::time::timeout(self.timeout, stream.next())
                .await
                .map_err(|_| PullError::Timeout {
                    what: format!("blob {digest} from {} (no progress)", self.location()),
                    secs: self.timeout.as_secs(),
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|source| PullError::Stream {
                blob: digest.to_string(),
                source,
            })?;
            hasher.update(&chunk);
            if hasher.len() > size {
                return Err(PullError::SizeMismatch {
                    blob: digest.to_string(),
                    expected: size,
                    actual: hasher.len(),
                });
            }
            file.write_all(&chunk)
                .await
                .map_err(io_err("writing", tmp.path().to_owned()))?;
        }
        if hasher.len() != size {
            return Err(PullError::SizeMismatch {
                blob: digest.to_string(),
                expected: size,
                actual: hasher.len(),
            });
        }
        let actual = hasher.finish();
        if &actual != digest {
            return Err(PullError::DigestMismatch {
                blob: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        file.sync_all()
            .await
            .map_err(io_err("syncing", tmp.path().to_owned()))?;
        drop(file);
        tokio::fs::rename(tmp.path(), dest)
            .await
            .map_err(io_err("renaming into place", dest.to_owned()))?;
        tmp.disarm();
        Ok(())
    }
}
