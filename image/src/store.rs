//! [`ImageStore`]: the API the daemon's ImageService calls.

use crate::auth::RegistryAuth;
use crate::db;
use crate::digest::{Digest, is_sha256_hex};
use crate::error::ImageError;
use crate::gc;
use crate::layout::Layout;
use crate::pins::{KeyedLocks, LayerPins};
use crate::platform::Platform;
use crate::pull::{self, PullContext, PullError};
use crate::record::ImageRecord;
use crate::reference::ImageReference;
use crate::registries::RegistriesWatcher;
use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};
use redb::Database;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument as _;

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct ImageStoreOptions {
    /// Directory for blobs, layers and container dirs (e.g. `<root>/images`).
    pub dir: PathBuf,
    /// containers-registries.conf v2 file; missing = no mirrors.
    pub registries_conf: PathBuf,
    /// containers auth.json / docker config.json; missing = anonymous.
    pub auth_file: PathBuf,
    /// containers `certs.d` directory: `<dir>/<host:port>/*.crt` are CAs
    /// trusted for that registry.
    pub certs_dir: PathBuf,
    /// Bound on the uncompressed bytes one pull may unpack (all its new
    /// layers together); a layer crossing it is refused.
    pub max_unpacked_bytes: u64,
    /// Platform picked from indexes.
    pub platform: Platform,
    /// Store-wide bound on concurrent layer downloads.
    pub max_concurrent_layer_downloads: usize,
    /// A pull fails when a request or blob stream makes no progress for
    /// this long (there is no total timeout).
    pub progress_timeout: Duration,
}

impl ImageStoreOptions {
    /// Defaults for a store under `dir`: `/etc/containers/registries.conf`,
    /// `/run/containers/0/auth.json`, `/etc/containers/certs.d`, 32 GiB
    /// unpacked per pull, this host's platform, 3 concurrent layer
    /// downloads, 5 minutes without progress.
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            registries_conf: PathBuf::from("/etc/containers/registries.conf"),
            auth_file: PathBuf::from("/run/containers/0/auth.json"),
            certs_dir: PathBuf::from("/etc/containers/certs.d"),
            max_unpacked_bytes: DEFAULT_MAX_UNPACKED_BYTES,
            platform: Platform::host(),
            max_concurrent_layer_downloads: 3,
            progress_timeout: Duration::from_secs(300),
        }
    }
}

/// Default bound on what one pull unpacks: 32 GiB.
pub const DEFAULT_MAX_UNPACKED_BYTES: u64 = 32 << 30;

type SharedPull = Shared<BoxFuture<'static, Result<ImageRecord, Arc<ImageError>>>>;

pub(crate) struct Inner {
    pub(crate) db: Arc<Database>,
    pub(crate) opts: ImageStoreOptions,
    pub(crate) layout: Layout,
    registries: RegistriesWatcher,
    inflight: Mutex<HashMap<String, SharedPull>>,
    pub(crate) pins: Arc<LayerPins>,
    layer_locks: Arc<KeyedLocks>,
    permits: Arc<tokio::sync::Semaphore>,
    blob_fetches: AtomicU64,
    /// Serialises record commits with removals and collection.
    pub(crate) gc_lock: Mutex<()>,
}

/// The image store. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("dir", &self.inner.opts.dir)
            .finish()
    }
}

impl ImageStore {
    /// Opens the store: creates its tables and directories, and repairs
    /// what an unclean stop left: removes everything in `tmp/` (partial
    /// downloads and unpacks), drops records whose config blob or layers
    /// are missing, and removes layers and blobs no record references.
    pub fn open(db: Arc<Database>, opts: ImageStoreOptions) -> Result<Self, ImageError> {
        let layout = Layout::new(opts.dir.clone());
        layout.create().map_err(ImageError::io(
            "creating store directories",
            opts.dir.clone(),
        ))?;
        db::init(&db)?;
        let store = Self {
            inner: Arc::new(Inner {
                registries: RegistriesWatcher::new(opts.registries_conf.clone()),
                permits: Arc::new(tokio::sync::Semaphore::new(
                    opts.max_concurrent_layer_downloads.max(1),
                )),
                db,
                layout,
                opts,
                inflight: Mutex::new(HashMap::new()),
                pins: Arc::new(LayerPins::default()),
                layer_locks: Arc::new(KeyedLocks::default()),
                blob_fetches: AtomicU64::new(0),
                gc_lock: Mutex::new(()),
            }),
        };
        gc::repair(&store.inner)?;
        Ok(store)
    }

    /// Reads registries configuration from `path` for pulls from now on
    /// (a daemon reload changed it).
    pub fn set_registries_conf(&self, path: PathBuf) {
        self.inner.registries.set_path(path);
    }

    /// How many blobs (configs and layers) this store has fetched from
    /// registries since it was opened.
    pub fn blob_fetches(&self) -> u64 {
        self.inner.blob_fetches.load(Ordering::Relaxed)
    }

    /// Pulls `reference` and records it (durably) under its tag and the
    /// digest it resolved to. Concurrent pulls of the same reference with
    /// the same credentials share one download; the download runs in its
    /// own task, so a caller that gives up does not cancel it for others.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let parsed = ImageReference::parse(reference)?;
        let key = format!("{parsed}\n{}", auth_key(auth));
        let fut = {
            let mut inflight = self
                .inner
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(f) = inflight.get(&key) {
                tracing::debug!(reference = %parsed, "joining an in-flight pull");
                f.clone()
            } else {
                let this = self.clone();
                let auth = auth.cloned();
                let key2 = key.clone();
                let shown = parsed.to_string();
                let span = tracing::info_span!("pull", reference = %parsed);
                let task = tokio::spawn(
                    async move {
                        let r = this
                            .pull_uncached(&parsed, auth.as_ref())
                            .await
                            .map_err(Arc::new);
                        this.inner
                            .inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key2);
                        r
                    }
                    .instrument(span),
                );
                let shared = async move {
                    match task.await {
                        Ok(r) => r,
                        Err(join) => Err(Arc::new(ImageError::Pull {
                            reference: shown,
                            source: PullError::Task(join),
                        })),
                    }
                }
                .boxed()
                .shared();
                inflight.insert(key, shared.clone());
                shared
            }
        };
        fut.await.map_err(|e| match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => ImageError::Shared(shared),
        })
    }

    async fn pull_uncached(
        &self,
        reference: &ImageReference,
        auth: Option<&RegistryAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let started = std::time::Instant::now();
        let cfg = self.inner.registries.current()?;
        let candidates: Vec<ImageReference> =
            if !reference.is_qualified() && !cfg.search_registries().is_empty() {
                cfg.search_registries()
                    .iter()
                    .map(|r| reference.with_domain(r))
                    .collect()
            } else {
                vec![reference.clone()]
            };
        let pins = Arc::clone(&self.inner.pins);
        let pin = move |chains: &[String]| pins.pin(chains);
        let ctx = PullContext {
            layout: &self.inner.layout,
            platform: &self.inner.opts.platform,
            timeout: self.inner.opts.progress_timeout,
            permits: &self.inner.permits,
            fetches: &self.inner.blob_fetches,
            auth,
            auth_file: &self.inner.opts.auth_file,
            certs_dir: &self.inner.opts.certs_dir,
            max_unpacked_bytes: self.inner.opts.max_unpacked_bytes,
            pin: &pin,
            layer_locks: &self.inner.layer_locks,
        };
        let mut last = None;
        for candidate in &candidates {
            let endpoints = cfg.endpoints(candidate)?;
            let pulled = pull::pull_from(
                &ctx,
                &endpoints,
                candidate.domain(),
                candidate.tag(),
                candidate.digest(),
            )
            .await;
            match pulled {
                Ok(pulled) => {
                    // As containerd does, `name:tag@digest` records only
                    // the digest: the tag is not what was pulled.
                    let tag = match candidate.digest() {
                        Some(_) => None,
                        None => candidate.tagged_name(),
                    };
                    let rec = ImageRecord {
                        id: pulled.config_digest.to_string(),
                        repo_tags: tag.into_iter().collect(),
                        repo_digests: vec![candidate.digested_name(&pulled.top_digest)],
                        size: pulled.size,
                        user: pulled.user.clone(),
                        config_json: pulled.config_json.clone(),
                        layers: pulled.chain_ids.iter().map(|c| c.to_string()).collect(),
                        created_ns: now_ns(),
                    };
                    let this = self.clone();
                    let stored = tokio::task::spawn_blocking(move || {
                        let _gc = this.inner.gc_lock.lock().unwrap_or_else(|p| p.into_inner());
                        // Layer files are flushed before the record that
                        // trusts them is committed.
                        if let Ok(d) = std::fs::File::open(this.inner.layout.layers_dir()) {
                            let _ = rustix::fs::syncfs(&d);
                        }
                        db::commit_image(&this.inner.db, &rec)
                    })
                    .await
                    .map_err(|join| ImageError::Pull {
                        reference: candidate.to_string(),
                        source: PullError::Task(join),
                    })??;
                    drop(pulled.pins);
                    tracing::info!(
                        reference = %candidate,
                        image = %stored.id,
                        ms = started.elapsed().as_millis() as u64,
                        "image pulled"
                    );
                    return Ok(stored);
                }
                Err(source) => {
                    tracing::warn!(reference = %candidate, error = %pull::error_chain(&source), "pull failed");
                    last = Some(ImageError::Pull {
                        reference: candidate.to_string(),
                        source,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| ImageError::NotFound(reference.to_string())))
    }

    /// Every image.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        db::list(&self.inner.db)
    }

    /// Finds an image by full ID (`sha256:…`), ID without `sha256:`, a
    /// normalised tag (`busybox` → `docker.io/library/busybox:latest`),
    /// `repo@digest` (also `repo:tag@digest`), or a unique ID prefix of at
    /// least 3 hex digits. Unqualified names are also tried under each
    /// unqualified-search registry.
    pub fn resolve(&self, name_or_id: &str) -> Result<Option<ImageRecord>, ImageError> {
        let db = &self.inner.db;
        let s = name_or_id.trim();
        if let Ok(d) = Digest::parse(s) {
            return db::get(db, d.as_str());
        }
        if is_sha256_hex(s) {
            return db::get(db, &format!("sha256:{s}"));
        }
        if let Ok(r) = ImageReference::parse(s) {
            let mut candidates = vec![r.clone()];
            if !r.is_qualified()
                && let Ok(cfg) = self.inner.registries.current()
            {
                candidates.extend(cfg.search_registries().iter().map(|d| r.with_domain(d)));
            }
            for c in candidates {
                let name = match c.digest() {
                    Some(d) => c.digested_name(d),
                    None => c.tagged_name().unwrap_or_default(),
                };
                if let Some(id) = db::lookup_name(db, &name)? {
                    return db::get(db, &id);
                }
            }
        }
        let hex = s.strip_prefix("sha256:").unwrap_or(s);
        if hex.len() >= 3 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let ids = db::ids_with_prefix(db, &format!("sha256:{hex}"))?;
            if let [id] = ids.as_slice() {
                return db::get(db, id);
            }
        }
        Ok(None)
    }

    /// Removes the image `name_or_id` names, with all its tags and
    /// digests, and frees layers and blobs no other image uses. Returns
    /// false when there was no such image. Refused (`InUse`) while a
    /// container root filesystem prepared from it exists.
    pub fn remove(&self, name_or_id: &str) -> Result<bool, ImageError> {
        let Some(rec) = self.resolve(name_or_id)? else {
            return Ok(false);
        };
        let removed = {
            let _gc = self.inner.gc_lock.lock().unwrap_or_else(|p| p.into_inner());
            let removed = db::remove_image(&self.inner.db, &rec.id)?;
            gc::collect(&self.inner)?;
            removed
        };
        if removed.is_some() {
            tracing::info!(image = %rec.id, tags = ?rec.repo_tags, "image removed");
        }
        Ok(removed.is_some())
    }

    /// The OCI image configuration of the image `id` (any form
    /// [`resolve`](Self::resolve) accepts).
    pub fn image_config(
        &self,
        id: &str,
    ) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        let rec = self
            .resolve(id)?
            .ok_or_else(|| ImageError::NotFound(id.to_owned()))?;
        serde_json::from_str(&rec.config_json).map_err(|e| ImageError::Config {
            image: rec.id.clone(),
            source: oci_spec::OciSpecError::SerDe(e),
        })
    }
}

fn auth_key(auth: Option<&RegistryAuth>) -> String {
    match auth.filter(|a| !a.is_empty()) {
        None => String::new(),
        Some(a) => Digest::of_bytes(
            format!(
                "{}\0{}\0{}\0{}\0{}",
                a.username, a.password, a.auth, a.identity_token, a.registry_token
            )
            .as_bytes(),
        )
        .to_string(),
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
