//! Talking to one registry endpoint: manifests through `oci-client` (which
//! also runs the bearer-token flow), blobs streamed to a temp file with
//! their size and digest checked on the way and a no-progress timeout.

use crate::digest::{Digest, Hasher};
use crate::layout::{Layout, TempGuard};
use crate::pull::PullError;
use crate::registries::Endpoint;
use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth as ClientAuth;
use oci_client::{Client, Reference};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt as _;

/// One endpoint, ready to talk to.
pub struct Remote {
    client: Client,
    reference: Reference,
    auth: ClientAuth,
    /// Where this is (for messages).
    pub endpoint: Endpoint,
    timeout: Duration,
}

impl Remote {
    /// A client for `endpoint` asking for `tag_or_digest`.
    pub fn new(
        endpoint: Endpoint,
        tag: Option<&str>,
        digest: Option<&Digest>,
        auth: ClientAuth,
        timeout: Duration,
    ) -> Self {
        let protocol = if endpoint.insecure {
            ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
        } else {
            ClientProtocol::Https
        };
        let client = Client::new(ClientConfig {
            protocol,
            platform_resolver: None,
            read_timeout: Some(timeout),
            connect_timeout: Some(Duration::from_secs(30)),
            user_agent: "krio",
            ..ClientConfig::default()
        });
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
        Self {
            client,
            reference,
            auth,
            endpoint,
            timeout,
        }
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
        let fut = self
            .client
            .pull_manifest_raw(&r, &self.auth, crate::manifest::ACCEPTED);
        let (body, _) = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| PullError::Timeout {
                what: format!("manifest of {}", self.location()),
                secs: self.timeout.as_secs(),
            })?
            .map_err(|source| PullError::Registry {
                location: self.location(),
                source: Box::new(source),
            })?;
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
            self.client.pull_blob_stream(&self.reference, &desc),
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
