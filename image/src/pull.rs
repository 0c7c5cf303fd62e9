//! Pulling one image from an ordered list of endpoints (mirrors, then the
//! origin): manifest or index → the platform's manifest → config → the
//! missing layers, downloaded in parallel (bounded by a store-wide
//! semaphore), each verified and unpacked into `layers/<chain id>`.
//!
//! Nothing a later pull would trust appears before it is verified: blobs
//! are written in `tmp/` and renamed into `blobs/` after their digest and
//! size check; layers are unpacked in `tmp/` and renamed into `layers/`
//! after their diff ID check. Temp files are removed on error and on
//! cancellation (drop guards).
//!
//! Credentials from the request are sent only to the registry the image
//! names (its origin endpoint, and mirrors on the same host); a mirror on
//! another host gets what the auth file has for it, else nothing.

use crate::auth::{AuthError, RegistryAuth, lookup_auth_file, same_registry};
use crate::certs::CertsError;
use crate::digest::{Digest, chain_ids};
use crate::error::ErrorKind;
use crate::fetch::Remote;
use crate::layout::{Layout, TempGuard};
use crate::manifest::{self, Document, ManifestError};
use crate::platform::Platform;
use crate::registries::Endpoint;
use crate::unpack::{self, SizeBudget, UnpackError};
use futures_util::{StreamExt as _, TryStreamExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry answered with an error or could not be reached.
    #[error("registry {location}")]
    Registry {
        /// `host/repository` (and blob) asked.
        location: String,
        /// The cause.
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },
    /// Every endpoint failed; the error of the last one is the source.
    #[error("tried {tried}; all failed")]
    AllEndpoints {
        /// The endpoints tried, in order.
        tried: String,
        /// The last endpoint's error.
        #[source]
        source: Box<PullError>,
    },
    /// No progress within the timeout.
    #[error("{what}: no progress for {secs}s")]
    Timeout {
        /// What was being fetched.
        what: String,
        /// The timeout.
        secs: u64,
    },
    /// A document is larger than allowed.
    #[error("{blob} is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The document.
        blob: String,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// Content does not hash to its digest.
    #[error("blob {blob}: content has digest {actual}")]
    DigestMismatch {
        /// The expected digest.
        blob: String,
        /// The actual digest.
        actual: String,
    },
    /// Content is not the size its descriptor says.
    #[error("blob {blob}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob digest.
        blob: String,
        /// The descriptor's size.
        expected: u64,
        /// Bytes received (so far).
        actual: u64,
    },
    /// The blob stream broke.
    #[error("blob {blob}: reading from the registry")]
    Stream {
        /// The blob digest.
        blob: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A local file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A manifest, index or config is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A layer could not be unpacked (or was refused).
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// Credentials are unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The registry's certs.d directory is unusable.
    #[error(transparent)]
    Certs(#[from] CertsError),
    /// An index pointed at another index.
    #[error("{digest}: an index entry is not an image manifest")]
    NestedIndex {
        /// The entry's digest.
        digest: String,
    },
    /// The registries config leaves no endpoint to try.
    #[error("no registry endpoint to pull from")]
    NoEndpoint,
    /// The store is shutting down.
    #[error("the image store is closed")]
    Closed,
    /// A worker task died.
    #[error("pull worker task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl PullError {
    /// The status class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Registry { source, .. } if is_auth_failure(source) => ErrorKind::Unauthenticated,
            Self::Registry { .. } | Self::Timeout { .. } | Self::Stream { .. } => {
                ErrorKind::Registry
            }
            Self::AllEndpoints { source, .. } => source.kind(),
            Self::Manifest(ManifestError::NoPlatform { .. }) => ErrorKind::NotFound,
            Self::Auth(_) => ErrorKind::InvalidArgument,
            Self::Unpack(UnpackError::TooLarge { .. }) => ErrorKind::FailedPrecondition,
            _ => ErrorKind::Internal,
        }
    }
}

/// The registry refused our credentials (or wanted some).
fn is_auth_failure(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode};
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => true,
        E::ServerError { code, .. } => matches!(code, 401 | 403),
        E::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

/// What a pull needs from the store.
pub struct PullContext<'a> {
    /// Directories.
    pub layout: &'a Layout,
    /// Platform to pick from indexes.
    pub platform: &'a Platform,
    /// No-progress timeout.
    pub timeout: Duration,
    /// Store-wide bound on concurrent layer downloads.
    pub permits: &'a Arc<tokio::sync::Semaphore>,
    /// Counts blob fetches (for tests and metrics).
    pub fetches: &'a AtomicU64,
    /// Credentials from the request.
    pub auth: Option<&'a RegistryAuth>,
    /// The auth file.
    pub auth_file: &'a Path,
    /// The containers `certs.d` directory (`<dir>/<host:port>/*.crt`).
    pub certs_dir: &'a Path,
    /// Bound on the uncompressed bytes one pull unpacks.
    pub max_unpacked_bytes: u64,
    /// Called with the config digest and with the chain IDs before they
    /// are looked at; the returned pins are kept until the pull's record
    /// is committed.
    pub pin: &'a (dyn Fn(&[String]) -> crate::pins::PinGuard + Sync),
    /// Per-layer locks shared by all pulls of the store.
    pub layer_locks: &'a Arc<crate::pins::KeyedLocks>,
}

/// A pulled image, its layers in place, not yet recorded.
pub struct Pulled {
    /// The digest the reference resolved to (index or manifest).
    pub top_digest: Digest,
    /// The config digest (image ID).
    pub config_digest: Digest,
    /// The config JSON.
    pub config_json: String,
    /// `config.User`.
    pub user: Option<String>,
    /// Chain IDs, base first.
    pub chain_ids: Vec<Digest>,
    /// Compressed layers plus config.
    pub size: u64,
    /// Pins on the config blob and layers until the record is committed.
    pub pins: Vec<crate::pins::PinGuard>,
}

/// Pulls `tag`/`digest` of a repository from the first endpoint that
/// serves its manifest; `domain` is the registry the reference names
/// (the one request credentials are for).
pub async fn pull_from(
    ctx: &PullContext<'_>,
    endpoints: &[Endpoint],
    domain: &str,
    tag: Option<&str>,
    digest: Option<&Digest>,
) -> Result<Pulled, PullError> {
    let mut tried = Vec::new();
    let mut last = None;
    for ep in endpoints {
        tried.push(format!("{}/{}", ep.host, ep.repository));
        let remote = match connect(ctx, ep, domain, tag, digest) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(endpoint = %ep.host, error = %error_chain(&e), "endpoint unusable");
                last = Some(e);
                continue;
            }
        };
        match remote.manifest(None, manifest::MAX_MANIFEST_SIZE).await {
            Ok((body, top)) => {
                tracing::debug!(endpoint = %remote.location(), digest = %top, "resolved manifest");
                return pull_rest(ctx, &remote, &body, top).await;
            }
            Err(e) => {
                tracing::warn!(endpoint = %remote.location(), mirror = ep.mirror, error = %error_chain(&e), "endpoint failed");
                last = Some(e);
            }
        }
    }
    Err(PullError::AllEndpoints {
        tried: tried.join(", "),
        source: Box::new(last.unwrap_or(PullError::NoEndpoint)),
    })
}

fn connect(
    ctx: &PullContext<'_>,
    ep: &Endpoint,
    domain: &str,
    tag: Option<&str>,
    digest: Option<&Digest>,
) -> Result<Remote, PullError> {
    let auth = credentials(ctx, ep, domain)?;
    let tls = crate::certs::load(ctx.certs_dir, &ep.host)?;
    Remote::new(ep.clone(), tag, digest, auth, ctx.timeout, &tls)
}

fn credentials(
    ctx: &PullContext<'_>,
    ep: &Endpoint,
    domain: &str,
) -> Result<oci_client::secrets::RegistryAuth, PullError> {
    // A mirror on another host is another party: it must not see the
    // credentials given for the image's own registry.
    let for_this_host = !ep.mirror || same_registry(&ep.host, domain);
    if let Some(a) = ctx.auth.filter(|a| !a.is_empty())
        && for_this_host
    {
        return Ok(a.to_client()?);
    }
    match lookup_auth_file(ctx.auth_file, &ep.host, &ep.repository)? {
        Some(a) => Ok(a.to_client()?),
        None => Ok(oci_client::secrets::RegistryAuth::Anonymous),
    }
}

/// The error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn pull_rest(
    ctx: &PullContext<'_>,
    remote: &Remote,
    body: &[u8],
    top: Digest,
) -> Result<Pulled, PullError> {
    let (manifest_digest, m) = match manifest::parse_document(body, &top, "")? {
        Document::Manifest(m) => (top.clone(), m),
        Document::Index(entries) => {
            let entry = manifest::select_platform(&entries, ctx.platform, &top)?;
            let d = entry.checked_digest(&top)?;
            if entry.size > manifest::MAX_MANIFEST_SIZE {
                return Err(PullError::TooLarge {
                    blob: d.to_string(),
                    size: entry.size,
                    max: manifest::MAX_MANIFEST_SIZE,
                });
            }
            let (body, _) = remote
                .manifest(Some(&d), manifest::MAX_MANIFEST_SIZE)
                .await?;
            match manifest::parse_document(&body, &d, "")? {
                Document::Manifest(m) => (d, m),
                Document::Index(_) => {
                    return Err(PullError::NestedIndex {
                        digest: d.to_string(),
                    });
                }
            }
        }
    };
    if m.layers.len() > manifest::MAX_LAYERS {
        return Err(ManifestError::TooManyLayers {
            digest: manifest_digest.to_string(),
            layers: m.layers.len(),
            max: manifest::MAX_LAYERS,
        }
        .into());
    }
    let config_digest = m.config.checked_digest(&manifest_digest)?;
    if m.config.size > manifest::MAX_CONFIG_SIZE {
        return Err(ManifestError::TooLarge {
            what: "config",
            digest: config_digest.to_string(),
            size: m.config.size,
            max: manifest::MAX_CONFIG_SIZE,
        }
        .into());
    }
    // Pinned before it is looked at, so a concurrent removal cannot
    // collect it between download and commit.
    let mut pins = vec![(ctx.pin)(&[config_digest.to_string()])];
    let config_path = ctx.layout.blob(&config_digest);
    if !config_path.exists() {
        remote
            .blob_to(
                &config_digest,
                m.config.size,
                ctx.layout,
                &config_path,
                ctx.fetches,
            )
            .await?;
    }
    let config_bytes = tokio::fs::read(&config_path)
        .await
        .map_err(|source| PullError::Io {
            op: "reading config blob",
            path: config_path.clone(),
            source,
        })?;
    // The stored blob was verified when written; check again in case the
    // file was tampered with or truncated since.
    if Digest::of_bytes(&config_bytes) != config_digest {
        let _ = std::fs::remove_file(&config_path);
        return Err(PullError::DigestMismatch {
            blob: config_digest.to_string(),
            actual: Digest::of_bytes(&config_bytes).to_string(),
        });
    }
    let config = manifest::parse_config(&config_bytes, &config_digest)?;
    let diff_ids = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| {
            Digest::parse(d).map_err(|_| ManifestError::BadDigest {
                digest: config_digest.to_string(),
                bad: d.clone(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if diff_ids.len() != m.layers.len() {
        return Err(ManifestError::LayerCount {
            digest: manifest_digest.to_string(),
            diff_ids: diff_ids.len(),
            layers: m.layers.len(),
        }
        .into());
    }
    let chains = chain_ids(&diff_ids);
    let chain_strings: Vec<String> = chains.iter().map(|c| c.to_string()).collect();
    pins.push((ctx.pin)(&chain_strings));
    let mut jobs = Vec::new();
    for ((desc, diff), chain) in m.layers.iter().zip(&diff_ids).zip(&chains) {
        let blob = desc.checked_digest(&manifest_digest)?;
        if !ctx.layout.layer(chain).exists() {
            jobs.push((blob, desc.size, diff.clone(), chain.clone()));
        }
    }
    tracing::info!(
        image = %config_digest,
        layers = m.layers.len(),
        missing = jobs.len(),
        from = %remote.location(),
        "pulling layers"
    );
    let n = jobs.len().max(1);
    let budget = SizeBudget::new(ctx.max_unpacked_bytes);
    futures_util::stream::iter(jobs)
        .map(|(blob, size, diff, chain)| {
            fetch_layer(ctx, remote, blob, size, diff, chain, budget.clone())
        })
        .buffer_unordered(n)
        .try_collect::<Vec<()>>()
        .await?;
    let size = m.layers.iter().map(|l| l.size).sum::<u64>() + m.config.size;
    Ok(Pulled {
        top_digest: top,
        config_digest,
        config_json: String::from_utf8_lossy(&config_bytes).into_owned(),
        user: config.config.and_then(|c| c.user).filter(|u| !u.is_empty()),
        chain_ids: chains,
        size,
        pins,
    })
}

async fn fetch_layer(
    ctx: &PullContext<'_>,
    remote: &Remote,
    blob: Digest,
    size: u64,
    diff_id: Digest,
    chain: Digest,
    budget: SizeBudget,
) -> Result<(), PullError> {
    // One download per layer across concurrent pulls of different images.
    let _layer = ctx.layer_locks.lock(chain.as_str()).await;
    if ctx.layout.layer(&chain).exists() {
        return Ok(());
    }
    let permit = ctx.permits.acquire().await.map_err(|_| PullError::Closed)?;
    let blob_path = TempGuard::new(
        ctx.layout
            .temp_path(&format!("layer-{}", &blob.hex()[..12])),
    );
    remote
        .blob_to(&blob, size, ctx.layout, blob_path.path(), ctx.fetches)
        .await?;
    drop(permit);
    let layout = ctx.layout.clone();
    let started = std::time::Instant::now();
    let chain2 = chain.clone();
    let unpacked = tokio::task::spawn_blocking(move || {
        unpack_into_place(&layout, blob_path, &blob, &diff_id, &chain2, &budget)
    })
    .await
    .map_err(PullError::Task)??;
    tracing::info!(layer = %chain, bytes = unpacked, ms = started.elapsed().as_millis() as u64, "layer unpacked");
    Ok(())
}

/// Unpacks the blob into `tmp/`, then renames it to `layers/<chain>`.
fn unpack_into_place(
    layout: &Layout,
    blob_path: TempGuard,
    blob: &Digest,
    diff_id: &Digest,
    chain: &Digest,
    budget: &SizeBudget,
) -> Result<u64, PullError> {
    use std::os::unix::fs::DirBuilderExt;
    let work = TempGuard::new(layout.temp_path(&format!("unpack-{}", &chain.hex()[..12])));
    let root = work.path().join("root");
    let io = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| PullError::Io { op, path, source }
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(work.path())
        .map_err(io("creating", work.path()))?;
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&root)
        .map_err(io("creating", &root))?;
    let size = unpack::unpack_layer_within(blob_path.path(), &root, blob, diff_id, budget)?;
    drop(blob_path);
    let dest = layout.layer(chain);
    match std::fs::rename(&root, &dest) {
        Ok(()) => {}
        // Another pull put the same layer in place first.
        Err(e)
            if dest.is_dir()
                && matches!(
                    rustix::io::Errno::from_io_error(&e),
                    Some(rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST)
                ) => {}
        Err(e) => return Err(io("renaming layer into place", &dest)(e)),
    }
    Ok(size)
}
